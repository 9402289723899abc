"""The benchmark suite: FLOP counts, timing statistics, the layer-shape walk, the reports.

Nothing here asserts a time: machines are noisy. The end-to-end run is a tiny
ResNet-18 on 32x32 images with one repetition.
"""
import csv
from dataclasses import replace
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import resnet_np as rn
from resnet_np.bench import (LayerSpec, Timing, conv_flops, layer_flops, layer_shapes,
                             linear_flops, main, measure, quick_selection)
from resnet_np.bench import report, runs
import resnet_np.bench as bench

HAS_TORCH = importlib.util.find_spec("torch") is not None
MISSING = runs.unavailable_backends()
# Every backend, skipped with its reason where it cannot run here.
EVERY_BACKEND = [pytest.param(key, marks=[pytest.mark.skipif(key in MISSING,
                                                             reason=MISSING.get(key, ""))]
                              + ([pytest.mark.gpu] if key in runs.GPU_BACKENDS else []))
                 for key in runs.BACKENDS]


def conv(C, H, K, R, stride=1, padding=0, groups=1):
    return LayerSpec("conv", (C, H, H), out_features=K, kernel=(R, R), stride=(stride, stride),
                     padding=(padding, padding), groups=groups)


@pytest.fixture(scope="module")
def resnet50_groups():
    return layer_shapes(rn.resnet50(), 224)


# --------------------------------------------------------------------------- #
# FLOPs
# --------------------------------------------------------------------------- #
def test_conv_flops_by_hand():
    # stem 7x7/2 pad 3, 3 -> 64 at 224: P = Q = (224 + 6 - 7) // 2 + 1 = 112
    assert conv_flops(conv(3, 224, 64, 7, 2, 3), 1) == 2 * 112 * 112 * 64 * 3 * 7 * 7
    # 1x1, 256 -> 64 at 56x56, batch 8: 2 * 8 * 56*56 * 64 * 256
    assert conv_flops(conv(256, 56, 64, 1), 8) == 822_083_584
    # 3x3/2 pad 1, 128 -> 128 at 56: P = Q = 28
    assert conv_flops(conv(128, 56, 128, 3, 2, 1), 2) == 2 * 2 * 28 * 28 * 128 * 128 * 9
    # grouped (ResNeXt 32x4d): each filter sees C/G = 4 channels
    assert conv_flops(conv(128, 56, 128, 3, 1, 1, groups=32), 1) == 2 * 56 * 56 * 128 * 4 * 9


def test_backward_is_twice_forward_and_other_layers_have_none():
    spec = conv(64, 56, 64, 3, 1, 1)
    assert layer_flops(spec, 4, "backward") == 2 * layer_flops(spec, 4, "forward")
    fc = LayerSpec("fc", (2048,), out_features=1000, bias=True)
    assert linear_flops(fc, 8) == 2 * 8 * 2048 * 1000
    assert layer_flops(fc, 8, "backward") == 4 * 8 * 2048 * 1000
    assert layer_flops(LayerSpec("bn", (64, 56, 56)), 8, "forward") is None


def test_resnet50_forward_is_about_4_1_giga_multiply_adds(resnet50_groups):
    # The well-known figure for ResNet-50 at 224x224: about 4.1 GMACs per image.
    macs = sum(g.uses * layer_flops(g.spec, 1, "forward") / 2
               for g in resnet50_groups if g.spec.kind in ("conv", "fc"))
    assert 4.0e9 < macs < 4.2e9


# --------------------------------------------------------------------------- #
# Timing
# --------------------------------------------------------------------------- #
def test_measure_on_a_fake_clock():
    ticks = iter([0.0, 100.0,                                   # the warm-up run
                  0.0, 1.0, 5.0, 8.0, 10.0, 12.0, 20.0, 30.0])  # 1, 3, 2, 10 s
    calls, syncs = [], []
    timing = measure(lambda arg: calls.append(arg), setup=lambda: "fresh", warmup=1, reps=4,
                     sync=lambda: syncs.append(1), clock=lambda: next(ticks))
    assert timing.times == (1.0, 3.0, 2.0, 10.0)
    assert calls == ["fresh"] * 5
    assert len(syncs) == 10  # before and after every run, the warm-up included
    assert timing.median == 2.5 and timing.min == 1.0 and timing.max == 10.0
    assert timing.quartiles == (1.75, 4.75)


def test_timing_statistics_of_odd_count():
    t = Timing((0.3, 0.1, 0.2))
    assert t.median == 0.2 and t.quartiles == pytest.approx((0.15, 0.25))
    with pytest.raises(ValueError):
        measure(lambda: None, reps=0)


# --------------------------------------------------------------------------- #
# The layer-shape walk
# --------------------------------------------------------------------------- #
def test_resnet50_has_23_distinct_conv_shapes(resnet50_groups):
    # Counted by hand from the architecture (Bottlenecks [3, 4, 6, 3], v1.5 stride on the 3x3):
    #   stem 7x7/2: 1
    #   layer1 (56x56, width 64): 1x1 64->64, 3x3 64->64, 1x1 64->256 (the downsample
    #       1x1 64->256 stride 1 has the same shape), 1x1 256->64 in blocks 1-2: 4
    #   layer2..4, each: block 0 1x1 reduce, 3x3/2, 1x1 expand, downsample 1x1/2;
    #       blocks 1+ 1x1 reduce from the wider input and 3x3/1 (the expand repeats): 6 x 3
    # 1 + 4 + 18 = 23 distinct shapes; 53 convolutions (49 in the main path + 4 downsamples).
    convs = [g for g in resnet50_groups if g.spec.kind == "conv"]
    assert len(convs) == 23
    assert sum(g.uses for g in convs) == 53
    kinds = {g.spec.kind: sum(h.uses for h in resnet50_groups if h.spec.kind == g.spec.kind)
             for g in resnet50_groups}
    assert kinds == {"conv": 53, "bn": 53, "maxpool": 1, "fc": 1}
    stem = convs[0]
    assert stem.names == ["conv1"] and stem.spec.in_shape == (3, 224, 224)
    assert not stem.spec.channels_last       # the user's NCHW images
    # a train step computes no gradient for the images: the stem's backward is dw alone
    assert not stem.spec.input_grad and all(g.spec.input_grad for g in resnet50_groups[1:])
    assert layer_flops(stem.spec, 8, "backward") == layer_flops(stem.spec, 8, "forward")
    assert stem.spec.describe() == "7x7/2 3->64 @224x224 (no dx)"
    assert convs[1].spec.channels_last       # what the max-pool hands on
    assert "layer1.0.downsample.0" in convs[3].names  # shares 1x1 64->256 @56 with conv3


def test_walk_leaves_the_model_as_it_was():
    model = rn.resnet18(cifar_stem=True)
    layer_shapes(model, 32)
    assert model.training
    assert all("forward" not in m.__dict__ for m in model.modules())


@pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch")
def test_conv_shapes_match_torchvision(resnet50_groups):
    from reference import import_torchvision, torch
    model = import_torchvision().models.resnet50().eval()
    seen = set()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda m, inputs, out: seen.add(
                (tuple(inputs[0].shape[1:]), m.out_channels, m.kernel_size, m.stride, m.padding)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread is quick enough, and is not slowed by a busy machine
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 224, 224))
    finally:
        torch.set_num_threads(threads)
    ours = {(g.spec.in_shape, g.spec.out_features, g.spec.kernel, g.spec.stride, g.spec.padding)
            for g in resnet50_groups if g.spec.kind == "conv"}
    assert ours == seen


def test_quick_selection_keeps_one_layer_of_each_kind(resnet50_groups):
    chosen = quick_selection(resnet50_groups)
    convs = [(g.spec.kernel[0], g.spec.stride[0]) for g in chosen if g.spec.kind == "conv"]
    assert sorted(convs) == [(1, 1), (1, 2), (3, 1), (3, 2), (7, 2)]
    assert [g.spec.kind for g in chosen].count("bn") == 1
    assert {"maxpool", "fc"} <= {g.spec.kind for g in chosen}


# --------------------------------------------------------------------------- #
# Runs, in this process
# --------------------------------------------------------------------------- #
TINY = [conv(8, 6, 4, 3, 1, 1), replace(conv(8, 3, 4, 3, 2, 1), input_grad=False),
        LayerSpec("bn", (4, 6, 6), channels_last=True),
        LayerSpec("maxpool", (4, 6, 6), kernel=(3, 3), stride=(2, 2), padding=(1, 1)),
        LayerSpec("fc", (16,), out_features=10, bias=True)]


def rows_of(job):
    return json.loads(Path(job["out"]).read_text())["rows"]


@pytest.mark.parametrize("key", EVERY_BACKEND)
def test_layer_job_times_every_pass(key, tmp_path):
    job = dict(backend=key, batch=2, warmup=0, reps=2, threads=1, gemm_size=32,
               layers=[dict(name=f"l{i}", uses=1, spec=s.to_json()) for i, s in enumerate(TINY)],
               out=str(tmp_path / "rows.json"))
    runs.layers_job(job)
    rows = rows_of(job)
    layers = [r for r in rows if r["part"] == "layers"]
    assert [(r["layer"], r["pass_"]) for r in layers] == [
        (f"l{i}", p) for i in range(len(TINY)) for p in ("forward", "backward")]
    assert all(r["reps"] == 2 and r["median_ms"] > 0 and not r.get("error") for r in layers)
    assert [r["part"] for r in rows].count("gemm") == (key.startswith("np"))


@pytest.mark.parametrize("key", EVERY_BACKEND)
def test_model_job_measures_a_train_step(key, tmp_path):
    job = dict(backend=key, runs=[dict(model="resnet18", batch=2, image_size=32, mode="train")],
               warmup=1, reps=1, threads=1, out=str(tmp_path / "rows.json"))
    runs.models_job(job)
    [row] = rows_of(job)
    assert row["reps"] == 1 and not row.get("error") and row["images_per_s"] > 0
    assert (row.get("peak_tracemalloc_mb") is not None) == (key in ("np-cpu", "np-native"))
    if key == "np-cpu":
        assert row["peak_tracemalloc_mb"] > 0
    if runs.on_gpu(key):
        assert row["peak_mb"] > 0                  # the second run's, on the device


def test_a_job_past_its_time_writes_why_for_each_row(tmp_path):
    job = dict(backend="np-cpu", runs=[dict(model="resnet18", batch=2, image_size=32, mode=m)
                                       for m in ("inference", "train")],
               warmup=0, reps=1, seconds=-1, out=str(tmp_path / "rows.json"))
    runs.models_job(job)
    assert [(r["mode"], r["error"]) for r in rows_of(job)] == [
        ("inference", runs.TIME_RAN_OUT), ("train", runs.TIME_RAN_OUT)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_a_command_past_its_time_is_killed_with_what_it_started(tmp_path):
    pid_file = tmp_path / "grandchild"
    started = time.monotonic()
    problem = runs.run_command([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n")], 3, output=open(tmp_path / "out.txt", "w"))
    assert problem == "killed after its 3 s" and time.monotonic() - started < 15
    grandchild = int(pid_file.read_text())
    for _ in range(50):                     # gone, or a zombie left for init to reap
        try:
            if Path(f"/proc/{grandchild}/stat").read_text().split(") ")[1][0] == "Z":
                break
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the grandchild outlived the kill")


HANGING_CONV = """\
import time
import resnet_np.bench.runs as runs
measure = runs.bench_layer
runs.bench_layer = lambda spec, *args: time.sleep(600) if spec.kind == "conv" else \\
    measure(spec, *args)
"""


def hanging_conv_job(tmp_path, monkeypatch):
    """A layers job whose first layer (a max-pool) is timed and whose second (a conv)
    never ends: its child processes load a sitecustomize that makes a conv hang."""
    (tmp_path / "sitecustomize.py").write_text(HANGING_CONV)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path)] + sys.path))
    pool = LayerSpec("maxpool", (4, 9, 9), kernel=(3, 3), stride=(2, 2), padding=(1, 1))
    return dict(backend="np-cpu", batch=2, warmup=0, reps=1,
                layers=[dict(name=s.kind, uses=1, spec=s.to_json()) for s in (pool, TINY[0])])


def test_run_in_child_kills_an_overrunning_child_and_keeps_its_rows(tmp_path, monkeypatch):
    started = time.monotonic()
    rows, problem = runs.run_in_child("layers_job", hanging_conv_job(tmp_path, monkeypatch), 8,
                                      log=lambda message: None)
    assert problem == "killed after its 8 s" and time.monotonic() - started < 20
    assert [(r["layer"], r["pass_"]) for r in rows] == [("maxpool", "forward"),
                                                       ("maxpool", "backward")]
    # a job that fails at once says how, and a models job gets a row for each run it lost
    rows, problems = runs.run_jobs("models_job", [dict(backend="np-cpu", runs=[
        dict(model="resnet0", batch=1, image_size=32, mode="train")], warmup=0, reps=1)],
        lambda message: None, each=60)
    assert "resnet0" in rows[0]["error"] and rows[0]["mode"] == "train" and not problems


def test_spec_survives_json():
    for spec in TINY:
        assert LayerSpec.from_json(spec.to_json()) == spec


# --------------------------------------------------------------------------- #
# Reports and files
# --------------------------------------------------------------------------- #
def model_row(backend, mode, ms, peak, precision="float32"):
    return dict(part="models", model="resnet50", batch=8, mode=mode, backend=backend,
                precision=precision, median_ms=ms, min_ms=ms, max_ms=ms, peak_mb=peak,
                images_per_s=8e3 / ms)


def test_ratios_from_rows():
    rows = [model_row("np-cpu", "inference", 300.0, None),
            model_row("torch-cpu", "inference", 100.0, None),
            model_row("np-cpu", "train", 900.0, 1200.0),
            model_row("torch-cpu", "train", 300.0, 800.0),
            model_row("np-cpu", "train", 1.0, 1.0, precision="amp")]
    ratios = report.model_ratios(rows, "resnet50", 8)
    assert ratios == {"inference": 3.0, "train": 3.0, "memory": 1.5}


def test_a_plot_that_fails_leaves_the_old_file(tmp_path):
    plt = report._pyplot()
    if plt is None:
        pytest.skip("matplotlib is not installed")
    path = tmp_path / "a.png"
    path.write_bytes(b"old")
    fig, _ = plt.subplots()
    fig.savefig = lambda f, **kwargs: (f.write(b"half"), 1 / 0)
    with pytest.raises(ZeroDivisionError):
        report._save(plt, fig, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_tiny_end_to_end_run_writes_every_file(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    main(["--models", "resnet18", "--image-size", "32", "--batch", "2", "--batch-sizes", "2",
          "--warmup", "0", "--reps", "1", "--gemm-size", "64", "--threads", "1",
          "--backends", "np-cpu", "--cifar-batch", "2", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "## Per layer (batch 2)" in printed and "## Models" in printed
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["conv_gflops.png", "gemm.csv", "layers.csv", "layers.png", "models.csv",
                     "report.md", "throughput.png"]
    assert (tmp_path / "report.md").read_text() == printed.rstrip("\n") + "\n"
    with open(tmp_path / "layers.csv") as f:
        layers = list(csv.DictReader(f))
    assert {r["pass_"] for r in layers} == {"forward", "backward"}
    assert len(layers) == 2 * len(layer_shapes(rn.resnet18(), 32))
    with open(tmp_path / "models.csv") as f:
        models = list(csv.DictReader(f))
    assert sorted((r["model"], r["mode"]) for r in models) == [
        ("resnet18", "inference"), ("resnet18", "train"),
        ("resnet18_cifar", "inference"), ("resnet18_cifar", "train")]
    assert all(not r["error"] and float(r["images_per_s"]) > 0 for r in models)
    assert all(float(r["floor_ms"]) > 0 and float(r["gflop"]) > 0 for r in models)
    assert "| resnet18_cifar | 2 | train | resnet-np CPU |" in printed
    assert "floor ms" in printed
    assert f"- command: `resnet-np bench --models resnet18" in printed
    for png in ("layers.png", "conv_gflops.png", "throughput.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.isfinite([float(r["median_ms"]) for r in layers]).all()


def test_layers_plot_keeps_its_longest_labels_inside_the_figure(tmp_path, monkeypatch):
    plt = report._pyplot()
    if plt is None:
        pytest.skip("matplotlib is not installed")
    figures = []
    monkeypatch.setattr(report, "_save", lambda plt, fig, path: figures.append(fig))
    rows = [{"part": "layers", "layer": name, "shape": "1x1/2 256->512 @56x56", "pass_": p,
             "backend": "np-cpu", "median_ms": 1.0, "batch": 8}
            for name in ("layer2.0.downsample.0", "conv1") for p in ("forward", "backward")]
    report.plot_layers(plt, rows, tmp_path / "layers.png")
    fig = figures[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for label in fig.axes[0].get_yticklabels():
        assert label.get_window_extent(renderer).x0 >= 0, label.get_text()
    plt.close(fig)


def test_model_flops_count_the_step():
    groups = layer_shapes(rn.resnet50(), 224)
    inference, train = (bench.model_flops(groups, 1, mode) for mode in ("inference", "train"))
    assert round(inference / 2e9, 1) == 4.1                     # the usual 4.1 G multiply-adds
    stem = conv_flops(groups[0].spec, 1)
    assert train == 3 * inference - stem                        # no input gradient for conv1
    assert bench.model_flops(groups, 8, "train") == 8 * train


def test_native_blas_children_run_without_the_forced_kernels(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "262144")
    native = runs.child_environment({"backend": "np-native"})
    forced = runs.child_environment({"backend": "np-cpu"})
    assert "OPENBLAS_CORETYPE" not in native and "OPENBLAS_L2_SIZE" not in native
    assert forced["OPENBLAS_CORETYPE"] == "Haswell" and forced["OPENBLAS_L2_SIZE"] == "262144"
    env = report.environment(["np-cpu", "np-native"], 0.1, "resnet-np bench --native-blas")
    assert "forced by OPENBLAS_CORETYPE=Haswell" in env["OpenBLAS kernels"]
    assert "np-native" in runs.unavailable_backends() and \
        "np-native" not in runs.unavailable_backends(native_blas=True)


def test_a_loaded_machine_is_marked_or_refused(monkeypatch, capsys):
    env = report.environment(["np-cpu"], 3.0, "resnet-np bench")
    assert "NOT A QUIET MACHINE" in env["WARNING"]
    rows = [model_row("np-cpu", "train", 900.0, 1200.0),
            model_row("torch-cpu", "train", 300.0, 800.0)]
    text = report.render_report("resnet-np benchmarks", env, ["settings"], rows, [("resnet50", 8)])
    assert text.startswith("# resnet-np benchmarks -- NOT A QUIET MACHINE")
    assert "- command: `resnet-np bench`" in text and "- settings" in text
    assert "- CPU, float32: inference -, train step 3.00x, train-step peak memory 1.50x " \
           "(NOT A QUIET MACHINE)" in text
    monkeypatch.setattr(bench, "load_average", lambda: 3.0)
    assert main(["--require-quiet", "--quick"]) == 2
    assert "load average is 3.00, above 0.5" in capsys.readouterr().err


def test_the_cifar_row_compares_the_same_network():
    torch_model = runs.build_torch_model(runs.CIFAR_MODEL)
    ours = runs.build_np_model(runs.CIFAR_MODEL)
    assert sum(p.numel() for p in torch_model.parameters()) == ours.num_parameters()
    assert tuple(torch_model.conv1.weight.shape) == ours.conv1.weight.shape == (64, 3, 3, 3)
    assert type(torch_model.maxpool).__name__ == "Identity" and ours.num_classes == 10


_FREED_BLOCK = """
import ctypes, sys, numpy as np
from resnet_np import backend
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
applied = backend.retain_freed_memory() if sys.argv[1] == "retain" else None
a = np.ones(64 * 2 ** 20 // 8)          # 64 MiB, above glibc's largest mmap threshold
del a
print(applied, libc.mallinfo2().fordblks >= 64 * 2 ** 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux) only")
@pytest.mark.parametrize("mode", ["retain", "default"])
def test_freed_activation_buffers_stay_in_the_process_for_the_next_step(mode):
    """After retain_freed_memory a freed 64 MiB buffer stays in malloc's heap for reuse
    (free bytes >= 64 MiB); with glibc's defaults it goes back to the OS (munmap)."""
    import subprocess
    try:
        ctypes_ok = subprocess.run([sys.executable, "-c", "import ctypes; "
                                    "ctypes.CDLL('libc.so.6').mallinfo2"], capture_output=True)
    except OSError:
        pytest.skip("no Python to run a child process")
    if ctypes_ok.returncode:
        pytest.skip("this C library has no mallinfo2 (glibc < 2.33)")
    env = {k: v for k, v in os.environ.items() if k != "RESNET_NP_MALLOC"}
    done = subprocess.run([sys.executable, "-c", _FREED_BLOCK, mode], capture_output=True,
                          text=True, env=env, check=True)
    assert done.stdout.split() == (["True", "True"] if mode == "retain" else ["None", "False"])
    env["RESNET_NP_MALLOC"] = "default"
    done = subprocess.run([sys.executable, "-c", _FREED_BLOCK, "retain"], capture_output=True,
                          text=True, env=env, check=True)
    assert done.stdout.split() == ["False", "False"]        # the user asked for glibc's own


def test_the_step_profile_times_every_layer_function():
    """benchmarks/profile_step.py (run as a script: it wraps resnet_np.functional for its
    process) accounts for a train step by function and by input shape."""
    import subprocess
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "profile_step.py"
    done = subprocess.run([sys.executable, str(script), "--model", "resnet18", "--batch", "2",
                           "--size", "32", "--warmup", "1", "--steps", "1", "--top", "3"],
                          capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    import re
    head = re.fullmatch(r"resnet18 train, batch 2, 32x32: (\d+) ms a step, (\d+) ms in the "
                        r"layer functions", lines[0])
    assert head and 0 < int(head[2]) <= int(head[1])
    names = {line.split()[0] for line in lines[1:] if line.startswith("  ") and "(" not in line}
    assert {"conv2d_forward", "conv2d_backward", "batch_norm2d_forward", "max_pool2d_backward",
            "softmax_cross_entropy_backward"} <= names
    assert len([line for line in lines if line.startswith("  conv2d") and "(" in line]) >= 1


@pytest.mark.parametrize("flag, value", [("--timeout", "-1"), ("--timeout", "0"),
                                         ("--timeout", "nan"), ("--timeout", "inf"),
                                         ("--batch", "0"), ("--reps", "-2"), ("--warmup", "-1"),
                                         ("--batch-sizes", "8,0"), ("--gemm-size", "-1")])
def test_a_bad_number_is_refused_in_one_line(flag, value, capsys):
    from resnet_np.cli import main as cli_main
    with pytest.raises(SystemExit) as info:
        cli_main(["bench", flag, value, "--out", "never-written"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"resnet-np: error: argument {flag}: expected ")
    assert not Path("never-written").exists()
