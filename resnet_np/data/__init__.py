"""Datasets, augmentation and batching, in NumPy.

    dataset.py      Dataset: uint8 images (N, H, W, 3), int64 labels, class names
    registry.py     load_dataset(name, data_dir, split, image_size)
    digits.py       scikit-learn's 8x8 digits at 32x32: the dataset needing no download
    cifar.py        CIFAR-10 / CIFAR-100 from the official python-version files
    folder.py       one subfolder of images per class
    transforms.py   random crop and flip, normalize, ImageNet preprocessing, load_image
    loader.py       DataLoader: seeded, resumable, prefetching mini-batches

``imagenet_classes()`` gives the 1,000 class names of the ImageNet weights.
"""
import functools
from importlib import resources

from .cifar import CIFAR_URL, load_cifar10, load_cifar100
from .dataset import Dataset
from .dataset import stratified_split
from .digits import load_digits
from .folder import list_classes, load_image_folder
from .loader import DataLoader
from .registry import DATASETS, DEFAULT_DATA_DIR, DEFAULT_IMAGE_SIZE, load_dataset
from .transforms import (CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD,
                         cifar_augment, imagenet_preprocess, load_image, normalize,
                         random_crop, random_flip, resize_images)


def imagenet_classes():
    """The 1,000 ImageNet class names; ``imagenet_classes()[k]`` names output ``k``.

    Read from ``imagenet_classes.txt`` beside this module, which holds
    ``torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]``,
    one per line.
    """
    return list(_read_imagenet_classes())


@functools.lru_cache(maxsize=None)
def _read_imagenet_classes():
    text = resources.files(__name__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR_URL", "DATASETS", "DEFAULT_DATA_DIR",
    "DEFAULT_IMAGE_SIZE", "DataLoader", "Dataset", "IMAGENET_MEAN", "IMAGENET_STD",
    "cifar_augment", "imagenet_classes", "imagenet_preprocess", "list_classes",
    "load_cifar10", "load_cifar100", "load_dataset", "load_digits", "load_image",
    "load_image_folder", "normalize", "random_crop", "random_flip", "resize_images",
    "stratified_split",
]
