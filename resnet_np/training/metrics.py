"""Classification metrics and the per-epoch metrics log.

Notation: N examples, M classes; ``logits`` (N, M), ``labels`` (N,) integers
in [0, M). The confusion matrix ``cm`` is (M, M) with ``cm[true, predicted]``.
"""
import json
import math
from pathlib import Path

import numpy as np

from .. import backend
from .atomic import atomic_write_text


# --------------------------------------------------------------------------- #
# Accuracy
# --------------------------------------------------------------------------- #
def topk_correct(logits, labels, k):
    """How many rows have their label among their ``k`` largest logits.

    ``k`` is clipped to M, so top-5 of a 3-class problem is top-3 (always
    right). Ties are broken by class index, as a stable sort does.
    """
    logits, labels = backend.to_numpy(logits), backend.to_numpy(labels)
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]       # (N, k)
    return int((top == labels[:, None]).any(axis=1).sum())


def format_accuracy(top1, top5):
    """``"top-1 95.26%, top-5 99.72%"``; without top-5 when it is None (5 classes or fewer)."""
    text = f"top-1 {100 * top1:.2f}%"
    return text if top5 is None else f"{text}, top-5 {100 * top5:.2f}%"


def topk_accuracy(logits, labels, ks=(1, 5)):
    """``{k: fraction of rows whose label is in the top k}`` for each k in ``ks``."""
    n = len(labels)
    return {k: topk_correct(logits, labels, k) / n if n else float("nan") for k in ks}


# --------------------------------------------------------------------------- #
# Per-class metrics
# --------------------------------------------------------------------------- #
def confusion_matrix(labels, predictions, num_classes):
    """(M, M) int64 counts: ``cm[i, j]`` examples of class i predicted as class j."""
    labels = np.asarray(backend.to_numpy(labels), dtype=np.int64)
    predictions = np.asarray(backend.to_numpy(predictions), dtype=np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} "
                         "differ in shape")
    flat = labels * num_classes + predictions
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def precision_recall(cm):
    """Per-class precision and recall from a confusion matrix.

    precision[j] = cm[j, j] / sum_i cm[i, j]   (of those predicted j, the share that are j)
    recall[i]    = cm[i, i] / sum_j cm[i, j]   (of those that are i, the share found)

    A class never predicted (or never present) gets 0, as scikit-learn's
    ``zero_division=0`` gives.
    """
    cm = np.asarray(cm, dtype=np.float64)
    hits = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    return precision, recall


def format_report(cm, classes):
    """A text table of per-class precision, recall and support."""
    precision, recall = precision_recall(cm)
    support = np.asarray(cm).sum(axis=1)
    width = max([len("class")] + [len(str(c)) for c in classes])
    lines = [f"{'class':<{width}}  precision  recall  support"]
    for name, p, r, s in zip(classes, precision, recall, support):
        lines.append(f"{str(name):<{width}}  {p:9.3f}  {r:6.3f}  {s:7d}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# The metrics log: one JSON object per line, one line per epoch
# --------------------------------------------------------------------------- #
class MetricsWriter:
    """Keep ``metrics.jsonl`` equal to a list of per-epoch records.

    Each :meth:`append` rewrites the whole (small) file atomically, so the
    file always holds complete lines, whatever happens during a write. The
    lines are strict JSON: a NaN or infinite value (a loss that overflowed)
    is written as ``null``, which every JSON reader takes, not as ``NaN``,
    which is not JSON.
    """

    def __init__(self, path, records=()):
        self.path = Path(path)
        self.records = [_plain(r) for r in records]

    def append(self, record):
        self.records.append(_plain(record))
        self.write()

    def write(self):
        text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in self.records)
        atomic_write_text(self.path, text)


def read_metrics(path):
    """The records of a metrics file, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _plain(record):
    """Record values as plain Python numbers (NumPy scalars are not JSON), None for
    NaN and infinities (not JSON either)."""
    plain = {}
    for key, value in record.items():
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        plain[key] = value
    return plain
