"""Shared test setup: GPU tests are skipped, with the reason, where no GPU is usable, and
the ``xp`` fixture runs a test on every backend.

With ``RESNET_NP_CUPY_STANDIN=1`` the GPU tests run on the strict CuPy stand-in of
resnet_np.cupy_standin (NumPy on the CPU, CuPy's rules enforced); the few that need the real
CUDA libraries skip themselves there with the reason (see ``needs_real_cuda``).
"""
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
    if backend._cupy is None:
        pytest.skip("the GPU tests need CuPy (or RESNET_NP_CUPY_STANDIN=1)")
    if not backend.gpu_available():
        pytest.skip("CuPy found no CUDA device")
    return backend._cupy


@pytest.fixture(scope="module")
def cp():
    """The ``cupy`` module (or its stand-in), taken from resnet_np.backend, never imported
    at collection time."""
    return _cupy_or_skip()


def needs_real_cuda(what):
    """Skip, with the reason, on the CuPy stand-in: ``what`` needs the real CUDA libraries."""
    if backend.uses_standin():
        pytest.skip(f"{what} needs a real GPU: the CuPy stand-in does not emulate it")


@pytest.fixture(autouse=True)
def _standin_record():
    """Each test starts with an empty stand-in record (syncs, products, launches)."""
    if backend.uses_standin():
        backend._cupy.record.clear()
    yield
