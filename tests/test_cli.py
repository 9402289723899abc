"""The ``resnet-np`` command: every subcommand, and one clear line for every bad input.

Also the conversion of torchvision weights and ``predict`` against torchvision
itself. The training runs are tiny (32 digits of 16x16, one epoch).
"""
import hashlib
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import resnet_np as rn
from resnet_np import training
from resnet_np.cli import main
from resnet_np.convert import convert, infer_config, load_torch_state_dict
from resnet_np.predict import predict
from resnet_np.training import TrainConfig, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--limit", "32", "--batch-size", "16", "--image-size", "16", "--test-limit", "16",
              "--epochs", "1", "--no-progress"]


def fails(capsys, argv, code=1):
    """Run ``main(argv)``, expect exit ``code`` and exactly one error line; return it."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnet-np: error: "), err
    assert "Traceback" not in err
    return lines[0]


def digests(folder):
    """Hashes of a run's files, to prove that a failed command left them alone."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).iterdir()) if p.is_file()}


def write_image(path, size=(40, 30), seed=0):
    from PIL import Image
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-epoch run made through the command line."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY_TRAIN, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return write_image(tmp_path_factory.mktemp("images") / "photo.png")


# --------------------------------------------------------------------------- #
# Help and dispatch
# --------------------------------------------------------------------------- #
def test_help_lists_every_command_and_each_command_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for command in ("train", "evaluate", "predict", "convert", "gradcheck", "bench"):
        assert f"    {command} " in text
    for command in ("train", "evaluate", "predict", "convert"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert f"usage: resnet-np {command}" in text and "examples:" in text


def test_python_dash_m_runs_the_command_line():
    result = subprocess.run([sys.executable, "-m", "resnet_np", "train", "--lr", "nan"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("resnet-np: error: argument --lr: expected a finite number "
                                     "> 0, got 'nan' (see `resnet-np train --help`)")


@pytest.mark.parametrize("command", ["bench", "gradcheck"])
def test_gradcheck_and_bench_get_their_arguments_untouched(command, monkeypatch):
    received = []
    tool = types.ModuleType(f"resnet_np.{command}")
    tool.main = lambda argv: received.append(argv) or 0
    monkeypatch.setitem(sys.modules, f"resnet_np.{command}", tool)
    assert main([command, "--quick", "--model", "resnet18"]) == 0
    assert main([command, "--help"]) == 0
    assert received == [["--quick", "--model", "resnet18"], ["--help"]]


def test_a_missing_tool_is_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "resnet_np.bench", None)  # as if not installed
    assert "`resnet-np bench` is not available" in fails(capsys, ["bench", "--quick"])


def test_train_without_arguments_uses_the_documented_defaults(monkeypatch, tmp_path):
    seen = {}

    class FakeTrainer:
        def __init__(self, config, out, progress):
            seen.update(config=config, out=Path(out), progress=progress)

        def fit(self):
            interrupted = seen.get("interrupt", False)
            return {"interrupted": interrupted, "exit_status": 130 if interrupted else 0}

    monkeypatch.setattr(training, "Trainer", FakeTrainer)
    monkeypatch.chdir(tmp_path)
    assert main(["train"]) == 0
    config = seen["config"]
    assert config == TrainConfig()
    assert (config.model, config.dataset, config.optimizer, config.schedule) == \
        ("resnet18", "digits", "sgd", "cosine")
    assert (config.batch_size, config.lr, config.momentum, config.warmup_epochs, config.dtype) == \
        (64, 0.05, 0.9, 1, "float32")
    assert seen["out"].parent == Path("runs") and seen["progress"]
    seen["interrupt"] = True
    assert main(["train"]) == 130  # Ctrl-C: the trainer saved and reported; exit 128 + SIGINT


# --------------------------------------------------------------------------- #
# train, evaluate, predict, resume on a real (tiny) run
# --------------------------------------------------------------------------- #
def test_train_writes_a_complete_run(trained_run):
    names = set(digests(trained_run))
    assert {"last.npz", "best.npz", "metrics.jsonl", "curves.png", "confusion_matrix.png",
            "config.json"} <= names
    checkpoint = load_checkpoint(trained_run / "last.npz")
    assert checkpoint.config["model"] == "resnet18" and checkpoint.config["cifar_stem"] is True


def test_evaluate_prints_accuracy_and_per_class_metrics(trained_run, tmp_path, capsys):
    assert main(["evaluate", "--weights", str(trained_run / "best.npz"), "--no-progress",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "top-5" in out and "precision" in out
    lines = out.splitlines()
    assert lines[1].split() == ["class", "precision", "recall", "support"]
    assert [line.split()[0] for line in lines[2:12]] == [str(d) for d in range(10)]
    assert (tmp_path / "confusion_matrix_best_test.png").is_file()


def test_predict_with_a_trained_checkpoint(trained_run, image, capsys):
    assert main(["predict", str(image), "--weights", str(trained_run / "best.npz")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 6 and lines[1].strip().startswith("1. ")


def test_resuming_a_finished_run_changes_no_checkpoint(trained_run, capsys):
    before = digests(trained_run)
    assert main(["train", "--resume", str(trained_run / "last.npz"), "--no-progress"]) == 0
    assert "done" in capsys.readouterr().out
    after = digests(trained_run)
    assert {k: after[k] for k in ("last.npz", "best.npz", "metrics.jsonl")} == \
        {k: before[k] for k in ("last.npz", "best.npz", "metrics.jsonl")}


@pytest.mark.skipif(sys.platform == "win32", reason="sends signals to a child process")
@pytest.mark.parametrize("signum, status, by", [(signal.SIGINT, 130, ""),
                                                (signal.SIGTERM, 143, " by SIGTERM")])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, signum, status, by):
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-m", "resnet_np", "train", *TINY_TRAIN,
                              "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert "writing to" in child.stdout.readline()  # training has started
    child.send_signal(signum)
    stdout, stderr = child.communicate(timeout=300)
    assert child.returncode == status, stderr
    assert "Traceback" not in stderr
    saved = load_checkpoint(out / "last.npz").progress
    assert saved["epoch"] == 0
    assert f"interrupted{by} at epoch 1/1, batch {saved['batch']}/2: saved {out / 'last.npz'}" in stdout
    assert f"resnet-np train --resume {out / 'last.npz'}" in stdout


# --------------------------------------------------------------------------- #
# Bad input: one line on stderr, a non-zero exit, nothing damaged
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("argv, message", [
    (["train", "--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
    (["train", "--lr", "inf"], "argument --lr: expected a finite number > 0, got 'inf'"),
    (["train", "--epochs", "0"], "argument --epochs: expected an integer >= 1"),
    (["train", "--momentum", "1"], "argument --momentum: expected a number in [0, 1), got '1'"),
    (["train", "--momentum", "-0.1"], "argument --momentum: expected a number in [0, 1)"),
    (["train", "--model", "resnet7"], "argument --model: invalid choice: 'resnet7'"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["predict", "--weights", "w.npz"], "the following arguments are required: IMAGE"),
])
def test_usage_errors(capsys, argv, message):
    assert message in fails(capsys, argv, code=2)


def test_batch_size_larger_than_the_dataset(capsys, tmp_path):
    argv = ["train", "--limit", "8", "--batch-size", "16", "--out", str(tmp_path / "r")]
    line = fails(capsys, argv)
    assert "batch size 16 is larger than the training set (8 images)" in line
    assert not (tmp_path / "r").exists()


def test_missing_and_corrupt_data_files(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = fails(capsys, ["train", "--dataset", "cifar10", "--data-dir", str(empty)])
    assert "CIFAR-10 not found" in line
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b\x08 this is not gzip data")
    line = fails(capsys, ["train", "--dataset", "cifar10", "--data-dir", str(corrupt)])
    assert "truncated or corrupt" in line


def test_predict_refuses_a_non_image_and_a_missing_image(capsys, trained_run, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    weights = str(trained_run / "best.npz")
    line = fails(capsys, ["predict", str(text), "--weights", weights])
    assert "not a readable image file" in line
    missing = tmp_path / "missing.jpg"
    assert "missing.jpg" in fails(capsys, ["predict", str(missing), "--weights", weights])


def test_a_checkpoint_of_another_architecture(capsys, trained_run, image):
    before = digests(trained_run)
    last, best = str(trained_run / "last.npz"), str(trained_run / "best.npz")
    expected = "holds a resnet18 (10 classes, CIFAR stem, float32), not a resnet34"
    assert expected in fails(capsys, ["train", "--resume", last, "--model", "resnet34"])
    assert expected in fails(capsys, ["evaluate", "--weights", best, "--model", "resnet34"])
    assert "not a resnet50" in fails(capsys, ["predict", str(image), "--weights", best,
                                              "--model", "resnet50"])
    assert "trained with lr=0.05" in fails(capsys, ["train", "--resume", last, "--lr", "0.1"])
    assert digests(trained_run) == before


def test_weights_with_missing_keys(capsys, trained_run, image, tmp_path):
    checkpoint = load_checkpoint(trained_run / "best.npz")
    state = {k: v for k, v in checkpoint.model_state.items() if not k.startswith("fc.")}
    save_checkpoint(tmp_path / "cut.npz", state, checkpoint.config)
    line = fails(capsys, ["predict", str(image), "--weights", str(tmp_path / "cut.npz")])
    assert "2 missing keys (fc.weight, fc.bias)" in line
    line = fails(capsys, ["evaluate", "--weights", str(tmp_path / "cut.npz"), "--no-progress"])
    assert "missing keys" in line
    # A plain archive of arrays: the architecture cannot even be recognised.
    np.savez(tmp_path / "plain.npz", **{k: v for k, v in state.items() if "layer4" not in k})
    line = fails(capsys, ["predict", str(image), "--weights", str(tmp_path / "plain.npz")])
    assert "not the weights of a ResNet (no 'layer4.0.conv1.weight' key)" in line


def test_evaluate_refuses_a_dataset_with_other_classes(capsys, trained_run, tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(5):
            write_image(tmp_path / name / f"{i}.png", seed=i)
    line = fails(capsys, ["evaluate", "--weights", str(trained_run / "best.npz"),
                          "--dataset", "folder", "--data-dir", str(tmp_path), "--no-progress"])
    assert "has 2 classes but the model" in line and "has 10" in line


def test_a_damaged_or_missing_checkpoint(capsys, tmp_path):
    garbage = tmp_path / "last.npz"
    garbage.write_bytes(b"\x00" * 100)
    assert "not a readable .npz file" in fails(capsys, ["train", "--resume", str(garbage)])
    assert "does not exist" in fails(capsys, ["train", "--resume", str(tmp_path / "nope.npz")])
    assert garbage.read_bytes() == b"\x00" * 100


def test_a_new_run_never_overwrites_an_old_one(capsys, trained_run):
    before = digests(trained_run)
    assert "already holds a run" in fails(capsys, ["train", *TINY_TRAIN, "--out", str(trained_run)])
    assert digests(trained_run) == before


@pytest.mark.skipif(rn.backend.gpu_available(), reason="checks the message where no GPU is usable")
def test_gpu_without_a_gpu(capsys, tmp_path):
    line = fails(capsys, ["train", *TINY_TRAIN, "--device", "gpu", "--out", str(tmp_path / "r")])
    assert "device 'gpu'" in line


def test_traceback_flag_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="batch size"):
        main(["--traceback", "train", "--limit", "8", "--batch-size", "16"])


# --------------------------------------------------------------------------- #
# convert and predict against torchvision
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def torchvision_resnet18(tmp_path_factory):
    """A randomly initialised torchvision ResNet-18 (with non-trivial BN statistics),
    its .pth file and a test image."""
    from reference import import_torchvision, torch, torchvision_model
    torchvision = import_torchvision()
    model = torchvision_model("resnet18", "float32", num_classes=1000).eval()
    folder = tmp_path_factory.mktemp("torchvision")
    pth = folder / "resnet18.pth"
    torch.save(model.state_dict(), pth)
    image = write_image(folder / "photo.jpg", size=(300, 257), seed=1)
    return torch, torchvision, model, pth, image


def torchvision_top5(torch, torchvision, model, image):
    from PIL import Image
    transform = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    with Image.open(image) as picture:
        x = transform(picture.convert("RGB"))[None]
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)[0].double().numpy()
    top = np.argsort(-probs, kind="stable")[:5]
    return top, probs[top]


def test_convert_then_predict_matches_torchvision(torchvision_resnet18, tmp_path):
    torch, torchvision, model, pth, image = torchvision_resnet18
    npz, config = convert(pth, tmp_path / "resnet18.npz")
    assert config == {"model": "resnet18", "num_classes": 1000, "cifar_stem": False,
                      "dtype": "float32"}
    (result,) = predict(image, npz, model="resnet18", verbose=False)
    top, probs = torchvision_top5(torch, torchvision, model, image)
    assert [index for index, _, _ in result] == top.tolist()
    np.testing.assert_allclose([p for _, _, p in result], probs, atol=1e-4)
    assert [name for _, name, _ in result] == [rn.data.imagenet_classes()[i] for i in top]
    # the .pth itself (through the same conversion) gives the same answer
    (direct,) = predict(image, pth, model="resnet18", verbose=False)
    assert [i for i, _, _ in direct] == top.tolist()


def test_converted_weights_load_without_torch(torchvision_resnet18, tmp_path, monkeypatch):
    _, _, _, pth, image = torchvision_resnet18
    npz, _ = convert(pth, tmp_path / "r18.npz")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    (result,) = predict(image, npz, model="resnet18", verbose=False, topk=2)
    assert len(result) == 2


def test_convert_and_predict_commands(torchvision_resnet18, tmp_path, capsys):
    torch, torchvision, model, pth, image = torchvision_resnet18
    npz = tmp_path / "r18.npz"
    assert main(["convert", str(pth), str(npz)]) == 0
    assert "resnet18 (1000 classes, ImageNet stem, float32)" in capsys.readouterr().out
    assert main(["predict", str(image), "--weights", str(npz), "--topk", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    top, _ = torchvision_top5(torch, torchvision, model, image)
    names = rn.data.imagenet_classes()
    assert [line.split(". ", 1)[1].rsplit(None, 1)[0].strip() for line in lines[1:]] == \
        [names[i] for i in top[:3]]
    # converting again onto an existing file needs --force
    assert "exists; pass --force" in fails(capsys, ["convert", str(pth), str(npz)])
    assert main(["convert", str(pth), str(npz), "--force"]) == 0


def test_convert_accepts_wrapped_state_dicts(torchvision_resnet18, tmp_path):
    torch, _, model, _, _ = torchvision_resnet18
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "wrapped.pth")
    state = load_torch_state_dict(tmp_path / "wrapped.pth")
    assert state.keys() == model.state_dict().keys()


class RunsCode:
    """Unpickling this creates a file: what a malicious .pth could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_convert_never_runs_code_from_a_pth(capsys, torchvision_resnet18, tmp_path):
    torch = torchvision_resnet18[0]
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "payload": RunsCode(marker)},
               tmp_path / "evil.pth")
    line = fails(capsys, ["convert", str(tmp_path / "evil.pth")])
    assert "refused as unsafe: it asks to build io.open" in line
    assert "weights_only" not in line       # torch's advice, which would run the payload
    assert not marker.exists()


def test_convert_errors(capsys, torchvision_resnet18, tmp_path, monkeypatch):
    _, _, _, pth, _ = torchvision_resnet18
    assert "not a resnet50" in fails(capsys, ["convert", str(pth), str(tmp_path / "a.npz"),
                                               "--model", "resnet50"])
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    line = fails(capsys, ["convert", str(junk)])
    assert "not a readable PyTorch weights file (Unsupported operand" in line
    assert "weights_only" not in line
    monkeypatch.setitem(sys.modules, "torch", None)
    assert "needs PyTorch" in fails(capsys, ["convert", str(pth), str(tmp_path / "b.npz")])
    assert not (tmp_path / "a.npz").exists() and not (tmp_path / "b.npz").exists()


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnext50_32x4d",
                                  "wide_resnet50_2"])
def test_the_architecture_is_read_from_the_weights(name):
    model = rn.build_model(name, num_classes=7, cifar_stem=True)
    assert infer_config(model.state_dict()) == {"model": name, "num_classes": 7,
                                                "cifar_stem": True, "dtype": "float32"}


def test_convert_creates_the_output_folder_and_refuses_our_own_npz(capsys, torchvision_resnet18,
                                                                   tmp_path):
    _, _, _, pth, _ = torchvision_resnet18
    dst = tmp_path / "out" / "deeper" / "r18.npz"
    assert main(["convert", str(pth), str(dst)]) == 0
    assert dst.is_file() and [p.name for p in dst.parent.iterdir()] == ["r18.npz"]
    line = fails(capsys, ["convert", str(dst), str(tmp_path / "again.npz")])
    assert "is already a resnet-np .npz file: there is nothing to convert" in line


def test_torch_error_messages_lose_their_colour_codes(capsys, tmp_path, monkeypatch):
    import torch
    def load(*args, **kwargs):
        raise RuntimeError("\x1b[1mWeights only load failed.\x1b[0m Re-running may help")
    monkeypatch.setattr(torch, "load", load)
    pth = tmp_path / "w.pth"
    pth.write_bytes(b"x")
    line = fails(capsys, ["convert", str(pth)])
    assert "\x1b" not in line and "(RuntimeError: Weights only load failed. Re-running" in line


def test_an_npz_of_python_objects_is_named_not_unpickled(capsys, tmp_path):
    np.savez(tmp_path / "objects.npz", fine=np.ones(2), bad=np.array([{"x": 1}], dtype=object))
    image = write_image(tmp_path / "a.png")
    line = fails(capsys, ["predict", str(image), "--weights", str(tmp_path / "objects.npz")])
    assert "entry 'bad' holds Python objects, not numbers" in line
    assert "allow_pickle" not in line


def test_a_diverging_run_exits_non_zero_without_a_nan_checkpoint(capsys, tmp_path):
    out = tmp_path / "run"
    line = fails(capsys, ["train", "--limit", "64", "--test-limit", "32", "--epochs", "1",
                          "--batch-size", "16", "--image-size", "8", "--lr", "1e6",
                          "--no-progress", "--out", str(out)])
    assert line.startswith("resnet-np: error: training diverged")
    assert not (out / "last.npz").exists() and not (out / "best.npz").exists()
    # The folder holds no checkpoint, so a new run there starts afresh.
    assert main(["train", *TINY_TRAIN, "--out", str(out)]) == 0
    assert (out / "last.npz").is_file()
