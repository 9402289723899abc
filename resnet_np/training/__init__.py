"""Training, evaluation and everything a run leaves behind.

    config.py       TrainConfig: the settings of a run, with defaults and checks
    trainer.py      Trainer: the step loop, evaluation and checkpoints of each epoch
    run_folder.py   the run's folder: one run at a time (a lock), config.json, leftovers
    signals.py      Ctrl-C and SIGTERM: stop after this batch and save, or stop at once
    resume.py       what a resumed run may change: device, data folder, length
    evaluate.py     evaluate(): loss, top-1/top-5 and predictions, without gradients
    checkpoint.py   one-file .npz checkpoints, written atomically; loading with clear errors
    metrics.py      top-k accuracy, confusion matrix, precision/recall, metrics.jsonl
    plots.py        loss/accuracy curves and confusion-matrix PNGs
    atomic.py       write-to-temp-then-rename, so no file is ever left half-written
    progress.py     tqdm bars (optional) and log lines

    from resnet_np.training import Trainer, TrainConfig
    summary = Trainer(TrainConfig(model="resnet18", dataset="digits"), "runs/digits").fit()
"""
from .atomic import atomic_write, atomic_write_text
from .checkpoint import (Checkpoint, CheckpointError, check_model_config, describe_model,
                         load_checkpoint, load_model, model_from_config, restore_model,
                         save_checkpoint)
from .config import TrainConfig
from .evaluate import EvalResult, evaluate
from .metrics import (MetricsWriter, confusion_matrix, format_report, precision_recall,
                      read_metrics, topk_accuracy, topk_correct)
from .plots import plot_confusion_matrix, plot_history
from ..data.registry import take as subset   # a seeded random subset of a dataset
from .trainer import Trainer, TrainingError, build_optimizer, channel_stats

__all__ = [
    "Checkpoint", "CheckpointError", "EvalResult", "MetricsWriter", "TrainConfig", "Trainer",
    "TrainingError", "atomic_write", "atomic_write_text", "build_optimizer",
    "channel_stats", "check_model_config", "confusion_matrix", "describe_model", "evaluate",
    "format_report", "load_checkpoint", "load_model", "model_from_config", "plot_confusion_matrix",
    "plot_history", "precision_recall", "read_metrics", "restore_model", "save_checkpoint",
    "subset",
    "topk_accuracy", "topk_correct",
]
