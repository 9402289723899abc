"""Bad input met as a new user or an attacker would: one clear line, never a traceback.

Damaged, unsafe and NaN weights; checkpoints without their optimizer state or class
count; images too large for memory; one-class folders; names holding terminal codes;
run folders given as weights; and the gradient check, which must pass on correct
gradients at every input it accepts and fail on wrong ones.
"""
import errno
import json
import os
import pickle

import numpy as np
import pytest

import resnet_np as rn
from resnet_np import nn
from resnet_np.cli import main
from resnet_np.convert import infer_config
from resnet_np.data import load_cifar10, load_dataset, load_image_folder
from resnet_np.gradcheck import Decisions, check_input, check_model
from resnet_np.predict import class_names
from resnet_np.training import load_checkpoint, save_checkpoint
from resnet_np.training.atomic import atomic_write, atomic_write_text
from resnet_np.training.checkpoint import CheckpointError
from test_cli import fails  # noqa: E402  (one home: exit code and exactly one error line)

Image = pytest.importorskip("PIL.Image", reason="the image tests need Pillow")

CLASSES = ["ant", "bee", "cat"]




def write_checkpoint(path, classes=CLASSES, drop=(), edit_config=None, edit_state=None):
    """A small resnet18 checkpoint (with an optimizer state) as training writes one."""
    rn.manual_seed(0)
    model = rn.resnet18(num_classes=3, cifar_stem=True)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    if edit_state:
        edit_state(state)
    config = {"model": "resnet18", "num_classes": 3, "cifar_stem": True, "dtype": "float32",
              "image_size": 8, "mean": [0.5] * 3, "std": [0.25] * 3, "classes": classes,
              "dataset": "digits"}
    optimizer = {"state": {0: {"momentum": np.ones(3, np.float32)}}, "lr": 0.1}
    save_checkpoint(path, state, config, optimizer=optimizer, progress={"epoch": 1})
    if drop or edit_config:      # damage the file as a hand edit or a bad copy would
        arrays = dict(np.load(path))
        meta = json.loads(str(arrays["meta"]))
        if edit_config:
            edit_config(meta["config"])
        arrays["meta"] = np.array(json.dumps(meta))
        np.savez(path, **{k: v for k, v in arrays.items() if not (drop and k.startswith(drop))})
    return path


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.full((12, 10, 3), 90, np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- #
# Checkpoints and weights
# --------------------------------------------------------------------------- #
def test_predict_needs_no_optimizer_state_but_resume_says_it_is_missing(tmp_path, image,
                                                                         capsys):
    ckpt = write_checkpoint(tmp_path / "w.npz", drop="state/optimizer")
    assert main(["predict", str(image), "--weights", str(ckpt)]) == 0
    assert "1. " in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="optimizer state is incomplete .* cannot be "
                                              "resumed"):
        load_checkpoint(ckpt)


def test_a_config_without_num_classes_or_with_too_few_class_names(tmp_path, image, capsys):
    no_count = write_checkpoint(tmp_path / "a.npz", edit_config=lambda c: c.pop("num_classes"))
    assert "config lacks 'num_classes'" in fails(capsys, ["predict", str(image), "--weights",
                                                          str(no_count)])
    short = write_checkpoint(tmp_path / "b.npz", classes=["ant"])
    assert "classes are 1 class names for 3 classes" in fails(
        capsys, ["predict", str(image), "--weights", str(short)])


def test_class_names_must_match_the_models_outputs():
    """predict --onnx reads the names from the file's metadata: the same check."""
    with pytest.raises(ValueError, match="2 class names for a model of 3 classes"):
        class_names({"classes": ["a", "b"], "image_size": 8}, 3)
    assert class_names({"classes": ["a", "b", "c"]}, 3) == ["a", "b", "c"]
    assert class_names({"num_classes": 2}) == ["0", "1"]


def nan_in_fc(state):
    state["fc.weight"][1, 2] = np.nan


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_nan_weights_are_refused_by_every_command(command, tmp_path, image, capsys):
    if command == "export":
        pytest.importorskip("onnx")
    ckpt = write_checkpoint(tmp_path / "nan.npz", edit_state=nan_in_fc)
    argv = {"predict": ["predict", str(image), "--weights", str(ckpt)],
            "evaluate": ["evaluate", "--weights", str(ckpt), "--limit", "4"],
            "export": ["export", "--weights", str(ckpt), str(tmp_path / "m.onnx")]}[command]
    line = fails(capsys, argv)
    assert "NaN or infinite weights in fc.weight; refusing to use them" in line
    assert not (tmp_path / "m.onnx").exists()


def test_nan_weights_are_refused_by_the_loader_that_resume_uses(tmp_path):
    """Trainer.resume puts a checkpoint's weights in its model with restore_model."""
    from resnet_np.training import restore_model
    ckpt = load_checkpoint(write_checkpoint(tmp_path / "nan.npz", edit_state=nan_in_fc))
    model = rn.resnet18(num_classes=3, cifar_stem=True)
    before = model.fc.weight.data.copy()
    with pytest.raises(CheckpointError, match="nan.npz: NaN or infinite weights in fc.weight"):
        restore_model(model, ckpt.model_state, ckpt.path)
    np.testing.assert_array_equal(model.fc.weight.data, before)


def test_convert_refuses_infinite_weights(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(v.copy()) for k, v in rn.resnet18(num_classes=3).state_dict()
             .items()}
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("inf")
    torch.save(state, tmp_path / "inf.pth")
    line = fails(capsys, ["convert", str(tmp_path / "inf.pth")])
    assert "NaN or infinite weights in layer1.0.conv1.weight" in line
    assert not (tmp_path / "inf.npz").exists()


class RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_malicious_pth_is_refused_as_unsafe_without_advice_to_run_it(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    torch.save({"fc.weight": torch.zeros(2, 2), "payload": RunsCode(marker)},
               tmp_path / "evil.pth")
    line = fails(capsys, ["convert", str(tmp_path / "evil.pth")])
    assert "refused as unsafe" in line and "weights_only" not in line
    assert not marker.exists()


def test_a_text_file_named_npz_is_not_an_npz_file(tmp_path, image, capsys):
    (tmp_path / "notes.npz").write_text("hello\n")
    line = fails(capsys, ["predict", str(image), "--weights", str(tmp_path / "notes.npz")])
    assert "notes.npz: not a readable .npz file: it is not a zip archive" in line
    assert "allow_pickle" not in line


def test_a_transposed_classifier_is_named(tmp_path):
    state = dict(rn.resnet18(num_classes=1000).state_dict())
    state["fc.weight"] = state["fc.weight"].T
    with pytest.raises(CheckpointError, match=r"fc.weight has shape \(512, 1000\), but a "
                                              r"resnet18's classifier takes 512 features.*"
                                              "transposed"):
        infer_config(state, "t.npz")


def test_load_state_dict_calls_a_transposed_matrix_transposed_not_512_classes():
    model = rn.resnet18(num_classes=1000)
    state = dict(model.state_dict())
    state["fc.weight"] = state["fc.weight"].T
    with pytest.raises(ValueError) as err:
        model.load_state_dict(state)
    assert "fc.weight: checkpoint (512, 1000) vs model (1000, 512) (transposed?)" in str(err.value)
    assert "512 classes" not in str(err.value)


def test_weights_may_be_a_run_folder(tmp_path, image, capsys):
    run = tmp_path / "run"
    run.mkdir()
    write_checkpoint(run / "best.npz")
    assert main(["predict", str(image), "--weights", str(run)]) == 0
    assert f"using {run / 'best.npz'}, the best checkpoint of the run" in capsys.readouterr().err
    (run / "best.npz").unlink()
    line = fails(capsys, ["evaluate", "--weights", str(run)], code=2)
    assert "is a folder without best.npz" in line


def test_convert_of_an_npz_says_so_before_asking_for_force(tmp_path, capsys):
    npz = write_checkpoint(tmp_path / "w.npz")
    (tmp_path / "out.npz").write_bytes(b"x")
    line = fails(capsys, ["convert", str(npz), str(tmp_path / "out.npz")])
    assert "already a resnet-np .npz file: there is nothing to convert" in line
    assert "--force" not in line


def test_names_with_terminal_codes_or_newlines_are_escaped(tmp_path, image, capsys):
    ckpt = write_checkpoint(tmp_path / "w.npz", classes=["\x1b[31mred", "two\nlines", "ok"])
    assert main(["predict", str(image), "--weights", str(ckpt), "--topk", "3"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31mred" in out and "two\\nlines" in out
    line = fails(capsys, ["predict", str(image), "--weights", str(tmp_path / "\x1b[2Jx.npz")])
    assert "\x1b" not in line and "\\x1b[2Jx.npz does not exist" in line


# --------------------------------------------------------------------------- #
# load_state_dict and backward
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("value", [[1, 2, 3], None])
def test_load_state_dict_of_something_else_than_a_mapping(value):
    with pytest.raises(TypeError, match="expected a state_dict .* got "
                                        + type(value).__name__):
        rn.resnet18(num_classes=2).load_state_dict(value)


def test_load_state_dict_refuses_integer_weights_and_negative_variances():
    model = rn.resnet18(num_classes=2)
    state = dict(model.state_dict())
    state["conv1.weight"] = np.ones(state["conv1.weight"].shape, np.int64)
    state["layer1.0.bn1.running_var"] = np.full(64, -1.0, np.float32)
    with pytest.raises(ValueError) as err:
        model.load_state_dict(state)
    assert "integer or boolean values for floating-point weights (1): conv1.weight" \
        in str(err.value)
    assert "negative variances in running_var (1): layer1.0.bn1.running_var" in str(err.value)


def test_backward_before_forward_names_the_module_once():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(RuntimeError) as err:
        model.backward(np.ones((1, 2), np.float32))
    assert str(err.value).count("(Linear)") == 1
    assert str(err.value).startswith("0 (Linear): backward called without a forward")


# --------------------------------------------------------------------------- #
# Files written atomically: errors name the file and the cause
# --------------------------------------------------------------------------- #
def test_a_deleted_folder_is_named_not_a_temporary_file(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        atomic_write_text(tmp_path / "gone" / "config.json", "{}")
    assert str(err.value) == (f"cannot write {tmp_path / 'gone' / 'config.json'}: its folder "
                              f"{tmp_path / 'gone'} does not exist (deleted or moved?)")


def test_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path):
    (tmp_path / "last.npz").write_bytes(b"old")
    with pytest.raises(OSError) as err:
        with atomic_write(tmp_path / "last.npz") as f:
            f.write(b"new")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))   # as a full disk's write
    assert err.value.errno == errno.ENOSPC
    assert str(err.value) == (f"cannot write {tmp_path / 'last.npz'}: no space left on the "
                              f"device holding {tmp_path}")
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]
    assert (tmp_path / "last.npz").read_bytes() == b"old"


# --------------------------------------------------------------------------- #
# Datasets
# --------------------------------------------------------------------------- #
def test_images_too_large_for_memory_are_one_line_before_any_allocation(capsys):
    line = fails(capsys, ["train", "--image-size", "30000", "--limit", "32", "--no-progress",
                          "--out", "never-written"])
    assert "image size 30000:" in line and "at 30000x30000 need" in line and "bytes" in line
    assert not os.path.exists("never-written")


def test_evaluate_resizes_only_the_limited_images(tmp_path, monkeypatch, capsys):
    from resnet_np.data import registry
    sizes = []
    resize = registry.resize_images
    monkeypatch.setattr(registry, "resize_images",
                        lambda images, size: sizes.append(len(images)) or resize(images, size))
    ckpt = write_checkpoint(tmp_path / "w.npz", classes=[str(d) for d in range(10)],
                            edit_config=lambda c: c.update(num_classes=10))
    state = dict(np.load(ckpt))
    state.update({k: np.zeros((10,) + v.shape[1:], v.dtype) for k, v in state.items()
                  if k in ("model/fc.weight", "model/fc.bias")})
    np.savez(ckpt, **state)
    assert main(["evaluate", "--weights", str(ckpt), "--limit", "5", "--image-size", "24",
                 "--no-progress", "--out", str(tmp_path)]) == 0
    assert sizes == [5] and "5 images" in capsys.readouterr().out


def test_limit_is_applied_before_resizing(monkeypatch):
    from resnet_np.data import registry
    from resnet_np.training import subset
    sizes = []
    resize = registry.resize_images
    monkeypatch.setattr(registry, "resize_images",
                        lambda images, size: sizes.append(len(images)) or resize(images, size))
    small = load_dataset("digits", split="train", image_size=16, limit=20, seed=3)
    assert sizes == [20]
    whole = subset(load_dataset("digits", split="train", image_size=16), 20, 3)
    np.testing.assert_array_equal(small.images, whole.images)
    np.testing.assert_array_equal(small.labels, whole.labels)
    assert small.name == whole.name


def test_a_one_class_folder_is_refused(tmp_path):
    (tmp_path / "cat").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "cat" / "a.png")
    with pytest.raises(ValueError, match="one class subfolder \\(cat\\); a classifier needs "
                                         "at least 2 classes"):
        load_image_folder(tmp_path, 4)


def cifar_batch(protocol, data, labels):
    return pickle.dumps({"data": data, "labels": labels}, protocol=protocol)


class CallsGetcwd:
    def __reduce__(self):
        return os.getcwd, ()


def test_cifar_protocol_5_loads_and_a_malicious_pickle_is_called_unsafe(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("abcdefghij")}, 5))
    (folder / "test_batch").write_bytes(cifar_batch(5, data, [1, 2, 3]))
    test = load_cifar10(tmp_path, "test")
    np.testing.assert_array_equal(test.images[1], data[1].reshape(3, 32, 32).transpose(1, 2, 0))
    assert test.labels.tolist() == [1, 2, 3]
    (folder / "test_batch").write_bytes(pickle.dumps({"data": CallsGetcwd()}, protocol=5))
    with pytest.raises(ValueError, match="test_batch: refused as unsafe, not loaded") as err:
        load_cifar10(tmp_path, "test")
    assert "corrupt" not in str(err.value)
    buffers = []        # valid, but its pixels are stored outside the file
    (folder / "test_batch").write_bytes(pickle.dumps({"data": data, "labels": [1, 2, 3]},
                                                     protocol=5, buffer_callback=buffers.append))
    with pytest.raises(ValueError, match="test_batch: a valid pickle, but not one resnet-np "
                                         "reads: its arrays are out-of-band") as err:
        load_cifar10(tmp_path, "test")
    (folder / "test_batch").write_bytes(b"\x80\x05garbage")
    with pytest.raises(ValueError, match="test_batch: truncated or corrupt CIFAR file"):
        load_cifar10(tmp_path, "test")


# --------------------------------------------------------------------------- #
# The gradient check
# --------------------------------------------------------------------------- #
def small_network(seed=0):
    rn.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False, dtype="float64"),
                         nn.BatchNorm2d(6, dtype="float64"), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 4 * 4, 5, dtype="float64"))


def test_a_step_across_a_kink_is_seen():
    model = small_network().eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    with Decisions() as base:
        model(x)
    with Decisions() as same:
        model(x + 1e-12)
    assert base.same_as(same)
    with Decisions() as moved:
        model(x + 0.5)
    assert not base.same_as(moved)


def test_gradients_pass_even_when_long_steps_cross_kinks():
    """With a step of 0.1 almost every direction crosses a ReLU or max-pool kink, where
    a finite difference is wrong by far: such directions are redrawn, shorter."""
    model = small_network().train()
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8))
    with pytest.raises(ValueError, match="input: each of 2 directions crossed a ReLU or "
                                         "max-pool kink"):
        check_model(model, x, h=1e-1, steps=1)
    rows = check_model(model, x, h=1e-1, steps=5)
    assert max(r[4] for r in rows) < 1e-6, rows


def test_a_wrong_backward_fails_the_check(monkeypatch):
    model = small_network().train()
    relu = model[2]
    backward = type(relu).backward

    def off_by_one_percent(self, dout):
        return 1.01 * backward(self, dout)
    monkeypatch.setattr(relu, "backward", off_by_one_percent.__get__(relu))
    rows = check_model(model, np.random.default_rng(1).standard_normal((2, 3, 8, 8)))
    errors = {name: err for name, _, _, _, err in rows}
    assert errors["input"] > 1e-3 and errors["0.weight"] > 1e-3    # before the ReLU
    assert errors["5.weight"] < 1e-6                                 # after it


def test_eval_mode_check_moves_the_folded_weights_too():
    """In eval mode a ResNet folds batch norm into its convolutions under no_grad: the
    check must see each moved weight (it once saw none, an error of 1.0)."""
    rn.manual_seed(0)
    model = rn.models.ResNet(rn.models.BasicBlock, [1, 1, 1, 1], num_classes=3,
                             dtype="float64", cifar_stem=True).eval()
    rows = check_model(model, np.random.default_rng(0).standard_normal((1, 3, 4, 4)))
    assert max(r[4] for r in rows) < 1e-6, max(rows, key=lambda r: r[4])


def test_inputs_too_small_for_train_mode_batch_norm_are_refused(capsys):
    model = rn.resnet18(num_classes=2, dtype="float64")
    with pytest.raises(ValueError, match="normalises over 2 value"):
        check_input(model, np.zeros((2, 3, 32, 32)))
    check_input(model.eval(), np.zeros((2, 3, 32, 32)))           # eval mode: any size
    line = fails(capsys, ["gradcheck", "--size", "32"])
    assert "--size 32 --batch 2 cannot be checked in train mode" in line
    assert "Functional layers" not in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--size", "-5"], ["--tolerance", "nan"],
                                  ["--tolerance", "0"]])
def test_gradcheck_refuses_bad_values(capsys, argv):
    line = fails(capsys, ["gradcheck", *argv], code=2)
    assert "expected" in line


def test_gradcheck_help_shows_defaults_and_explains_arg(capsys):
    with pytest.raises(SystemExit):
        main(["gradcheck", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 64)" in text and "(default: 1e-06)" in text
    assert "arg column" in text and "0 the input, 1 the weight" in text
