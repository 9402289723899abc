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


def torchvision_model(name, dtype, num_classes=10, seed=0, **kwargs):
    """A torchvision model whose batch norms are randomised too, so that eval mode
    is not the identity and every affine parameter matters."""
    torchvision = import_torchvision()
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(num_classes=num_classes, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.to(getattr(torch, dtype))
