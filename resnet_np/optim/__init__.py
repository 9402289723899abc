"""Optimizers and learning-rate schedules, with the update rules of ``torch.optim``."""
from .adam import Adam, AdamW
from .lr_scheduler import (SCHEDULE_NAMES, CosineAnnealingLR, LinearLR, LRScheduler,
                           MultiStepLR, SequentialLR, StepLR, build_schedule)
from .optimizer import Optimizer
from .sgd import SGD

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW",
    "LRScheduler", "StepLR", "MultiStepLR", "CosineAnnealingLR", "LinearLR", "SequentialLR",
    "build_schedule", "SCHEDULE_NAMES",
]
