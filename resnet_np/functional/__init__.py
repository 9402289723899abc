"""Pure functional layers: ``*_forward(...) -> (out, cache)`` and
``*_backward(dout, cache) -> gradients``.

To learn the maths, read :mod:`.reference` (every layer in its plainest form);
to see how it is made fast, read conv.py, batchnorm.py and pooling.py.

Shape notation, used in every docstring of this package:

    N       batch size
    C       input channels            K    output channels (filters)
    H, W    input height and width    P, Q output height and width
    R, S    kernel height and width   G    groups
    stride, pad, dilation             per spatial axis, (sh, sw) etc.
    D       features of a linear layer's input, F its outputs; M classes

Output size of a convolution or pooling window along one axis:

    P = floor((H + 2*pad - dilation*(R - 1) - 1) / stride) + 1

Arrays are (N, C, H, W) at the interface, as in PyTorch. Inside, the 4-D
layers work on the channels-last view ``x.transpose(0, 2, 3, 1)`` (N, H, W, C),
where a convolution is one matrix product over contiguous rows; the arrays they
return are channels-last in memory and (N, C, H, W) in shape (PyTorch calls this
the ``channels_last`` memory format), so chained layers pay no transposes.
"""
from .activation import relu_backward, relu_forward
from .batchnorm import batch_norm2d_backward, batch_norm2d_forward
from .conv import Conv2dCache, ConvGeometry, col2im, conv2d_backward, conv2d_forward, im2col
from .linear import flatten_backward, flatten_forward, linear_backward, linear_forward
from .loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from .padding import PADDING_MODES, pad2d_backward, pad2d_forward
from .pooling import (AdaptiveAvgPool2dCache, MaxPool2dCache, adaptive_avg_pool2d_backward,
                      adaptive_avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward,
                      max_pool2d_indices, max_pool2d_winners)
from . import reference
from .residual import add_backward, add_forward
# the reference twins under the names the tests and tutorials know
from .reference import conv2d_backward as conv2d_backward_naive
from .reference import conv2d_forward as conv2d_forward_naive
from .reference import max_pool2d_backward as max_pool2d_backward_naive

__all__ = [
    "AdaptiveAvgPool2dCache", "Conv2dCache", "ConvGeometry", "MaxPool2dCache", "PADDING_MODES",
    "max_pool2d_backward_naive", "max_pool2d_indices", "max_pool2d_winners", "pad2d_backward",
    "pad2d_forward",
    "adaptive_avg_pool2d_backward", "adaptive_avg_pool2d_forward", "add_backward",
    "add_forward", "batch_norm2d_backward", "batch_norm2d_forward", "col2im",
    "conv2d_backward", "conv2d_backward_naive", "conv2d_forward", "conv2d_forward_naive",
    "flatten_backward", "flatten_forward", "im2col", "linear_backward", "linear_forward",
    "max_pool2d_backward", "max_pool2d_forward", "relu_backward", "relu_forward",
    "reference", "softmax_cross_entropy_backward", "softmax_cross_entropy_forward",
]
