"""Shared test setup: GPU tests are skipped, with the reason, where no GPU is usable, and
the ``xp`` fixture runs a test on every backend."""
import numpy as np
import pytest

from resnet_np import backend


def pytest_collection_modifyitems(config, items):
    if backend.gpu_available():
        return
    reason = ("no usable GPU: CuPy is not installed" if backend._cupy is None
              else "no usable GPU: CuPy found no CUDA device")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("gpu") is not None:   # not `in item.keywords`: that
            # also matches a folder named gpu on the path
            item.add_marker(skip)


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module of each backend: a test taking ``xp`` runs once per backend
    (NumPy always; CuPy marked ``gpu``, so skipped with the reason where no GPU is usable)."""
    return np if request.param == "numpy" else _cupy_or_skip()


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy", reason="the GPU tests need CuPy")
    if not backend.gpu_available():
        pytest.skip("CuPy found no CUDA device")
    return cupy


@pytest.fixture(scope="module")
def cp():
    """The ``cupy`` module, imported only here (never at collection time)."""
    return _cupy_or_skip()
