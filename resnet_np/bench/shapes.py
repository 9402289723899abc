"""The layer shapes of a model, found by a forward pass, and their FLOP counts.

Shape notation as in :mod:`resnet_np.functional`: input (N, C, H, W), K output
channels, kernel R x S, G groups, output P x Q; a linear layer maps D to F.

    conv forward   2*N*P*Q*K*(C/G)*R*S    (one multiply and one add per term)
    conv backward  twice the forward      (dx and dw are each one such product)
    linear         2*N*D*F forward, twice that backward
"""
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..functional._checks import pair
from ..functional.sizes import output_length
from ..nn import BatchNorm2d, Conv2d, Linear, MaxPool2d


@dataclass(frozen=True)
class LayerSpec:
    """One layer's configuration and the per-example shape of its input.

    kind           "conv", "bn", "maxpool", "fc" or "loss" (softmax cross-entropy)
    in_shape       (C, H, W), or (D,) for the fc layer and the loss
    out_features   K of a convolution, F of the fc layer
    channels_last  the memory layout of the input the model hands the layer
    input_grad     whether a train step needs this layer's input gradient (not for the
                   first layer, whose input is the images: its backward is dw alone)
    """
    kind: str
    in_shape: tuple
    out_features: int = 0
    kernel: tuple = ()
    stride: tuple = ()
    padding: tuple = ()
    dilation: tuple = (1, 1)
    groups: int = 1
    bias: bool = False
    channels_last: bool = False
    input_grad: bool = True

    def out_hw(self):
        """(P, Q) of a convolution or pooling window."""
        (_, H, W) = self.in_shape
        return tuple(output_length(*axis) for axis in
                     zip((H, W), self.kernel, self.stride, self.padding, self.dilation))

    def describe(self):
        """A short shape, e.g. '3x3/2 128->128 @56x56' (kernel/stride, C->K, input H x W)."""
        if self.kind in ("fc", "loss"):
            return (f"{self.in_shape[0]}->{self.out_features}" if self.kind == "fc" else
                    f"softmax cross-entropy over {self.in_shape[0]}")
        C, H, W = self.in_shape
        if self.kind == "bn":
            return f"{C} @{H}x{W}"
        window = f"{self.kernel[0]}x{self.kernel[1]}/{self.stride[0]}"
        if self.kind == "maxpool":
            return f"{window} {C} @{H}x{W}"
        groups = f" g{self.groups}" if self.groups != 1 else ""
        no_dx = "" if self.input_grad else " (no dx)"
        return f"{window} {C}->{self.out_features}{groups} @{H}x{W}{no_dx}"

    def to_json(self):
        return asdict(self)

    @classmethod
    def from_json(cls, data):
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


LOSS = LayerSpec("loss", (1000,))     # the head of an ImageNet model in a train step


@dataclass
class LayerGroup:
    """A distinct layer shape and the modules (dotted names) that have it."""
    spec: LayerSpec
    names: list = field(default_factory=list)

    @property
    def name(self):
        return self.names[0]

    @property
    def uses(self):
        return len(self.names)


def is_channels_last(x):
    """True when (N, C, H, W) ``x`` lies in (N, H, W, C) order in memory (and not also NCHW)."""
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(0, 2, 3, 1).flags.c_contiguous


def _spec_of(module, x):
    """The LayerSpec of ``module`` called on input ``x``."""
    seen = dict(in_shape=tuple(x.shape[1:]), channels_last=is_channels_last(x))
    if isinstance(module, Conv2d):
        return LayerSpec("conv", out_features=module.out_channels, kernel=module.kernel_size,
                         stride=module.stride, padding=module.padding, dilation=module.dilation,
                         groups=module.groups, bias=module.bias is not None, **seen)
    if isinstance(module, BatchNorm2d):
        return LayerSpec("bn", **seen)
    if isinstance(module, MaxPool2d):
        stride = module.stride if module.stride is not None else module.kernel_size
        return LayerSpec("maxpool", kernel=pair(module.kernel_size), stride=pair(stride),
                         padding=pair(module.padding), **seen)
    return LayerSpec("fc", out_features=module.out_features, bias=module.bias is not None, **seen)


def layer_shapes(model, image_size=224):
    """The distinct layer shapes one forward pass meets, in the order first met -> [LayerGroup].

    The forward of every convolution, batch norm, max-pool and linear module is
    wrapped for one pass (batch 1, eval mode) to record its input; the wrappers and
    the caches are removed afterwards. Shapes per example do not depend on the batch.
    The pass keeps gradients on: under no_grad an eval pass folds each batch norm
    into its convolution, and the batch norms would not be met.
    """
    calls, wrapped = [], []
    for name, module in model.named_modules():
        if isinstance(module, (Conv2d, BatchNorm2d, MaxPool2d, Linear)):
            def recording_forward(x, _name=name, _module=module, _forward=module.forward):
                calls.append((_name, _spec_of(_module, x)))
                return _forward(x)
            object.__setattr__(module, "forward", recording_forward)  # shadows the class's method
            wrapped.append(module)
    was_training = model.training
    try:
        model.eval()
        model(np.zeros((1, 3, image_size, image_size), dtype=model.dtype))
    finally:
        for module in wrapped:
            del module.__dict__["forward"]
        for module in model.modules():
            module._caches.clear()
        model.train(was_training)
    if calls:       # a train step computes no gradient for the images
        calls[0] = (calls[0][0], replace(calls[0][1], input_grad=False))
    groups = {}
    for name, spec in calls:
        groups.setdefault(spec, LayerGroup(spec)).names.append(name)
    return list(groups.values())


def quick_selection(groups):
    """A handful of layers: the first conv of each (kernel, stride) kind, the first batch
    norm (the largest), the max-pool and the fc layer."""
    chosen, seen = [], set()
    for group in groups:
        spec = group.spec
        kind = (spec.kind, spec.kernel, spec.stride) if spec.kind == "conv" else spec.kind
        if kind not in seen:
            seen.add(kind)
            chosen.append(group)
    return chosen


def conv_flops(spec, batch):
    """Forward FLOPs of a convolution: 2*N*P*Q*K*(C/G)*R*S."""
    P, Q = spec.out_hw()
    R, S = spec.kernel
    return 2 * batch * P * Q * spec.out_features * (spec.in_shape[0] // spec.groups) * R * S


def linear_flops(spec, batch):
    """Forward FLOPs of a linear layer: 2*N*D*F."""
    return 2 * batch * spec.in_shape[0] * spec.out_features


def layer_flops(spec, batch, pass_):
    """FLOPs of a conv or fc layer's "forward" or "backward" (2x forward: dw and dx; 1x
    without the input gradient); None for others."""
    if spec.kind == "conv":
        forward = conv_flops(spec, batch)
    elif spec.kind == "fc":
        forward = linear_flops(spec, batch)
    else:
        return None
    if pass_ == "forward":
        return forward
    return 2 * forward if spec.input_grad else forward


def model_flops(groups, batch, mode):
    """FLOPs of the convolutions and fc layers of one inference ("inference") or one train
    step ("train": forward, then the backward's weight and input gradients, none of the
    latter for the first layer, whose input is the images)."""
    total = 0
    for group in groups:
        forward = layer_flops(group.spec, batch, "forward")
        if forward is None:
            continue
        total += group.uses * forward
        if mode == "train":
            total += group.uses * layer_flops(group.spec, batch, "backward")
    return total
