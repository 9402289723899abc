"""The GPU check (benchmarks/gpu_check.sh): its dry run end to end, on the CuPy stand-in
where the package has one; its time budget; its report from given rows. The check itself
runs on a GPU with ``benchmarks/gpu_check.sh OUT``."""
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from resnet_np.bench import gpu, report, runs
from test_bench import hanging_conv_job

ROOT = Path(__file__).resolve().parent.parent
STANDIN = importlib.util.find_spec("resnet_np.cupy_standin") is not None
# kernel correctness first, then the kernels at the timed shapes, models, layers, sanitizer
ORDER = ["tests", "check", "models", "layers", "sanitizer"]


def _parts_table(text):
    """The parts of report.md's table 'Parts, in the order run' -> [(part, outcome)]."""
    table = text.split("## Parts, in the order run")[1].split("\n\n")[1].splitlines()[2:]
    return [(cells[1].strip(), cells[4].strip()) for cells in (line.split("|") for line in table)]


def test_the_dry_run_leaves_a_report_and_at_most_8_files(tmp_path):
    """The script end to end: on the stand-in (every GPU branch) where there is one."""
    env = dict(os.environ, RESNET_NP_CUPY_STANDIN="1" if STANDIN else "0")
    out = tmp_path / "out"
    started = time.monotonic()
    # a budget above the dry run's own (which on a quiet machine it does not need) so
    # that a busy one cuts no part
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out),
                           "--dry-run", "--budget", "200"], env=env, capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    assert time.monotonic() - started < 200 + 30
    files = sorted(p.name for p in out.rglob("*"))
    assert files == ["gpu_check.log", "report.md", "results.tar.gz"]
    text = (out / "report.md").read_text()
    assert [part for part, _ in _parts_table(text)] == ORDER
    assert "DRY RUN" in text and f"`benchmarks/gpu_check.sh {out} --dry-run --budget 200`" in text
    assert all(outcome == "done" for _, outcome in _parts_table(text)), text
    with tarfile.open(out / "results.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"report.md", "layers.csv", "models.csv", "checks.csv", "pytest.txt",
            "sanitizer-none.txt"} <= names, names
    rows = [dict(r, part="models") for r in _csv(out, "models.csv")]
    ran = {(r["backend"], r["precision"], r["mode"]) for r in rows if not r["error"]}
    if STANDIN:     # every GPU branch of resnet-np: generic, kernels, TF32, mixed precision
        assert "CuPy stand-in" in text
        assert {("np-gpu", p, m) for p in runs.PRECISIONS for m in ("inference", "train")} <= ran
        assert {r["backend"] for r in _csv(out, "layers.csv") if not r["error"]} >= {
            "np-gpu", "np-gpu-generic"}
        assert all(float(r["rel_error"]) <= report.CHECK_TOLERANCE
                   for r in _csv(out, "checks.csv"))
        assert all(float(r["peak_mb"]) > 0 for r in rows
                   if r["backend"] == "np-gpu" and not r["error"])


def _csv(out, name):
    import csv
    import io
    with tarfile.open(out / "results.tar.gz") as tar:
        return list(csv.DictReader(io.TextIOWrapper(tar.extractfile(name))))


def test_a_part_that_overruns_is_cut_and_the_report_still_written(tmp_path, monkeypatch):
    job = hanging_conv_job(tmp_path, monkeypatch)
    given, started = {}, time.monotonic()

    def part(name):
        def run(work, config, seconds, log):
            given[name] = seconds, time.monotonic() - started
            if name == "models":        # a child that would take far longer than its time
                return runs.run_jobs("layers_job", [job], log, seconds=seconds) + ([],)
            if name == "layers":
                raise RuntimeError("the GPU fell off")
            return [], {}, [f"{name} ran"]
        return run
    monkeypatch.setattr(gpu, "PART_RUNS", {name: part(name) for name in gpu.PARTS})
    assert gpu.main([str(tmp_path / "out"), "--dry-run", "--budget", "20"]) == 0
    assert time.monotonic() - started < 20 + 15
    # each part gets its share of what is left: tests 20 %, check 8 % of the other 80 %...
    rest = 1.0
    for name in gpu.PARTS:
        seconds, elapsed = given[name]
        assert seconds == pytest.approx((20 - elapsed) * gpu.SHARES[name] / rest, abs=0.3)
        rest -= gpu.SHARES[name]
    assert given["sanitizer"][0] < 20 - given["models"][0] + 1    # what the cut part left
    text = (tmp_path / "out" / "report.md").read_text()
    parts = dict(_parts_table(text))
    assert list(parts) == ORDER
    assert parts["models"].startswith("layers resnet-np CPU: killed after its ")
    assert parts["layers"] == "layers: RuntimeError: the GPU fell off"
    assert parts["tests"] == parts["sanitizer"] == "done"
    assert "sanitizer ran" in text and "| maxpool | 1 |" in text   # the cut part's rows kept
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.md",
                                                                  "results.tar.gz"]


def _layer(backend, layer, kind, pass_, ms, **extra):
    return dict(part="layers", backend=backend, layer=layer, uses=3 if kind == "conv" else 1,
                kind=kind, shape=layer, pass_=pass_, batch=32, median_ms=ms, min_ms=ms,
                max_ms=ms, **extra)


def _model(backend, precision, mode, ms, peak, batch=64):
    return dict(part="models", backend=backend, precision=precision, model="resnet50",
                batch=batch, image_size=224, mode=mode, median_ms=ms, min_ms=ms, max_ms=ms,
                images_per_s=batch / ms * 1e3, peak_mb=peak)


def test_the_report_of_given_rows():
    rows = [_layer("np-gpu-generic", "conv", "conv", "forward", 4.0),
            _layer("np-gpu", "conv", "conv", "forward", 2.0),
            _layer("torch-cuda", "conv", "conv", "forward", 1.0),
            _layer("np-gpu-generic", "bn", "bn", "forward", 1.0),
            _layer("np-gpu", "bn", "bn", "forward", 2.0),
            _layer("torch-cuda", "bn", "bn", "forward", None, error="RuntimeError: x"),
            dict(part="checks", backend="np-gpu", layer="conv", kind="conv", shape="conv",
                 pass_="forward", rel_error=3e-7),
            dict(part="checks", backend="np-gpu", layer="bn", kind="bn", shape="bn",
                 pass_="forward", rel_error=2e-3),
            _model("np-gpu", "float32", "train", 120.0, 9000.0),
            _model("torch-cuda", "float32", "train", 100.0, 5000.0),
            _model("np-gpu", "tf32", "train", 90.0, 9000.0),
            _model("torch-cuda", "tf32", "train", 50.0, 5000.0),
            _model("np-gpu", "float32", "inference", 30.0, 2000.0),
            dict(part="models", backend="torch-cuda", precision="float32", model="resnet50",
                 batch=64, image_size=224, mode="inference", error="killed"),
            dict(part="gemm", backend="np-gpu", error=runs.TIME_RAN_OUT)]    # and no ceiling
    report.add_floors(rows)
    text = report.render_report("GPU check", {"command": "`x`"}, [], rows, [("resnet50", 64)])
    assert "GEMM ceiling" not in text
    # kernels against generic CuPy: conv 12/6 ms over its 3 uses, 2x; bn 0.5x, and it differs
    assert "| conv | forward | 1 | 12.0 | 6.00 | 2.00x | 3.0e-07 | yes |" in text
    assert "| bn | forward | 1 | 1.00 | 2.00 | 0.50x | 2.0e-03 | NO |" in text
    assert "- differs: bn bn forward: 2.0e-03" in text
    assert "- failed: PyTorch CUDA bn: RuntimeError: x" in text
    assert "| resnet50 | 64 | inference | PyTorch CUDA | float32 | failed: killed |" in text
    # targets at ResNet-50, batch 64: 120/100 = 1.2 met, 90/50 = 1.8 not, memory 1.8 not
    assert ("- GPU, float32: inference -, train step 1.20x (target <= 1.5x: met), "
            "train-step peak memory 1.80x (target <= 1.5x: NOT MET)") in text
    assert "- GPU, tf32: inference -, train step 1.80x (target <= 1.5x: NOT MET)" in text


def test_peak_memory_of_cupys_pool():
    class Pool:
        used = 0

        def malloc(self, size):
            self.used += size
            return size

        def used_bytes(self):
            return self.used

    pool, allocators = Pool(), []
    cp = type("cp", (), {})()
    cp.get_default_memory_pool = lambda: pool
    cp.cuda = type("cuda", (), {"set_allocator": staticmethod(allocators.append)})()
    meter = runs.PoolPeak(cp)
    meter.start()
    assert allocators == [meter.malloc]
    meter.malloc(100)
    pool.used -= 100                  # a free
    meter.malloc(30)
    assert meter.stop() == 100 and allocators[-1] == pool.malloc
    meter.start()                     # from what is in use now: 30
    meter.malloc(10)
    assert meter.stop() == 40


def test_arguments(capsys):
    with pytest.raises(SystemExit):
        gpu.parse_args(["out", "--parts", "layers,everything"])
    assert "unknown part(s) everything" in capsys.readouterr().err
    assert gpu.parse_args(["out", "--parts", "models"]).parts == ["models"]
    assert gpu.parse_args(["out"]).budget == gpu.BUDGET[False]
    assert gpu.parse_args(["out", "--dry-run"]).budget == gpu.BUDGET[True]
    for budget in ("0", "-5", "nan"):
        with pytest.raises(SystemExit):
            gpu.parse_args(["out", "--budget", budget])
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # the whole check fits twice in 15 minutes of GPU time: parts, report, and the timeout
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    assert "timeout -k 10 280 " in script and gpu.BUDGET[False] + 30 <= 280 and 280 + 10 <= 300
    assert gpu.BUDGET[True] + 25 <= 120                  # the dry run: under 2 minutes


def test_without_a_gpu_the_kernels_run_in_their_cpu_emulation(tmp_path):
    """The dry run's path where no GPU (nor the stand-in) is there: np-gpu on NumPy, the
    kernels through the g++ emulation, checked against the generic code."""
    from resnet_np.kernels import host
    if runs.on_gpu("np-gpu") or host.host_compiler() is None:
        pytest.skip("a GPU (or the stand-in) is there, or no C++ compiler for the emulation")
    specs = [runs.LayerSpec("maxpool", (4, 9, 9), kernel=(3, 3), stride=(2, 2), padding=(1, 1)),
             runs.LayerSpec("bn", (4, 5, 5), channels_last=True), gpu.LOSS]
    job = dict(backend="np-gpu", batch=2, warmup=0, reps=1, out=str(tmp_path / "rows.json"),
               layers=[dict(name=s.kind, uses=1, spec=s.to_json()) for s in specs])
    from resnet_np import dispatch
    launches = []
    original = host.HostLauncher.launch
    host.HostLauncher.launch = lambda self, kernel, *a, **k: (launches.append(kernel),
                                                              original(self, kernel, *a, **k))[1]
    try:
        runs.check_job(job)
    finally:
        host.HostLauncher.launch = original
    assert dispatch.policy["host"] is None                  # the job undid its settings
    rows = json.loads(Path(job["out"]).read_text())["rows"]
    assert [(r["layer"], r["pass_"]) for r in rows] == [
        (s.kind, p) for s in specs for p in ("forward", "backward")]
    assert all(r["rel_error"] <= report.CHECK_TOLERANCE for r in rows), rows
    assert {"maxpool_forward", "bn_forward_sums", "softmax_xent_rows"} <= set(launches)


def test_gpu_peak_memory_is_of_the_second_run(tmp_path, monkeypatch):
    """On a GPU the first run compiles CuPy's kernels and tunes cuDNN's: the peak memory is
    taken over the second, on both sides, and both count as warm-ups."""
    calls, peaks = [], []

    def steps(key, model, batch, size, precision):
        return {mode: (lambda mode=mode: calls.append(mode)) for mode in ("inference", "train")}

    def peak(key, step):
        peaks.append(len(calls))
        step()
        return 1.0
    pool = type("pool", (), {"free_all_blocks": lambda self: None})()
    monkeypatch.setattr(runs.backend, "require_gpu", lambda: type(
        "cp", (), {"get_default_memory_pool": staticmethod(lambda: pool)}))
    for name, value in (("on_gpu", lambda key: True), ("np_steps", steps),
                        ("torch_steps", steps), ("gpu_peak_mb", peak),
                        ("timer_for", lambda key: None), ("set_tf32", lambda key, on: None)):
        monkeypatch.setattr(runs, name, value)
    job = dict(backend="np-cpu", warmup=2, reps=3, out=str(tmp_path / "rows.json"),
               runs=[dict(model="m", batch=2, image_size=8, mode="train")])
    runs.models_job(job)
    [row] = json.loads(Path(job["out"]).read_text())["rows"]
    assert peaks == [1] and len(calls) == 2 + 3          # 2 warm-ups, the second measured
    assert row["peak_mb"] == 1.0 and row["reps"] == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_the_scripts_timeout_ends_the_children_too(tmp_path):
    """A SIGTERM (what the script's timeout sends) ends the check with its child processes,
    which run in sessions of their own: nothing is left running on the GPU."""
    marker = f"gpu-check-test-{os.getpid()}-{time.monotonic_ns()}"
    env = dict(os.environ, GPU_CHECK_TEST_MARKER=marker, RESNET_NP_CUPY_STANDIN="0",
               PYTHONPATH=str(ROOT))
    check = subprocess.Popen([sys.executable, "-m", "resnet_np.bench.gpu", str(tmp_path / "o"),
                              "--dry-run", "--parts", "models"], env=env,
                             stderr=subprocess.PIPE, text=True)
    for line in check.stderr:                       # a child has started
        if line.startswith("models "):
            break
    time.sleep(1)

    def marked():
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if marker.encode() in environ.read_bytes() and \
                        Path(environ.parent, "stat").read_text().split(") ")[1][0] != "Z":
                    found.append(environ.parent.name)
            except OSError:
                pass
        return found
    assert len(marked()) >= 2                       # the check and its child
    check.terminate()
    assert check.wait(timeout=10) == 143              # at once, not when the child is done
    deadline = time.monotonic() + 10
    while marked() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marked() == []
