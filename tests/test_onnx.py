"""ONNX export: onnxruntime runs the exported graphs and must give our logits.

Every architecture, with randomised weights and batch-norm statistics, batch 1
and 7, square and odd non-square inputs, batch norm folded or not; layer
options against torch; a converted torchvision .pth against torchvision; the
``export`` command's errors; ``predict --onnx`` against the .npz route.
"""
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx",
                           reason="the ONNX tests need onnx (pip install 'resnet-np[onnx]')")
ort = pytest.importorskip("onnxruntime",
                          reason="the ONNX tests need onnxruntime (pip install 'resnet-np[onnx]')")

import resnet_np as rn  # noqa: E402
from resnet_np import nn  # noqa: E402
from resnet_np.cli import main  # noqa: E402
from resnet_np.convert import load_pretrained  # noqa: E402
from resnet_np.onnx import ExportError, export, to_onnx  # noqa: E402
from resnet_np.predict import predict, predict_onnx, resize_and_crop, softmax  # noqa: E402
from resnet_np.training import save_checkpoint  # noqa: E402
from test_cli import fails, write_image  # noqa: E402

TOLERANCE = 1e-5   # norm-wise relative error of float32 logits


def rel_err(ours, theirs):
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


BN_DRAWS = {"weight": (0.5, 1.5), "bias": (-0.5, 0.5), "running_mean": (-0.5, 0.5),
            "running_var": (0.5, 2.0)}


def randomise(model, seed=0):
    """Batch-norm weights, biases and running statistics drawn at random; eval mode."""
    rng = np.random.default_rng(seed)
    state = dict(model.state_dict())
    for prefix, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            for field, (low, high) in BN_DRAWS.items():
                key = f"{prefix}.{field}" if prefix else field
                state[key] = rng.uniform(low, high, module.num_features).astype(state[key].dtype)
    model.load_state_dict(state)
    return model.eval()


def images(batch, height, width, seed=1, channels=3):
    shape = (batch, channels, height, width)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ours(model, x):
    with rn.no_grad():
        return rn.backend.to_numpy(model(x))


def run(proto, x):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})[0]


# --------------------------------------------------------------------------- #
# Every architecture against our own forward pass
# --------------------------------------------------------------------------- #
# (name, constructor options, odd input size, batch norm folded?): both ways for each,
# but once for the three largest (a second export of 45-69 M parameters adds seconds).
BOTH = (False, True)
ARCHITECTURES = [
    ("resnet18", {}, (33, 47), BOTH),
    ("resnet34", {}, (33, 47), BOTH),
    ("resnet50", {}, (33, 47), BOTH),
    ("resnet101", {}, (33, 47), (False,)),
    ("resnet152", {}, (33, 47), (True,)),
    ("resnext50_32x4d", {}, (33, 47), BOTH),
    ("wide_resnet50_2", {}, (33, 47), (True,)),
    ("resnet18", {"cifar_stem": True}, (15, 11), BOTH),
    ("resnet50", {"replace_stride_with_dilation": [False, True, True]}, (33, 47), BOTH),
]


@pytest.mark.parametrize("name, kwargs, odd, folds", ARCHITECTURES,
                         ids=[f"{n}-{'-'.join(k) or 'imagenet'}" for n, k, _, _ in ARCHITECTURES])
def test_onnxruntime_gives_our_logits(name, kwargs, odd, folds):
    """Batch 1 square and batch 7 odd non-square inputs, through one dynamic-size graph."""
    model = randomise(rn.build_model(name, num_classes=10, **kwargs))
    square = min(odd) - 1 if min(odd) % 2 else min(odd)
    inputs = [images(1, square, square), images(7, *odd, seed=2)]
    expected = [ours(model, x) for x in inputs]
    errors = {}
    for fold in folds:
        proto = to_onnx(model, dynamic_size=True, fold_batch_norm=fold)
        for x, want in zip(inputs, expected):
            got = run(proto, x)
            assert got.shape == want.shape
            errors[(fold, x.shape)] = rel_err(got, want)
    assert max(errors.values()) < TOLERANCE, errors


def test_a_fixed_input_size_and_the_graph_it_declares():
    model = randomise(rn.resnet18(num_classes=10))
    proto = to_onnx(model, input_size=(33, 47))
    onnx.checker.check_model(proto, full_check=True)   # strict shape inference too
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (proto.graph.input[0], proto.graph.output[0])]
    assert dims == [["batch", 3, 33, 47], ["batch", 10]]
    for batch in (1, 7):
        x = images(batch, 33, 47)
        assert rel_err(run(proto, x), ours(model, x)) < TOLERANCE
    with pytest.raises(Exception, match="dimension|Got invalid dimensions"):
        run(proto, images(1, 32, 32))   # the size is part of the graph


def test_nodes_initializers_and_metadata():
    model = randomise(rn.resnet50(num_classes=10))
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    config = {"model": "resnet50", "num_classes": 10, "classes": list("abcdefghij"),
              "image_size": 40, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    proto = to_onnx(model, config=config)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    onnx.checker.check_model(proto, full_check=True)
    assert {n.op_type for n in proto.graph.node} == {
        "Conv", "BatchNormalization", "Relu", "MaxPool", "Add", "GlobalAveragePool", "Flatten",
        "Gemm"}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert inits.keys() == state.keys()
    assert all(np.array_equal(inits[k], state[k]) for k in state)
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props if p.key != "batch_norm"
            and p.key != "preprocessing" and p.key != "model"}
    assert meta == {"num_classes": 10, "classes": list("abcdefghij"), "image_size": [40, 40],
                    "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}

    folded = to_onnx(model, fold_batch_norm=True, config=config)
    ops = [n.op_type for n in folded.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 53
    names = {t.name for t in folded.graph.initializer}
    assert names < state.keys() and len(names) == 2 * 53 + 2   # conv weight and bias, fc
    assert "bn1.bias" in names and "layer1.0.downsample.1.bias" in names
    # without a configuration: torchvision's ImageNet preprocessing, at 224
    meta = {p.key: p.value for p in to_onnx(model).metadata_props}
    assert json.loads(meta["image_size"]) == [224, 224] and meta["resize_shorter"] == "256"


def test_the_module_imports_the_onnx_package_not_itself():
    from resnet_np.onnx import exporter
    assert exporter._import_onnx() is onnx and exporter.__name__ == "resnet_np.onnx.exporter"
    assert hasattr(onnx, "helper") and "resnet_np" not in onnx.__file__


def test_the_exporter_and_the_runtime_loader_are_apart():
    """Export builds graphs with onnx; running a file needs onnxruntime alone."""
    import resnet_np.onnx as package
    from resnet_np.onnx import exporter, runtime
    assert package.export is exporter.export and package.load_session is runtime.load_session
    assert "onnx" not in runtime.__dict__ and not hasattr(runtime, "to_onnx")


@pytest.mark.parametrize("opset", [18, 19, 21])
def test_newer_opsets(opset):
    model = randomise(rn.resnet18(num_classes=4, cifar_stem=True))
    proto = to_onnx(model, input_size=(9, 13), opset=opset, fold_batch_norm=True)
    assert proto.opset_import[0].version == opset
    x = images(2, 9, 13)
    assert rel_err(run(proto, x), ours(model, x)) < TOLERANCE


@pytest.mark.parametrize("opset", [16, 10_000, "17"])
def test_unsupported_opsets(opset):
    with pytest.raises(ValueError, match="opset must be an integer from 17"):
        to_onnx(rn.resnet18(num_classes=2), opset=opset)


def test_a_model_in_train_mode_is_exported_in_eval_mode_and_left_alone():
    model = randomise(rn.resnet18(num_classes=5, cifar_stem=True))
    x = images(7, 11, 9)
    expected = ours(model, x)
    model.train()
    with pytest.warns(UserWarning, match="train mode: it is exported with eval semantics"):
        proto = to_onnx(model, dynamic_size=True)
    assert all(m.training for m in model.modules())
    assert rel_err(run(proto, x), expected) < TOLERANCE


def test_a_float64_model_is_exported_in_float32():
    model = randomise(rn.resnet18(num_classes=5, cifar_stem=True, dtype="float64"))
    x = images(3, 12, 10).astype(np.float64)
    with pytest.warns(UserWarning, match="float64: it is exported in float32"):
        proto = to_onnx(model, dynamic_size=True)
    assert rel_err(run(proto, x.astype(np.float32)), ours(model, x)) < TOLERANCE


# --------------------------------------------------------------------------- #
# Layer options, against torch
# --------------------------------------------------------------------------- #
def export_layer(layer, x, opset=17):
    """onnxruntime's output for ``layer`` alone, exported at x's size."""
    proto = to_onnx(nn.Sequential(layer).eval(), input_size=x.shape[2:], opset=opset,
                    channels=x.shape[1])
    onnx.checker.check_model(proto, full_check=True)
    out = run(proto, x)
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    declared = [d.dim_param or d.dim_value for d in dims]
    assert declared == ["batch", *out.shape[1:]]    # the shapes the export tracked
    return out


def torch_conv(conv, x, padding_mode="zeros", padding=None):
    from reference import torch
    tconv = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                            conv.padding if padding is None else padding, conv.dilation,
                            conv.groups, conv.bias is not None, padding_mode)
    with torch.no_grad():
        tconv.weight.copy_(torch.from_numpy(conv.weight.data))
        if conv.bias is not None:
            tconv.bias.copy_(torch.from_numpy(conv.bias.data))
        return tconv(torch.from_numpy(x)).numpy()


def test_convolution_options():
    x = images(2, 9, 12, channels=4)
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2)
    assert rel_err(export_layer(conv, x), torch_conv(conv, x)) < TOLERANCE
    no_bias = nn.Conv2d(4, 6, 3, bias=False)
    assert rel_err(export_layer(no_bias, x), torch_conv(no_bias, x)) < TOLERANCE


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")   # torch's own
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_string_padding(padding):
    x = images(2, 9, 12)
    conv = nn.Conv2d(3, 5, (4, 3), dilation=(1, 2))
    conv.padding = padding      # as torch stores it
    want = torch_conv(conv, x, padding=padding)
    got = export_layer(conv, x)
    assert got.shape == want.shape and rel_err(got, want) < TOLERANCE


@pytest.mark.parametrize("mode, opset", [("reflect", 17), ("replicate", 17), ("circular", 19)])
def test_padding_modes_become_a_pad_node(mode, opset):
    x = images(2, 7, 9)
    conv = nn.Conv2d(3, 4, 3, padding=(1, 2))
    conv.padding_mode = mode
    assert rel_err(export_layer(conv, x, opset), torch_conv(conv, x, mode)) < TOLERANCE


def test_max_pool_options():
    from reference import torch
    x = images(2, 11, 14)
    for kwargs in [dict(kernel_size=3, stride=2, padding=1),
                   dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 0), dilation=(2, 1),
                        ceil_mode=True),
                   dict(kernel_size=2, ceil_mode=True),
                   dict(kernel_size=3, stride=4, padding=1, ceil_mode=True)]:  # a window less
        pool = nn.MaxPool2d(kwargs["kernel_size"], kwargs.get("stride"), kwargs.get("padding", 0))
        for option in ("dilation", "ceil_mode"):
            if option in kwargs:
                setattr(pool, option, kwargs[option])
        want = torch.nn.MaxPool2d(**kwargs)(torch.from_numpy(x)).numpy()
        got = export_layer(pool, x)
        assert got.shape == want.shape and np.array_equal(got, want), kwargs


@pytest.mark.parametrize("size", [(2, 3), (None, 1), 1, (3, None)])
def test_adaptive_average_pool_sizes(size):
    from reference import torch
    x = images(2, 6, 9)
    want = torch.nn.AdaptiveAvgPool2d(size)(torch.from_numpy(x)).numpy()
    got = export_layer(nn.AdaptiveAvgPool2d(size), x)
    assert got.shape == want.shape and rel_err(got, want) < TOLERANCE


def test_batch_norm_without_affine_parameters_and_a_linear_head():
    x = images(3, 5, 4)
    bn = randomise(nn.Sequential(nn.BatchNorm2d(3)))[0]
    bn.weight, bn.bias = None, None          # affine=False, as torch keeps it
    mean, var = bn.running_mean[None, :, None, None], bn.running_var[None, :, None, None]
    want = (x - mean) / np.sqrt(var + bn.eps)
    assert rel_err(export_layer(bn, x), want) < TOLERANCE
    linear = nn.Linear(60, 7, bias=False)
    head = nn.Sequential(nn.Flatten(), linear).eval()
    proto = to_onnx(head, input_size=(5, 4))
    assert rel_err(run(proto, x), x.reshape(3, 60) @ linear.weight.data.T) < TOLERANCE


class Swish(nn.Module):
    def forward(self, x):
        return x / (1 + np.exp(-x))


def unsupported(change):
    """A small model with one change that the export refuses."""
    model = rn.resnet18(num_classes=3, cifar_stem=True).eval()
    change(model)
    return model.eval()


@pytest.mark.parametrize("change, message", [
    (lambda m: setattr(m.layer2[0], "relu", Swish()),
     "layer2.0.relu (Swish): no ONNX export for a Swish"),
    (lambda m: setattr(m.layer1[1].conv1, "padding_mode", "circular"),
     "layer1.1.conv1 (Conv2d): padding_mode='circular' needs ONNX Pad mode 'wrap'"),
    (lambda m: setattr(m.conv1, "padding_mode", "mirror"),
     "conv1 (Conv2d): padding_mode='mirror' is not supported"),
    (lambda m: setattr(m.layer3[0].bn2, "track_running_stats", False),
     "layer3.0.bn2 (BatchNorm2d): track_running_stats=False"),
    (lambda m: setattr(m, "avgpool", nn.AdaptiveAvgPool2d((3, 3))),
     "avgpool (AdaptiveAvgPool2d): output size 3x3 from a 2x2 input"),
])
def test_unsupported_modules_and_options_are_named(change, message):
    with pytest.raises(ExportError) as info:
        to_onnx(unsupported(change), input_size=(16, 16))
    assert message in str(info.value)


def test_other_refusals():
    pool = nn.MaxPool2d(2)
    pool.return_indices = True
    with pytest.raises(ExportError, match=r"0 \(MaxPool2d\): return_indices=True"):
        to_onnx(nn.Sequential(pool).eval(), input_size=(4, 4))
    flatten = nn.Flatten()
    flatten.start_dim = 2
    with pytest.raises(ExportError, match="start_dim=2, end_dim=-1 is not supported"):
        to_onnx(nn.Sequential(flatten).eval(), input_size=(4, 4))
    with pytest.raises(ExportError, match="input size 3x3 is too small"):
        to_onnx(nn.Sequential(nn.Conv2d(3, 4, 5)).eval(), input_size=(3, 3))
    with pytest.raises(ExportError, match="expects 4 input channels, gets 3"):
        to_onnx(nn.Sequential(nn.Conv2d(4, 4, 1)).eval(), input_size=(3, 3))
    with pytest.raises(ExportError, match="needs a known input size"):
        to_onnx(nn.Sequential(nn.AdaptiveAvgPool2d(2)).eval(), dynamic_size=True)
    with pytest.raises(TypeError, match="expected a resnet_np Module"):
        to_onnx(object())


def test_a_failed_export_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    with pytest.raises(ExportError):
        export(unsupported(lambda m: setattr(m, "relu", Swish())), path, input_size=(8, 8))
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    model = rn.resnet18(num_classes=3, cifar_stem=True).eval()

    def full_disk(fd):
        raise OSError(28, "No space left on device")
    with monkeypatch.context() as patch:   # the write itself fails, after the graph is built
        patch.setattr(rn.training.atomic.os, "fsync", full_disk)
        with pytest.raises(OSError, match="no space left on the device holding"):
            export(model, path, input_size=(8, 8))
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    proto = export(model, path, input_size=(8, 8))
    assert onnx.load(str(path)) == proto and len(list(tmp_path.iterdir())) == 1


# --------------------------------------------------------------------------- #
# torchvision weights, the command line and predict --onnx
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def torchvision_pth(tmp_path_factory):
    """A torchvision ResNet-18 with random weights and batch-norm statistics, and its .pth."""
    from reference import import_torchvision, torch, torchvision_model
    torchvision = import_torchvision()
    model = torchvision_model("resnet18", "float32", num_classes=1000).eval()
    folder = tmp_path_factory.mktemp("torchvision")
    torch.save(model.state_dict(), folder / "resnet18.pth")
    return torch, torchvision, model, folder


def test_torchvision_weights_converted_and_exported(torchvision_pth, capsys):
    torch, _, model, folder = torchvision_pth
    npz, out = folder / "resnet18.npz", folder / "resnet18.onnx"
    assert main(["convert", str(folder / "resnet18.pth"), str(npz), "--force"]) == 0
    assert main(["export", "--weights", str(npz), str(out), "--force"]) == 0
    assert f"wrote {out}: resnet18 (1000 classes, ImageNet stem, float32), opset 17, " \
           "input batch x 3 x 224 x 224" in capsys.readouterr().out
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    x = images(2, 224, 224)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    errors = [rel_err(run(proto, x), want)]
    assert main(["export", "--weights", str(npz), str(out), "--force", "--fold-bn",
                 "--height", "97", "--width", "131"]) == 0
    x = images(3, 97, 131)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    errors.append(rel_err(run(onnx.load(str(out)), x), want))
    assert max(errors) < TOLERANCE, errors


def test_export_command_errors(tmp_path, capsys):
    weights = tmp_path / "w.npz"
    model = rn.resnet18(num_classes=3, cifar_stem=True)
    save_checkpoint(weights, model.state_dict(), {"model": "resnet18", "num_classes": 3,
                                                  "cifar_stem": True, "dtype": "float32"})
    (tmp_path / "garbage.npz").write_bytes(b"\x00" * 64)
    np.savez(tmp_path / "arrays.npz", a=np.zeros(3), b=np.ones(2))
    save_checkpoint(tmp_path / "wrong.npz", model.state_dict(),
                    {"model": "resnet34", "num_classes": 3, "cifar_stem": True,
                     "dtype": "float32"})
    (tmp_path / "taken.onnx").write_bytes(b"mine")
    (tmp_path / "folder.onnx").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    out = str(tmp_path / "out.onnx")
    cases = [
        (["--weights", str(tmp_path / "nope.npz"), out], "nope.npz does not exist"),
        (["--weights", str(tmp_path / "garbage.npz"), out], "not a readable .npz file"),
        (["--weights", str(tmp_path / "arrays.npz"), out], "not the weights of a ResNet"),
        (["--weights", str(tmp_path / "wrong.npz"), out], "does not fit a resnet34"),
        (["--weights", str(weights), out, "--model", "resnet50"], "not a resnet50"),
        (["--weights", str(tmp_path / "taken.onnx"), out], "is an ONNX model, not weights"),
        (["--weights", str(weights), str(tmp_path / "missing" / "m.onnx")],
         "the folder " + str(tmp_path / "missing") + " does not exist"),
        (["--weights", str(weights), str(tmp_path / "taken.onnx")],
         "taken.onnx exists; pass --force"),
        (["--weights", str(weights), str(tmp_path / "folder.onnx"), "--force"], "it is a folder"),
        (["--weights", str(weights), out, "--opset", "16"], "opset must be an integer from 17"),
    ]
    for argv, message in cases:
        assert message in fails(capsys, ["export", *argv]), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "taken.onnx").read_bytes() == b"mine"
    assert "--opset: expected an integer >= 1" in fails(
        capsys, ["export", "--weights", str(weights), out, "--opset", "x"], code=2)


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A checkpoint as training writes one: class names, its mean, std and image size."""
    folder = tmp_path_factory.mktemp("checkpoint")
    model = randomise(rn.resnet18(num_classes=4, cifar_stem=True), seed=5)
    config = {"model": "resnet18", "num_classes": 4, "cifar_stem": True, "dtype": "float32",
              "classes": ["ant", "bee", "cricket", "dragonfly"], "image_size": 20,
              "mean": [0.45, 0.5, 0.55], "std": [0.25, 0.2, 0.3]}
    save_checkpoint(folder / "best.npz", model.state_dict(), config)
    pictures = [str(write_image(folder / f"{i}.png", size=(23 + 9 * i, 31), seed=i))
                for i in range(3)]
    return folder, pictures


def top_lines(capsys, argv):
    assert main(argv) == 0
    return capsys.readouterr().out


def test_predict_onnx_prints_the_npz_route_top_k(trained_checkpoint, capsys):
    folder, pictures = trained_checkpoint
    npz, out = str(folder / "best.npz"), str(folder / "best.onnx")
    top_lines(capsys, ["export", "--weights", npz, out, "--fold-bn"])
    printed = top_lines(capsys, ["predict", *pictures, "--onnx", out, "--topk", "3"])
    assert printed == top_lines(capsys, ["predict", *pictures, "--weights", npz, "--topk", "3"])
    assert printed.count("dragonfly") + printed.count("cricket") >= 3   # the saved names
    net, config = load_pretrained(npz)
    export(net, out, config=config)                                 # unfolded, by the API
    via_onnx = predict_onnx(pictures, out, topk=4, verbose=False)
    via_npz = predict(pictures, npz, model=None, topk=4, verbose=False)
    for a, b in zip(via_onnx, via_npz):
        assert [i for i, _, _ in a] == [i for i, _, _ in b]
        np.testing.assert_allclose([p for _, _, p in a], [p for _, _, p in b], atol=1e-6)
    assert "holds a resnet18" in fails(capsys, ["predict", pictures[0], "--onnx", out,
                                                "--model", "resnet34"])


def test_predict_onnx_at_a_non_square_export_size(trained_checkpoint, capsys):
    from PIL import Image
    folder, pictures = trained_checkpoint
    npz, out = str(folder / "best.npz"), str(folder / "wide.onnx")
    top_lines(capsys, ["export", "--weights", npz, out, "--height", "20", "--width", "28"])
    net, config = load_pretrained(npz)
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((28, 20), Image.BILINEAR))
                       for p in pictures])                      # PIL sizes are (width, height)
    probs = softmax(ours(net, rn.data.normalize(pixels, config["mean"], config["std"])))
    for result, p in zip(predict_onnx(pictures, out, topk=4, verbose=False), probs):
        np.testing.assert_allclose([q for _, _, q in result], np.sort(p)[::-1], atol=1e-6)


def test_predict_onnx_with_imagenet_preprocessing(torchvision_pth, tmp_path, capsys):
    torch, _, _, folder = torchvision_pth
    npz, out = tmp_path / "r18.npz", tmp_path / "r18.onnx"
    main(["convert", str(folder / "resnet18.pth"), str(npz)])
    main(["export", "--weights", str(npz), str(out)])
    capsys.readouterr()
    picture = str(write_image(tmp_path / "photo.jpg", size=(300, 257), seed=1))
    printed = top_lines(capsys, ["predict", picture, "--onnx", str(out)])
    assert printed == top_lines(capsys, ["predict", picture, "--weights", str(npz)])


def test_predict_onnx_refuses_files_without_metadata(trained_checkpoint, tmp_path, capsys):
    folder, pictures = trained_checkpoint
    proto = to_onnx(rn.resnet18(num_classes=2, cifar_stem=True).eval(), input_size=(8, 8))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    line = fails(capsys, ["predict", pictures[0], "--onnx", str(tmp_path / "bare.onnx")])
    assert "no image_size, mean, std in its metadata" in line
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    line = fails(capsys, ["predict", pictures[0], "--onnx", str(tmp_path / "junk.onnx")])
    assert "not a readable ONNX model" in line
    assert "does not exist" in fails(capsys, ["predict", pictures[0], "--onnx",
                                              str(tmp_path / "none.onnx")])


def test_resize_and_crop_is_torchvisions_transform(torchvision_pth, tmp_path):
    _, torchvision, _, _ = torchvision_pth
    from PIL import Image
    T = torchvision.transforms
    picture = Image.open(write_image(tmp_path / "p.png", size=(157, 211), seed=3)).convert("RGB")
    mean, std = rn.data.IMAGENET_MEAN, rn.data.IMAGENET_STD
    assert np.array_equal(resize_and_crop(picture, 256, (224, 224), mean, std),
                          rn.data.imagenet_preprocess(picture))
    want = T.Compose([T.Resize(128), T.CenterCrop((97, 113)), T.ToTensor(),
                      T.Normalize(mean, std)])(picture).numpy()
    np.testing.assert_allclose(resize_and_crop(picture, 128, (97, 113), mean, std), want,
                               atol=1e-6)
