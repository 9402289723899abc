"""PNG plots of a run: loss and accuracy curves, and a confusion matrix.

Figures are drawn with matplotlib's Agg canvas directly (no ``pyplot``), so
plotting needs no display and never changes the backend of the caller's
session. Files are written atomically.
"""
import numpy as np

from .atomic import atomic_write


def _figure(width, height):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plots need matplotlib: pip install matplotlib") from err
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    with atomic_write(path) as f:
        figure.savefig(f, format="png")


def plot_history(history, path):
    """Loss (left) and accuracy (right) per epoch, training and test.

    Parameters
    ----------
    history : list of dict
        Per-epoch records with ``epoch``, ``train_loss``, ``test_loss``,
        ``train_acc``, ``top1`` and ``top5`` (accuracies as fractions).
    path : str or path-like
        The PNG to write.
    """
    from matplotlib.ticker import MaxNLocator
    epochs = [r["epoch"] for r in history]
    figure = _figure(10, 4)
    loss_ax, acc_ax = figure.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    loss_ax.plot(epochs, [r["test_loss"] for r in history], "o-", label="test")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    curves = (("train_acc", "train top-1"), ("top1", "test top-1"), ("top5", "test top-5"))
    for key, label in curves:
        if all(r.get(key) is not None for r in history):  # no top-5 for 5 classes or fewer
            acc_ax.plot(epochs, [100 * r[key] for r in history], "o-", label=label)
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    _save(figure, path)


def plot_confusion_matrix(cm, classes, path, title="Confusion matrix"):
    """A heat map of ``cm[true, predicted]``, each row scaled to sum to 1.

    Counts are written in the cells and class names on the axes when there are
    at most 20 classes; beyond that the cells are too small to read.
    """
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    size = min(12, 3 + 0.45 * len(classes))
    figure = _figure(size + 1.5, size)
    ax = figure.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, label="share of the true class")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if len(classes) <= 20:
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, [str(c) for c in classes], rotation=90)
        ax.set_yticks(ticks, [str(c) for c in classes])
        for i, j in zip(*np.nonzero(cm)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    figure.tight_layout()
    _save(figure, path)
