"""Mini-batches of a :class:`~resnet_np.data.Dataset`, reproducible and resumable.

Every random choice is a function of ``(seed, epoch)`` and of the image: the
order of epoch ``e`` is a permutation drawn from its own generator, and the
augmentation of image ``j`` (its index in the dataset) in epoch ``e`` from
another, whatever batch it lands in. So a loader that is given a saved
:meth:`DataLoader.state_dict` yields exactly the batches the saved run would
have yielded next, without replaying what came before; and N processes that
each take B images of every step's N x B augment them exactly as one process
at batch N x B does.
"""
import queue
import threading

import numpy as np

from .transforms import normalize


class DataLoader:
    """Iterate over a dataset in batches of float32 (B, 3, H, W) images.

    Each ``for`` loop over the loader is one epoch. A loop left early (``break``
    or an exception) also counts as a finished epoch: the next loop starts the
    next one. Iterate one loop at a time.

    Parameters
    ----------
    dataset : Dataset
        Anything with ``images`` uint8 (N, H, W, 3) and ``labels`` int (N,).
    batch_size : int
        At least 1 and at most ``len(dataset)``.
    shuffle : bool
        Visit the images in a new random order every epoch.
    seed : int
        Seed (>= 0) of the shuffling and the augmentation.
    augment : callable, optional
        ``augment(images, rng) -> images`` on uint8 images (1, H, W, 3), e.g.
        :func:`~resnet_np.data.transforms.cifar_augment`, called once per image;
        ``rng`` is a ``numpy.random.Generator`` seeded for that image in this
        epoch, from ``(seed, epoch, index of the image in the dataset)``.
    drop_last : bool
        Skip the last batch when it would be smaller than ``batch_size``.
    prefetch : bool
        Build the next batch in a background thread while the caller works on
        the current one.
    mean, std : sequence of 3 floats
        Per-channel normalisation, see :func:`~resnet_np.data.transforms.normalize`.
        The defaults only scale to [0, 1].

    Yields
    ------
    x : ndarray of float32, shape (B, 3, H, W)
    y : ndarray of int64, shape (B,)

    Examples
    --------
    >>> loader = DataLoader(train_set, 128, shuffle=True, seed=0,
    ...                     augment=cifar_augment, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    >>> for epoch in range(epochs):
    ...     for x, y in loader:
    ...         ...
    ...     checkpoint["loader"] = loader.state_dict()
    """

    def __init__(self, dataset, batch_size, shuffle=False, seed=0, augment=None,
                 drop_last=False, prefetch=True, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
        n = len(dataset.labels)
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} is larger than the dataset "
                             f"({n} images); use at most {n}")
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be callable or None, got {type(augment).__name__}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment
        self.drop_last = drop_last
        self.prefetch = prefetch
        self.mean, self.std = mean, std
        self.epoch = 0     # the epoch in progress, or the next one to start
        self._done = 0     # batches of that epoch already yielded

    def __len__(self):
        """Number of batches per epoch."""
        n = len(self.dataset.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # ----------------------------------------------------------------------- #
    # Resuming
    # ----------------------------------------------------------------------- #
    def state_dict(self):
        """Where the loader stands: ``{"seed", "epoch", "batch"}``.

        Taken inside a loop, ``batch`` counts the batches already yielded in
        that epoch, so a resumed loader continues with the next one.
        """
        return {"seed": self.seed, "epoch": self.epoch, "batch": self._done}

    def load_state_dict(self, state):
        """Continue from a :meth:`state_dict`: the next loop yields what the saved run would have."""
        for key in ("seed", "epoch", "batch"):
            if key not in state:
                raise KeyError(f"loader state has no {key!r}; expected the keys of state_dict()")
        if state["epoch"] < 0 or state["batch"] < 0:
            raise ValueError(f"loader state must not be negative, got {state}")
        self.seed, self.epoch, self._done = state["seed"], state["epoch"], state["batch"]

    # ----------------------------------------------------------------------- #
    # Iteration
    # ----------------------------------------------------------------------- #
    def __iter__(self):
        if self._done >= len(self):  # saved after the last batch of an epoch
            self.epoch, self._done = self.epoch + 1, 0
        epoch, start = self.epoch, self._done
        order = self._order(epoch)
        batches = (self._batch(order, epoch, i) for i in range(start, len(self)))
        source = _prefetch(batches) if self.prefetch else batches
        try:
            for x, y in source:
                self._done += 1
                yield x, y
        finally:
            source.close()  # stops the prefetch thread when the loop ends early
            self.epoch, self._done = epoch + 1, 0

    def _order(self, epoch):
        n = len(self.dataset.labels)
        if not self.shuffle:
            return np.arange(n)
        return _rng(self.seed, epoch, 0).permutation(n)

    def _batch(self, order, epoch, i):
        index = order[i * self.batch_size:(i + 1) * self.batch_size]
        images = self.dataset.images[index]
        if self.augment is not None:
            images = np.concatenate([self.augment(images[b:b + 1], _rng(self.seed, epoch, 1, j))
                                     for b, j in enumerate(index.tolist())])
        labels = np.asarray(self.dataset.labels[index], dtype=np.int64)
        return normalize(images, self.mean, self.std), labels


def _rng(seed, *key):
    """An independent generator for each key, e.g. (epoch, 0) or (epoch, 1, image index).

    ``spawn_key`` keeps the streams apart: seeding with the list
    ``[seed, *key]`` would not, as trailing zeros do not change the seed.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


# --------------------------------------------------------------------------- #
# Background prefetch
# --------------------------------------------------------------------------- #
_ITEM, _END, _ERROR = "item", "end", "error"


def _prefetch(items):
    """Yield from the iterator ``items`` while a thread builds the next item.

    An exception in the thread is raised again here, in the caller's thread.
    Closing this generator (the loop over it ended early) stops the thread and
    waits for it, so no thread outlives the loop.
    """
    slot = queue.Queue(maxsize=1)   # one item ready ahead of the caller
    stop = threading.Event()

    def put(message):
        # Wait for the caller to take the previous item, unless it has left.
        while not stop.is_set():
            try:
                slot.put(message, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def work():
        try:
            for item in items:
                if not put((_ITEM, item)):
                    return
            put((_END, None))
        except BaseException as err:  # handed to the caller, who raises it
            put((_ERROR, err))

    thread = threading.Thread(target=work, name="resnet_np-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slot.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            yield value
    finally:
        stop.set()
        # Bounded: when an abandoned loop is finalised by the garbage collector,
        # the collector may run while this thread holds the queue's lock, and
        # the worker, blocked on that lock, could then never finish. It sees
        # ``stop`` within 0.05 s otherwise, and is a daemon either way.
        thread.join(timeout=1.0)
