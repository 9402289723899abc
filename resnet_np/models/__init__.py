"""ResNet models."""
from .resnet import (MODELS, BasicBlock, Bottleneck, ResNet, build_model, resnet18, resnet34,
                     resnet50, resnet101, resnet152, resnext50_32x4d, wide_resnet50_2)

__all__ = ["MODELS", "BasicBlock", "Bottleneck", "ResNet", "build_model", "resnet18",
           "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
           "wide_resnet50_2"]
