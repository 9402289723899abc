"""Checkpoints, metrics, plots and the training loop (resume, Ctrl-C, divergence).

The runs are tiny (ResNet-18 with the CIFAR stem on 32 digits of 16x16,
batches of 16), so the whole file takes about a minute on two cores.
"""
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

import resnet_np as rn
from resnet_np.optim import Adam, build_schedule
from resnet_np.training import (CheckpointError, MetricsWriter, TrainConfig, Trainer,
                                TrainingError, atomic_write, confusion_matrix, format_report,
                                load_checkpoint, plot_confusion_matrix, plot_history,
                                precision_recall, read_metrics, restore_model, save_checkpoint,
                                topk_accuracy)
from resnet_np.training import trainer as trainer_module
from resnet_np.training.checkpoint import capture_rng_state, restore_rng_state
from resnet_np.training.evaluate import EvalResult

TINY = dict(epochs=2, batch_size=16, image_size=16, limit=32, test_limit=16)
MODEL_CONFIG = {"model": "resnet18", "num_classes": 10, "cifar_stem": True, "dtype": "float32"}


def run(out, on_batch_end=None, log=lambda message: None, **overrides):
    trainer = Trainer(TrainConfig(**{**TINY, **overrides}), out, progress=False, log=log,
                      on_batch_end=on_batch_end)
    return trainer, trainer.fit()


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


# --------------------------------------------------------------------------- #
# Atomic writes and checkpoints
# --------------------------------------------------------------------------- #
def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old content")
    with pytest.raises(OSError, match="disk full"):
        with atomic_write(path) as f:
            f.write(b"half of the new")
            raise OSError("disk full")
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["file.bin"]  # no temporary file left behind


def test_a_crash_while_saving_a_checkpoint_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    save_checkpoint(path, {"w": np.arange(4.0)}, MODEL_CONFIG, progress={"epoch": 1})
    before = path.read_bytes()

    def crash_midway(file, **arrays):
        file.write(b"PK\x03\x04 partial zip")
        raise KeyboardInterrupt  # the process dies in the middle of the write

    monkeypatch.setattr(np, "savez", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": np.arange(4.0) + 1}, MODEL_CONFIG, progress={"epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path).progress == {"epoch": 1}
    assert os.listdir(tmp_path) == ["last.npz"]


def test_checkpoint_round_trip_of_optimizer_schedule_and_rng_states(tmp_path):
    rn.manual_seed(0)
    model = rn.build_model("resnet18", num_classes=10, cifar_stem=True)
    optimizer = Adam(model.parameters(), lr=0.01)
    scheduler = build_schedule(optimizer, "cosine", epochs=5, warmup_epochs=1)
    for p in model.parameters():
        p.grad = np.ones_like(p.data)
    optimizer.step()
    scheduler.step()
    np.random.seed(7)
    save_checkpoint(tmp_path / "c.npz", model.state_dict(), MODEL_CONFIG,
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    loader={"seed": 0, "epoch": 1, "batch": 3}, rng=capture_rng_state())
    expected_draws = np.random.random(3), rn.backend.rng().random(3)

    checkpoint = load_checkpoint(tmp_path / "c.npz")
    assert checkpoint.config == MODEL_CONFIG
    assert_same_state(checkpoint.model_state, model.state_dict())
    saved, original = checkpoint.optimizer, optimizer.state_dict()
    assert saved["param_groups"] == original["param_groups"]  # betas stay a tuple
    assert saved["state"].keys() == original["state"].keys()  # integer keys survive JSON
    for index, state in original["state"].items():
        assert saved["state"][index]["step"] == state["step"]
        assert np.array_equal(saved["state"][index]["exp_avg"], state["exp_avg"])
    assert checkpoint.scheduler == scheduler.state_dict()
    assert checkpoint.loader == {"seed": 0, "epoch": 1, "batch": 3}
    restore_rng_state(checkpoint.rng)
    assert np.array_equal(np.random.random(3), expected_draws[0])
    assert np.array_equal(rn.backend.rng().random(3), expected_draws[1])


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04truncated"])
def test_a_damaged_checkpoint_gives_one_clear_line(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable .npz file") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_a_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"w": np.arange(1000.0)}, MODEL_CONFIG)
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_loading_into_another_architecture_names_the_problem_in_one_line():
    rn.manual_seed(0)
    small = rn.build_model("resnet18", num_classes=10, cifar_stem=True)
    rn.manual_seed(0)
    large = rn.build_model("resnet34", num_classes=10, cifar_stem=True)
    with pytest.raises(CheckpointError) as info:
        restore_model(large, small.state_dict(), "r18.npz", "a resnet34")
    message = str(info.value)
    assert message.startswith("r18.npz does not fit a resnet34: ")
    assert "missing keys" in message and "layer1.2.conv1.weight" in message
    assert "\n" not in message and len(message) < 400

    state = dict(small.state_dict())
    del state["fc.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing keys \(fc.bias\)"):
        restore_model(small, state, "weights.npz")


# --------------------------------------------------------------------------- #
# Metrics and plots
# --------------------------------------------------------------------------- #
def test_topk_accuracy_on_a_hand_made_example():
    logits = np.array([[0.1, 0.9, 0.0, 0.0, 0.0, 0.0],    # top-1: class 1
                       [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],    # class 5 is last: not in the top 5
                       [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
                       [0.3, 0.2, 0.9, 0.1, 0.0, 0.0]])
    labels = np.array([1, 5, 0, 3])
    # row 0 right; row 1 wrong even in top-5; row 2: class 0 ties with 1..4 and wins by index;
    # row 3: class 3 is fourth.
    assert topk_accuracy(logits, labels, ks=(1, 2, 5)) == {1: 0.25, 2: 0.5, 5: 0.75}
    assert topk_accuracy(logits[:, :3], np.array([1, 0, 2, 2]), ks=(5,)) == {5: 1.0}


def test_confusion_matrix_precision_and_recall_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 0, 0])
    cm = confusion_matrix(labels, predictions, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    precision, recall = precision_recall(cm)
    # class 0: predicted 4 times, 2 right; present 3 times, 2 found.
    assert np.allclose(precision, [2 / 4, 1 / 2, 0, 0])
    assert np.allclose(recall, [2 / 3, 1 / 2, 0, 0])
    report = format_report(cm, ["zero", "one", "two", "three"])
    assert report.splitlines()[1].split() == ["zero", "0.500", "0.667", "3"]


def test_metrics_writer_keeps_complete_json_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    writer.append({"epoch": 1, "top1": np.float32(0.5)})
    writer.append({"epoch": 2, "top1": 0.75})
    assert read_metrics(path) == [{"epoch": 1, "top1": 0.5}, {"epoch": 2, "top1": 0.75}]
    MetricsWriter(path, [{"epoch": 1}]).write()  # a resumed run rewrites its history
    assert path.read_text() == '{"epoch": 1}\n'


def test_plots_are_png_files(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.2 / e, "train_acc": 0.5 + e / 10,
                "top1": 0.4 + e / 10, "top5": 0.9} for e in (1, 2, 3)]
    plot_history(history, tmp_path / "curves.png")
    plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["a", "b"], tmp_path / "cm.png")
    for name in ("curves.png", "cm.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- #
# The training loop
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """Two epochs without interruption: the reference for every resumed run."""
    trainer, summary = run(tmp_path_factory.mktemp("full"))
    return trainer, summary


class StopAfterEpoch:
    """A log function that raises KeyboardInterrupt after epoch ``n`` is saved and logged."""

    def __init__(self, n):
        self.prefix, self.lines = f"epoch {n}/", []

    def __call__(self, message):
        self.lines.append(message)
        if message.startswith(self.prefix):
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def run_stopped_after_one_epoch(tmp_path_factory):
    out = tmp_path_factory.mktemp("stopped")
    log = StopAfterEpoch(1)
    _, summary = run(out, log=log)
    assert summary["interrupted"] and summary["epochs"] == 1
    assert "--resume" in log.lines[-1]
    return out


def resumed(folder, tmp_path):
    """Resume a copy of a stopped run (module fixtures must stay untouched)."""
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    return Trainer.resume(copy / "last.npz", progress=False, log=lambda message: None)


def without_timings(history):
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "epoch_time_s")}
            for r in history]


def test_a_run_writes_checkpoints_metrics_and_plots(full_run):
    trainer, summary = full_run
    out = trainer.out
    assert not summary["interrupted"] and summary["epochs"] == 2
    for name in ("last.npz", "best.npz", "metrics.jsonl", "curves.png", "confusion_matrix.png",
                 "config.json"):
        assert (out / name).is_file(), name
    records = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    # The schedule moves after every batch (2 per epoch): a linear warm-up from
    # 0.1 x lr over epoch 1, then a cosine over epoch 2; "lr" is that of the last batch.
    assert [r["lr"] for r in records] == pytest.approx([0.05 * 0.55, 0.05 * 0.5])
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "resnet18" and config["cifar_stem"] is True
    assert config["num_classes"] == 10 and config["image_size"] == 16
    best = load_checkpoint(out / "best.npz")
    assert best.progress["best_top1"] == max(r["top1"] for r in records)


def test_best_npz_keeps_the_epoch_with_the_best_top1(tmp_path, monkeypatch):
    scores = iter([0.6, 0.4])  # epoch 2 is worse than epoch 1

    def fake_evaluate(model, loader, *args, **kwargs):
        top1 = next(scores)
        return EvalResult(loss=1.0, top1=top1, top5=1.0, labels=np.zeros(4, np.int64),
                          predictions=np.zeros(4, np.int64))

    monkeypatch.setattr(trainer_module, "evaluate", fake_evaluate)
    _, summary = run(tmp_path)
    assert summary["best_top1"] == 0.6
    assert load_checkpoint(tmp_path / "best.npz").progress["epoch"] == 1
    assert load_checkpoint(tmp_path / "last.npz").progress["epoch"] == 2


def test_resume_after_one_epoch_ends_with_the_same_weights(full_run, run_stopped_after_one_epoch,
                                                           tmp_path):
    trainer = resumed(run_stopped_after_one_epoch, tmp_path)
    assert (trainer.epoch, trainer.batch) == (1, 0)
    summary = trainer.fit()
    reference, reference_summary = full_run
    assert_same_state(trainer.model.state_dict(), reference.model.state_dict())
    assert without_timings(summary["history"]) == without_timings(reference_summary["history"])
    assert len(read_metrics(trainer.out / "metrics.jsonl")) == 2


class CtrlCInFirstBatch:
    """A loss that presses Ctrl-C in the middle of the first batch, between forward and backward."""

    def __init__(self, trainer):
        self.trainer, self.criterion = trainer, trainer.criterion

    def __call__(self, logits, labels):
        if self.trainer.batch == 0:
            os.kill(os.getpid(), signal.SIGINT)  # the handler must let this batch finish
        return self.criterion(logits, labels)

    def backward(self):
        return self.criterion.backward()


def test_ctrl_c_in_the_middle_of_an_epoch_saves_and_resumes_exactly(full_run, tmp_path):
    out = tmp_path / "first"
    lines = []
    trainer = Trainer(TrainConfig(**TINY), out, progress=False, log=lines.append)
    trainer.criterion = CtrlCInFirstBatch(trainer)
    handler = signal.getsignal(signal.SIGINT)
    summary = trainer.fit()
    assert signal.getsignal(signal.SIGINT) is handler  # the trainer's handler is gone again
    assert summary["interrupted"]
    assert "interrupted at epoch 1/2, batch 1/2" in lines[-1]
    saved = load_checkpoint(out / "last.npz")
    assert (saved.progress["epoch"], saved.progress["batch"]) == (0, 1)
    assert not (out / "metrics.jsonl").read_text()  # no epoch finished yet

    trainer = Trainer.resume(out / "last.npz", progress=False, log=lambda message: None)
    summary = trainer.fit()
    reference, reference_summary = full_run
    assert_same_state(trainer.model.state_dict(), reference.model.state_dict())
    assert without_timings(summary["history"]) == without_timings(reference_summary["history"])


def test_a_second_ctrl_c_stops_inside_the_batch_and_saves_nothing(run_stopped_after_one_epoch,
                                                                  tmp_path):
    trainer = resumed(run_stopped_after_one_epoch, tmp_path)
    before = {name: (trainer.out / name).read_bytes() for name in ("last.npz", "metrics.jsonl")}

    def interrupted_backward(dlogits, input_grad=True):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: finish the batch, then save...
        os.kill(os.getpid(), signal.SIGINT)  # ...Ctrl-C again: stop now, half-way through

    trainer.model.backward = interrupted_backward
    lines = []
    trainer.log = lines.append
    assert trainer.fit()["interrupted"]
    assert "nothing saved" in lines[-1]
    for name, content in before.items():
        assert (trainer.out / name).read_bytes() == content, name


def test_a_nan_loss_stops_without_touching_the_good_checkpoint(run_stopped_after_one_epoch,
                                                               tmp_path):
    trainer = resumed(run_stopped_after_one_epoch, tmp_path)
    names = ("last.npz", "best.npz", "metrics.jsonl", "curves.png")
    before = {name: (trainer.out / name).read_bytes() for name in names}
    criterion = trainer.criterion
    trainer.criterion = lambda logits, labels: criterion(logits, labels) * np.float32("nan")
    with pytest.raises(TrainingError, match="diverged.*last good checkpoint .* is unchanged"):
        trainer.fit()
    for name, content in before.items():
        assert (trainer.out / name).read_bytes() == content, name


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(run_stopped_after_one_epoch):
    last = run_stopped_after_one_epoch / "last.npz"
    before = last.read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run"):
        run(run_stopped_after_one_epoch)
    assert last.read_bytes() == before


def test_resuming_with_other_settings_is_refused(run_stopped_after_one_epoch):
    last = run_stopped_after_one_epoch / "last.npz"
    with pytest.raises(CheckpointError, match=r"holds a resnet18 .*, not a resnet34"):
        Trainer.resume(last, overrides={"model": "resnet34"})
    with pytest.raises(CheckpointError, match="trained with lr=0.05"):
        Trainer.resume(last, overrides={"lr": 0.1})


def test_batch_size_larger_than_the_training_set_is_refused(tmp_path):
    with pytest.raises(ValueError, match="batch size 64 is larger than the training set"):
        Trainer(TrainConfig(**{**TINY, "batch_size": 64}), tmp_path)


@pytest.mark.parametrize("field, value", [("lr", float("nan")), ("lr", -1.0), ("epochs", 0),
                                          ("label_smoothing", 1.5), ("model", "resnet7")])
def test_invalid_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field if field != "model" else "unknown model"):
        TrainConfig(**{field: value}).validate()


# --------------------------------------------------------------------------- #
# Runs that diverge, die early or are stopped by a signal
# --------------------------------------------------------------------------- #
def test_non_finite_weights_never_reach_a_checkpoint(tmp_path):
    """A step that makes the weights inf while the loss is still finite: no save."""
    def poison(trainer):
        if trainer.batch == 2 and trainer.epoch == 1:   # the last batch of epoch 2
            trainer.model.fc.weight.data[...] = np.inf
    trainer = Trainer(TrainConfig(**TINY), tmp_path, progress=False, log=lambda m: None,
                      on_batch_end=poison)
    with pytest.raises(TrainingError, match=r"1 of the model's arrays hold NaN or infinite "
                                            r"values \(fc.weight\) before saving best.npz"):
        trainer.fit()
    saved = load_checkpoint(tmp_path / "last.npz")          # epoch 1's, finite
    assert saved.progress["epoch"] == 1
    assert all(np.isfinite(v).all() for v in saved.model_state.values())
    assert load_checkpoint(tmp_path / "best.npz").progress["epoch"] == 1


def test_a_huge_learning_rate_ends_in_an_error_not_a_nan_checkpoint(tmp_path):
    with pytest.raises(TrainingError, match="diverged"):
        run(tmp_path, epochs=1, lr=1e6, warmup_epochs=0, limit=64, test_limit=32, image_size=8)
    for name in ("last.npz", "best.npz"):
        if (tmp_path / name).exists():
            state = load_checkpoint(tmp_path / name).model_state
            assert all(np.isfinite(v).all() for v in state.values()), name


def test_a_folder_whose_run_died_before_its_first_checkpoint_is_reused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "config.json").write_text(json.dumps({**TrainConfig().to_dict(),
                                                      "num_classes": 10}))
    stale = [tmp_path / ".last.npz.k3j4.tmp", tmp_path / ".metrics.jsonl.x1.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    (tmp_path / "notes.txt").write_text("mine")          # not ours: left alone
    lines = []
    _, summary = run(tmp_path, epochs=1, warmup_epochs=0, log=lines.append)
    assert not summary["interrupted"] and (tmp_path / "last.npz").is_file()
    assert not any(path.exists() for path in stale)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("abandoned-")]
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == [
        "config.json", "metrics.jsonl"]
    assert any("removed 2 temporary files" in line for line in lines)
    assert any("stopped before its first checkpoint" in line and str(aside[0]) in line
               for line in lines)


def test_a_folder_with_only_best_npz_is_protected(run_stopped_after_one_epoch, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_stopped_after_one_epoch, copy)
    (copy / "last.npz").unlink()
    with pytest.raises(FileExistsError, match=r"--resume .*best.npz"):
        run(copy)
    with pytest.raises(CheckpointError, match=r"no last.npz, only best.npz.*--resume .*best.npz"):
        Trainer.resume(copy)


def test_resume_accepts_the_run_folder(run_stopped_after_one_epoch, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_stopped_after_one_epoch, copy)
    trainer = Trainer.resume(copy, progress=False, log=lambda m: None)
    assert (trainer.epoch, trainer.out) == (1, copy)
    with pytest.raises(CheckpointError, match="is not a run's folder: there is no last.npz"):
        Trainer.resume(tmp_path / "run" / "..")


class SignalInFirstBatch(CtrlCInFirstBatch):
    signum = signal.SIGTERM

    def __call__(self, logits, labels):
        if self.trainer.batch == 0:
            os.kill(os.getpid(), self.signum)
        return self.criterion(logits, labels)


def test_sigterm_saves_after_the_batch_and_reports_143(tmp_path):
    lines = []
    trainer = Trainer(TrainConfig(**TINY), tmp_path, progress=False, log=lines.append)
    trainer.criterion = SignalInFirstBatch(trainer)
    handler = signal.getsignal(signal.SIGTERM)
    summary = trainer.fit()
    assert signal.getsignal(signal.SIGTERM) is handler
    assert summary["interrupted"] and summary["exit_status"] == 143
    assert "interrupted by SIGTERM at epoch 1/2, batch 1/2" in lines[-1]
    saved = load_checkpoint(tmp_path / "last.npz")
    assert (saved.progress["epoch"], saved.progress["batch"]) == (0, 1)


def test_top5_is_not_reported_for_five_classes_or_fewer():
    from resnet_np.training.evaluate import evaluate
    from resnet_np.data import DataLoader
    from resnet_np.data.dataset import Dataset
    from resnet_np.training.metrics import format_accuracy
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    for classes, expect_top5 in ((5, False), (6, True)):
        data = Dataset(images, np.arange(6) % classes, [str(c) for c in range(classes)], "six")
        model = rn.resnet18(num_classes=classes, cifar_stem=True)
        result = evaluate(model, DataLoader(data, 3))
        assert (result.top5 is not None) == expect_top5
    assert format_accuracy(0.5, None) == "top-1 50.00%"
    assert format_accuracy(0.5, 0.75) == "top-1 50.00%, top-5 75.00%"


@pytest.mark.parametrize("momentum", [1.0, 1.5])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_momentum_of_one_or_more_is_refused(optimizer, momentum):
    with pytest.raises(ValueError, match=r"momentum .* must be in \[0, 1\)"):
        TrainConfig(optimizer=optimizer, momentum=momentum).validate()


def test_plots_have_whole_epoch_ticks_and_skip_a_missing_top5(tmp_path, monkeypatch):
    from resnet_np.training import plots
    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure))
    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.2 / e, "train_acc": 0.5,
                "top1": 0.4, "top5": None} for e in (1, 2, 3)]
    plot_history(history, tmp_path / "curves.png")
    for ax in figures[0].axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks)
    labels = [line.get_label() for line in figures[0].axes[1].get_lines()]
    assert labels == ["train top-1", "test top-1"]


# --------------------------------------------------------------------------- #
# One run per folder; a second Ctrl-C; resuming on other data or for longer
# --------------------------------------------------------------------------- #
HOLD_THE_FOLDER = """
import sys, time
from resnet_np.training.run_folder import RunFolder
RunFolder(sys.argv[1], print).open({"model": "resnet18", "dataset": "digits", "epochs": 2,
    "batch_size": 16, "lr": 0.05, "optimizer": "sgd", "num_classes": 10}, continuing=False)
print("holding", flush=True)
time.sleep(120)
"""


def test_a_folder_in_use_is_refused_naming_its_process_until_that_one_is_killed(tmp_path):
    import subprocess
    import sys
    from resnet_np.training.run_folder import FolderInUse
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_FOLDER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        in_flight = tmp_path / ".last.npz.k3j4.tmp"     # the holder's save, half-way
        in_flight.write_bytes(b"half a file")
        with pytest.raises(FolderInUse, match=rf"^{tmp_path} is in use by another run "
                                              rf"\(process {holder.pid}\); wait for it"):
            run(tmp_path)
        assert in_flight.exists() and (tmp_path / "config.json").exists()
    finally:
        holder.kill()                                   # kill -9: the lock goes with it
        holder.wait()
    _, summary = run(tmp_path, epochs=1, warmup_epochs=0)
    assert not summary["interrupted"] and not in_flight.exists()


def test_a_folder_holding_someone_elses_config_json_is_left_alone(tmp_path):
    mine = '{"theme": "dark", "font": 12}\n'
    (tmp_path / "config.json").write_text(mine)
    with pytest.raises(FileExistsError, match=r"config.json was not written by resnet-np"):
        run(tmp_path)
    assert (tmp_path / "config.json").read_text() == mine
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_second_ctrl_c_while_best_npz_is_written_saves_nothing(tmp_path, monkeypatch):
    scores = iter([0.4, 0.6])                           # epoch 2 improves: best.npz is written

    def fake_evaluate(model, loader, *args, **kwargs):
        return EvalResult(loss=1.0, top1=next(scores), top5=1.0,
                          labels=np.zeros(4, np.int64), predictions=np.zeros(4, np.int64))

    savez, save, calls, fired = np.savez, trainer_module.save_checkpoint, [], []

    def save_noting_best_of_epoch_2(path, *args, **kwargs):
        if Path(path).name == "best.npz" and kwargs["progress"]["epoch"] == 2:
            calls.append(path)
        return save(path, *args, **kwargs)

    def savez_then_ctrl_c_twice(file, **arrays):
        savez(file, **arrays)                           # half-way through the atomic write
        if calls and not fired:                         # of best.npz, after epoch 2
            fired.append(file)
            os.kill(os.getpid(), signal.SIGINT)         # Ctrl-C: stop after this batch...
            os.kill(os.getpid(), signal.SIGINT)         # ...and again: stop at once

    monkeypatch.setattr(trainer_module, "evaluate", fake_evaluate)
    monkeypatch.setattr(trainer_module, "save_checkpoint", save_noting_best_of_epoch_2)
    monkeypatch.setattr(np, "savez", savez_then_ctrl_c_twice)
    lines = []
    _, summary = run(tmp_path, log=lines.append)
    monkeypatch.undo()
    assert calls and summary["interrupted"] and summary["exit_status"] == 130
    assert not any("epoch 3/2" in line for line in lines), lines
    assert "nothing saved" in lines[-1] and "last.npz is unchanged" in lines[-1]
    last, best = load_checkpoint(tmp_path / "last.npz"), load_checkpoint(tmp_path / "best.npz")
    assert last.progress["epoch"] == best.progress["epoch"] == 1
    assert last.progress["best_top1"] == best.progress["best_top1"] == 0.4
    trainer = Trainer.resume(tmp_path, progress=False, log=lambda message: None)
    assert trainer.best_top1 == 0.4 and trainer.epoch == 1


def other_digits(monkeypatch):
    """The same digits half as bright: other data of the same size and other statistics."""
    load = trainer_module.load_dataset

    def mirrored(*args, **kwargs):
        dataset = load(*args, **kwargs)
        dataset.images = dataset.images // 2
        return dataset
    monkeypatch.setattr(trainer_module, "load_dataset", mirrored)


def test_resuming_on_other_data_is_refused_unless_allowed(run_stopped_after_one_epoch,
                                                          tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(run_stopped_after_one_epoch, copy)
    other_digits(monkeypatch)
    with pytest.raises(CheckpointError, match=r"last.npz was trained on other data: its training "
                       r"set had 32 images \(fingerprint [0-9a-f]{16}\), this one has 32 .*"
                       "add --allow-data-change"):
        Trainer.resume(copy, progress=False)
    lines = []
    trainer = Trainer.resume(copy, allow_data_change=True, progress=False, log=lines.append)
    summary = trainer.fit()
    assert not summary["interrupted"] and summary["epochs"] == 2
    note = next(line for line in lines if "data differ" in line)
    assert "normalisation mean" in note and "going on as --allow-data-change asks" in note


def test_more_epochs_on_resume_extend_the_run_with_the_schedule_recomputed(
        run_stopped_after_one_epoch, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_stopped_after_one_epoch, copy)
    lines = []
    trainer = Trainer.resume(copy, overrides={"epochs": 3}, progress=False, log=lines.append)
    fresh = Trainer(TrainConfig(**{**TINY, "epochs": 3}), tmp_path / "fresh", progress=False)
    for _ in range(2):                                   # the 2 steps of the epoch done
        fresh.scheduler.step()
    assert trainer.optimizer.param_groups[0]["lr"] == fresh.optimizer.param_groups[0]["lr"]
    summary = trainer.fit()
    assert summary["epochs"] == 3 and len(read_metrics(copy / "metrics.jsonl")) == 3
    assert any("now lasts 3 epochs (it was 2): the cosine schedule is recomputed for 6 steps "
               "and goes on from step 2" in line for line in lines), lines
    with pytest.raises(CheckpointError, match=r"--epochs 1 cannot apply, 1 epoch are already"):
        Trainer.resume(run_stopped_after_one_epoch, overrides={"epochs": 1})


def test_metrics_jsonl_stays_strict_json_when_a_value_is_nan(tmp_path):
    path = tmp_path / "metrics.jsonl"
    MetricsWriter(path).append({"epoch": 1, "test_loss": float("nan"),
                                "top1": np.float32("inf"), "lr": 0.1})

    def not_json(name):
        raise AssertionError(f"{name} is not JSON")
    record = json.loads(path.read_text(), parse_constant=not_json)
    assert record == {"epoch": 1, "test_loss": None, "top1": None, "lr": 0.1}


def test_a_step_copies_two_numbers_to_the_host_and_never_the_logits(tmp_path, monkeypatch):
    from resnet_np import backend
    to_numpy, copies, per_step = backend.to_numpy, [], []

    def counting(array):
        copies.append(np.shape(array))
        return to_numpy(array)

    def mark(trainer):
        per_step.append(list(copies))
        copies.clear()

    monkeypatch.setattr(backend, "to_numpy", counting)
    run(tmp_path, on_batch_end=mark, epochs=1, warmup_epochs=0, limit=64)
    assert len(per_step) == 4
    for step in per_step[1:]:                         # the first one follows the set-up
        # The batch itself goes through to_numpy on its way to the device (a no-op on
        # NumPy); of what the step computes, only (loss, number right) comes back.
        assert (16, 10) not in step and step.count((2,)) == 1, per_step


def test_allow_data_change_without_resume_is_one_line(capsys, tmp_path):
    from resnet_np.cli import main
    with pytest.raises(SystemExit) as info:
        main(["train", "--allow-data-change", "--limit", "16", "--batch-size", "16",
              "--epochs", "1", "--image-size", "8", "--no-progress", "--out", str(tmp_path)])
    assert info.value.code == 1
    assert capsys.readouterr().err == ("resnet-np: error: --allow-data-change applies to "
                                       "--resume only\n")
