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
from ..nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Linear, MaxPool2d, Module, ReLU,
                  Sequential)
from ..nn.module import Parameter


def conv3x3(in_planes, out_planes, stride=1, groups=1, dilation=1, dtype="float32"):
    return Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, groups=groups,
                  bias=False, dilation=dilation, dtype=dtype)


def conv1x1(in_planes, out_planes, stride=1, dtype="float32"):
    return Conv2d(in_planes, out_planes, 1, stride=stride, bias=False, dtype=dtype)


class _Block(Module):
    """The shortcut and the final add + ReLU shared by both block types."""

    def _finish(self, residual, x):
        identity = x if self.downsample is None else self.downsample(x)
        out, add_cache = F.add_forward(residual, identity)
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
        self.conv1 = conv3x3(inplanes, planes, stride, dtype=dtype)
        self.bn1 = BatchNorm2d(planes, dtype=dtype)
        self.relu = ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dtype=dtype)
        self.bn2 = BatchNorm2d(planes, dtype=dtype)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self._finish(out, x)

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
        self.conv1 = conv1x1(inplanes, width, dtype=dtype)
        self.bn1 = BatchNorm2d(width, dtype=dtype)
        self.conv2 = conv3x3(width, width, stride, groups, dilation, dtype=dtype)
        self.bn2 = BatchNorm2d(width, dtype=dtype)
        self.conv3 = conv1x1(width, planes * self.expansion, dtype=dtype)
        self.bn3 = BatchNorm2d(planes * self.expansion, dtype=dtype)
        # torchvision uses one ReLU module three times; here one per use, so each
        # keeps its own cache for backward (they hold no parameters, so the
        # state_dict is unchanged).
        self.relu = ReLU(inplace=True)
        self.relu2 = ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self._finish(out, x)

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
        if len(layers) != 4:
            raise ValueError(f"layers must list 4 block counts, got {layers}")
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation should be None or a 3-element tuple, "
                             f"got {replace_stride_with_dilation}")
        self.inplanes, self.dilation = 64, 1
        self.groups, self.base_width = groups, width_per_group
        self.block, self.layers_config, self.cifar_stem = block, list(layers), cifar_stem
        if cifar_stem:
            self.conv1 = Conv2d(3, 64, 3, stride=1, padding=1, bias=False, dtype=dtype)
        else:
            self.conv1 = Conv2d(3, 64, 7, stride=2, padding=3, bias=False, dtype=dtype)
        self.bn1 = BatchNorm2d(64, dtype=dtype)
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
                                    BatchNorm2d(planes * block.expansion, dtype=self._dtype))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width,
                        previous_dilation, dtype=self._dtype)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups,
                                base_width=self.base_width, dilation=self.dilation,
                                dtype=self._dtype))
        return Sequential(*layers)

    def _init_weights(self, zero_init_residual):
        """Kaiming normal (fan_out, ReLU gain) for convs; BN weight 1, bias 0, as torchvision."""
        for m in self.modules():
            if isinstance(m, Conv2d):
                K, _, R, S = m.weight.shape
                std = math.sqrt(2.0 / (K * R * S))
                m.weight.data = (backend.rng().standard_normal(m.weight.shape) * std).astype(self._dtype)
            elif isinstance(m, BatchNorm2d):
                m.weight.data = np.ones_like(m.weight.data)
                m.bias.data = np.zeros_like(m.bias.data)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    m.bn3.weight.data = np.zeros_like(m.bn3.weight.data)
                elif isinstance(m, BasicBlock):
                    m.bn2.weight.data = np.zeros_like(m.bn2.weight.data)

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
        x = self.relu(self.bn1(self.conv1(x)))
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
