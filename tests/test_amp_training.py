"""Mixed-precision training (``resnet-np train --amp``): float32 masters in every
checkpoint, skipped steps on overflow, bit-exact resume, and the refusals.

The runs are tiny (ResNet-18 on 8 digits of 8x8, batches of 4): float16 on
NumPy has no BLAS, so each epoch takes a few seconds.
"""
import json
import shutil
import sys
import types

import numpy as np
import pytest

import resnet_np as rn
from resnet_np.cli import main
from resnet_np.training import (Checkpoint, CheckpointError, TrainConfig, Trainer,
                                load_checkpoint, load_model, read_metrics)
from resnet_np.training.resume import apply_overrides

# Scale 4096 overflows float16 in the first step only: one skipped step, then training.
TINY = dict(epochs=2, batch_size=4, image_size=8, limit=8, test_limit=4, amp="float16",
            loss_scale=4096.0, augment=False)
TINY_CLI = ["--limit", "8", "--batch-size", "4", "--image-size", "8", "--test-limit", "4",
            "--epochs", "1", "--no-progress"]


def quiet(message):
    pass


def masters(trainer):
    return [m.data.copy() for m in trainer.amp.master_parameters()]


def initial_weights(seed=0):
    """The float32 weights a run of TINY starts from."""
    rn.manual_seed(seed)
    return rn.models.build_model("resnet18", num_classes=10, cifar_stem=True).state_dict()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """Two epochs without interruption, the masters recorded after every step."""
    after_step = []
    trainer = Trainer(TrainConfig(**TINY), tmp_path_factory.mktemp("amp") / "run",
                      progress=False, log=quiet,
                      on_batch_end=lambda t: after_step.append((masters(t),
                                                                t.scaler.get_scale())))
    before = masters(trainer)
    summary = trainer.fit()
    return trainer, summary, before, after_step


def test_cli_amp_run_trains_and_saves_float32_masters_with_the_scaler(tmp_path, capsys):
    out = tmp_path / "run"
    # Without augmentation, scale 4096 overflows in the first of the two steps only.
    assert main(["train", *TINY_CLI, "--amp", "--loss-scale", "4096", "--no-augment",
                 "--out", str(out)]) == 0
    lines = capsys.readouterr().out
    assert "mixed precision (float16 compute" in lines
    assert "loss scale 2048, 1 step skipped" in lines
    saved = load_checkpoint(out / "last.npz")
    assert saved.config["amp"] == "float16" and saved.config["dtype"] == "float32"
    assert saved.scaler["scale"] == 2048.0 and saved.scaler["_growth_tracker"] == 1
    start = initial_weights()
    assert all(v.dtype == np.float32 and np.isfinite(v).all()
               for k, v in saved.model_state.items() if v.dtype.kind == "f")
    assert not np.array_equal(saved.model_state["conv1.weight"], start["conv1.weight"])
    model = load_model(out / "best.npz")           # what evaluate, predict and export read
    assert model.dtype == np.float32
    (record,) = read_metrics(out / "metrics.jsonl")
    assert record["loss_scale"] == 2048.0 and record["skipped_steps"] == 1
    assert main(["evaluate", "--weights", str(out / "last.npz"), "--limit", "4",
                 "--image-size", "8", "--no-progress"]) == 0


def test_an_overflowing_step_leaves_the_weights_and_halves_the_scale(full_run):
    trainer, summary, before, after_step = full_run
    assert [scale for _, scale in after_step] == [2048.0] * 4
    for old, new in zip(before, after_step[0][0]):   # step 1 overflowed: skipped
        np.testing.assert_array_equal(new, old)
    changed = [not np.array_equal(a, b) for a, b in zip(after_step[0][0], after_step[1][0])]
    assert sum(changed) > len(changed) // 2        # step 2 updated the masters
    assert [r["skipped_steps"] for r in summary["history"]] == [1, 0]
    assert [r["loss_scale"] for r in summary["history"]] == [2048.0, 2048.0]
    # the schedule advanced on the skipped step too: epoch 1 ends at warm-up's end
    assert summary["history"][0]["lr"] == pytest.approx(0.05 * 0.55)
    for (p, master) in zip(trainer.model.parameters(), trainer.amp.master_parameters()):
        np.testing.assert_array_equal(p.data, master.data.astype(p.dtype))


def test_a_huge_loss_scale_skips_every_step_and_backs_off(tmp_path):
    trainer = Trainer(TrainConfig(**{**TINY, "epochs": 1, "loss_scale": 2.0 ** 40}),
                      tmp_path / "run", progress=False, log=quiet)
    before = {k: v.copy() for k, v in trainer.weights.state_dict().items()}
    summary = trainer.fit()
    assert summary["history"][0]["skipped_steps"] == 2
    assert trainer.scaler.get_scale() == 2.0 ** 38
    trained = {name for name, _ in trainer.model.named_parameters()}
    saved = load_checkpoint(tmp_path / "run" / "last.npz").model_state
    for key in trained:
        np.testing.assert_array_equal(saved[key], before[key], err_msg=key)


class StopInsideSecondEpoch:
    """Ctrl-C after step 3 (the first step overflowed, the next two trained)."""

    def __call__(self, trainer):
        if (trainer.epoch, trainer.batch) == (1, 1):
            raise KeyboardInterrupt


def test_an_interrupted_amp_run_resumes_bit_for_bit(full_run, tmp_path):
    reference, reference_summary, _, _ = full_run
    out = tmp_path / "stopped"
    summary = Trainer(TrainConfig(**TINY), out, progress=False, log=quiet,
                      on_batch_end=StopInsideSecondEpoch()).fit()
    assert summary["interrupted"]
    saved = load_checkpoint(out / "last.npz")
    assert (saved.progress["epoch"], saved.progress["batch"]) == (1, 1)
    assert saved.scaler == {**reference.scaler.state_dict(), "_growth_tracker": 2}

    trainer = Trainer.resume(out / "last.npz", progress=False, log=quiet)
    summary = trainer.fit()
    for ours, theirs in ((trainer.weights, reference.weights), (trainer.model, reference.model)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    assert trainer.scaler.state_dict() == reference.scaler.state_dict()
    timings = ("images_per_s", "epoch_time_s")
    assert ([{k: v for k, v in r.items() if k not in timings} for r in summary["history"]]
            == [{k: v for k, v in r.items() if k not in timings}
                for r in reference_summary["history"]])


def test_resuming_in_another_precision_is_refused(full_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(full_run[0].out, copy)
    with pytest.raises(CheckpointError, match=r"trained in mixed precision \(--amp float16\); "
                                              r"resuming it in mixed precision \(--amp bfloat16"):
        Trainer.resume(copy, overrides={"amp": "bfloat16"}, progress=False, log=quiet)
    float32_run = Checkpoint(path="run/last.npz", model_state={},
                             config={**TrainConfig().to_dict(), "amp": None})
    with pytest.raises(CheckpointError, match="trained in float32; resuming it in mixed"):
        apply_overrides(float32_run, {"amp": "float16"})
    older = Checkpoint(path="run/last.npz", model_state={}, config=TrainConfig().to_dict())
    del older.config["amp"]                       # written before --amp existed
    assert apply_overrides(older, {"amp": None}).amp is None


def test_a_checkpoint_without_scaler_state_is_refused(full_run, tmp_path):
    saved = load_checkpoint(full_run[0].out / "last.npz")
    trainer = Trainer(TrainConfig(**TINY), tmp_path / "run", progress=False, log=quiet)
    saved.scaler = None
    with pytest.raises(CheckpointError, match="no loss-scaler state"):
        trainer._restore(saved)


def fails(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 1, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_amp_with_float64_is_refused(capsys, tmp_path):
    err = fails(capsys, ["train", *TINY_CLI, "--amp", "--dtype", "float64",
                         "--out", str(tmp_path / "run")])
    assert "float32 master weights" in err and "--dtype float64" in err
    assert not (tmp_path / "run").exists()


def test_bfloat16_without_ml_dtypes_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)     # import ml_dtypes fails
    err = fails(capsys, ["train", *TINY_CLI, "--amp", "bfloat16", "--out", str(tmp_path / "r")])
    assert "needs the ml_dtypes package for bfloat16" in err


def test_bfloat16_which_the_layers_do_not_take_is_refused_before_training(capsys, tmp_path):
    err = fails(capsys, ["train", *TINY_CLI, "--amp", "bfloat16", "--out", str(tmp_path / "r")])
    assert "--amp bfloat16: the layers" in err and "use --amp float16" in err
    assert not (tmp_path / "r").exists()


def test_amp_under_several_processes_is_refused(tmp_path):
    two_ranks = types.SimpleNamespace(rank=0, size=2)
    with pytest.raises(ValueError, match="--amp is not supported under mpiexec"):
        Trainer(TrainConfig(**TINY), tmp_path / "run", progress=False, log=quiet,
                comm=two_ranks)


def test_the_checkpoint_config_names_the_precision(full_run):
    config = json.loads((full_run[0].out / "config.json").read_text())
    assert config["amp"] == "float16" and config["loss_scale"] == 4096.0


@pytest.mark.gpu
def test_one_amp_epoch_on_the_gpu_trains_and_saves_float32_masters(cp, tmp_path):
    """float16 on CuPy: the masters stay on the GPU in float32, the checkpoint holds them."""
    out = tmp_path / "run"
    assert main(["train", "--limit", "64", "--batch-size", "16", "--image-size", "16",
                 "--test-limit", "16", "--epochs", "1", "--no-progress", "--device", "gpu",
                 "--amp", "--loss-scale", "1024", "--out", str(out)]) == 0
    saved = load_checkpoint(out / "last.npz")
    assert saved.config["amp"] == "float16" and saved.scaler["scale"] > 0
    start = initial_weights()
    assert all(v.dtype == np.float32 and np.isfinite(v).all()
               for v in saved.model_state.values() if v.dtype.kind == "f")
    assert not np.array_equal(saved.model_state["fc.weight"], start["fc.weight"])
    (record,) = read_metrics(out / "metrics.jsonl")
    assert record["skipped_steps"] < 4 and np.isfinite(record["train_loss"])
    trainer = Trainer.resume(out / "last.npz", progress=False, log=quiet)
    assert isinstance(trainer.amp.master_parameters()[0].data, cp.ndarray)
    assert trainer.amp.master_parameters()[0].dtype == np.float32
    assert trainer.model.parameters()[0].dtype == np.float16
