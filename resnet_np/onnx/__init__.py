"""Export a model to ONNX, node by node from its own module tree (PyTorch plays no part),
and run an exported file with onnxruntime.

    from resnet_np.onnx import export
    export(model, "resnet50.onnx")                              # input (batch, 3, 224, 224)
    export(model, "r18.onnx", input_size=(33, 47), fold_batch_norm=True)

    resnet-np export --weights resnet50.npz resnet50.onnx
    resnet-np predict --onnx resnet50.onnx cat.jpg              # runs it with onnxruntime

Two modules: :mod:`.exporter` builds the graph (``to_onnx``, ``export``,
``export_weights``); :mod:`.runtime` loads an exported file into an
onnxruntime session with the configuration its metadata records
(``load_session``).

Each module becomes the ONNX operator that computes the same thing:

    Conv2d             Conv (pads, strides, dilations, group, bias); padding_mode reflect,
                       replicate or circular adds a Pad node (reflect, edge, wrap) before it
    BatchNorm2d        BatchNormalization on the running statistics (eval semantics), or,
                       with fold_batch_norm, folded into the convolution before it:
                       s = gamma / sqrt(var + eps),  W' = W * s,  b' = (b - mean) * s + beta
    ReLU               Relu
    MaxPool2d          MaxPool (pads, strides, dilations; ceil_mode as extra padding after)
    AdaptiveAvgPool2d  GlobalAveragePool for 1x1; AveragePool where every cell has the same
                       size (the input size divisible by the output size), else an error
    Flatten            Flatten (axis 1)
    Linear             Gemm (transB = 1: the weight keeps its (out, in) layout)
    blocks             their layers, then Add (the shortcut) and Relu

The graph has one input, ``input`` (batch, C, H, W) float32, whose batch
dimension is dynamic (H and W too with ``dynamic_size=True``), and one output,
``logits`` for a ResNet. Initializers are named by the model's state_dict keys
(``layer1.0.conv1.weight``) and hold those arrays (in float32: onnxruntime has
no float64 convolution, so a float64 model is exported, with a warning, in
float32); a folded convolution keeps
its weight's key, and its bias takes the key of the convolution's bias or, if
it has none, of the batch norm's (``num_batches_tracked`` is not needed).

The model's ``metadata_props`` say how to feed it (all values JSON):

    image_size      [H, W] of the network input
    mean, std       per-channel, in [0, 1] pixel units: x = (pixels / 255 - mean) / std
    resize_shorter  present for weights without their own preprocessing (torchvision's):
                    resize the shorter side to this, then centre-crop image_size; absent:
                    resize the image to image_size
    classes         the class names, when the checkpoint has them
    model, num_classes, cifar_stem, batch_norm, preprocessing (in words)

``onnx`` and ``onnxruntime`` are optional: ``pip install resnet-np[onnx]``.
"""
from .exporter import (DEFAULT_OPSET, MIN_OPSET, PAD_MODES, ExportError, check_output_path,
                     default_input_size, export, export_weights, preprocessing, to_onnx)
from .runtime import load_session

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "PAD_MODES", "ExportError", "check_output_path",
           "default_input_size", "export", "export_weights", "load_session", "preprocessing",
           "to_onnx"]
