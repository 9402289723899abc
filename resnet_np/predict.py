"""Classify image files with trained weights: the top-k classes and their probabilities.

    from resnet_np.predict import predict
    predict("cat.jpg", "resnet50.npz")            # torchvision weights, converted
    #   cat.jpg
    #     1. tabby, tabby cat                  54.12%
    #     ...

Weights converted from torchvision get torchvision's ImageNet preprocessing
(resize 256, centre crop 224, ImageNet mean and std) and ImageNet's class
names; a checkpoint trained with resnet-np gets its own image size,
normalisation and class names, all saved in the checkpoint.

:func:`predict_onnx` does the same with a model exported by
:mod:`resnet_np.onnx`, run by onnxruntime: the preprocessing and the class
names come from the file's metadata.
"""
import functools
import os

import numpy as np

from . import backend
from .cli import printable
from .convert import load_pretrained
from .data import imagenet_classes, imagenet_preprocess, load_image, normalize
from .data.transforms import pil_image_module, to_rgb
from .nn import no_grad
from .preprocessing import image_policy


def predict(images, weights, model="resnet50", topk=5, device="cpu", verbose=True,
            batch_size=16):
    """Print and return the ``topk`` most probable classes of each image.

    Parameters
    ----------
    images : str, path-like, or a list of them
        Image files (anything Pillow reads).
    weights : str or path-like
        ``.npz`` weights or checkpoint, or a torchvision ``.pth`` (needs PyTorch).
    model : str or None
        The architecture the weights must be; another one is an error that
        names what the file holds. None accepts whatever the file holds.
    topk : int
        How many classes to report per image (at most the number of classes).
    device : {"cpu", "gpu"}
    verbose : bool
        Print the results to stdout.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    list of list of (int, str, float)
        For each image, ``(class index, class name, probability)`` from the
        most probable down.

    Raises
    ------
    FileNotFoundError, ValueError
        A missing file, or one that is not an image (checked before the
        weights are read).
    CheckpointError
        Weights of another architecture, or with keys missing.
    """
    paths, pictures = _read_images(images, topk)   # a bad file fails before the weights load
    net, config = load_pretrained(weights, model, device)
    preprocess = preprocessor(config)
    batch = np.stack([preprocess(picture) for picture in pictures])        # (N, 3, H, W)
    probs = probabilities(net, batch, device, batch_size)
    return _report(paths, probs, config, topk, verbose)


def predict_onnx(images, path, model=None, topk=5, device="cpu", verbose=True, batch_size=16):
    """:func:`predict` with an exported ONNX file ``path``, run by onnxruntime.

    The preprocessing (image size, resizing, mean and std) and the class
    names are read from the file's metadata (see :mod:`resnet_np.onnx`), so
    the results equal those of the weights it was exported from. ``model``,
    when given, must be the architecture named in the metadata.
    """
    from .onnx import load_session
    paths, pictures = _read_images(images, topk)
    session, config = load_session(path, device)
    if model is not None and config.get("model") != model:
        raise ValueError(f"{path} holds a {config.get('model', 'model of unknown name')}, "
                         f"not a {model}")
    preprocess = preprocessor(config)
    batch = np.stack([preprocess(picture) for picture in pictures])        # (N, 3, H, W)
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: np.ascontiguousarray(chunk)})[0]
                             for chunk in np.split(batch, range(batch_size, len(batch),
                                                                batch_size))])
    return _report(paths, softmax(logits), config, topk, verbose)


def _read_images(images, topk):
    """(paths, PIL images), after checking ``topk``; a missing or bad file is an error."""
    paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    if not paths:
        raise ValueError("predict: no images given")
    if not (isinstance(topk, int) and topk >= 1):
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    return paths, [load_image(path) for path in paths]


def _report(paths, probs, config, topk, verbose):
    classes = class_names(config, probs.shape[1])
    results = [top_classes(p, classes, topk) for p in probs]
    if verbose:
        for path, result in zip(paths, results):
            print(format_prediction(path, result))
    return results


def preprocessor(config):
    """``PIL image -> float32 (3, H, W)`` as the weights of ``config`` expect.

    ``config`` is a checkpoint's configuration or an ONNX file's metadata; the
    policy is :func:`resnet_np.preprocessing.image_policy`'s (the one the ONNX
    export records): resize the shorter side and centre-crop ``image_size``
    where it says ``resize_shorter``, else resize to ``image_size``.
    """
    policy = image_policy(config)
    if "resize_shorter" in policy:
        return functools.partial(resize_and_crop, resize=policy["resize_shorter"],
                                 size=policy["image_size"], mean=policy["mean"],
                                 std=policy["std"])
    return functools.partial(_resize_and_normalize, size=policy["image_size"],
                             mean=policy["mean"], std=policy["std"])


def _resize_and_normalize(image, size, mean, std):
    """The evaluation transform of a resnet-np training run, for one PIL image."""
    Image = pil_image_module()
    h, w = (size, size) if isinstance(size, int) else size
    pixels = np.asarray(to_rgb(image).resize((w, h), Image.BILINEAR))
    return normalize(pixels[None], mean, std)[0]


def resize_and_crop(image, resize, size, mean, std):
    """Shorter side to ``resize``, centre crop ``size`` (H, W), normalise: float32 (3, H, W).

    torchvision's evaluation transform for a crop of any shape
    (:func:`resnet_np.data.imagenet_preprocess`).
    """
    return imagenet_preprocess(image, resize, tuple(size), mean, std)


def class_names(config, count=None):
    """Saved class names, else ImageNet's for 1,000 classes, else the indices.

    ``count``: how many classes the model scores (its output's width; default
    ``config["num_classes"]``). Saved names of another number are an error, as
    is a configuration that gives neither.
    """
    if count is None:
        if "num_classes" not in config:
            raise ValueError("the weights' configuration has no num_classes")
        count = config["num_classes"]
    names = config.get("classes")
    if names:
        if not isinstance(names, (list, tuple)) or len(names) != count:
            given = f"{len(names)} class names" if isinstance(names, (list, tuple)) \
                else f"class names of type {type(names).__name__}"
            raise ValueError(f"the weights' metadata holds {given} for a model of {count} "
                             "classes")
        return [str(name) for name in names]
    if count == 1000:
        return imagenet_classes()
    return [str(k) for k in range(count)]


def probabilities(model, batch, device="cpu", batch_size=16):
    """Softmax of the model's logits, float64 (N, num_classes), in eval mode without gradients."""
    model.eval()
    chunks = []
    with no_grad():
        for start in range(0, len(batch), batch_size):
            x = batch[start:start + batch_size].astype(model.dtype, copy=False)
            chunks.append(backend.to_numpy(model(backend.to_device(x, device))))
    return softmax(np.concatenate(chunks))


def softmax(logits):
    """Softmax of (N, num_classes) logits over the classes, in float64."""
    logits = logits.astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)    # stable: exp of values <= 0
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def top_classes(probs, classes, k):
    """The ``k`` most probable ``(index, name, probability)``; ties by lower index."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), classes[i], float(probs[i])) for i in order]


def format_prediction(path, result):
    """The lines printed for one image; control characters in names are shown escaped."""
    result = [(i, printable(name), p) for i, name, p in result]
    width = max(len(name) for _, name, _ in result)
    lines = [printable(path)]
    for rank, (_, name, p) in enumerate(result, 1):
        lines.append(f"  {rank}. {name:<{width}}  {100 * p:6.2f}%")
    return "\n".join(lines)
