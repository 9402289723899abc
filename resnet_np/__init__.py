"""resnet-np: ResNets written from scratch in NumPy (CPU) and CuPy (GPU).

    import resnet_np as rn
    model = rn.resnet50(num_classes=10)          # float32; dtype="float64" for checks
    logits = model(x)                            # x: (N, 3, H, W)
    dx = model.backward(dlogits)                 # fills p.grad for every parameter
    optimizer = rn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
"""
from . import backend, dispatch, functional, nn, optim
from .backend import manual_seed
from .dispatch import implementations
from .models import (MODELS, BasicBlock, Bottleneck, ResNet, build_model, resnet18, resnet34,
                     resnet50, resnet101, resnet152, resnext50_32x4d, wide_resnet50_2)
from .nn import no_grad

__version__ = "0.1.0"

__all__ = ["MODELS", "BasicBlock", "Bottleneck", "ResNet", "backend", "build_model",
           "dispatch", "functional", "implementations", "manual_seed", "nn", "no_grad", "optim", "resnet18", "resnet34",
           "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2"]
