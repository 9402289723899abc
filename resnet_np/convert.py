"""torchvision weights (``.pth``) to resnet-np weights (``.npz``), and loading either.

torchvision's state_dict keys are resnet-np's parameter names, so converting
is copying arrays: PyTorch is needed once, to read the ``.pth``; the ``.npz``
it writes loads with NumPy alone.

    resnet-np convert resnet50-0676ba61.pth resnet50.npz

The architecture is read from the weights themselves (block type and count,
group width, number of classes, stem), so no model name is needed.
"""
import pickle
import re
from pathlib import Path

import numpy as np

from .models import MODELS
from .training.checkpoint import (CheckpointError, check_model_config, load_checkpoint,
                                  model_from_config, read_npz, restore_model, save_checkpoint)

TORCH_SUFFIXES = (".pth", ".pt")
# Terminal colour codes that torch puts in some of its messages.
_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# torch.load(weights_only=True) failing: on a pickle that would build other objects
# ("unsupported GLOBAL posix.system"), or on a damaged one. Its message advises
# weights_only=False, which would run them: that advice is never shown.
_WEIGHTS_ONLY = re.compile(r"weights.only load failed", re.IGNORECASE)
_UNSAFE_GLOBAL = re.compile(r"GLOBAL:?\s+([\w.]+)")


def _weights_only_detail(text):
    """The line of torch's weights-only error that says what was wrong, without its advice."""
    for line in text.splitlines():
        line = line.strip()
        if line and not re.search(r"weights.only|Check the documentation|Please file", line,
                                  re.IGNORECASE):
            return line.removeprefix("WeightsUnpickler error:").strip()
    return "a pickle that torch.load(weights_only=True) refuses"

# (block counts of layer1..4, bottleneck?) -> candidate names; ties are broken
# by the width of layer1's 3x3 convolution (see _infer_model_name).
_LAYOUTS = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34",
            ((3, 4, 6, 3), True): "resnet50", ((3, 4, 23, 3), True): "resnet101",
            ((3, 8, 36, 3), True): "resnet152"}


def load_torch_state_dict(path):
    """The state_dict in a PyTorch checkpoint, as NumPy arrays.

    Accepts a bare state_dict or a dict holding one under ``"state_dict"`` or
    ``"model"``; a ``module.`` prefix (left by DataParallel) is dropped. The
    file is read with ``weights_only=True``, so it cannot run code.

    Raises
    ------
    ImportError
        PyTorch is not installed.
    FileNotFoundError, ValueError
        No such file; not a PyTorch file, or no state_dict in it.
    """
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"reading {path} needs PyTorch (pip install torch); or convert it "
                          "to .npz with `resnet-np convert` on a machine that has it") from err
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        text = _ANSI_CODES.sub("", str(err))
        if isinstance(err, pickle.UnpicklingError) and _WEIGHTS_ONLY.search(text):
            found = _UNSAFE_GLOBAL.search(text)
            if found:
                raise ValueError(f"{path}: refused as unsafe: it asks to build {found.group(1)}, "
                                 "besides tensors, and unpickling it could run any code; "
                                 "resnet-np reads only tensors, numbers and strings from a "
                                 ".pth") from None
            raise ValueError(f"{path}: not a readable PyTorch weights file "
                             f"({_weights_only_detail(text)})") from None
        first_line = (text.strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: not a readable PyTorch weights file "
                         f"({type(err).__name__}: {first_line})") from err
    if isinstance(content, dict):
        for key in ("state_dict", "model"):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict) or not any(torch.is_tensor(v) for v in content.values()):
        raise ValueError(f"{path}: holds no state_dict (a dict of tensors, possibly under "
                         f"'state_dict' or 'model')")
    return {key.removeprefix("module."): _to_numpy(torch, value)
            for key, value in content.items() if torch.is_tensor(value)}


def _to_numpy(torch, tensor):
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()  # NumPy has no bfloat16; half precision is widened too
    return tensor.numpy()


def infer_config(state, source="weights"):
    """The model configuration a state_dict belongs to.

    Returns
    -------
    dict
        ``model``, ``num_classes``, ``cifar_stem`` and ``dtype``.

    Raises
    ------
    CheckpointError
        The keys are not those of a ResNet of :data:`resnet_np.models.MODELS`.
    """
    try:
        blocks = tuple(_count_blocks(state, layer) for layer in range(1, 5))
        bottleneck = "layer1.0.conv3.weight" in state
        name = _infer_model_name(state, blocks, bottleneck)
        _check_classifier(state, blocks, bottleneck, name, source)
        return {"model": name, "num_classes": int(state["fc.weight"].shape[0]),
                "cifar_stem": tuple(state["conv1.weight"].shape[2:]) == (3, 3),
                "dtype": _dtype_name(state["conv1.weight"])}
    except KeyError as err:
        raise CheckpointError(f"{source}: not the weights of a ResNet "
                              f"(no {err.args[0]!r} key)") from None


def _check_classifier(state, blocks, bottleneck, name, source):
    """fc.weight must be (num_classes, features), features the width of layer4's output."""
    last = f"layer4.{blocks[3] - 1}.conv{3 if bottleneck else 2}.weight"
    features = int(state[last].shape[0])
    weight = state["fc.weight"]
    if weight.ndim != 2 or weight.shape[1] != features:
        hint = "; transposed?" if weight.ndim == 2 and weight.shape[0] == features else ""
        raise CheckpointError(f"{source}: fc.weight has shape {tuple(weight.shape)}, but a "
                              f"{name}'s classifier takes {features} features: expected "
                              f"(num_classes, {features}){hint}")
    bias = state.get("fc.bias")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise CheckpointError(f"{source}: fc.bias has shape {tuple(bias.shape)} for "
                              f"{weight.shape[0]} classes in fc.weight")


def _dtype_name(array):
    """float64 weights stay float64; anything else loads as float32."""
    return "float64" if np.dtype(array.dtype) == np.float64 else "float32"


def _count_blocks(state, layer):
    count = 0
    while f"layer{layer}.{count}.conv1.weight" in state:
        count += 1
    if count == 0:
        raise KeyError(f"layer{layer}.0.conv1.weight")
    return count


def _infer_model_name(state, blocks, bottleneck):
    """Tell ResNet-50 from ResNeXt-50 32x4d and Wide ResNet-50-2 by layer1's 3x3 conv."""
    name = _LAYOUTS.get((blocks, bottleneck))
    if name is None:
        kind = "Bottleneck" if bottleneck else "BasicBlock"
        raise CheckpointError(f"no model of resnet-np has {kind}s {list(blocks)} "
                              f"(known: {', '.join(MODELS)})")
    if name == "resnet50":
        out_channels, in_per_group = state["layer1.0.conv2.weight"].shape[:2]
        if in_per_group != out_channels:
            name = "resnext50_32x4d"
        elif out_channels == 128:
            name = "wide_resnet50_2"
    return name


def load_weights(path):
    """Model weights and their configuration from a ``.npz`` or ``.pth`` file.

    ``.npz``: a checkpoint of this package (training or converted), or a plain
    archive of state_dict arrays. ``.pth``/``.pt``: torchvision weights (needs
    PyTorch).

    Returns
    -------
    state : dict of str -> ndarray
    config : dict
        At least ``model``, ``num_classes``, ``cifar_stem`` and ``dtype``.
    """
    path = Path(path)
    if path.suffix in TORCH_SUFFIXES:
        state = load_torch_state_dict(path)
        return state, infer_config(state, path)
    arrays = read_npz(path)
    if "meta" in arrays:
        checkpoint = load_checkpoint(path, states=False)   # the optimizer's state is not needed
        return checkpoint.model_state, checkpoint.config
    state = {key.removeprefix("model/"): value for key, value in arrays.items()}
    return state, infer_config(state, path)


def load_pretrained(path, model=None, device="cpu"):
    """A model in eval mode with the weights of ``path``, plus its configuration.

    Parameters
    ----------
    path : str or path-like
        ``.npz`` or ``.pth`` weights (see :func:`load_weights`).
    model : str, optional
        The architecture expected; a file holding another one raises a
        CheckpointError saying which it holds.
    device : {"cpu", "gpu"}
    """
    state, config = load_weights(path)
    if model is not None:
        check_model_config(config, {"model": model}, path)
    net = model_from_config(config, device)
    restore_model(net, state, path, f"a {config['model']} ({config['num_classes']} classes)")
    return net.eval(), config


def check_convertible(src):
    """Refuse an ``.npz`` source: it is already in resnet-np's format."""
    if Path(src).suffix == ".npz":
        raise ValueError(f"{src} is already a resnet-np .npz file: there is nothing to "
                         "convert; use it as it is with evaluate, predict, export or --resume")


def convert(src, dst=None, model=None):
    """Convert torchvision weights ``src`` (``.pth``) to a resnet-np ``.npz``.

    Parameters
    ----------
    src : str or path-like
    dst : str or path-like, optional
        Defaults to ``src`` with the suffix ``.npz``.
    model : str, optional
        The expected architecture; checked against the weights.

    Returns
    -------
    (Path, dict)
        Where the file was written and the model configuration.

    The weights are loaded into a resnet-np model before anything is
    written, so a file that would not load is never produced.
    """
    src = Path(src)
    dst = src.with_suffix(".npz") if dst is None else Path(dst)
    check_convertible(src)
    state = load_torch_state_dict(src)
    config = infer_config(state, src)
    if model is not None:
        check_model_config(config, {"model": model}, src)
    restore_model(model_from_config(config), state, src, f"a {config['model']}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dst, state, config, progress={"source": str(src)})
    return dst, config
