"""Layers as modules, with torch.nn's names and constructor signatures.

Each module's forward calls the functional layer and keeps its cache; its
backward adds the parameter gradients into ``Parameter.grad`` and returns the
gradient of the input. Parameters are created in ``dtype`` (float32 unless
asked) with torch's default initialisation, from ``resnet_np.backend.rng()``.
"""
import functools
import math

import numpy as np

from .. import backend, dispatch
from .. import functional as F
from ..functional._checks import pair
from ..functional.conv import conv_padding
from .module import Module, Parameter, is_grad_enabled


def _uniform(shape, bound, dtype):
    return backend.rng().uniform(-bound, bound, size=shape).astype(dtype)


class Conv2d(Module):
    """2-D convolution. weight (K, C/G, R, S), bias (K,) when ``bias=True``.

    torch.nn.Conv2d's signature: ``padding`` an int, a pair, 'same' or 'valid';
    ``padding_mode`` 'zeros', 'reflect', 'replicate' or 'circular'; ``dtype``
    keyword-only. Initialised as torch does: kaiming_uniform(a=sqrt(5)), i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C/G * R * S, for the weight
    and the bias alike.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", *, dtype="float32"):
        super().__init__()
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"Conv2d: groups must be a positive integer, got {groups!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        if padding_mode not in F.PADDING_MODES:
            raise ValueError(f"Conv2d: padding_mode must be one of {F.PADDING_MODES}, got "
                             f"padding_mode={padding_mode!r}")
        dtype = backend.resolve_dtype(dtype)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride, self.dilation = pair(stride, "stride"), pair(dilation, "dilation")
        self.groups = groups
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding")
        self.padding_mode = padding_mode
        # the per-side amounts; checks 'same' against the stride, and negative padding
        conv_padding(self.padding, self.kernel_size, self.stride, self.dilation, "Conv2d")
        fan_in = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        bound = 1 / math.sqrt(fan_in)
        self.weight = Parameter(_uniform((out_channels, in_channels // groups) + self.kernel_size,
                                         bound, dtype))
        self.bias = Parameter(_uniform((out_channels,), bound, dtype)) if bias else None

    def forward(self, x, folded=None):
        """``folded``: (weight, bias) to use instead of the parameters (a batch norm folded
        in for inference: see resnet_np.models.resnet.conv_bn)."""
        weight, bias = folded if folded is not None else (
            self.weight.data, None if self.bias is None else self.bias.data)
        # Winograd's mode for training or inference, and whether it runs: resnet_np.dispatch
        out, cache = F.conv2d_forward(x, weight, bias,
                                      self.stride, self.padding, self.dilation, self.groups,
                                      self.padding_mode,
                                      winograd=dispatch.winograd_mode(is_grad_enabled()))
        self._save(cache)
        return out

    def backward(self, dout, input_grad=True):
        """-> dx, or None with ``input_grad=False`` (saves the col2im of a first layer)."""
        dx, dw, db = F.conv2d_backward(dout, self._pop_cache(), input_grad)
        self.weight.accumulate_grad(dw)
        if self.bias is not None:
            self.bias.accumulate_grad(db)
        return dx

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class BatchNorm2d(Module):
    """Batch normalisation of each channel of (N, C, H, W) input, as torch.nn.BatchNorm2d.

    Positional arguments as torch's: ``(num_features, eps, momentum, affine,
    track_running_stats)``; ``bias`` and ``dtype`` are keyword-only.

    affine               weight (1) and bias (0) are learnt (``bias=False``: weight only).
    track_running_stats  buffers running_mean (0), running_var (1) and
                         num_batches_tracked; eval mode normalises with them. Without
                         them (False) there are no buffers and eval mode, like train
                         mode, uses the batch's statistics.
    momentum             running <- (1 - momentum) * running + momentum * batch; ``None``
                         is the cumulative average, momentum = 1 / num_batches_tracked.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, *, bias=True, dtype="float32"):
        super().__init__()
        if not (isinstance(num_features, (int, np.integer)) and num_features > 0):
            raise ValueError(f"BatchNorm2d: num_features must be a positive int, "
                             f"got {num_features!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"BatchNorm2d: eps must be a positive number, got {eps!r}")
        if momentum is not None and not (isinstance(momentum, (int, float))
                                         and 0 <= momentum <= 1):
            raise ValueError(f"BatchNorm2d: momentum must be a number in [0, 1] or None "
                             f"(cumulative average), got {momentum!r}")
        dtype = backend.resolve_dtype(dtype)
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        self.weight = Parameter(np.ones(num_features, dtype=dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype=dtype)) if affine and bias else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x):
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"BatchNorm2d: expected 4D input (N, C, H, W), got "
                             f"{getattr(x, 'ndim', 0)}D input of shape "
                             f"{tuple(getattr(x, 'shape', ()))}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            count = self.num_batches_tracked
            self.num_batches_tracked = backend.get_array_module(count).asarray(count + 1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        # Without running statistics eval mode too normalises with the batch's, as torch.
        use_batch_stats = self.training or not self.track_running_stats
        out, cache = dispatch.call(
            "batch_norm2d_forward", x, None if self.weight is None else self.weight.data,
            None if self.bias is None else self.bias.data,
            self.running_mean, self.running_var, use_batch_stats, factor, self.eps)
        self._save(cache)
        return out

    def backward(self, dout):
        dx, dgamma, dbeta = dispatch.backward("batch_norm2d_backward", dout, self._pop_cache())
        if self.weight is not None:
            self.weight.accumulate_grad(dgamma)
        if self.bias is not None:
            self.bias.accumulate_grad(dbeta)
        return dx

    def extra_repr(self):
        s = f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
        if not self.affine:
            s += ", affine=False"
        elif self.bias is None:
            s += ", bias=False"
        return s + ("" if self.track_running_stats else ", track_running_stats=False")


class ReLU(Module):
    """max(x, 0); with ``inplace=True`` (as torchvision's ResNets use it) over the input."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        out, cache = F.relu_forward(x, self.inplace)
        self._save(cache)
        return out

    def backward(self, dout):
        return F.relu_backward(dout, self._pop_cache())


class MaxPool2d(Module):
    """torch.nn.MaxPool2d: (N, C, H, W) or (C, H, W); with ``return_indices`` the forward
    returns (out, indices), indices numbered as torch does (h*W + w in each input plane)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, x):
        pool = F.max_pool2d_forward if self.return_indices else functools.partial(
            dispatch.call, "max_pool2d_forward")         # the indices need the generic cache
        out, cache = pool(x, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode)
        if self.return_indices:
            cache = cache._replace(argmax=F.max_pool2d_winners(cache))
            indices = F.max_pool2d_indices(cache)
        self._save(cache)
        return (out, indices) if self.return_indices else out

    def backward(self, dout):
        return dispatch.backward("max_pool2d_backward", dout, self._pop_cache())

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AdaptiveAvgPool2d(Module):
    """torch.nn.AdaptiveAvgPool2d: ``output_size`` an int or a pair; None keeps that size."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        out, cache = F.adaptive_avg_pool2d_forward(x, self.output_size)
        self._save(cache)
        return out

    def backward(self, dout):
        return F.adaptive_avg_pool2d_backward(dout, self._pop_cache())

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Flatten(Module):
    """Dims ``start_dim``..``end_dim`` merged into one, as torch.nn.Flatten
    (by default (N, C, H, W) -> (N, C*H*W))."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        out, cache = F.flatten_forward(x, self.start_dim, self.end_dim)
        self._save(cache)
        return out

    def backward(self, dout):
        return F.flatten_backward(dout, self._pop_cache())

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Linear(Module):
    """out = x @ weight.T + bias; weight (F, D) and bias U(-1/sqrt(D), 1/sqrt(D)) as torch.

    Input (*, D), as torch's: (N, D), an unbatched (D,), any leading dimensions, N = 0.
    """

    def __init__(self, in_features, out_features, bias=True, dtype="float32"):
        super().__init__()
        dtype = backend.resolve_dtype(dtype)
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        self.weight = Parameter(_uniform((out_features, in_features), bound, dtype))
        self.bias = Parameter(_uniform((out_features,), bound, dtype)) if bias else None

    def forward(self, x):
        out, cache = F.linear_forward(x, self.weight.data,
                                      None if self.bias is None else self.bias.data)
        self._save(cache)
        return out

    def backward(self, dout):
        dx, dw, db = F.linear_backward(dout, self._pop_cache())
        self.weight.accumulate_grad(dw)
        if self.bias is not None:
            self.bias.accumulate_grad(db)
        return dx

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class CrossEntropyLoss:
    """Softmax cross-entropy, with torch.nn.CrossEntropyLoss's signature:
    ``loss = criterion(logits, target)``, then ``dlogits = criterion.backward()``
    (the gradient of the loss itself; for ``reduction='none'`` pass dloss of the
    loss's shape). See :mod:`resnet_np.functional.loss` for the definitions.

    weight           (M,) class weights: each target's loss is scaled by its class's weight,
                     and 'mean' divides by the sum of the weights of the targets kept.
    ignore_index     class-index targets equal to it add nothing (and count for nothing).
    reduction        'mean', 'sum' or 'none'.
    label_smoothing  in [0, 1]: the target mixes with the uniform distribution.
    size_average, reduce: torch's deprecated spellings of ``reduction``; not supported.
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        if size_average is not None or reduce is not None:
            raise ValueError("CrossEntropyLoss: size_average and reduce are deprecated in torch "
                             "and not supported here; use reduction='mean', 'sum' or 'none'")
        if weight is not None and not hasattr(weight, "shape"):
            raise TypeError(f"CrossEntropyLoss: weight must be an array of class weights, got "
                            f"{type(weight).__name__} {weight!r}"
                            + ("; for label smoothing pass label_smoothing=..."
                               if isinstance(weight, float) else ""))
        if reduction not in F.loss.REDUCTIONS:
            raise ValueError(f"CrossEntropyLoss: reduction must be one of "
                             f"{F.loss.REDUCTIONS}, got {reduction!r}")
        if not (isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing <= 1):
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got "
                             f"{label_smoothing!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(f"CrossEntropyLoss: ignore_index must be an int, got "
                            f"{ignore_index!r}")
        self.weight, self.ignore_index = weight, int(ignore_index)
        self.reduction, self.label_smoothing = reduction, label_smoothing
        self._cache = None

    def __call__(self, logits, target):
        loss, self._cache = dispatch.call(
            "softmax_cross_entropy_forward", logits, target, self.label_smoothing,
            weight=self.weight,
            ignore_index=self.ignore_index, reduction=self.reduction)
        return loss

    def backward(self, dloss=1.0):
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss: backward called without a forward to match")
        dlogits = dispatch.backward("softmax_cross_entropy_backward", dloss, self._cache)
        self._cache = None
        return dlogits

    def __repr__(self):
        return (f"CrossEntropyLoss(reduction={self.reduction!r}, "
                f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing})")
