"""Image loading, resizing, augmentation and normalisation on NumPy arrays.

Augmentations take a uint8 batch (B, H, W, 3) and a ``numpy.random.Generator``
and return a new batch; the caller owns the generator, so a seeded run is
reproducible. :func:`normalize` is the last step: uint8 (B, H, W, 3) in,
float32 (B, 3, H, W) out.
"""
import numpy as np

# Per-channel mean and standard deviation of the CIFAR-10 training pixels, in
# [0, 1]. (The often-copied std (0.2023, 0.1994, 0.2010) is not the pixel std.)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# The values torchvision's ImageNet weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- #
# Files and sizes
# --------------------------------------------------------------------------- #
def pil_image_module():
    """Return ``PIL.Image``; Pillow is optional, so say how to get it if missing."""
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("reading and resizing images needs Pillow: pip install pillow") from err
    return Image


def load_image(path):
    """Open an image file (JPEG, PNG, TIFF... anything Pillow reads) as 8-bit RGB.

    16-bit and 32-bit integer images are scaled from their range (0..65535)
    to 0..255, and float images from 0..1, rather than clipped as Pillow's
    ``convert("RGB")`` would (it turns most 16-bit pictures white).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, pixels loaded (the file is closed).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is not an image Pillow can read, it is truncated, it is too
        large to be safe (a "decompression bomb"), or its float pixels lie
        outside [0, 1].
    """
    Image = pil_image_module()
    try:
        with Image.open(path) as image:
            return to_rgb(image, path)  # decodes the whole file
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: the image is too large to open safely ({err})") from None
    except (OSError, SyntaxError) as err:
        # OSError includes UnidentifiedImageError (not an image) and truncated
        # data; a few broken headers raise SyntaxError.
        raise ValueError(f"{path}: not a readable image file ({err})") from err


# The largest value of each integer mode Pillow opens wide images in.
_WIDE_INTEGER_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535,
                       "I": 65535}


def to_rgb(image, source="image"):
    """An 8-bit RGB copy of a PIL image, with wide pixel ranges scaled to 0..255.

    8-bit modes (L, P, RGBA, CMYK, ...) go through ``convert("RGB")``; grey
    16-bit (and 32-bit integer, as older Pillows open 16-bit PNGs) images are
    scaled by 255/65535, float ones (mode F) by 255 from [0, 1].
    """
    if image.mode not in _WIDE_INTEGER_MODES and image.mode != "F":
        return image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
        if not (np.isfinite(pixels).all() and 0 <= low and high <= 1):
            raise ValueError(f"{source}: a float image must have its pixels in [0, 1], got "
                             f"[{low:g}, {high:g}]")
        scale = 255.0
    else:
        top = _WIDE_INTEGER_MODES[image.mode]
        if pixels.size and (pixels.min() < 0 or pixels.max() > top):
            raise ValueError(f"{source}: a {image.mode} image must have its pixels in "
                             f"[0, {top}], got [{pixels.min():g}, {pixels.max():g}]")
        scale = 255.0 / top
    grey = np.rint(pixels * scale).astype(np.uint8)
    return pil_image_module().fromarray(grey).convert("RGB")    # uint8 (H, W): mode L


def resize_images(images, size):
    """Resize every image to ``size`` x ``size`` with bilinear interpolation.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W, 3)
    size : int

    Returns
    -------
    ndarray of uint8, shape (N, size, size, 3)
        The input itself when it already has that size.
    """
    if images.shape[1:3] == (size, size):
        return images
    Image = pil_image_module()
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = Image.fromarray(image).resize((size, size), Image.BILINEAR)
    return out


# --------------------------------------------------------------------------- #
# Augmentation
# --------------------------------------------------------------------------- #
def random_crop(images, rng, padding=4, size=None):
    """Pad with zeros on every side, then crop each image at a random place.

    Parameters
    ----------
    images : ndarray, shape (B, H, W, C)
    rng : numpy.random.Generator
    padding : int
        Zeros added above, below, left and right.
    size : int, optional
        Side of the square crop; defaults to H (which must then equal W), so
        the output has the input's shape: the CIFAR "pad 4, crop 32" recipe.

    Returns
    -------
    ndarray, shape (B, size, size, C)
        Image ``b`` is ``padded[b, top:top + size, left:left + size]`` with
        ``top`` and ``left`` drawn uniformly from ``[0, H + 2*padding - size]``.
    """
    n, h, w, _ = images.shape
    size = h if size is None else size
    if size > min(h, w) + 2 * padding:
        raise ValueError(f"crop {size} is larger than the padded image "
                         f"{h + 2 * padding}x{w + 2 * padding}")
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    top = rng.integers(0, h + 2 * padding - size + 1, size=n)
    left = rng.integers(0, w + 2 * padding - size + 1, size=n)
    rows = top[:, None] + np.arange(size)     # (B, size)
    cols = left[:, None] + np.arange(size)    # (B, size)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_flip(images, rng, p=0.5):
    """Mirror each image left-right with probability ``p``.

    Parameters
    ----------
    images : ndarray, shape (B, H, W, C)
    rng : numpy.random.Generator
    p : float

    Returns
    -------
    ndarray, shape (B, H, W, C)
        A copy; the input is not changed.
    """
    flip = rng.random(len(images)) < p
    out = images.copy()
    out[flip] = images[flip, :, ::-1]
    return out


def cifar_augment(images, rng):
    """The standard CIFAR training augmentation: pad-4 random crop, then random flip."""
    return random_flip(random_crop(images, rng, padding=4), rng)


# --------------------------------------------------------------------------- #
# To network input
# --------------------------------------------------------------------------- #
def normalize(images, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    """Scale uint8 pixels to [0, 1], normalise each channel, go channels-first.

    Parameters
    ----------
    images : ndarray of uint8, shape (B, H, W, 3)
    mean, std : sequence of 3 floats
        Per-channel statistics in [0, 1] units, e.g. :data:`CIFAR10_MEAN`.

    Returns
    -------
    ndarray of float32, shape (B, 3, H, W)
        ``(images / 255 - mean) / std``, computed in float32 in that order, as
        torchvision's ``ToTensor`` then ``Normalize`` do. The array is a
        transposed view of a channels-last buffer (PyTorch's ``channels_last``
        memory format), the layout the convolutions of ``resnet_np.functional``
        work in; ``np.ascontiguousarray`` makes it plain (B, 3, H, W) if needed.
    """
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    x = images.astype(np.float32) / np.float32(255)
    x -= mean
    x /= std
    return x.transpose(0, 3, 1, 2)


def imagenet_preprocess(image, resize_size=256, crop_size=224,
                        mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Evaluation preprocessing of torchvision's ImageNet weights, exactly.

    Equal to ``Compose([Resize(256), CenterCrop(224), ToTensor(),
    Normalize(IMAGENET_MEAN, IMAGENET_STD)])`` applied to a PIL image, which is
    also what ``ResNet50_Weights.IMAGENET1K_V1.transforms()`` does.

    Parameters
    ----------
    image : PIL.Image.Image
        Converted to RGB first (torchvision would keep a grey image 1-channel).
    resize_size : int
        The shorter side is resized to this; the longer side to
        ``int(resize_size * long / short)`` (truncated, as torchvision does).
    crop_size : int or (int, int)
        Side, or (height, width), of the centre crop; must not exceed ``resize_size``.
    mean, std : sequence of 3 floats

    Returns
    -------
    ndarray of float32, shape (3, crop height, crop width)
    """
    crop_h, crop_w = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
    if max(crop_h, crop_w) > resize_size:
        raise ValueError(f"crop {crop_h}x{crop_w} exceeds the resized shorter side {resize_size}")
    Image = pil_image_module()
    image = to_rgb(image)
    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_short, new_long = resize_size, int(resize_size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        # Pillow's BILINEAR filter widens its support when shrinking: that is
        # the antialiasing torchvision's Resize gets on a PIL image.
        image = image.resize((new_w, new_h), Image.BILINEAR)
    # Python's round() (half to even), as torchvision's center_crop uses.
    top = int(round((new_h - crop_h) / 2.0))
    left = int(round((new_w - crop_w) / 2.0))
    pixels = np.asarray(image)[top:top + crop_h, left:left + crop_w]
    return normalize(pixels[None], mean, std)[0]
