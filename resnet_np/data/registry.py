"""Load any dataset of this package by name."""
from pathlib import Path

from .cifar import load_cifar10, load_cifar100
from .dataset import Dataset, check_split, stratified_split
from .digits import load_digits
from .folder import list_classes, load_image_folder
from .transforms import resize_images

DATASETS = ("digits", "cifar10", "cifar100", "folder")
DEFAULT_DATA_DIR = "data"
DEFAULT_IMAGE_SIZE = 32


def load_dataset(name, data_dir=None, split="train", image_size=None):
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

    Returns
    -------
    Dataset
    """
    check_split(split)
    size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
    if size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if name == "digits":
        return load_digits(split, image_size=size)
    if name in ("cifar10", "cifar100"):
        load = load_cifar10 if name == "cifar10" else load_cifar100
        dataset = load(DEFAULT_DATA_DIR if data_dir is None else data_dir, split)
        dataset.images = resize_images(dataset.images, size)
        return dataset
    if name == "folder":
        return _load_folder(data_dir, split, size)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _load_folder(data_dir, split, size):
    if data_dir is None:
        raise ValueError("dataset 'folder' needs data_dir: a folder with one subfolder "
                         "per class, or with train/ and test/ folders laid out that way")
    data_dir = Path(data_dir)
    train, test = data_dir / "train", data_dir / "test"
    if not train.is_dir() and not test.is_dir():
        return _held_out_split(load_image_folder(data_dir, size), data_dir, split)
    if not (train.is_dir() and test.is_dir()):
        raise ValueError(f"{data_dir} has only one of train/ and test/; give both, "
                         f"or neither to use {data_dir} for both splits")
    # Labels are indices into the sorted class names: both splits must list
    # the same classes, or the same label would name different classes.
    if list_classes(train) != list_classes(test):
        raise ValueError(f"{train} and {test} must have the same class subfolders; got "
                         f"{list_classes(train)} and {list_classes(test)}")
    return load_image_folder(train if split == "train" else test, size,
                             name=f"{data_dir}/{split}")


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
