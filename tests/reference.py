"""Import PyTorch and torchvision as the reference implementation for the tests.

There is no CPU wheel of torchvision matching the CPU build of torch installed
for the tests, so torchvision is installed with ``--no-deps`` and its compiled
C++ operators (nms, roi_align, ...) fail to load. ResNet needs none of them, but
importing torchvision would still try to register meta and autograd kernels for
those operators and crash. Registering two empty modules under those names
before the import skips that registration.
"""
import sys
import types

import pytest

torch = pytest.importorskip("torch", reason="the reference tests need PyTorch (pip install torch==2.13.0)")


def import_torchvision():
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(name, types.ModuleType(name))
    import torchvision
    return torchvision
