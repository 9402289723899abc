"""The ONNX exporter: a model's module tree, node by node, into an ONNX graph.

See :mod:`resnet_np.onnx` for the operators, the graph's input and output and
its metadata; :mod:`.runtime` runs an exported file.
"""
import json
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import __version__, backend
from ..functional.batchnorm import fold_into_conv
from ..functional.sizes import extent, output_length, same_padding
from ..models.resnet import BasicBlock, Bottleneck, ResNet
from ..preprocessing import image_policy
from ..nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, Module,
                 ReLU, Sequential)

DEFAULT_OPSET = 17
MIN_OPSET = 17
# torch's padding modes and the ONNX Pad mode of each (with the first opset that has it).
PAD_MODES = {"reflect": ("reflect", 17), "replicate": ("edge", 17), "circular": ("wrap", 19)}


def _import_onnx():
    try:
        import onnx
    except ImportError as err:
        raise ImportError("exporting to ONNX needs the onnx package: "
                          "pip install 'resnet-np[onnx]' (or pip install onnx)") from err
    return onnx


class ExportError(ValueError):
    """A module, or an option of one, that the export cannot turn into ONNX."""


class _Value(NamedTuple):
    """A tensor of the graph: its name and shape, (None, C, H, W) or (None, F).

    None stands for a dimension known only at run time (the batch; H and W of
    a graph exported without an input size).
    """
    name: str
    shape: tuple


# --------------------------------------------------------------------------- #
# The graph under construction
# --------------------------------------------------------------------------- #
class _Builder:
    """Collects nodes and initializers while the module tree is walked."""

    def __init__(self, root, opset, fold_batch_norm):
        self.onnx = _import_onnx()
        self.opset, self.fold = opset, fold_batch_norm
        # Each module's state_dict prefix inside the exported model ("" for the root).
        self.prefixes = {id(m): prefix for prefix, m in root.named_modules()}
        self.nodes, self.initializers = [], {}
        self.names = {"input", "logits", "output"}    # the graph's own input and output

    def key(self, module, name):
        """The state_dict key of ``module``'s parameter or buffer ``name``."""
        prefix = self.prefixes.get(id(module), "")
        return f"{prefix}.{name}" if prefix else name

    def label(self, module):
        """The module's path in the model, or its class name at the root."""
        return self.prefixes.get(id(module)) or type(module).__name__

    def constant(self, name, array, doc=None):
        """Add an initializer (float arrays as float32) and return its name.

        A name given twice (a module used twice) must come with the same values.
        """
        array = np.ascontiguousarray(array)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        if name in self.initializers:
            if not np.array_equal(self.onnx.numpy_helper.to_array(self.initializers[name]),
                                  array):
                raise ExportError(f"{name}: one parameter would need two different values "
                                  "(a module used twice, folded with two batch norms?); "
                                  "export without fold_batch_norm")
            return name
        tensor = self.onnx.numpy_helper.from_array(array, name)
        if doc:
            tensor.doc_string = doc
        self.initializers[name] = tensor
        self.names.add(name)
        return name

    def node(self, op, inputs, name, **attributes):
        """Add a node; its one output is named after it (made unique). Returns that name."""
        output, n = name, 1
        while output in self.names:
            output, n = f"{name}:{n}", n + 1
        self.names.add(output)
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [output], name=output,
                                                     **attributes))
        return output

    def emit(self, module, x):
        """The nodes computing ``module(x)``; returns the output value."""
        emitter = EMITTERS.get(type(module))
        if emitter is None:
            kind = type(module).__name__
            raise ExportError(f"{self.label(module)} ({kind}): no ONNX export for a {kind}; "
                              f"the export knows {', '.join(t.__name__ for t in EMITTERS)}")
        return emitter(self, module, x)


def _array(value):
    """A Parameter's or a buffer's array on the host; None stays None."""
    if value is None:
        return None
    return backend.to_numpy(getattr(value, "data", value))


def _pair(value, module_label, option):
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        first, second = value
        return int(first), int(second)
    except (TypeError, ValueError):
        raise ExportError(f"{module_label}: {option}={value!r} is not an int or a pair "
                          "of ints") from None


def _output_size(size, kernel, stride, pad_before, pad_after, dilation, ceil_mode=False):
    """torch's output length of a convolution or pooling window sweep (None stays None;
    0 where the padded input is shorter than the window)."""
    if size is None:
        return None
    return max(0, output_length(size, kernel, stride, (pad_before, pad_after), dilation,
                                ceil_mode))


def _spatial(b, module, x, sizes):
    """The 4-D output shape with ``sizes`` (P, Q), or an error if a size is not positive."""
    if any(s is not None and s < 1 for s in sizes):
        raise ExportError(f"{b.label(module)} ({type(module).__name__}): input size "
                          f"{x.shape[2]}x{x.shape[3]} is too small (the output would be "
                          f"{sizes[0]}x{sizes[1]}); export for larger images")
    return sizes


def _check_rank(b, module, x, rank, layout):
    if len(x.shape) != rank:
        raise ExportError(f"{b.label(module)} ({type(module).__name__}): expects a {rank}-D "
                          f"input {layout}, gets one of shape {_show(x.shape)}")


def _show(shape):
    return "(" + ", ".join("N" if i == 0 else ("?" if d is None else str(d))
                           for i, d in enumerate(shape)) + ")"


# --------------------------------------------------------------------------- #
# Layers
# --------------------------------------------------------------------------- #
def _conv_pads(b, conv, kernel, stride, dilation):
    """(top, left, bottom, right) zero padding of ``conv``: an int, a pair, 'same' or 'valid'."""
    padding = getattr(conv, "padding", 0)
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ExportError(f"{b.label(conv)} (Conv2d): padding={padding!r} is not "
                              "supported (an int, a pair, 'same' or 'valid')")
        if stride != (1, 1):
            raise ExportError(f"{b.label(conv)} (Conv2d): padding='same' needs stride 1, "
                              f"has stride={stride}")
        (top, bottom), (left, right) = (same_padding(k, d) for k, d in zip(kernel, dilation))
        return (top, left, bottom, right)
    ph, pw = _pair(padding, b.label(conv) + " (Conv2d)", "padding")
    return (ph, pw, ph, pw)


def _pad(b, module, x, pads, padding_mode):
    """A Pad node before a convolution whose padding_mode is not 'zeros'."""
    label = f"{b.label(module)} (Conv2d)"
    if padding_mode not in PAD_MODES:
        raise ExportError(f"{label}: padding_mode={padding_mode!r} is not supported "
                          f"(zeros, {', '.join(PAD_MODES)})")
    mode, first_opset = PAD_MODES[padding_mode]
    if b.opset < first_opset:
        raise ExportError(f"{label}: padding_mode={padding_mode!r} needs ONNX Pad mode "
                          f"'{mode}', which opset {first_opset} introduced; export with "
                          f"opset >= {first_opset} (now {b.opset})")
    top, left, bottom, right = pads
    name = b.constant(f"{b.label(module)}/pads", np.array([0, 0, top, left, 0, 0, bottom, right],
                                                           dtype=np.int64))
    n, c, h, w = x.shape
    shape = (n, c, None if h is None else h + top + bottom,
             None if w is None else w + left + right)
    return _Value(b.node("Pad", [x.name, name], f"{b.label(module)}.pad", mode=mode), shape)


def _conv(b, conv, x, bn=None):
    """Conv, with ``bn`` (a BatchNorm2d) folded into its weight and bias when given."""
    label = f"{b.label(conv)} (Conv2d)"
    _check_rank(b, conv, x, 4, "(N, C, H, W)")
    weight, bias = _array(conv.weight), _array(getattr(conv, "bias", None))
    out_channels, in_per_group, kh, kw = weight.shape
    groups = int(getattr(conv, "groups", 1))
    stride = _pair(getattr(conv, "stride", 1), label, "stride")
    dilation = _pair(getattr(conv, "dilation", 1), label, "dilation")
    if x.shape[1] != in_per_group * groups:
        raise ExportError(f"{label}: expects {in_per_group * groups} input channels, gets "
                          f"{x.shape[1]}")
    pads = _conv_pads(b, conv, (kh, kw), stride, dilation)
    padding_mode = getattr(conv, "padding_mode", "zeros")
    if padding_mode != "zeros" and any(pads):
        x = _pad(b, conv, x, pads, padding_mode)
        pads = (0, 0, 0, 0)
    weight_name, bias_name = b.key(conv, "weight"), b.key(conv, "bias")
    if bn is None:
        inputs = [x.name, b.constant(weight_name, weight)]
        if bias is not None:
            inputs.append(b.constant(bias_name, bias))
    else:
        folded_weight, folded_bias = fold_into_conv(
            weight.astype(np.float64), None if bias is None else bias.astype(np.float64),
            *_batch_norm_arrays(b, bn, out_channels))
        if bias is None:
            bias_name = b.key(bn, "bias")
        inputs = [x.name,
                  b.constant(weight_name, folded_weight,
                             doc=f"{weight_name} with {b.label(bn)} folded in"),
                  b.constant(bias_name, folded_bias,
                             doc=f"the bias of {b.label(conv)} with {b.label(bn)} folded in")]
    n, _, h, w = x.shape
    sizes = (_output_size(h, kh, stride[0], pads[0], pads[2], dilation[0]),
             _output_size(w, kw, stride[1], pads[1], pads[3], dilation[1]))
    shape = (n, out_channels) + _spatial(b, conv, x, sizes)
    name = b.node("Conv", inputs, b.label(conv), kernel_shape=[kh, kw], strides=list(stride),
                  pads=list(pads), dilations=list(dilation), group=groups)
    return _Value(name, shape)


def _batch_norm_arrays(b, bn, channels):
    """(gamma, beta, mean, var, eps) of a batch norm in eval mode, as float64."""
    label = f"{b.label(bn)} (BatchNorm2d)"
    mean, var = _array(getattr(bn, "running_mean", None)), _array(getattr(bn, "running_var", None))
    if not getattr(bn, "track_running_stats", True) or mean is None or var is None:
        raise ExportError(f"{label}: track_running_stats=False normalises with the statistics "
                          "of each batch even in eval mode; the export needs running statistics")
    gamma, beta = _array(getattr(bn, "weight", None)), _array(getattr(bn, "bias", None))
    gamma = np.ones(len(mean)) if gamma is None else gamma.astype(np.float64)
    beta = np.zeros(len(mean)) if beta is None else beta.astype(np.float64)
    if len(mean) != channels:
        raise ExportError(f"{label}: normalises {len(mean)} channels, gets {channels}")
    return gamma, beta, mean.astype(np.float64), var.astype(np.float64), float(bn.eps)


def _batch_norm(b, bn, x):
    _check_rank(b, bn, x, 4, "(N, C, H, W)")
    gamma, beta, mean, var, eps = _batch_norm_arrays(b, bn, x.shape[1])
    names = []
    for field, value in (("weight", gamma), ("bias", beta), ("running_mean", mean),
                         ("running_var", var)):
        present = _array(getattr(bn, field, None)) is not None
        # affine=False: constant ones and zeros, named apart from the state_dict keys
        names.append(b.constant(b.key(bn, field) if present else f"{b.label(bn)}/{field}",
                                value))
    name = b.node("BatchNormalization", [x.name] + names, b.label(bn), epsilon=eps)
    return _Value(name, x.shape)


def _relu(b, relu, x):
    return _Value(b.node("Relu", [x.name], b.label(relu)), x.shape)


def _max_pool(b, pool, x):
    label = f"{b.label(pool)} (MaxPool2d)"
    _check_rank(b, pool, x, 4, "(N, C, H, W)")
    if getattr(pool, "return_indices", False):
        raise ExportError(f"{label}: return_indices=True is not supported")
    kernel = _pair(pool.kernel_size, label, "kernel_size")
    stride = _pair(kernel if getattr(pool, "stride", None) is None else pool.stride, label,
                   "stride")
    pads = _pair(getattr(pool, "padding", 0), label, "padding")
    dilation = _pair(getattr(pool, "dilation", 1), label, "dilation")
    ceil_mode = bool(getattr(pool, "ceil_mode", False))
    n, c, h, w = x.shape
    sizes = tuple(_output_size(size, *args, ceil_mode) for size, args in
                  zip((h, w), zip(kernel, stride, pads, pads, dilation)))
    shape = (n, c) + _spatial(b, pool, x, sizes)
    ends = [_ceil_as_padding(label, *args, ceil_mode) for args in
            zip((h, w), sizes, kernel, stride, pads, dilation)]
    name = b.node("MaxPool", [x.name], b.label(pool), kernel_shape=list(kernel),
                  strides=list(stride), pads=list(pads) + [end for end, _ in ends],
                  dilations=list(dilation), ceil_mode=int(any(ceil for _, ceil in ends)))
    return _Value(name, shape)


def _ceil_as_padding(label, size, out, kernel, stride, pad, dilation, ceil_mode):
    """(padding after, ceil_mode) that give torch's output length ``out`` in ONNX.

    torch's ceil_mode drops a last window that would start in the right
    padding; ONNX's shape rule keeps it, while onnxruntime drops it. Rounding
    down over just enough padding after the input (which max pooling ignores)
    gives ``out`` under both rules; where that padding would reach the kernel
    size (onnxruntime's limit), ceil_mode is kept if both rules agree there.
    """
    if not ceil_mode or size is None:
        return pad, ceil_mode
    needed = (out - 1) * stride + extent(kernel, dilation) - size - pad
    end = max(pad, needed)
    if end < kernel:
        return end, False
    plain = output_length(size, kernel, stride, pad, dilation, ceil_mode=True,
                          drop_late_window=False)
    if plain != out:
        raise ExportError(f"{label}: ceil_mode=True on a length {size} gives {out} windows in "
                          f"torch but {plain} under ONNX's rule; export for another input size")
    return pad, True


def _adaptive_avg_pool(b, pool, x):
    """GlobalAveragePool for (1, 1); AveragePool where torch's cells all have one size."""
    label = f"{b.label(pool)} (AdaptiveAvgPool2d)"
    _check_rank(b, pool, x, 4, "(N, C, H, W)")
    size = pool.output_size
    wanted = (size, size) if size is None or isinstance(size, (int, np.integer)) else tuple(size)
    n, c, h, w = x.shape
    if len(wanted) != 2:
        raise ExportError(f"{label}: output_size={size!r} is not an int or a pair")
    # None keeps that input dimension.
    out = tuple(have if want is None else int(want) for want, have in zip(wanted, (h, w)))
    if out == (1, 1):
        return _Value(b.node("GlobalAveragePool", [x.name], b.label(pool)), (n, c, 1, 1))
    if h is None or w is None:
        raise ExportError(f"{label}: output size {out} needs a known input size; export with "
                          "input_size=(H, W)")
    if h % out[0] or w % out[1]:
        raise ExportError(f"{label}: output size {out[0]}x{out[1]} from a {h}x{w} input has "
                          "cells of unequal sizes, which AveragePool cannot compute; export "
                          "for an input size whose feature map here divides evenly")
    kernel = [h // out[0], w // out[1]]
    if kernel == [1, 1]:
        return x
    name = b.node("AveragePool", [x.name], b.label(pool), kernel_shape=kernel, strides=kernel)
    return _Value(name, (n, c) + out)


def _flatten(b, flatten, x):
    start, end = getattr(flatten, "start_dim", 1), getattr(flatten, "end_dim", -1)
    if start != 1 or end not in (-1, len(x.shape) - 1):
        raise ExportError(f"{b.label(flatten)} (Flatten): start_dim={start}, end_dim={end} "
                          "is not supported (only start_dim=1, end_dim=-1)")
    return _flatten_value(b, x, b.label(flatten))


def _flatten_value(b, x, name):
    """(N, C, H, W) -> (N, C*H*W)."""
    features = None if None in x.shape[1:] else int(np.prod(x.shape[1:]))
    return _Value(b.node("Flatten", [x.name], name, axis=1), (x.shape[0], features))


def _linear(b, linear, x):
    _check_rank(b, linear, x, 2, "(N, features)")
    weight, bias = _array(linear.weight), _array(getattr(linear, "bias", None))
    if x.shape[1] is not None and x.shape[1] != weight.shape[1]:
        raise ExportError(f"{b.label(linear)} (Linear): expects {weight.shape[1]} features, "
                          f"gets {x.shape[1]}")
    inputs = [x.name, b.constant(b.key(linear, "weight"), weight)]
    if bias is not None:
        inputs.append(b.constant(b.key(linear, "bias"), bias))
    return _Value(b.node("Gemm", inputs, b.label(linear), transB=1),
                  (x.shape[0], weight.shape[0]))


# --------------------------------------------------------------------------- #
# Containers, blocks and the ResNet
# --------------------------------------------------------------------------- #
def _conv_bn(b, conv, bn, x):
    """bn(conv(x)): one Conv when folding, else Conv then BatchNormalization."""
    if b.fold and type(conv) is Conv2d and type(bn) is BatchNorm2d:
        return _conv(b, conv, x, bn)
    return b.emit(bn, b.emit(conv, x))


def _sequential(b, sequence, x):
    children = list(sequence)
    i = 0
    while i < len(children):
        if i + 1 < len(children) and type(children[i]) is Conv2d \
                and type(children[i + 1]) is BatchNorm2d:
            x, i = _conv_bn(b, children[i], children[i + 1], x), i + 2
        else:
            x, i = b.emit(children[i], x), i + 1
    return x


def _residual(b, block, out, x):
    """relu(out + shortcut(x)), the end of every block."""
    identity = x if block.downsample is None else b.emit(block.downsample, x)
    if out.shape != identity.shape:
        raise ExportError(f"{b.label(block)} ({type(block).__name__}): the residual branch "
                          f"gives {_show(out.shape)} but the shortcut {_show(identity.shape)}")
    total = b.node("Add", [out.name, identity.name], f"{b.label(block)}.add")
    return _Value(b.node("Relu", [total], f"{b.label(block)}.add.relu"), out.shape)


def _basic_block(b, block, x):
    out = b.emit(block.relu, _conv_bn(b, block.conv1, block.bn1, x))
    out = _conv_bn(b, block.conv2, block.bn2, out)
    return _residual(b, block, out, x)


def _bottleneck(b, block, x):
    out = b.emit(block.relu, _conv_bn(b, block.conv1, block.bn1, x))
    out = b.emit(block.relu2, _conv_bn(b, block.conv2, block.bn2, out))
    out = _conv_bn(b, block.conv3, block.bn3, out)
    return _residual(b, block, out, x)


def _resnet(b, net, x):
    x = b.emit(net.relu, _conv_bn(b, net.conv1, net.bn1, x))
    if net.maxpool is not None:
        x = b.emit(net.maxpool, x)
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        x = b.emit(layer, x)
    x = _flatten_value(b, b.emit(net.avgpool, x), f"{b.label(net)}.flatten")
    return b.emit(net.fc, x)


EMITTERS = {ResNet: _resnet, BasicBlock: _basic_block, Bottleneck: _bottleneck,
            Sequential: _sequential, Conv2d: _conv, BatchNorm2d: _batch_norm, ReLU: _relu,
            MaxPool2d: _max_pool, AdaptiveAvgPool2d: _adaptive_avg_pool, Flatten: _flatten,
            Linear: _linear}


# --------------------------------------------------------------------------- #
# Preprocessing recorded in the metadata
# --------------------------------------------------------------------------- #
def default_input_size(config):
    """(H, W) the weights of ``config`` expect: their training size, else torchvision's 224."""
    return _pair(image_policy(config)["image_size"], "config", "image_size")


def preprocessing(config, input_size):
    """The metadata entries saying how to turn an image into an ``input_size`` network input:
    :func:`resnet_np.preprocessing.image_policy`, and the same in words."""
    entries = image_policy(config, input_size)
    h, w = entries["image_size"]
    if "resize_shorter" in entries:
        how = (f"shorter side resized to {entries['resize_shorter']} (bilinear), centre crop "
               f"{w}x{h}")
    else:
        how = f"resized to {w}x{h} (bilinear)"
    entries["preprocessing"] = (f"RGB, {how}, scaled to [0, 1], (x - mean) / std per channel, "
                                "(N, 3, H, W) float32")
    return entries


def _metadata(config, input_size, fold, output):
    entries = {key: config[key] for key in ("model", "num_classes", "cifar_stem") if key in config}
    if len(output.shape) == 2 and output.shape[1] is not None:
        entries["num_classes"] = int(output.shape[1])
    if config.get("classes"):
        entries["classes"] = list(config["classes"])
    entries.update(preprocessing(config, input_size))
    entries["batch_norm"] = ("folded into the convolutions" if fold else
                             "BatchNormalization nodes on the running statistics (eval mode)")
    return {key: value if isinstance(value, str) else json.dumps(value)
            for key, value in entries.items()}


# --------------------------------------------------------------------------- #
# Export
# --------------------------------------------------------------------------- #
def to_onnx(model, input_size=None, dynamic_size=False, opset=DEFAULT_OPSET,
            fold_batch_norm=False, config=None, channels=3):
    """The ONNX ModelProto of ``model``, checked by ``onnx.checker``.

    Parameters
    ----------
    model : Module
        A ResNet, or any tree of the modules listed in the module docstring.
        A model in train mode is exported with eval semantics (a warning says
        so); the model itself is not changed.
    input_size : (int, int), optional
        (H, W) of the input; default: the size of ``config``'s preprocessing
        (the training size of a resnet-np checkpoint, else 224).
    dynamic_size : bool
        Leave H and W dynamic (the graph then runs at any size; the metadata
        still records ``input_size`` for the preprocessing).
    opset : int
        ONNX opset, 17 or newer.
    fold_batch_norm : bool
        Fold each batch norm into the convolution before it.
    config : dict, optional
        The weights' configuration (``load_pretrained``'s second value): its
        model name, class names, mean and std go into the metadata.
    channels : int
        Input channels (3 for a ResNet).

    Raises
    ------
    ExportError
        A module or an option the export does not support, or an input size
        too small for the network; the message names the module.
    """
    return _build(model, input_size, dynamic_size, opset, fold_batch_norm, config, channels)[0]


def _build(model, input_size, dynamic_size, opset, fold_batch_norm, config, channels):
    """(ModelProto, its serialised bytes), checked by onnx.checker."""
    onnx = _import_onnx()
    config = dict(config or {})
    latest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= latest:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {latest} (the newest "
                         f"this onnx {onnx.__version__} knows), got {opset!r}")
    if not isinstance(model, Module):
        raise TypeError(f"to_onnx: expected a resnet_np Module, got {type(model).__name__}")
    size = default_input_size(config) if input_size is None else _pair(input_size, "to_onnx",
                                                                          "input_size")
    if min(size) < 1:
        raise ValueError(f"input_size must be positive, got {input_size!r}")
    _warn_about(model, stacklevel=4)
    b = _Builder(model, opset, fold_batch_norm)
    graph_size = (None, None) if dynamic_size else size
    x = _Value("input", (None, channels) + graph_size)
    out = b.emit(model, x)
    if out.name == x.name:     # a model that changes nothing (an empty Sequential)
        out = _Value(b.node("Identity", [x.name], "identity"), x.shape)
    helper = onnx.helper
    graph = helper.make_graph(
        b.nodes, type(model).__name__,
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                       _dims(x.shape, ["batch", None, "height", "width"]))],
        [helper.make_tensor_value_info("logits" if isinstance(model, ResNet) else "output",
                                       onnx.TensorProto.FLOAT, _dims(out.shape, ["batch"]))],
        list(b.initializers.values()))
    _rename_output(graph, out.name, graph.output[0].name)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="resnet-np",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    proto.doc_string = f"{type(model).__name__} exported by resnet-np {__version__}"
    helper.set_model_props(proto, _metadata(config, size, fold_batch_norm, out))
    data = proto.SerializeToString()   # the checker reads the bytes; export writes them
    onnx.checker.check_model(data)
    return proto, data


def _dims(shape, names):
    """A value's shape for ONNX: a known size, a named dynamic one, or None (unknown)."""
    return [d if d is not None else (names[i] if i < len(names) else None)
            for i, d in enumerate(shape)]


def _rename_output(graph, old, new):
    """Let the last node write the graph's output name directly."""
    for node in graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
        node.input[:] = [new if name == old else name for name in node.input]


def _warn_about(model, stacklevel):
    """Warn (at the caller of to_onnx or export) about what the export changes."""
    if any(m.training for m in model.modules()):
        warnings.warn(f"{type(model).__name__} is in train mode: it is exported with eval "
                      "semantics (batch norm uses the running statistics)",
                      stacklevel=stacklevel)
    weight = next((p for p in model.parameters()), None)
    if weight is not None and weight.dtype != np.float32:
        warnings.warn(f"{type(model).__name__} is {weight.dtype}: it is exported in float32 "
                      "(onnxruntime has no float64 convolution)", stacklevel=stacklevel)


def export(model, path, input_size=None, dynamic_size=False, opset=DEFAULT_OPSET,
           fold_batch_norm=False, config=None, channels=3):
    """Write ``model`` to the ONNX file ``path`` atomically; return the ModelProto.

    The arguments after ``path`` are those of :func:`to_onnx`. The graph is
    built and checked before anything is written, and the file replaces
    ``path`` in one step, so a failed export leaves ``path`` as it was.
    ``path``'s folder must exist.
    """
    from ..training.atomic import atomic_write
    path = Path(path)
    check_output_path(path)
    proto, data = _build(model, input_size, dynamic_size, opset, fold_batch_norm, config,
                         channels)
    with atomic_write(path) as f:
        f.write(data)
    return proto


def check_output_path(path, force=True):
    """Raise a one-line error if ``path`` cannot receive the export."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; give a file name "
                                "such as model.onnx")
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it")


def export_weights(weights, path, model=None, input_size=None, dynamic_size=False,
                   opset=DEFAULT_OPSET, fold_batch_norm=False, force=False):
    """Export the weights file ``weights`` (.npz or .pth) to ``path``.

    Returns ``(proto, config)``. ``model`` names the architecture expected;
    ``force`` allows replacing an existing ``path``. The output path is
    checked before the weights are read.
    """
    from ..convert import load_pretrained
    _import_onnx()
    check_output_path(path, force)
    if Path(weights).suffix == ".onnx":
        raise ValueError(f"{weights} is an ONNX model, not weights: export reads a .npz "
                         "(or a .pth) file; `resnet-np predict --onnx` runs an ONNX model")
    net, config = load_pretrained(weights, model)
    proto = export(net, path, input_size, dynamic_size, opset, fold_batch_norm, config)
    return proto, config
