"""ResNet-18/34/50/101/152, ResNeXt-50 and Wide ResNet-50, as torchvision builds them.

    stem     conv1 7x7/2 (or 3x3/1 for 32x32 images) - bn1 - relu - maxpool 3x3/2
    layer1   blocks at 64 channels (x expansion), stride 1
    layer2   128, stride 2     layer3  256, stride 2     layer4  512, stride 2
    head     avgpool to 1x1 - flatten - fc

A BasicBlock is two 3x3 convolutions; a Bottleneck is 1x1 (reduce) - 3x3 (with
the stride, "ResNet v1.5") - 1x1 (expand by 4). When a block changes the shape,
the shortcut is a 1x1 strided convolution and a batch norm ("downsample").
Every block computes  out = relu(residual(x) + shortcut(x)).

Attribute names follow torchvision, so ``state_dict()`` keys are identical.
"""
import math

import numpy as np

from .. import backend
from .. import functional as F
from ..functional.batchnorm import fold_into_conv
from ..nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Linear, MaxPool2d, Module, ReLU,
                  Sequential)
from ..nn.module import is_grad_enabled, weights_version


def conv3x3(in_planes, out_planes, stride=1, groups=1, dilation=1, dtype="float32"):
    return Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, groups=groups,
                  bias=False, dilation=dilation, dtype=dtype)


def conv1x1(in_planes, out_planes, stride=1, dtype="float32"):
    return Conv2d(in_planes, out_planes, 1, stride=stride, bias=False, dtype=dtype)


def _norm_factory(norm_layer, dtype):
    """``channels -> normalisation module`` in the model's dtype.

    ``norm_layer`` is called as torchvision calls it, ``norm_layer(channels)``
    (BatchNorm2d when None); a module it makes in another dtype is cast to
    ``dtype``, so ``functools.partial(BatchNorm2d, eps=1e-3)`` works as is.
    """
    dtype = backend.resolve_dtype(dtype)
    if norm_layer is None:
        return lambda channels: BatchNorm2d(channels, dtype=dtype)
    if not callable(norm_layer):
        raise TypeError(f"norm_layer must be a callable channels -> module (such as "
                        f"BatchNorm2d), got {norm_layer!r}")

    def make(channels):
        module = norm_layer(channels)
        if not isinstance(module, Module):
            raise TypeError(f"norm_layer({channels}) returned {type(module).__name__}, "
                            "not a resnet_np Module (use resnet_np.nn.BatchNorm2d, not torch's)")
        _cast_floats(module, dtype)
        return module
    return make


def _cast_floats(module, dtype):
    """Cast every floating-point parameter and buffer of ``module`` to ``dtype``."""
    for m in module.modules():
        for p in m._parameters.values():
            if p is not None and p.data.dtype != dtype:
                p.data = p.data.astype(dtype)
        for name, b in list(m._buffers.items()):
            if b is not None and b.dtype.kind == "f" and b.dtype != dtype:
                m.register_buffer(name, b.astype(dtype))


def conv_bn(conv, bn, x):
    """``bn(conv(x))``; in inference (eval mode, under no_grad) one convolution with the
    batch norm folded into its filters, so no batch-norm pass over the activations:

        s  = gamma / sqrt(running_var + eps)            per output channel k
        w' = w * s[k],   b' = (b - running_mean) * s + beta

    The folded (w', b') are kept on the batch norm and computed afresh after anything
    that may change the weights (see :func:`resnet_np.nn.weights_changed`)."""
    if bn.training or is_grad_enabled() or not bn.track_running_stats \
            or not isinstance(bn, BatchNorm2d) or type(conv) is not Conv2d:
        return bn(conv(x))
    version = weights_version()
    folded = bn.__dict__.get("_folded")
    if folded is None or folded[0] != version:
        folded = (version,) + fold_batch_norm(conv, bn)
        object.__setattr__(bn, "_folded", folded)
    return conv(x, folded=folded[1:])


def fold_batch_norm(conv, bn):
    """The (weight, bias) of one convolution equal to ``bn(conv(x))`` with bn in eval mode
    (:func:`resnet_np.functional.batchnorm.fold_into_conv`, in float64), in the conv's dtype."""
    weight, bias = fold_into_conv(
        conv.weight.data, None if conv.bias is None else conv.bias.data,
        None if bn.weight is None else bn.weight.data, None if bn.bias is None else bn.bias.data,
        bn.running_mean, bn.running_var, bn.eps)
    dtype = conv.weight.data.dtype
    return weight.astype(dtype, copy=False), bias.astype(dtype, copy=False)


class _Block(Module):
    """The shortcut and the final add + ReLU shared by both block types."""

    def _finish(self, residual, x, last_norm):
        if self.downsample is None:
            identity = x
        elif not is_grad_enabled() and [type(m) for m in self.downsample] == [Conv2d, BatchNorm2d]:
            identity = conv_bn(self.downsample[0], self.downsample[1], x)   # inference: folded
        else:
            identity = self.downsample(x)
        # A batch norm (or the conv it is folded into) keeps no reference to its output,
        # so the sum may overwrite the residual; another norm_layer's output may be kept.
        out, add_cache = F.add_forward(residual, identity,
                                       inplace=isinstance(last_norm, BatchNorm2d))
        out, relu_cache = F.relu_forward(out)
        self._save((add_cache, relu_cache))
        return out

    def _start_backward(self, dout):
        """Back through the final ReLU and add: -> (d residual branch, d shortcut)."""
        add_cache, relu_cache = self._pop_cache()
        dsum = F.relu_backward(dout, relu_cache)
        return F.add_backward(dsum, add_cache)

    def _shortcut_backward(self, dshortcut, dx):
        if self.downsample is not None:
            dshortcut = self.downsample.backward(dshortcut)
        return dx + dshortcut


class BasicBlock(_Block):
    """conv3x3(stride) - bn - relu - conv3x3 - bn, + shortcut, relu.  expansion = 1"""
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
                 dilation=1, norm_layer=None, dtype="float32"):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise ValueError("Dilation > 1 not supported in BasicBlock")
        norm = _norm_factory(norm_layer, dtype)
        self.conv1 = conv3x3(inplanes, planes, stride, dtype=dtype)
        self.bn1 = norm(planes)
        self.relu = ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dtype=dtype)
        self.bn2 = norm(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.relu(conv_bn(self.conv1, self.bn1, x))
        out = conv_bn(self.conv2, self.bn2, out)
        return self._finish(out, x, self.bn2)

    def backward(self, dout):
        dres, dshortcut = self._start_backward(dout)
        dres = self.conv2.backward(self.bn2.backward(dres))
        dx = self.conv1.backward(self.bn1.backward(self.relu.backward(dres)))
        return self._shortcut_backward(dshortcut, dx)


class Bottleneck(_Block):
    """conv1x1 - bn - relu - conv3x3(stride, groups) - bn - relu - conv1x1 - bn, + shortcut, relu.

    width = planes * base_width / 64 * groups;  output channels = planes * 4.
    """
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
                 dilation=1, norm_layer=None, dtype="float32"):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        norm = _norm_factory(norm_layer, dtype)
        self.conv1 = conv1x1(inplanes, width, dtype=dtype)
        self.bn1 = norm(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation, dtype=dtype)
        self.bn2 = norm(width)
        self.conv3 = conv1x1(width, planes * self.expansion, dtype=dtype)
        self.bn3 = norm(planes * self.expansion)
        # torchvision uses one ReLU module three times; here one per use (a module
        # used twice would work too, its caches stacked, but one per use reads as
        # the backward runs; they hold no parameters, so the state_dict is unchanged).
        self.relu = ReLU(inplace=True)
        self.relu2 = ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.relu(conv_bn(self.conv1, self.bn1, x))
        out = self.relu2(conv_bn(self.conv2, self.bn2, out))
        out = conv_bn(self.conv3, self.bn3, out)
        return self._finish(out, x, self.bn3)

    def backward(self, dout):
        dres, dshortcut = self._start_backward(dout)
        dres = self.conv3.backward(self.bn3.backward(dres))
        dres = self.conv2.backward(self.bn2.backward(self.relu2.backward(dres)))
        dx = self.conv1.backward(self.bn1.backward(self.relu.backward(dres)))
        return self._shortcut_backward(dshortcut, dx)


class ResNet(Module):
    """torchvision's ResNet, with its constructor options, plus ``dtype`` and ``cifar_stem``.

    cifar_stem: for 32x32 images, a 3x3 stride-1 conv1 and no max-pool (the
    ImageNet stem would shrink 32x32 to 8x8 before layer1). Default: False.
    """

    def __init__(self, block, layers, num_classes=1000, zero_init_residual=False, groups=1,
                 width_per_group=64, replace_stride_with_dilation=None, norm_layer=None,
                 dtype="float32", cifar_stem=False):
        super().__init__()
        self._dtype = backend.resolve_dtype(dtype)
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
                or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if len(layers) != 4:
            raise ValueError(f"layers must list 4 block counts, got {layers}")
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation should be None or a 3-element tuple, "
                             f"got {replace_stride_with_dilation}")
        self._norm_layer = norm_layer
        norm = _norm_factory(norm_layer, dtype)
        self.inplanes, self.dilation = 64, 1
        self.groups, self.base_width = groups, width_per_group
        self.block, self.layers_config, self.cifar_stem = block, list(layers), cifar_stem
        if cifar_stem:
            self.conv1 = Conv2d(3, 64, 3, stride=1, padding=1, bias=False, dtype=dtype)
        else:
            self.conv1 = Conv2d(3, 64, 7, stride=2, padding=3, bias=False, dtype=dtype)
        self.bn1 = norm(64)
        self.relu = ReLU(inplace=True)
        self.maxpool = None if cifar_stem else MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, replace_stride_with_dilation[2])
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.fc = Linear(512 * block.expansion, num_classes, dtype=dtype)
        self.num_classes = num_classes
        self._init_weights(zero_init_residual)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        downsample, previous_dilation = None, self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = Sequential(conv1x1(self.inplanes, planes * block.expansion, stride,
                                            dtype=self._dtype),
                                    _norm_factory(self._norm_layer, self._dtype)(
                                        planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width,
                        previous_dilation, self._norm_layer, dtype=self._dtype)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups,
                                base_width=self.base_width, dilation=self.dilation,
                                norm_layer=self._norm_layer, dtype=self._dtype))
        return Sequential(*layers)

    def _init_weights(self, zero_init_residual):
        """Kaiming normal (fan_out, ReLU gain) for convs; BN weight 1, bias 0, as torchvision."""
        for m in self.modules():
            if isinstance(m, Conv2d):
                K, _, R, S = m.weight.shape
                std = math.sqrt(2.0 / (K * R * S))
                m.weight.data = (backend.rng().standard_normal(m.weight.shape) * std).astype(self._dtype)
            elif isinstance(m, BatchNorm2d):
                if m.weight is not None:
                    m.weight.data = np.ones_like(m.weight.data)
                if m.bias is not None:
                    m.bias.data = np.zeros_like(m.bias.data)
        if zero_init_residual:
            for m in self.modules():
                last = m.bn3 if isinstance(m, Bottleneck) else \
                    m.bn2 if isinstance(m, BasicBlock) else None
                if getattr(last, "weight", None) is not None:
                    last.weight.data = np.zeros_like(last.weight.data)

    def _check_input(self, x):
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"expected images of shape (N, 3, H, W), got shape "
                             f"{tuple(getattr(x, 'shape', ()))}")
        if x.shape[1] != 3:
            raise ValueError(f"expected 3 input channels (RGB), got {x.shape[1]} "
                             f"(x.shape={tuple(x.shape)}); images must be (N, 3, H, W)")
        if x.dtype != self.conv1.weight.dtype:
            raise ValueError(f"input dtype {x.dtype} does not match the model's "
                             f"{self.conv1.weight.dtype}; use x.astype({str(self.conv1.weight.dtype)!r})")
        if backend.get_array_module(x) is not backend.get_array_module(self.conv1.weight.data):
            raise ValueError(f"input is on the {backend.device_of(x)} but the model is on the "
                             f"{self.device}; move one of them (model.to(...) or backend.to_device)")

    def forward(self, x):
        """x (N, 3, H, W) -> logits (N, num_classes)"""
        self._check_input(x)
        x = self.relu(conv_bn(self.conv1, self.bn1, x))
        if self.maxpool is not None:
            x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        x, flatten_cache = F.flatten_forward(x)
        self._save(flatten_cache)
        return self.fc(x)

    def backward(self, dlogits, input_grad=True):
        """dlogits (N, num_classes) -> dx (N, 3, H, W); fills every parameter's .grad.

        Training needs no gradient for the images: ``input_grad=False`` skips it
        (and returns None), as torch does for inputs without requires_grad.
        """
        flatten_cache = self._pop_cache()
        dx = F.flatten_backward(self.fc.backward(dlogits), flatten_cache)
        dx = self.avgpool.backward(dx)
        for layer in (self.layer4, self.layer3, self.layer2, self.layer1):
            dx = layer.backward(dx)
        if self.maxpool is not None:
            dx = self.maxpool.backward(dx)
        return self.conv1.backward(self.bn1.backward(self.relu.backward(dx)), input_grad)

    def extra_repr(self):
        return f"num_classes={self.num_classes}, dtype={self._dtype.name}"

    def describe_state_dict(self, state_dict):
        """Which ResNet a state dict holds, when it is not this one (for load errors)."""
        theirs = _architecture_of(state_dict)
        if theirs is None:
            return None
        ours = (self.block.__name__, tuple(self.layers_config), self.groups, self.base_width,
                self.num_classes, self.cifar_stem)
        name = _ARCHITECTURES.get(theirs[:4])
        described = name or (f"{theirs[0]} {list(theirs[1])}, groups={theirs[2]}, "
                             f"width_per_group={theirs[3]}")
        options = [f"num_classes={theirs[4]}"] + (["cifar_stem=True"] if theirs[5] else [])
        if theirs[:4] != ours[:4]:
            build = f"resnet_np.{name}" if name else "resnet_np.models.ResNet"
            return (f"these look like {described} weights, not "
                    f"{_ARCHITECTURES.get(ours[:4], 'this model')}'s: build that model "
                    f"({build}({', '.join(options)}))")
        if theirs[4] != ours[4]:
            return (f"the checkpoint has {theirs[4]} classes and this model {ours[4]}: build it "
                    f"with num_classes={theirs[4]}, or leave out fc.weight and fc.bias and load "
                    "with strict=False to fine-tune")
        if theirs[5] != ours[5]:
            return (f"the checkpoint's conv1 is the {'CIFAR' if theirs[5] else 'ImageNet'} stem: "
                    f"build the model with cifar_stem={theirs[5]}")
        return None


# (block, blocks per stage, groups, width_per_group) -> model name
_ARCHITECTURES = {
    ("BasicBlock", (2, 2, 2, 2), 1, 64): "resnet18",
    ("BasicBlock", (3, 4, 6, 3), 1, 64): "resnet34",
    ("Bottleneck", (3, 4, 6, 3), 1, 64): "resnet50",
    ("Bottleneck", (3, 4, 23, 3), 1, 64): "resnet101",
    ("Bottleneck", (3, 8, 36, 3), 1, 64): "resnet152",
    ("Bottleneck", (3, 4, 6, 3), 32, 4): "resnext50_32x4d",
    ("Bottleneck", (3, 4, 6, 3), 1, 128): "wide_resnet50_2",
}


def _architecture_of(state_dict):
    """(block, blocks per stage, groups, width_per_group, classes, cifar_stem) from the
    keys and shapes of a torchvision-style ResNet state dict, or None."""
    def shape(key):
        return tuple(getattr(state_dict.get(key), "shape", ()))

    counts = []
    for stage in range(1, 5):
        blocks = {key.split(".")[1] for key in state_dict if key.startswith(f"layer{stage}.")}
        counts.append(len(blocks))
    if not all(counts) or len(shape("fc.weight")) != 2 or len(shape("conv1.weight")) != 4:
        return None
    bottleneck = "layer1.0.conv3.weight" in state_dict
    groups, width = 1, 64
    if bottleneck and len(shape("layer1.0.conv2.weight")) == 4:
        out_channels, per_group = shape("layer1.0.conv2.weight")[:2]
        groups = out_channels // max(per_group, 1)
        width = out_channels // max(groups, 1)
    return ("Bottleneck" if bottleneck else "BasicBlock", tuple(counts), groups, width,
            shape("fc.weight")[0], shape("conv1.weight")[2] == 3)


def _resnet(block, layers, **kwargs):
    return ResNet(block, layers, **kwargs)


def resnet18(**kwargs):
    """ResNet-18: BasicBlocks [2, 2, 2, 2], 11.7 M parameters at 1000 classes."""
    return _resnet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs):
    """ResNet-34: BasicBlocks [3, 4, 6, 3], 21.8 M parameters."""
    return _resnet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50(**kwargs):
    """ResNet-50: Bottlenecks [3, 4, 6, 3], 25.6 M parameters."""
    return _resnet(Bottleneck, [3, 4, 6, 3], **kwargs)


def resnet101(**kwargs):
    """ResNet-101: Bottlenecks [3, 4, 23, 3], 44.5 M parameters."""
    return _resnet(Bottleneck, [3, 4, 23, 3], **kwargs)


def resnet152(**kwargs):
    """ResNet-152: Bottlenecks [3, 8, 36, 3], 60.2 M parameters."""
    return _resnet(Bottleneck, [3, 8, 36, 3], **kwargs)


def resnext50_32x4d(**kwargs):
    """ResNeXt-50 32x4d: ResNet-50 with 32 groups of width 4 in each 3x3 conv."""
    return _resnet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4, **kwargs)


def wide_resnet50_2(**kwargs):
    """Wide ResNet-50-2: ResNet-50 with bottlenecks twice as wide."""
    return _resnet(Bottleneck, [3, 4, 6, 3], width_per_group=128, **kwargs)


MODELS = {f.__name__: f for f in (resnet18, resnet34, resnet50, resnet101, resnet152,
                                  resnext50_32x4d, wide_resnet50_2)}


def build_model(name, **kwargs):
    """A model by name (``"resnet50"``), or a ValueError listing the known names."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[name](**kwargs)
