"""Data-parallel training: 2 ranks under ``mpiexec`` against the same maths in one process.

    library   2 ranks at batch B with synchronised batch norm equal 1 process at 2B
              (float64, SGD and AdamW); with batch norm per rank, they equal the
              per-rank semantics computed here (two models, averaged gradients)
    cli       ``mpiexec -n 2 resnet-np train --sync-bn`` equals ``resnet-np train`` at
              twice the batch, augmentation on (a tiny network in place of the ResNet,
              for speed); an interrupted and resumed 2-rank run equals an
              uninterrupted one bit for bit; resuming on another number of
              processes says what to do; a failing rank ends the job within seconds;
              ranks whose data differ stop together with one line; SIGTERM ends a
              job whose rank waits in MPI
    in process  shards, buckets, SyncBatchNorm2d of one rank against BatchNorm2d,
              launcher detection (no MPI needed)

The MPI tests skip, with the reason, where mpi4py or mpiexec is missing
(``pip install -e ".[mpi]"``). Each rank runs one BLAS thread.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from resnet_np import backend, distributed
from resnet_np import functional as F
from resnet_np.data import DataLoader
from resnet_np.nn import CrossEntropyLoss, Parameter
from resnet_np.training import CheckpointError, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from mpi_worker import (BATCH, EPOCHS, SEED, SCENARIOS, make_optimizer,  # noqa: E402
                        numpy_state, tiny_dataset, tiny_model)

ROOT = Path(__file__).resolve().parent.parent
WORKER = str(Path(__file__).parent / "mpi_worker.py")
MPIEXEC = shutil.which("mpiexec")
try:
    import mpi4py  # noqa: F401
    MPI4PY = None
except ImportError as err:
    MPI4PY = f"mpi4py is not installed ({err}); pip install -e '.[mpi]'"

needs_mpi = pytest.mark.skipif(MPIEXEC is None or MPI4PY is not None,
                               reason=MPI4PY or "no mpiexec on PATH; pip install -e '.[mpi]'")
TOL = 1e-10


def mpiexec(args, n=2, timeout=180, cwd=None):
    """Run ``python ARGS`` on n ranks; returns the CompletedProcess (output as text)."""
    return subprocess.run([MPIEXEC, *_launcher_flags(), "-n", str(n), sys.executable, *args],
                          env=_mpi_env(), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _mpi_env():
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL"))}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _launcher_flags():
    """Start the ranks on this machine with no remote shell; Open MPI also needs leave to
    run as root and to put more ranks than cores."""
    version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True).stdout
    if "HYDRA" in version:
        return ["-launcher", "fork"]
    if "Open MPI" in version or "OpenRTE" in version:
        return ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return []


def differences(a, b, keys=None):
    """Max absolute and max relative difference over the arrays of two dicts."""
    abs_diff, rel_diff = 0.0, 0.0
    for key in keys or a:
        x, y = np.asarray(a[key], dtype=np.float64), np.asarray(b[key], dtype=np.float64)
        assert x.shape == y.shape, key
        d = np.abs(x - y)
        abs_diff = max(abs_diff, float(d.max(initial=0)))
        rel_diff = max(rel_diff, float((d / np.maximum(np.abs(y), 1e-300)).max(initial=0)))
    return abs_diff, rel_diff


# --------------------------------------------------------------------------- #
# Library: DataParallel, ShardedLoader, SyncBatchNorm2d on 2 ranks
# --------------------------------------------------------------------------- #
def one_process(optimizer_name):
    """One process at batch 2B: the run two synchronised ranks at B must reproduce."""
    model, criterion, losses = tiny_model(100), CrossEntropyLoss(), []
    optimizer = make_optimizer(optimizer_name, model.parameters())
    loader = DataLoader(tiny_dataset(), 2 * BATCH, shuffle=True, seed=SEED, drop_last=True)
    for _ in range(EPOCHS):
        for x, y in loader:
            losses.append(float(criterion(model(x.astype(np.float64)), y)))
            optimizer.zero_grad()
            model.backward(criterion.backward())
            optimizer.step()
    return numpy_state(model), np.array(losses)


def per_rank_in_one_process():
    """Batch norm per rank, written out: two copies of the model, each on its half of the
    batch of 2B (images 0, 2, 4, ... and 1, 3, 5, ...), their gradients averaged, one step;
    each copy keeps its own running statistics, rank 0's are the ones compared."""
    models, criterion, losses = [tiny_model(100), tiny_model(100)], CrossEntropyLoss(), []
    optimizer = make_optimizer("sgd", models[0].parameters())
    loader = DataLoader(tiny_dataset(), 2 * BATCH, shuffle=True, seed=SEED, drop_last=True)
    for _ in range(EPOCHS):
        for x, y in loader:
            grads, step_losses = [], []
            for rank, model in enumerate(models):
                model.zero_grad()
                step_losses.append(float(criterion(model(x[rank::2].astype(np.float64)),
                                                   y[rank::2])))
                model.backward(criterion.backward())
                grads.append([p.grad for p in model.parameters()])
            for p, g0, g1 in zip(models[0].parameters(), *grads):
                p.grad = (g0 + g1) / 2
            optimizer.step()
            for p0, p1 in zip(models[0].parameters(), models[1].parameters()):
                p1.data = p0.data.copy()
            losses.append(step_losses)
    return numpy_state(models[0]), np.array(losses)


@pytest.fixture(scope="module")
def library_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("library") / "ranks.npz"
    proc = mpiexec([WORKER, "library", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(out) as npz:
        return {name: {key.split("/", 1)[1]: npz[key] for key in npz.files
                       if key.startswith(name + "/")} for name in SCENARIOS}


@needs_mpi
@pytest.mark.parametrize("scenario", ["sync_sgd", "sync_adamw"])
def test_two_synchronised_ranks_at_b_equal_one_process_at_2b(library_run, scenario):
    ranks = library_run[scenario]
    state, losses = one_process(SCENARIOS[scenario][1])
    weights = [k for k in state if "running" not in k and "num_batches" not in k]
    stats = [k for k in state if "running" in k]
    figures = {"weights": differences(ranks, state, weights),
               "running statistics": differences(ranks, state, stats),
               "loss": differences({"l": ranks["losses"].mean(axis=1)}, {"l": losses})}
    print(scenario, {what: f"max abs {a:.2e}, max rel {r:.2e}" for what, (a, r) in figures.items()})
    for what, (abs_diff, _) in figures.items():
        assert abs_diff < TOL, f"{scenario}: {what} differ by {abs_diff:.3g}"
    assert all(np.array_equal(ranks[k], state[k]) for k in state if "num_batches" in k)
    assert len(losses) == EPOCHS * (50 // (2 * BATCH))


@needs_mpi
def test_batch_norm_per_rank_equals_the_per_rank_semantics(library_run):
    ranks = library_run["local_sgd"]
    state, losses = per_rank_in_one_process()
    abs_diff, rel_diff = differences(ranks, state, list(state))
    loss_abs, _ = differences({"l": ranks["losses"]}, {"l": losses})
    print(f"local_sgd: state max abs {abs_diff:.2e}, max rel {rel_diff:.2e}; "
          f"per-rank losses max abs {loss_abs:.2e}")
    assert abs_diff < TOL and loss_abs < TOL
    # and it is another computation than synchronised batch norm
    synced, _ = one_process("sgd")
    assert differences(ranks, synced, ["1.running_mean"])[0] > 1e-3


# --------------------------------------------------------------------------- #
# The command: mpiexec -n 2 resnet-np train ...
# --------------------------------------------------------------------------- #
# With --tiny (see mpi_worker.py): the tiny network and random images in place of
# ResNet-18 and the digits, in float64.
TINY_RUN = ["train", "--image-size", "8", "--dtype", "float64", "--limit", "40",
            "--test-limit", "15", "--epochs", "2", "--no-progress"]


def tiny_in_place_of_resnets(monkeypatch):
    from mpi_worker import use_tiny_network_and_data
    from resnet_np.training import trainer as trainer_module
    use_tiny_network_and_data(trainer_module, monkeypatch.setattr)


def run_files(folder):
    checkpoint = load_checkpoint(Path(folder) / "last.npz")
    metrics = [json.loads(line) for line in open(Path(folder) / "metrics.jsonl")]
    return checkpoint, metrics


@needs_mpi
def test_mpiexec_resnet_np_train_with_sync_bn_equals_one_process_at_twice_the_batch(
        tmp_path, monkeypatch):
    # As the README says, with augmentation on: each image's crop is drawn from its own
    # generator (seed, epoch, image), whichever rank and batch it lands in.
    from resnet_np import cli
    run = [*TINY_RUN, "--optimizer", "adamw"]     # augmentation on: drawn per image
    two = mpiexec([WORKER, "cli", "--tiny", "--", *run, "--batch-size", "4", "--sync-bn",
                   "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stdout + two.stderr
    assert "2 processes x batch 4 = 8 images per step" in two.stdout
    assert two.stdout.count("epoch 2/2:") == 1            # rank 0 alone logs
    tiny_in_place_of_resnets(monkeypatch)
    assert cli.main([*run, "--batch-size", "8", "--out", str(tmp_path / "one")]) == 0
    (ranks, ranks_metrics), (one, one_metrics) = run_files(tmp_path / "two"), \
        run_files(tmp_path / "one")
    state_diff = differences(ranks.model_state, one.model_state)
    losses = ("train_loss", "test_loss")
    loss_diff = differences({k: [m[k] for m in ranks_metrics] for k in losses},
                            {k: [m[k] for m in one_metrics] for k in losses})
    print(f"cli, adamw: state max abs {state_diff[0]:.2e}, max rel {state_diff[1]:.2e}; "
          f"losses max abs {loss_diff[0]:.2e}")
    assert state_diff[0] < TOL and loss_diff[0] < TOL
    for key in ("train_acc", "top1", "top5"):
        assert [m[key] for m in ranks_metrics] == [m[key] for m in one_metrics], key
    assert ranks.config["world_size"] == 2 and one.config["world_size"] == 1
    assert ranks.config["sync_bn"] is True


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """A 2-rank run of the tiny network, batch norm per rank, augmentation on."""
    out = tmp_path_factory.mktemp("whole")
    proc = mpiexec([WORKER, "cli", "--tiny", "--", *TINY_RUN, "--batch-size", "4",
                    "--out", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@needs_mpi
def test_an_interrupted_and_resumed_two_rank_run_equals_an_uninterrupted_one(whole_run, tmp_path):
    # Ctrl-C reaches rank 1 only, after its batch 2: every rank stops after that batch.
    cut = mpiexec([WORKER, "cli", "--tiny", "--interrupt-rank", "1", "--at-batch", "2",
                   "--", *TINY_RUN, "--batch-size", "4", "--out", str(tmp_path)])
    assert cut.returncode == 130, cut.stdout + cut.stderr
    assert "interrupted at epoch 1/2, batch 2/5" in cut.stdout
    assert load_checkpoint(tmp_path / "last.npz").progress["batch"] == 2
    resumed = mpiexec([WORKER, "cli", "--tiny", "--", "train", "--resume",
                       str(tmp_path / "last.npz"), "--no-progress"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming last.npz at epoch 1, batch 2/5" in resumed.stdout
    (a, a_metrics), (b, b_metrics) = run_files(whole_run), run_files(tmp_path)
    assert a.model_state.keys() == b.model_state.keys()
    for key in a.model_state:
        assert np.array_equal(a.model_state[key], b.model_state[key]), key
    for index, state in a.optimizer["state"].items():
        for name, value in state.items():
            assert np.array_equal(value, b.optimizer["state"][index][name]), (index, name)
    assert len(a_metrics) == len(b_metrics) == 2
    for ra, rb in zip(a_metrics, b_metrics):
        for key in ("train_loss", "train_acc", "test_loss", "top1", "top5", "lr"):
            assert ra[key] == rb[key], key


@needs_mpi
def test_resuming_on_another_number_of_processes_says_what_to_do(whole_run, capsys):
    from resnet_np import cli
    last = whole_run / "last.npz"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--resume", str(last), "--no-progress"])
    assert exit_info.value.code == 1
    message = capsys.readouterr().err
    assert "trained on 2 processes" in message and "this run has 1" in message
    assert f"mpiexec -n 2 resnet-np train --resume {last}" in message


@needs_mpi
def test_a_failing_rank_ends_every_rank_within_seconds_with_its_message(tmp_path):
    start = time.monotonic()
    proc = mpiexec([WORKER, "cli", "--tiny", "--fail-rank", "1", "--", *TINY_RUN,
                    "--batch-size", "4", "--out", str(tmp_path)], timeout=120)
    seconds = time.monotonic() - start
    assert proc.returncode != 0
    assert ("resnet-np: error: rank 1 of 2: bad data on rank 1: label 12 is not a class"
            in proc.stderr), proc.stderr
    assert not (tmp_path / "last.npz").exists()
    print(f"the failing job ended after {seconds:.1f} s (start-up included)")
    assert seconds < 60


def _image_folder(root, count, size=8):
    """``count`` random PNG images of ``size`` pixels, half in cat/, half in dog/."""
    from PIL import Image
    rng = np.random.default_rng(count)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(count // 2):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                root / name / f"{i}.png")


@needs_mpi
def test_ranks_whose_data_differ_stop_together_with_one_line(tmp_path):
    # The two folders hold 20 and 60 images of the same classes: the ranks would take
    # different numbers of steps and wait for each other forever.
    _image_folder(tmp_path / "a", 20)
    _image_folder(tmp_path / "b", 60)
    train = [sys.executable, "-m", "resnet_np", "train", "--dataset", "folder", "--image-size",
             "8", "--epochs", "1", "--batch-size", "4", "--no-progress",
             "--out", str(tmp_path / "run")]
    start = time.monotonic()
    proc = subprocess.run([MPIEXEC, *_launcher_flags(), "-n", "1", *train, "--data-dir",
                           str(tmp_path / "a"), ":", "-n", "1", *train, "--data-dir",
                           str(tmp_path / "b")], env=_mpi_env(), capture_output=True,
                          text=True, timeout=60)
    seconds = time.monotonic() - start
    print(f"the job ended after {seconds:.1f} s (start-up included)")
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert errors == ["resnet-np: error: rank 1 of 2 does not hold what rank 0 holds: its "
                      "training set's size is 48 images, rank 0's 16 images; every rank must "
                      "train on the same data with the same settings"], proc.stderr
    assert not (tmp_path / "run").exists()          # stopped before writing anything
    assert seconds < 10


@needs_mpi
def test_sigterm_ends_a_job_whose_rank_waits_in_mpi_within_seconds(tmp_path):
    from resnet_np.distributed.watchdog import GRACE_S
    marker = tmp_path / "stalled"
    proc = subprocess.Popen(
        [MPIEXEC, *_launcher_flags(), "-n", "2", sys.executable, WORKER, "cli", "--tiny",
         "--stall-rank", "1", "--at-batch", "2", "--marker", str(marker), "--", *TINY_RUN,
         "--batch-size", "4", "--out", str(tmp_path / "run")],
        env=_mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), proc.communicate(timeout=10)
        time.sleep(1.0)      # rank 1 waits in MPI_Recv, rank 0 in its next allreduce
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        seconds = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(f"SIGTERM ended the job after {seconds:.1f} s")
    assert proc.returncode != 0, out + err
    assert ("resnet-np: error: rank 0 of 2: SIGTERM while waiting" in err
            and "ending the job without saving" in err), err
    assert seconds < GRACE_S + 5


# --------------------------------------------------------------------------- #
# In one process: no MPI needed
# --------------------------------------------------------------------------- #
def test_shards_are_disjoint_equal_and_cover_all_but_the_tail():
    order = np.random.default_rng(0).permutation(103)
    shards = [distributed.shard(order, r, 4) for r in range(4)]
    assert {len(s) for s in shards} == {25}
    together = np.concatenate(shards)
    assert len(set(together)) == 100 and set(together) == set(order[:100])
    full = [distributed.shard(order, r, 4, drop_tail=False) for r in range(4)]
    assert sorted(np.concatenate(full)) == list(range(103))
    with pytest.raises(ValueError, match="rank must be in"):
        distributed.shard(order, 4, 4)


def test_two_shards_at_batch_b_augment_as_one_loader_at_2b():
    from resnet_np.data.transforms import cifar_augment
    dataset = tiny_dataset(n=24, size=6)
    options = dict(shuffle=True, seed=5, augment=cifar_augment, drop_last=True, prefetch=False)
    one = DataLoader(dataset, 8, **options)
    ranks = [distributed.ShardedLoader(dataset, 4, rank, 2, **options) for rank in range(2)]
    for _ in range(2):   # epochs
        for (x, _), (x0, _), (x1, _) in zip(one, *ranks):
            together = np.empty_like(x)
            together[0::2], together[1::2] = x0, x1     # rank r holds every 2nd image from r
            assert np.array_equal(together, x)
    plain = DataLoader(dataset, 8, **{**options, "augment": None})
    assert not np.array_equal(next(iter(plain))[0], next(iter(DataLoader(dataset, 8,
                                                                         **options)))[0])


def test_sync_batch_norm_of_one_rank_is_batch_norm():
    rng = np.random.default_rng(1)
    x, dout = rng.standard_normal((4, 3, 5, 5)), rng.standard_normal((4, 3, 5, 5))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    stats = [np.zeros(3), np.ones(3)], [np.zeros(3), np.ones(3)]
    out, cache = F.batch_norm2d_forward(x, gamma, beta, *stats[0], training=True)
    sync_out, sync_cache = distributed.sync_batch_norm2d_forward(
        x, gamma, beta, *stats[1], distributed.SingleProcess())
    np.testing.assert_allclose(sync_out, out, rtol=0, atol=1e-13)
    for a, b in zip(stats[0], stats[1]):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-13)
    for a, b in zip(F.batch_norm2d_backward(dout, cache),
                    distributed.sync_batch_norm2d_backward(dout, sync_cache)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-13)


def test_convert_sync_batchnorm_keeps_parameters_order_and_state():
    model = tiny_model(0)
    keys, params = list(model.state_dict()), model.parameters()
    distributed.SyncBatchNorm2d.convert_sync_batchnorm(model, distributed.SingleProcess())
    assert [type(m).__name__ for m in model].count("SyncBatchNorm2d") == 2
    assert list(model.state_dict()) == keys
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert model[1].name == "1"


def test_buckets_follow_the_backward_order_and_respect_their_size():
    params = [Parameter(np.zeros(n)) for n in (10, 100, 5, 5, 30)]
    reducer = distributed.GradientAllreduce(params, distributed.SingleProcess(),
                                            bucket_mb=40 * 8 / 2 ** 20)
    assert [[p.size for p in b.params] for b in reducer.buckets] == [[30, 5, 5], [100], [10]]
    assert reducer.nbytes == 150 * 8
    with pytest.raises(ValueError, match="bucket_mb"):
        distributed.GradientAllreduce(params, distributed.SingleProcess(), bucket_mb=0)


def test_the_launch_is_read_from_the_launchers_environment():
    assert distributed.world_size({}) == 1
    assert distributed.world_size({"PMI_SIZE": "4", "PMI_RANK": "2"}) == 4
    assert distributed.world_size({"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    # one process imports resnet_np.distributed without mpi4py (slow to import, maybe absent)
    code = "import sys, resnet_np.distributed; print('mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == "False"


def test_a_checkpoint_of_two_ranks_names_the_command_to_resume_it():
    from resnet_np.training import Checkpoint
    checkpoint = Checkpoint("runs/x/last.npz", {}, {"world_size": 2, "batch_size": 32})
    with pytest.raises(CheckpointError, match=r"mpiexec -n 2 resnet-np train --resume "
                                              r"runs/x/last.npz"):
        distributed.check_world_size(checkpoint, 4)
    distributed.check_world_size(checkpoint, 2)


def test_a_resnet_converted_to_sync_batch_norm_computes_the_same_on_one_rank():
    from resnet_np.models import build_model
    from resnet_np.nn import BatchNorm2d
    plain = build_model("resnet18", num_classes=4, cifar_stem=True, dtype="float64")
    synced = build_model("resnet18", num_classes=4, cifar_stem=True, dtype="float64")
    synced.load_state_dict(plain.state_dict())
    keys = list(synced.state_dict())
    distributed.SyncBatchNorm2d.convert_sync_batchnorm(synced, distributed.SingleProcess())
    kinds = [type(m) for m in synced.modules()]
    assert kinds.count(distributed.SyncBatchNorm2d) == 20 and BatchNorm2d not in kinds
    assert list(synced.state_dict()) == keys
    # 16x16: layer4's batch norms see 2 x 2 x 2 values per channel. (With 2 values, at
    # 8x8, their input gradient is exactly 0 and what reaches conv1 is rounding noise.)
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16))
    for model in (plain, synced):
        logits = model(x)
        model.backward(np.ones_like(logits), input_grad=False)
    np.testing.assert_allclose(synced(x), plain(x), rtol=0, atol=1e-12)
    for (name, a), b in zip(plain.named_parameters(), synced.parameters()):
        np.testing.assert_allclose(b.grad, a.grad, rtol=0, atol=1e-12, err_msg=name)
    for key, value in plain.state_dict().items():
        np.testing.assert_allclose(synced.state_dict()[key], value, rtol=0, atol=1e-13,
                                   err_msg=key)


# --------------------------------------------------------------------------- #
# GPUs: NCCL (marked gpu: tests/conftest.py skips these, with the reason, without a GPU)
# --------------------------------------------------------------------------- #
def _skip_without_nccl(gpus=1):
    from conftest import needs_real_cuda
    needs_real_cuda("NCCL")
    if MPI4PY is not None:
        pytest.skip(MPI4PY)
    try:                       # mpi4py imports without the MPI library; loading it tells
        from mpi4py import MPI  # noqa: F401
    except Exception as err:
        pytest.skip(f"mpi4py cannot load an MPI library ({type(err).__name__}: {err})")
    cupy = backend.require_gpu()
    try:
        from cupy.cuda import nccl
        nccl.get_version()
    except Exception as err:   # CuPy built without NCCL, or the library is missing
        pytest.skip(f"CuPy cannot use NCCL ({type(err).__name__}: {err})")
    if cupy.cuda.runtime.getDeviceCount() < gpus:
        pytest.skip(f"needs {gpus} GPUs (one per rank), found "
                    f"{cupy.cuda.runtime.getDeviceCount()}")
    if gpus > 1 and MPIEXEC is None:
        pytest.skip("no mpiexec on PATH; pip install -e '.[mpi]'")
    return cupy


@pytest.mark.gpu
def test_nccl_collectives_and_sync_batch_norm_on_one_gpu():
    cupy = _skip_without_nccl()
    comm = distributed.NCCLCommunicator(distributed.MPICommunicator())
    a = cupy.arange(6, dtype=cupy.float64)
    assert comm.allreduce(a) is a and a.tolist() == list(range(6))   # one rank: the identity
    b = cupy.ones(5, dtype=cupy.float32)
    comm.iallreduce(b).wait()
    comm.broadcast(b)
    assert b.tolist() == [1.0] * 5
    with pytest.raises(TypeError, match="CuPy arrays"):
        comm.allreduce(np.ones(3))
    rng = np.random.default_rng(1)
    x, dout = (cupy.asarray(rng.standard_normal((4, 3, 5, 5))) for _ in range(2))
    gamma, beta = cupy.asarray(rng.standard_normal(3)), cupy.asarray(rng.standard_normal(3))
    stats = [cupy.zeros(3), cupy.ones(3)], [cupy.zeros(3), cupy.ones(3)]
    out, cache = F.batch_norm2d_forward(x, gamma, beta, *stats[0], training=True)
    sync_out, sync_cache = distributed.sync_batch_norm2d_forward(x, gamma, beta, *stats[1], comm)
    cupy.testing.assert_allclose(sync_out, out, rtol=0, atol=1e-12)
    for a, b in zip(F.batch_norm2d_backward(dout, cache),
                    distributed.sync_batch_norm2d_backward(dout, sync_cache)):
        cupy.testing.assert_allclose(b, a, rtol=0, atol=1e-12)


@pytest.mark.gpu
def test_two_ranks_on_two_gpus_with_nccl_equal_one_process(tmp_path):
    _skip_without_nccl(gpus=2)
    proc = mpiexec([WORKER, "library", str(tmp_path / "ranks.npz"), "--device", "gpu"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(tmp_path / "ranks.npz") as npz:
        ranks = {key: npz[key] for key in npz.files}
    for scenario in ("sync_sgd", "sync_adamw"):
        state, losses = one_process(SCENARIOS[scenario][1])
        got = {key: ranks[f"{scenario}/{key}"] for key in state}
        abs_diff, rel_diff = differences(got, state)
        print(f"nccl {scenario}: max abs {abs_diff:.2e}, max rel {rel_diff:.2e}")
        assert abs_diff < TOL, scenario
        assert differences({"l": ranks[f"{scenario}/losses"].mean(axis=1)}, {"l": losses})[0] < TOL
    state, _ = per_rank_in_one_process()
    assert differences({key: ranks[f"local_sgd/{key}"] for key in state}, state)[0] < TOL
    run = mpiexec(["-m", "resnet_np", *TINY_RUN, "--model", "resnet18", "--limit", "16",
                   "--epochs", "1", "--batch-size", "4", "--device", "gpu", "--sync-bn",
                   "--out", str(tmp_path / "cli")])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 processes x batch 4" in run.stdout and (tmp_path / "cli" / "last.npz").exists()


class _TwoRanks:
    """allgather_object of a 2-rank job, played in one process: the parts are given."""
    size = 2

    def __init__(self, rank, parts):
        self.rank, self.parts = rank, parts

    def allgather_object(self, obj):
        return self.parts


def test_eval_results_of_strided_shards_combine_into_the_whole_sets():
    from resnet_np.training.evaluate import EvalResult
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 4, 11), rng.integers(0, 4, 11)
    parts = []
    for rank in range(2):
        lab, pred = labels[rank::2], predictions[rank::2]
        parts.append((0.5 * len(lab), int((lab == pred).sum()), len(lab), lab, pred))
    results = [EvalResult(loss=0.5, top1=p[1] / p[2], top5=1.0, labels=p[3], predictions=p[4])
               for p in parts]
    whole = distributed.reduce_eval(results[1], _TwoRanks(1, [
        (r.loss * r.count, round(r.top1 * r.count), round(r.top5 * r.count), r.labels,
         r.predictions) for r in results]))
    assert np.array_equal(whole.labels, labels) and np.array_equal(whole.predictions, predictions)
    assert whole.top1 == (labels == predictions).mean() and whole.top5 == 1.0
    assert np.array_equal(whole.confusion_matrix(4), EvalResult(
        0.5, 0, 0, labels, predictions).confusion_matrix(4))


def test_ranks_with_other_settings_or_images_disagree_on_every_rank():
    facts = [("training set's size", "60 images"), ("training set's fingerprint", "ab12"),
             ("setting lr", 0.05)]
    other_lr = facts[:2] + [("setting lr", 0.1)]
    for rank in (0, 1):      # every rank reaches the same verdict, so all stop alike
        with pytest.raises(distributed.RanksDisagree, match=r"^rank 1 of 2 does not hold what "
                           r"rank 0 holds: its setting lr is 0.1, rank 0's 0.05; every rank"):
            distributed.check_same_run(_TwoRanks(rank, [facts, other_lr]),
                                       [facts, other_lr][rank])
    shuffled = [facts[0], ("training set's fingerprint", "cd34"), facts[2]]
    with pytest.raises(distributed.RanksDisagree, match="fingerprint is cd34, rank 0's ab12"):
        distributed.check_same_run(_TwoRanks(0, [facts, shuffled]), facts)
    distributed.check_same_run(_TwoRanks(1, [facts, list(facts)]), facts)   # the same: no error
