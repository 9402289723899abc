"""The GPU check's logic on the CPU: its report from given or partial results, its
children on NumPy (the dry run), and its failure tolerance. The check itself runs on a
GPU with ``benchmarks/gpu_check.sh OUT``."""
import json

import pytest

from resnet_np.bench import gpu, gpu_report


def _layer(backend, shape, kind, fwd, bwd, **extra):
    return dict(backend=backend, kind=kind, shape=shape, batch=32, forward_ms=fwd,
                backward_ms=bwd, **extra)


def _model(framework, precision, mode, ms, peak, batch=64, model="resnet50"):
    return dict(framework=framework, precision=precision, model=model, batch=batch, mode=mode,
                median_ms=ms, images_per_s=batch / ms * 1e3, peak_mb=peak)


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0"
failures="1" skipped="2" tests="5" time="12.5"><testcase classname="tests.test_gpu" name="test_a"
time="1"/><testcase classname="tests.test_gpu" name="test_b" time="1"><failure message="x"/>
</testcase></testsuite></testsuites>"""


@pytest.fixture
def parts(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    layers = {"generic": [_layer("generic", "3x3/1 64->64 @56x56", "conv", 4.0, 8.0),
                          _layer("generic", "64 @56x56", "bn", 1.0, 2.0)],
              "kernels": [_layer("kernels", "3x3/1 64->64 @56x56", "conv", 2.0, 4.0),
                          _layer("kernels", "64 @56x56", "bn", 2.0, 1.0)],
              "torch": [_layer("torch", "3x3/1 64->64 @56x56", "conv", 1.0, 2.0),
                        _layer("torch", "64 @56x56", "bn", None, None, error="RuntimeError: x")]}
    for key, rows in layers.items():
        (folder / f"layers-{key}.json").write_text(json.dumps({"rows": rows}))
    (folder / "layer_uses.json").write_text(json.dumps({"3x3/1 64->64 @56x56": 3, "64 @56x56": 1}))
    models = [_model("resnet-np", "float32", "train", 120.0, 9000.0),
              _model("torch", "float32", "train", 100.0, 5000.0),
              _model("resnet-np", "tf32", "train", 90.0, 9000.0),
              _model("torch", "tf32", "train", 50.0, 5000.0),
              _model("resnet-np", "float32", "inference", 30.0, 2000.0),
              dict(framework="torch", precision="float32", model="resnet50", batch=64,
                   mode="inference", error="killed")]
    (folder / "models-all.json").write_text(json.dumps({"rows": models}))
    (folder / "models-broken.json").write_text("{not json")        # a child killed mid-write
    (folder / "pytest.xml").write_text(JUNIT)
    return tmp_path


def test_report_from_the_parts(parts):
    config = dict(gpu.settings(False), dry_run=False)
    written = gpu_report.write_report(parts, config, {"models torch amp": "killed after 60 s"}, 300)
    report = (parts / "report.md").read_text()
    assert "5 tests: 2 passed, 1 failed, 0 errors, 2 skipped" in report
    assert "`tests.test_gpu::test_b`" in report
    assert "- models torch amp: killed after 60 s" in report
    # targets: 120/100 = 1.2 (met), 90/50 = 1.8 (not met), memory 9000/5000 = 1.8, no pair -> "-"
    assert "| train step, float32 (TF32 off on both sides) | <= 1.5x | 1.20x | yes |" in report
    assert "| train step, TF32 | <= 1.5x | 1.80x | no |" in report
    assert "| peak memory of a float32 train step | <= 1.5x | 1.80x | no |" in report
    assert "| inference, float32 | <= 1.5x | - | - |" in report
    # kernel speed-ups weighted by uses: conv forward 12/6 = 2x (keep), bn forward 0.5x (drop)
    assert "| conv (im2col/col2im kernels) | forward | 1 | 12.00 | 6.00 | 2.00x | yes |" in report
    assert "| batch norm | forward | 1 | 1.00 | 2.00 | 0.50x | no |" in report
    assert "| batch norm | backward | 1 | 2.00 | 1.00 | 2.00x | yes |" in report
    assert "torch: RuntimeError: x" in report
    assert "PyTorch failed: killed" in report
    rows = (parts / "layers.csv").read_text().splitlines()
    assert rows[0].startswith("backend,kind,shape,uses") and len(rows) == 7
    assert len((parts / "models.csv").read_text().splitlines()) == 7
    assert {p.name for p in written} >= {"report.md", "layers.csv", "models.csv"}


def test_report_without_any_results(tmp_path):
    (tmp_path / "parts").mkdir()
    config = dict(gpu.settings(True), dry_run=True)
    gpu_report.write_report(tmp_path, config, {"pytest": "pytest killed after 9 s"}, 9)
    report = (tmp_path / "report.md").read_text()
    assert "DRY RUN" in report and "Not run, or no results" in report
    assert "No layer was timed on both" in report and "- pytest: pytest killed" in report


def test_layers_child_on_numpy_and_its_time_limit(tmp_path):
    spec = dict(kind="maxpool", in_shape=[4, 9, 9], kernel=[3, 3], stride=[2, 2], padding=[1, 1])
    out = tmp_path / "layers.json"
    job = dict(backend="kernels", specs=[spec], batch=2, warmup=0, reps=1, dry_run=True,
               seconds=60, out=str(out))
    gpu.layers_child(job)
    rows = json.loads(out.read_text())["rows"]
    assert [r["kind"] for r in rows] == ["maxpool", "loss"]
    assert all(r["forward_ms"] > 0 and r["backward_ms"] > 0 for r in rows)
    gpu.layers_child(dict(job, seconds=-1))
    result = json.loads(out.read_text())
    assert result["done"] and all("time ran out" in r["error"] for r in result["rows"])


def test_models_child_on_numpy(tmp_path):
    out = tmp_path / "models.json"
    gpu.models_child(dict(framework="resnet-np", precision="float32", models=["resnet18"],
                          batches=[2], image_size=32, warmup=1, reps=1, dry_run=True,
                          seconds=120, out=str(out)))
    rows = json.loads(out.read_text())["rows"]
    assert [r["mode"] for r in rows] == ["inference", "train"]
    assert all(r["median_ms"] > 0 and r["peak_mb"] is None for r in rows)


def test_one_failing_part_keeps_the_others(tmp_path, monkeypatch):
    def fake_run_child(function, job, timeout, log):
        if function == "models_child":
            raise RuntimeError("the GPU fell off")
        (tmp_path / "out" / "parts" / "layers-generic.json").write_text(json.dumps(
            {"rows": [_layer("generic", "64 @56x56", "bn", 1.0, 2.0)]}))
        return "killed after 3 s" if job["backend"] == "torch" else None
    monkeypatch.setattr(gpu, "run_child", fake_run_child)
    monkeypatch.setattr(gpu, "_layer_specs", lambda config: ([], {}))
    assert gpu.main([str(tmp_path / "out"), "--dry-run", "--parts", "layers,models"]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "- layers torch: killed after 3 s" in report
    assert "- models: RuntimeError: the GPU fell off" in report
    assert "| 64 @56x56 | 1 | forward | 1.000 |" in report


def test_run_child_kills_an_overrunning_child_and_keeps_its_results(tmp_path):
    out = tmp_path / "layers.json"
    spec = dict(kind="conv", in_shape=[64, 56, 56], out_features=64, kernel=[3, 3],
                stride=[1, 1], padding=[1, 1])
    job = dict(backend="generic", specs=[spec] * 50, batch=8, warmup=0, reps=1, dry_run=True,
               seconds=600, out=str(out))
    problem = gpu.run_child("layers_child", job, 4, log=lambda m: None)
    assert problem == "killed after its 4 s"
    if out.exists():                  # whatever it finished is there, whole
        assert "done" not in json.loads(out.read_text())


def test_pool_peak_notes_the_high_water_mark():
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
    meter = gpu.PoolPeak(cp)
    meter.start()
    assert allocators == [meter.malloc]
    meter.malloc(100)
    pool.used -= 100                  # a free
    meter.malloc(30)
    assert meter.stop() == 100 and allocators[-1] == pool.malloc
    meter.start()                     # from what is in use now: 30
    meter.malloc(10)
    assert meter.stop() == 40


def test_arguments():
    with pytest.raises(SystemExit):
        gpu.parse_args(["out", "--parts", "layers,everything"])
    assert gpu.parse_args(["out", "--parts", "models"]).parts == ["models"]
    assert gpu.parse_args(["out"]).budget == 440
    with pytest.raises(SystemExit):
        gpu.parse_args(["out", "--budget", "0"])
