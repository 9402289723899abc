"""The residual add of a ResNet block:  out = a + b,  da = db = dout."""
from ._checks import check_dout


def add_forward(a, b):
    """a, b (same shape) -> out = a + b, cache"""
    if a.shape != b.shape:
        raise ValueError(f"residual add: branch shapes differ, {tuple(a.shape)} vs "
                         f"{tuple(b.shape)} (a downsample is needed on the shortcut)")
    return a + b, a.shape


def add_backward(dout, cache):
    """dout -> (da, db): the gradient reaches both branches unchanged."""
    check_dout("residual add", dout, cache)
    return dout, dout
