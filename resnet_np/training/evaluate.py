"""Evaluation of a model on a dataset: loss, top-1 and top-5 accuracy, predictions."""
import contextlib
from dataclasses import dataclass

import numpy as np

from .. import backend
from ..nn import CrossEntropyLoss, no_grad
from .metrics import confusion_matrix, topk_correct
from .progress import progress_bar


@dataclass
class EvalResult:
    """What :func:`evaluate` measured.

    Attributes
    ----------
    loss : float
        Mean cross-entropy (without label smoothing).
    top1, top5 : float
        Accuracies as fractions of ``count``; ``top5`` is None for 5 classes or
        fewer, where every image has its class among the top 5.
    labels, predictions : ndarray of int64, shape (count,)
        True classes and the arg-max classes, in the loader's order.
    """

    loss: float
    top1: float
    top5: float
    labels: np.ndarray
    predictions: np.ndarray

    @property
    def count(self):
        return len(self.labels)

    def confusion_matrix(self, num_classes):
        return confusion_matrix(self.labels, self.predictions, num_classes)


def evaluate(model, loader, device="cpu", progress=False, desc="eval"):
    """Run ``model`` over every batch of ``loader`` in eval mode, without gradients.

    The model is left in eval mode; a trainer sets train mode again itself.
    """
    model.eval()
    criterion = CrossEntropyLoss()
    loss_sum, top1, top5 = 0.0, 0, 0
    labels, predictions = [], []
    with no_grad(), progress_bar(len(loader), desc=desc, enabled=progress) as bar, \
            contextlib.closing(iter(loader)) as batches:  # stops the prefetch thread on errors
        for x, y in batches:
            logits = model(backend.to_device(x.astype(model.dtype, copy=False), device))
            loss_sum += float(criterion(logits, backend.to_device(y, device))) * len(y)
            logits = backend.to_numpy(logits)
            top1 += topk_correct(logits, y, 1)
            top5 += topk_correct(logits, y, 5)
            labels.append(y)
            predictions.append(logits.argmax(axis=1))
            bar.update(1)
    n = sum(len(y) for y in labels)
    top5 = top5 / n if logits.shape[1] > 5 else None
    return EvalResult(loss=loss_sum / n, top1=top1 / n, top5=top5,
                      labels=np.concatenate(labels), predictions=np.concatenate(predictions))
