"""Modules: the object layer over :mod:`resnet_np.functional`, named as torch.nn names them."""
from .layers import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, CrossEntropyLoss, Flatten, Linear,
                     MaxPool2d, ReLU)
from .module import (Module, Parameter, Sequential, is_grad_enabled, no_grad, weights_changed,
                     weights_version)

__all__ = ["AdaptiveAvgPool2d", "BatchNorm2d", "Conv2d", "CrossEntropyLoss", "Flatten",
           "Linear", "MaxPool2d", "Module", "Parameter", "ReLU", "Sequential",
           "is_grad_enabled", "no_grad", "weights_changed", "weights_version"]
