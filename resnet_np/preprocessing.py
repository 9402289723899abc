"""How an image becomes the network input a set of weights expects: one policy, which
``predict`` applies (:func:`resnet_np.predict.preprocessor`) and the ONNX export records
in its file's metadata (:mod:`resnet_np.onnx`).

    weights trained by resnet-np      resize the image to their training size (bilinear),
    (their config has a mean and an   scale to [0, 1], (x - mean) / std with their own
    image_size)                       mean and std, as their evaluation did
    other weights (torchvision's)     ImageNet's evaluation transform: shorter side to 256,
                                      centre crop 224 (at another input size the crop keeps
                                      that ratio: shorter side to round(max(H, W) * 256 / 224)),
                                      ImageNet's mean and std
    an exported file's metadata       what it records (``resize_shorter`` present: resize
                                      the shorter side, then centre-crop)
"""
IMAGENET_RESIZE, IMAGENET_CROP = 256, 224


def trained_here(config):
    """Whether ``config`` is that of a resnet-np training run, with its size, mean and std."""
    return "mean" in config and "image_size" in config


def image_policy(config, input_size=None):
    """How to feed the weights of ``config`` an image: a dict of ``image_size`` [H, W],
    ``mean`` and ``std`` (per channel, in [0, 1] pixel units), and ``resize_shorter`` (an
    int) when the shorter side is resized and the image centre-cropped rather than resized
    whole. ``input_size`` (H, W) replaces the size the weights were trained at."""
    from .data import IMAGENET_MEAN, IMAGENET_STD
    if "resize_shorter" in config:          # an exported file's metadata: as recorded
        return {key: config[key] for key in ("image_size", "resize_shorter", "mean", "std")}
    if trained_here(config):
        h, w = _height_width(config["image_size"] if input_size is None else input_size)
        return {"image_size": [h, w], "mean": list(config["mean"]), "std": list(config["std"])}
    h, w = _height_width(IMAGENET_CROP if input_size is None else input_size)
    resize = round(max(h, w) * IMAGENET_RESIZE / IMAGENET_CROP)
    return {"image_size": [h, w], "resize_shorter": resize, "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD)}


def _height_width(size):
    """An int or a pair of ints -> (H, W), or a one-line error."""
    if isinstance(size, int):
        return size, size
    try:
        h, w = size
        return int(h), int(w)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be an int or a pair (H, W), got {size!r}") from None
