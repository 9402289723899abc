"""The residual add of a ResNet block:  out = a + b,  da = db = dout
(twin: :func:`.reference.add_forward`; this one can write the sum over ``a``)."""
from .. import backend
from ._checks import check_dout


def add_forward(a, b, inplace=False):
    """a, b (same shape) -> out = a + b, cache

    ``inplace=True`` writes the sum over ``a`` (no new array), for a branch output
    that nothing else keeps, such as the batch norm ending a block's residual branch.
    """
    if a.shape != b.shape:
        raise ValueError(f"residual add: branch shapes differ, {tuple(a.shape)} vs "
                         f"{tuple(b.shape)} (a downsample is needed on the shortcut)")
    if a.dtype != b.dtype:
        raise ValueError(f"residual add: branch dtypes differ, {a.dtype} vs {b.dtype}")
    xp = backend.get_array_module(a, b)
    return xp.add(a, b, out=a if inplace else None), a.shape


def add_backward(dout, cache):
    """dout -> (da, db): the gradient reaches both branches unchanged."""
    check_dout("residual add", dout, cache)
    return dout, dout
