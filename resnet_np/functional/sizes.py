"""The sizes of a sliding window, written once for every layer that slides one.

Along one axis of length ``size``, a window of ``kernel`` taps ``dilation``
apart covers ``extent = dilation*(kernel - 1) + 1`` entries. With ``before``
and ``after`` entries of padding and a step of ``stride``, it takes

    P = floor((size + before + after - extent) / stride) + 1

positions (torch's pooling with ``ceil_mode`` rounds up instead, but drops a
last window that would start in the padding after the input). Convolution,
max pooling, im2col and col2im, the CUDA kernels' wrappers, the ONNX export's
shape inference and the benchmark's shapes all call :func:`output_length`.

``padding='same'`` keeps P = size at stride 1: ``extent - 1`` entries of
padding in all, half before and the rest after (torch puts the odd one after):
:func:`same_padding`.
"""


def pair(value, name="value"):
    """``3 -> (3, 3)``; ``(1, 2) -> (1, 2)``."""
    if isinstance(value, int):
        return value, value
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return value


def extent(kernel, dilation=1):
    """Entries a window of ``kernel`` taps, ``dilation`` apart, spans: d*(k - 1) + 1."""
    return dilation * (kernel - 1) + 1


def output_length(size, kernel, stride=1, padding=0, dilation=1, ceil_mode=False,
                  drop_late_window=True):
    """Window positions along one axis: ``floor((size + before + after - extent) / stride) + 1``.

    ``padding`` is one amount for both sides or a pair (before, after). With
    ``ceil_mode`` (torch's pooling) the division rounds up, and a last window
    starting past the input and its padding before is dropped (torch's rule;
    ONNX's shape rule keeps it: ``drop_late_window=False``). The result is
    below 1 (0 with ``ceil_mode``) when the padded input is shorter than the window:
    callers check it.
    """
    before, after = (padding, padding) if isinstance(padding, int) else padding
    room = size + before + after - extent(kernel, dilation)
    if ceil_mode and room < 0:
        return 0            # no window fits (rounding up would make room for one)
    out = (-(-room // stride) if ceil_mode else room // stride) + 1
    if ceil_mode and drop_late_window and (out - 1) * stride >= size + before:
        out -= 1            # the last window must start inside the input or its padding before
    return out


def same_padding(kernel, dilation=1):
    """(before, after) padding that keeps a stride-1 output as long as its input, as torch:
    ``extent - 1`` in all, half before, the rest (one more for an odd total) after."""
    total = extent(kernel, dilation) - 1
    return total // 2, total - total // 2


def sides(padding):
    """Per-side padding: ``1 -> ((1, 1), (1, 1))``, ``(1, 2) -> ((1, 1), (2, 2))``;
    ``((top, bottom), (left, right))`` is kept."""
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    padding = tuple(padding)
    if len(padding) == 2 and all(isinstance(p, int) for p in padding):
        return (padding[0], padding[0]), (padding[1], padding[1])
    if (len(padding) == 2 and all(len(tuple(p)) == 2 for p in padding)
            and all(isinstance(v, int) for p in padding for v in p)):
        return tuple(tuple(p) for p in padding)
    raise ValueError(f"padding must be an int, a pair (ph, pw), ((top, bottom), (left, right)), "
                     f"'same' or 'valid', got {padding!r}")


def conv_padding(padding, kernel_size, stride, dilation, layer="conv2d"):
    """Resolve ``padding`` (int, pair, per-side pairs, 'same' or 'valid') to
    ((top, bottom), (left, right)).

    'same' pads dil*(R-1) in all, half before and the rest (one more for an even
    extent) after, as torch does; like torch it refuses a stride other than 1.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise ValueError(f"{layer}: invalid padding string {padding!r}, should be one of "
                             "'same', 'valid' or an int / pair of ints")
        if pair(stride, "stride") != (1, 1):
            raise ValueError(f"{layer}: padding='same' is not supported for strided "
                             f"convolutions (stride={stride})")
        return tuple(same_padding(k, d) for k, d in zip(kernel_size, pair(dilation, "dilation")))
    pads = sides(padding)
    if min(min(p) for p in pads) < 0:
        raise ValueError(f"{layer}: padding must be >= 0, got {padding}")
    return pads
