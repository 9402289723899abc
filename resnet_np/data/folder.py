"""A dataset read from a folder of images, one subfolder per class.

    root/
        cat/  001.jpg  002.png ...
        dog/  a.jpg ...

Class names are the subfolder names in sorted order, so ``cat`` is label 0 and
``dog`` label 1. Every file in a class folder must be an image Pillow reads
(JPEG, PNG, ...); names starting with ``.`` (``.DS_Store``, ...) are skipped.
All images are loaded into memory, converted to RGB and resized to a square,
so this suits small datasets.
"""
from pathlib import Path

import numpy as np

from .dataset import Dataset
from .transforms import load_image, pil_image_module


def list_classes(root):
    """Sorted names of the class subfolders of ``root``.

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder.
    ValueError
        ``root`` has no subfolders.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"image folder {root} has no class subfolders; expected "
                         f"{root}/<class name>/<image files>")
    return classes


def count_images(root):
    """How many image files ``root/<class>/`` holds (names starting with ``.`` skipped)."""
    root = Path(root)
    return sum(len(_image_files(root / name)) for name in list_classes(root))


def _image_files(folder):
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def load_image_folder(root, image_size=32, name=None):
    """Load every image under ``root/<class>/`` into a :class:`Dataset`.

    Parameters
    ----------
    root : str or path-like
    image_size : int
        Images are resized (bilinear, aspect ratio not kept) to
        ``image_size`` x ``image_size``.
    name : str, optional
        The dataset's name; defaults to ``root``.

    Returns
    -------
    Dataset
        uint8 images (N, image_size, image_size, 3), files in sorted order
        within each class.

    Raises
    ------
    FileNotFoundError
        ``root`` does not exist.
    ValueError
        No class subfolders or only one (a classifier of one class learns
        nothing), an empty class folder, or a file that is not an image.
    """
    root = Path(root)
    classes = list_classes(root)
    files = [_image_files(root / class_name) for class_name in classes]
    for class_name, listed in zip(classes, files):
        if not listed:
            raise ValueError(f"class folder {root / class_name} has no image files")
    if len(classes) < 2:
        raise ValueError(f"image folder {root} has one class subfolder ({classes[0]}); a "
                         "classifier needs at least 2 classes, one subfolder of images each")
    Image = pil_image_module()
    images, labels = [], []
    for label, listed in enumerate(files):
        for path in listed:
            image = load_image(path).resize((image_size, image_size), Image.BILINEAR)
            images.append(np.asarray(image))
            labels.append(label)
    return Dataset(np.stack(images), np.array(labels, dtype=np.int64), classes,
                   name=str(root) if name is None else name)
