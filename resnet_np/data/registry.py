"""Load any dataset of this package by name."""
import os
from pathlib import Path

import numpy as np

from .cifar import load_cifar10, load_cifar100
from .dataset import Dataset, check_split, stratified_split
from .digits import load_digits
from .folder import count_images, list_classes, load_image_folder
from .transforms import resize_images

DATASETS = ("digits", "cifar10", "cifar100", "folder")
DEFAULT_DATA_DIR = "data"
DEFAULT_IMAGE_SIZE = 32


def load_dataset(name, data_dir=None, split="train", image_size=None, limit=None, seed=0):
    """Load the ``split`` of dataset ``name``.

    Parameters
    ----------
    name : {"digits", "cifar10", "cifar100", "folder"}
        ``"digits"``: scikit-learn's handwritten digits, no download, no
        ``data_dir`` (see :mod:`resnet_np.data.digits`).
        ``"cifar10"``, ``"cifar100"``: the official archives or their extracted
        folders in ``data_dir`` (see :mod:`resnet_np.data.cifar`).
        ``"folder"``: one subfolder per class. The training images are read
        from ``data_dir/train`` and the test images from ``data_dir/test``;
        when neither folder exists, a seeded 20% of each class of
        ``data_dir`` is held out as the test split (the same images every
        time; the dataset's ``note`` says so). Having only one of train/ and
        test/ is an error.
    data_dir : str or path-like, optional
        Defaults to ``"data"`` (relative to the working directory) for CIFAR;
        required for ``"folder"``.
    split : {"train", "test"}
    image_size : int, optional
        Side of the square images returned; defaults to 32. CIFAR images are
        resized (bilinear) only when another size is asked for.
    limit : int, optional
        Keep a seeded random ``limit`` images only (in their original order),
        chosen before the digits and CIFAR images are resized, so that a few
        large images do not need memory for all of them.
    seed : int
        Seed of the ``limit`` images' choice.

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        Among others: the resized images would need more memory than the
        machine has (checked before allocating; the message names the size and
        the bytes).
    """
    check_split(split)
    size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
    if size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if name in ("digits", "cifar10", "cifar100"):
        if name == "digits":
            dataset = load_digits(split, image_size=DIGITS_SIZE)    # resized below
        else:
            load = load_cifar10 if name == "cifar10" else load_cifar100
            dataset = load(DEFAULT_DATA_DIR if data_dir is None else data_dir, split)
        dataset = take(dataset, limit, seed)
        check_images_fit(len(dataset), size, dataset.name)
        dataset.images = resize_images(dataset.images, size)
        return dataset
    if name == "folder":
        return take(_load_folder(data_dir, split, size), limit, seed)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


DIGITS_SIZE = 8       # scikit-learn's digits are 8x8 scans


def take(dataset, limit, seed):
    """A seeded random ``limit`` images of ``dataset``, kept in their original order
    (the whole dataset when ``limit`` is None or not smaller)."""
    if limit is None or limit >= len(dataset):
        return dataset
    index = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:limit])
    return Dataset(dataset.images[index], dataset.labels[index], dataset.classes,
                   name=f"{dataset.name}[{limit} images]", note=dataset.note)


def check_images_fit(count, size, what):
    """Raise a ValueError if ``count`` uint8 RGB images of ``size`` x ``size`` cannot fit
    in this machine's memory (before trying: NumPy's own error is a traceback)."""
    need = count * size * size * 3
    have = physical_memory()
    if have is not None and need > have:
        raise ValueError(f"image size {size}: {count} images of {what} at {size}x{size} "
                          f"need {_bytes(need)} ({need:,} bytes), more than this machine's "
                          f"{_bytes(have)} of memory; use a smaller image size (or --limit)")


def physical_memory():
    """Bytes of memory of this machine, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def _bytes(count):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "bytes" else f"{count} bytes"
        count /= 1024


def _load_folder(data_dir, split, size):
    if data_dir is None:
        raise ValueError("dataset 'folder' needs data_dir: a folder with one subfolder "
                         "per class, or with train/ and test/ folders laid out that way")
    data_dir = Path(data_dir)
    train, test = data_dir / "train", data_dir / "test"
    if not train.is_dir() and not test.is_dir():
        check_images_fit(count_images(data_dir), size, str(data_dir))
        return _held_out_split(load_image_folder(data_dir, size), data_dir, split)
    if not (train.is_dir() and test.is_dir()):
        raise ValueError(f"{data_dir} has only one of train/ and test/; give both, "
                         f"or neither to use {data_dir} for both splits")
    # Labels are indices into the sorted class names: both splits must list
    # the same classes, or the same label would name different classes.
    if list_classes(train) != list_classes(test):
        raise ValueError(f"{train} and {test} must have the same class subfolders; got "
                         f"{list_classes(train)} and {list_classes(test)}")
    folder = train if split == "train" else test
    check_images_fit(count_images(folder), size, f"{data_dir}/{split}")
    return load_image_folder(folder, size, name=f"{data_dir}/{split}")


# The share of each class held out for testing when a folder has no test/ subfolder.
HELD_OUT_FRACTION, HELD_OUT_SEED = 0.2, 0


def _held_out_split(dataset, data_dir, split):
    """The ``split`` of a seeded, stratified 80/20 split of ``dataset``."""
    train, test = stratified_split(dataset.labels, HELD_OUT_FRACTION, HELD_OUT_SEED)
    if len(test) == 0 or len(train) == 0:
        raise ValueError(f"{data_dir} has no train/ and test/ subfolders and too few images "
                         f"({len(dataset)}) to hold out {HELD_OUT_FRACTION:.0%} of a class for "
                         "testing; add images, or give train/ and test/ folders")
    index = train if split == "train" else test
    note = (f"{data_dir} has no train/ and test/ subfolders: a seeded {HELD_OUT_FRACTION:.0%} "
            f"of each class ({len(test)} of {len(dataset)} images) is held out for testing, "
            f"the other {len(train)} images are for training")
    return Dataset(dataset.images[index], dataset.labels[index], dataset.classes,
                   name=f"{data_dir}/{split}", note=note)
