"""The one shape every dataset of this package has: images, labels, class names.

Image notation, used in every docstring of this package:

    N       number of images         H, W    height and width
    B       batch size               3       RGB channels

Datasets keep their images as uint8 (N, H, W, 3), channels last, as image files
and Pillow store them: four times smaller than float32 and what the augmentations
work on. :func:`~resnet_np.data.transforms.normalize` turns a batch into the
float32 (B, 3, H, W) that the network takes.
"""
import hashlib
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "test")


@dataclass
class Dataset:
    """Images and labels held in memory.

    Attributes
    ----------
    images : ndarray of uint8, shape (N, H, W, 3)
        RGB images, channels last.
    labels : ndarray of int64, shape (N,)
        Class index of each image, in ``range(len(classes))``.
    classes : list of str
        Class names; ``classes[k]`` names label ``k``.
    name : str
        Where the data came from, e.g. ``"cifar10/train"``.
    note : str
        What a user should know about how the split was made (empty if nothing).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list
    name: str
    note: str = ""

    def __post_init__(self):
        images, labels = self.images, self.labels
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"{self.name}: images must be uint8 (N, H, W, 3), "
                             f"got {images.dtype} {images.shape}")
        if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
            raise ValueError(f"{self.name}: labels must be int64 ({len(images)},), "
                             f"got {labels.dtype} {labels.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError(f"{self.name}: labels must lie in [0, {len(self.classes)}), "
                             f"got [{labels.min()}, {labels.max()}]")

    def __len__(self):
        return len(self.labels)

    def fingerprint(self):
        """A short hex digest of the images, labels and class names: equal digests mean
        the same data, in the same order (BLAKE2b; about 0.2 s for CIFAR's 150 MB)."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update(repr((self.images.shape, list(self.classes))).encode())
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        digest.update(np.ascontiguousarray(self.images).data)
        return digest.hexdigest()

    def __repr__(self):
        return (f"Dataset({self.name!r}, {len(self)} images of "
                f"{self.images.shape[1]}x{self.images.shape[2]}, {len(self.classes)} classes)")


def check_split(split):
    """Raise a ValueError unless ``split`` is ``"train"`` or ``"test"``."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def stratified_split(labels, test_fraction, seed):
    """Split indices so that each class gives ``round(test_fraction * count)`` to test.

    Parameters
    ----------
    labels : ndarray of int, shape (N,)
    test_fraction : float in (0, 1)
    seed : int

    Returns
    -------
    train, test : ndarray of int64
        Sorted, disjoint indices covering ``range(N)``.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        test.append(rng.permutation(members)[:round(test_fraction * len(members))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test
