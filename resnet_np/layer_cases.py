"""The layer cases every check runs: small examples of each functional layer.

One table, shared by ``python -m resnet_np.gradcheck`` (finite differences),
tests/test_functional.py (finite differences, and the fast kernels against the
naive loops, on every backend) and tests/test_gpu.py (the GPU against the CPU,
float64 and float32).

A case's ``make(gen)`` returns ``(forward, backward, args)``:

    forward(*args)          -> (out, cache)
    backward(dout, cache)   -> a tuple, one gradient per index of ``wrt``
    args                    NumPy arrays, floats in float64 (labels stay integers);
                            :func:`to_backend` casts and moves them, keeping their layout

``differentiable`` is False where finite differences mean nothing (max-pool
windows built full of ties); such a case is still compared across backends.

``twin(gen)`` is ``make`` with the forward and backward of the layer's
reference twin (:mod:`resnet_np.functional.reference`) on the same arguments
and options: tests/test_reference.py checks the fast layer against it.
"""
from typing import Callable, NamedTuple

import numpy as np

from . import functional as F
from .functional import reference as ref


class LayerCase(NamedTuple):
    name: str
    make: Callable
    wrt: tuple
    differentiable: bool = True
    twin: Callable = None


def batched(forward, backward):
    """A twin of (N, C, H, W) images run on a case that may be unbatched (C, H, W): the
    batch axis is added to the input and taken off the output and the input gradient."""
    def forward_any(x, *rest):
        out, cache = forward(x[None] if x.ndim == 3 else x, *rest)
        return (out[0] if x.ndim == 3 else out), (x.ndim == 3, cache)

    def backward_any(dout, unbatched_and_cache):
        unbatched, cache = unbatched_and_cache
        grads = backward(dout[None] if unbatched else dout, cache)
        grads = grads if isinstance(grads, tuple) else (grads,)
        return ((grads[0][0] if unbatched else grads[0]),) + grads[1:]
    return forward_any, backward_any


def channels_last(a):
    """(N, C, H, W) in shape, (N, H, W, C) in memory: the layout every 4-D layer returns."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def to_backend(a, xp, dtype="float64"):
    """Cast a float array to ``dtype`` and move it to ``xp``'s device (a copy), keeping a
    channels-last layout (``cupy.asarray`` alone would make it C-contiguous)."""
    if a.dtype.kind == "f":
        a = a.astype(dtype)
    if xp is np:
        return a.copy(order="K")
    if a.ndim == 4 and not a.flags.c_contiguous:
        return xp.asarray(np.ascontiguousarray(a.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    return xp.asarray(a)


# --------------------------------------------------------------------------- #
# Convolution: (name, x shape, (K, R, S), stride, padding, dilation, groups, bias, padding_mode)
# --------------------------------------------------------------------------- #
CONV_CASES = [
    ("conv 3x3 s1 p1 bias", (2, 3, 7, 6), (4, 3, 3), 1, 1, 1, 1, True, "zeros"),
    ("conv 3x3 s2 p1", (2, 3, 9, 8), (4, 3, 3), 2, 1, 1, 1, False, "zeros"),
    ("conv 7x7 s2 p3 stem", (1, 2, 11, 9), (3, 7, 7), 2, 3, 1, 1, True, "zeros"),
    ("conv 1x1 s1 no copy", (2, 4, 5, 5), (6, 1, 1), 1, 0, 1, 1, False, "zeros"),
    ("conv 1x1 s2 downsample", (2, 4, 7, 7), (6, 1, 1), 2, 0, 1, 1, True, "zeros"),
    ("conv 3x3 groups 2", (2, 4, 6, 7), (6, 3, 3), 1, 1, 1, 2, True, "zeros"),
    ("conv 3x3 depthwise s2", (1, 6, 8, 8), (6, 3, 3), 2, 1, 1, 6, False, "zeros"),
    ("conv 3x3 dilation 2", (2, 3, 9, 9), (2, 3, 3), 1, 2, 2, 1, True, "zeros"),
    ("conv anisotropic", (2, 2, 6, 5), (3, 3, 2), (2, 1), (0, 1), (1, 2), 1, True, "zeros"),
    ("conv kernel = input", (1, 3, 5, 5), (2, 5, 5), 1, 0, 1, 1, False, "zeros"),
    # maps of 14x14 or more: stride-1 input gradients take the transposed-conv path
    ("conv 3x3 15x14 transposed dx", (2, 3, 15, 14), (4, 3, 3), 1, 1, 1, 1, True, "zeros"),
    ("conv 3x5 dilated transposed dx", (1, 2, 16, 17), (3, 3, 5), 1, (2, 1), (1, 2), 1, False,
     "zeros"),
    ("conv 3x3 p0 transposed dx", (1, 2, 14, 14), (3, 3, 3), 1, 0, 1, 1, False, "zeros"),
    ("conv 3x3 64ch", (2, 64, 14, 14), (16, 3, 3), 1, 1, 1, 1, False, "zeros"),
    # per-side padding: 'same' with an even kernel pads one more at the end
    ("conv 4x2 same", (2, 3, 7, 6), (4, 4, 2), 1, "same", 1, 1, True, "zeros"),
    ("conv 4x4 same 15x15", (1, 2, 15, 15), (3, 4, 4), 1, "same", 1, 1, False, "zeros"),
    ("conv 2x3 same dilation", (1, 2, 6, 7), (3, 2, 3), 1, "same", (3, 1), 1, True, "zeros"),
    ("conv valid", (2, 3, 6, 6), (2, 3, 3), 2, "valid", 1, 1, True, "zeros"),
    ("conv per-side padding", (1, 2, 6, 5), (3, 3, 3), (2, 1), ((0, 2), (1, 0)), 1, 1, True,
     "zeros"),
    # padding modes: the input padded first
    ("conv reflect", (2, 3, 6, 5), (4, 3, 3), 1, (2, 1), 1, 1, True, "reflect"),
    ("conv replicate s2", (1, 2, 5, 7), (3, 3, 3), 2, (1, 3), 1, 1, True, "replicate"),
    ("conv circular groups", (2, 4, 5, 4), (4, 3, 3), 1, (2, 4), 1, 2, False, "circular"),
    ("conv reflect same even", (1, 2, 6, 6), (2, 4, 2), 1, "same", 1, 1, True, "reflect"),
    # unbatched (C, H, W) and empty batches
    ("conv unbatched", (3, 6, 5), (2, 3, 3), 1, 1, 1, 1, True, "zeros"),
    ("conv empty batch", (0, 3, 6, 5), (2, 3, 3), 1, 1, 1, 1, True, "zeros"),
]


def conv_case(name, x_shape, k_shape, stride, padding, dilation, groups, bias, padding_mode,
              input_grad=True):
    K, R, S = k_shape
    C = x_shape[-3]

    def arguments(gen):
        args = [gen.standard_normal(x_shape), gen.standard_normal((K, C // groups, R, S))]
        return args + ([gen.standard_normal(K)] if bias else [])

    def wanted(dx, dw, db):
        return ((dx,) if input_grad else ()) + (dw,) + ((db,) if bias else ())

    def make(gen):
        def forward(x, w, b=None):
            return F.conv2d_forward(x, w, b, stride, padding, dilation, groups, padding_mode)
        return forward, lambda d, c: wanted(*F.conv2d_backward(d, c, input_grad)), arguments(gen)

    def twin(gen):
        forward, backward = batched(
            lambda x, w, b=None: ref.conv2d_forward(x, w, b, stride, padding, dilation, groups,
                                                    padding_mode), ref.conv2d_backward)
        return forward, lambda d, c: wanted(*backward(d, c)), arguments(gen)

    wrt = ((0,) if input_grad else ()) + (1,) + ((2,) if bias else ())
    return LayerCase(name, make, wrt, twin=twin)


# --------------------------------------------------------------------------- #
# Pooling: (name, x shape, kernel, stride, padding, dilation, ceil_mode, values, layout)
# --------------------------------------------------------------------------- #
MAX_POOL_CASES = [
    ("max_pool 3/2/1 stem", (2, 3, 9, 8), 3, 2, 1, 1, False, "normal", "channels_last"),
    ("max_pool 2/2/0", (1, 2, 6, 6), 2, None, 0, 1, False, "normal", "nchw"),
    ("max_pool overlapping", (2, 2, 7, 5), 3, 1, 1, 1, False, "normal", "nchw"),
    ("max_pool anisotropic", (1, 2, 5, 7), (3, 2), (1, 2), (1, 0), 1, False, "normal", "nchw"),
    ("max_pool dilation", (2, 2, 9, 8), 3, 2, 1, (2, 3), False, "normal", "nchw"),
    ("max_pool ceil_mode", (1, 3, 8, 7), 3, 2, 1, 1, True, "normal", "nchw"),
    ("max_pool ceil_mode 2/2", (2, 2, 5, 5), 2, 2, 0, 1, True, "normal", "nchw"),
    ("max_pool ceil dilation", (1, 2, 10, 9), 2, 3, 1, 2, True, "normal", "nchw"),
    ("max_pool ceil last window dropped", (1, 2, 5, 5), 2, 2, 1, 1, True, "normal", "nchw"),
    ("max_pool ties", (2, 3, 8, 7), 3, 1, 1, 1, False, "ties", "nchw"),
    ("max_pool negative pads -inf", (1, 2, 4, 4), 3, 2, 1, 1, False, "negative", "nchw"),
    ("max_pool unbatched", (3, 7, 6), 3, 2, 1, 1, True, "normal", "nchw"),
    ("max_pool empty batch", (0, 2, 6, 6), 2, 2, 0, 1, False, "normal", "nchw"),
]


def pool_input(gen, shape, values):
    if values == "ties":          # small integers: most windows hold several maxima
        return gen.integers(0, 3, size=shape).astype(np.float64)
    if values == "negative":      # every value < 0: a zero padding would win
        return -1 - np.abs(gen.standard_normal(shape))
    return gen.standard_normal(shape)


def max_pool_case(name, shape, kernel, stride, padding, dilation, ceil_mode, values, layout):
    def arguments(gen):
        x = pool_input(gen, shape, values)
        return [channels_last(x) if layout == "channels_last" else x]

    def make(gen):
        def forward(x):
            return F.max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode)
        return forward, lambda d, c: (F.max_pool2d_backward(d, c),), arguments(gen)

    def twin(gen):
        return batched(lambda x: ref.max_pool2d_forward(x, kernel, stride, padding, dilation,
                                                        ceil_mode),
                       ref.max_pool2d_backward) + (arguments(gen),)
    return LayerCase(name, make, (0,), differentiable=values != "ties", twin=twin)


ADAPTIVE_AVG_POOL_CASES = [
    ("adaptive_avg_pool 1x1", (2, 3, 5, 4), 1),
    ("adaptive_avg_pool 3x2 overlapping", (1, 2, 7, 5), (3, 2)),
    ("adaptive_avg_pool larger than input", (1, 2, 3, 4), (5, 6)),
    ("adaptive_avg_pool None", (2, 2, 5, 6), (None, 4)),
    ("adaptive_avg_pool unbatched", (3, 5, 5), (2, None)),
    ("adaptive_avg_pool empty batch", (0, 2, 5, 5), 2),
]


def adaptive_avg_pool_case(name, shape, size):
    def make(gen):
        return (lambda x: F.adaptive_avg_pool2d_forward(x, size),
                lambda d, c: (F.adaptive_avg_pool2d_backward(d, c),), [gen.standard_normal(shape)])

    def twin(gen):
        return batched(lambda x: ref.adaptive_avg_pool2d_forward(x, size),
                       ref.adaptive_avg_pool2d_backward) + ([gen.standard_normal(shape)],)
    return LayerCase(name, make, (0,), twin=twin)


def flatten_case(name, shape, start_dim=1, end_dim=-1):
    def arguments(gen):
        x = gen.standard_normal(shape)
        return [channels_last(x) if x.ndim == 4 else x]

    def make(gen):
        return (lambda x: F.flatten_forward(x, start_dim, end_dim),
                lambda d, c: (F.flatten_backward(d, c),), arguments(gen))

    def twin(gen):
        return (lambda x: ref.flatten_forward(x, start_dim, end_dim),
                lambda d, c: (ref.flatten_backward(d, c),), arguments(gen))
    return LayerCase(name, make, (0,), twin=twin)


# --------------------------------------------------------------------------- #
# The other layers
# --------------------------------------------------------------------------- #
def batch_norm_case(name, shape, training, layout=lambda a: a):
    def arguments(gen):
        C = shape[1]
        return [layout(gen.standard_normal(shape) * 2 + 0.5), gen.uniform(0.5, 1.5, C),
                gen.standard_normal(C), gen.standard_normal(C), gen.uniform(0.5, 2.0, C)]

    def make(gen):
        def forward(x, gamma, beta, running_mean, running_var):
            return F.batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training)
        return forward, F.batch_norm2d_backward, arguments(gen)

    def twin(gen):
        def forward(x, gamma, beta, running_mean, running_var):
            return ref.batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training)
        return forward, ref.batch_norm2d_backward, arguments(gen)
    return LayerCase(name, make, (0, 1, 2), twin=twin)


def relu_case(name, shape, layout=lambda a: a):
    def arguments(gen):
        x = gen.standard_normal(shape)
        x.reshape(-1)[::5] = 0.0      # exact zeros: the gradient there is 0 on every backend
        return [layout(x)]

    def make(gen):
        return F.relu_forward, lambda d, c: (F.relu_backward(d, c),), arguments(gen)

    def twin(gen):
        return ref.relu_forward, lambda d, c: (ref.relu_backward(d, c),), arguments(gen)
    # finite differences across the kink at 0 mean nothing: compare backends only
    return LayerCase(name, make, (0,), differentiable=False, twin=twin)


def relu_gradcheck_case(name, shape):
    def make(gen):
        return F.relu_forward, lambda d, c: (F.relu_backward(d, c),), [gen.standard_normal(shape)]

    def twin(gen):
        return (ref.relu_forward, lambda d, c: (ref.relu_backward(d, c),),
                [gen.standard_normal(shape)])
    return LayerCase(name, make, (0,), twin=twin)


def linear_case(name, n, d, f, bias):
    def arguments(gen):
        args = [gen.standard_normal((n, d)), gen.standard_normal((f, d))]
        return args + ([gen.standard_normal(f)] if bias else [])

    def wanted(dx, dw, db):
        return (dx, dw) + ((db,) if bias else ())

    def make(gen):
        return (lambda x, w, b=None: F.linear_forward(x, w, b),
                lambda d, c: wanted(*F.linear_backward(d, c)), arguments(gen))

    def twin(gen):
        return (lambda x, w, b=None: ref.linear_forward(x, w, b),
                lambda d, c: wanted(*ref.linear_backward(d, c)), arguments(gen))
    return LayerCase(name, make, (0, 1, 2) if bias else (0, 1), twin=twin)


def cross_entropy_case(name, n, m, smoothing, labels_on_host=False):
    """Labels go to the backend with the logits, or stay NumPy (the layer must move them)."""
    def make_with(layer, gen):
        labels = gen.integers(0, m, size=n)
        logits = gen.standard_normal((n, m)) * 3

        def forward(z, y):
            return layer.softmax_cross_entropy_forward(z, labels if labels_on_host else y,
                                                       smoothing)

        return (forward, lambda d, c: (layer.softmax_cross_entropy_backward(d, c),),
                [logits, labels])
    return LayerCase(name, lambda gen: make_with(F, gen), (0,),
                     twin=lambda gen: make_with(ref, gen))


def add_case(name, shape):
    def make_with(layer, gen):
        return (layer.add_forward, layer.add_backward,
                [gen.standard_normal(shape), channels_last(gen.standard_normal(shape))])
    return LayerCase(name, lambda gen: make_with(F, gen), (0, 1),
                     twin=lambda gen: make_with(ref, gen))


LAYER_CASES = (
    [conv_case(*case) for case in CONV_CASES]
    + [conv_case("conv 3x3 no input grad", (2, 3, 8, 8), (4, 3, 3), 1, 1, 1, 1, True, "zeros",
                 input_grad=False)]
    + [max_pool_case(*case) for case in MAX_POOL_CASES]
    + [adaptive_avg_pool_case(*case) for case in ADAPTIVE_AVG_POOL_CASES]
    + [flatten_case("flatten", (2, 3, 4, 5)),
       flatten_case("flatten dims 0..-2", (2, 3, 4, 5), 0, -2),
       flatten_case("flatten empty batch", (0, 3, 4, 5))]
    + [batch_norm_case("batch_norm train", (3, 4, 5, 6), True),
       batch_norm_case("batch_norm train channels-last", (2, 5, 4, 3), True, channels_last),
       batch_norm_case("batch_norm eval", (3, 4, 5, 6), False),
       relu_case("relu with zeros", (2, 3, 4, 5)),
       relu_case("relu channels-last", (2, 3, 4, 5), channels_last),
       relu_gradcheck_case("relu", (2, 3, 4, 5)),
       linear_case("linear bias", 4, 6, 5, True),           # N < F: the flipped GEMM
       linear_case("linear no bias", 16, 3, 5, False),      # N > F: the plain GEMM
       cross_entropy_case("cross_entropy", 6, 5, 0.0),
       cross_entropy_case("cross_entropy smoothing", 6, 5, 0.1),
       cross_entropy_case("cross_entropy labels on host", 6, 5, 0.1, labels_on_host=True),
       add_case("add", (2, 3, 4, 5))]
)

CASES_BY_NAME = {case.name: case for case in LAYER_CASES}
assert len(CASES_BY_NAME) == len(LAYER_CASES), "layer case names must be unique"


def run_case(case, xp, dtype="float64", seed=0):
    """Forward and backward of one case on ``xp``'s device -> (out, grads, args after forward).

    dout is a fixed random array (0.7 for a scalar loss)."""
    forward, backward, args = case.make(np.random.default_rng(seed))
    args = [to_backend(a, xp, dtype) for a in args]
    out, cache = forward(*args)
    if out.ndim == 0:
        dout = 0.7
    else:
        dout = to_backend(np.random.default_rng(seed + 1).standard_normal(out.shape), xp, dtype)
    return out, backward(dout, cache), args
