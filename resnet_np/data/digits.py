"""Handwritten digits that need no download: scikit-learn's bundled 8x8 images.

``sklearn.datasets.load_digits`` ships 1,797 real scans (UCI "optical
recognition of handwritten digits"), 10 classes, grey levels 0..16. They are
scaled to 0..255, upsampled bilinearly to 32x32 (the CIFAR size) and repeated
over 3 channels, so a CIFAR network trains on them unchanged.

The train/test split is stratified (each class keeps the same share in both)
and fixed by a seed: 20% of each class (rounded), 1,438 training and 359
test images.
"""
import numpy as np

from .dataset import Dataset, check_split, stratified_split
from .transforms import resize_images


def load_digits(split="train", image_size=32, test_fraction=0.2, seed=0):
    """The scikit-learn digits as 3-channel images.

    Parameters
    ----------
    split : {"train", "test"}
    image_size : int
        Side of the upsampled images.
    test_fraction : float
        Share of each class held out for the test split.
    seed : int
        Seed of the split; the default gives the same split everywhere.

    Returns
    -------
    Dataset
        uint8 images (N, image_size, image_size, 3), int64 labels (N,),
        classes ``["0", ..., "9"]``.

    Raises
    ------
    ImportError
        scikit-learn is not installed.
    """
    check_split(split)
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as err:
        raise ImportError("the 'digits' dataset comes with scikit-learn: "
                          "pip install scikit-learn") from err
    digits = sklearn_load_digits()
    labels = digits.target.astype(np.int64)
    train, test = stratified_split(labels, test_fraction, seed)
    index = train if split == "train" else test

    grey = np.round(digits.images[index] * (255 / 16)).astype(np.uint8)   # (N, 8, 8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)                          # (N, 8, 8, 3)
    return Dataset(resize_images(rgb, image_size), labels[index],
                   [str(d) for d in range(10)], name=f"digits/{split}")
