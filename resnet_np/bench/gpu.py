"""The GPU check: the GPU tests, the per-layer and the model benchmarks, in one command.

    benchmarks/gpu_check.sh OUT            # on a machine with a CUDA GPU (an H200: < 8 min)
    benchmarks/gpu_check.sh OUT --dry-run  # the same steps on NumPy and torch-CPU, tiny shapes

Parts, each in processes of its own with a time limit, so one that fails or
overruns loses only its own results (each child rewrites its results file
after every measurement, so even a killed child keeps what it finished):

    pytest   ``python -m pytest -m gpu -q`` (the dry run: tests/test_kernels.py only)
    layers   every ResNet-50 layer shape at batch 32, forward and backward, on three
             backends: CuPy's generic code (kernels off), our CUDA kernels, and
             PyTorch with cuDNN; plus the softmax cross-entropy of the head (the dry
             run's "kernels" run the CPU emulation of resnet_np.kernels.host)
    models   ResNet-50 and ResNet-101 at batch 64 and 128, inference and train step, in
             float32 (TF32 off), TF32, and mixed precision (float16 compute), resnet-np
             against torchvision; with each run's peak GPU memory: CuPy's memory-pool
             high-water mark against torch.cuda.max_memory_allocated()

Then :mod:`.gpu_report` writes report.md, layers.csv, models.csv and plots into OUT.

Method: the layer and model steps are those of :mod:`.runs` (float32 train
step = forward, cross-entropy, backward, no optimizer step). A mixed-precision
train step includes the optimizer step on both sides (SGD, momentum 0.9), as
the loss scaler's skip-or-step is part of it; torch runs it with autocast
float16 and channels_last memory, its fastest AMP setting. cuDNN's autotuner
is on (cudnn.benchmark), as anyone timing PyTorch would set it. The kernels
reach the layers by pointing resnet_np.functional's names at the dispatchers
of :mod:`resnet_np.kernels` inside the benchmark's child processes only.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .. import backend
from ..training.atomic import atomic_write_text

LAYER_BACKENDS = ("generic", "kernels", "torch")
PRECISIONS = ("float32", "tf32", "amp")
FRAMEWORKS = ("resnet-np", "torch")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- #
# Settings of a full run and of a dry run
# --------------------------------------------------------------------------- #
def settings(dry_run):
    """What each part runs: full size on a GPU, or tiny on the CPU."""
    if dry_run:
        return dict(layer_model="resnet18", layer_batch=2, layer_image=32, layer_limit=3,
                    models=["resnet18"], batches=[2], image_size=32, warmup=1, reps=2,
                    pytest_args=["tests/test_kernels.py", "-m", "gpu"])
    return dict(layer_model="resnet50", layer_batch=32, layer_image=224, layer_limit=None,
                models=["resnet50", "resnet101"], batches=[64, 128], image_size=224, warmup=1,
                reps=3, pytest_args=["-m", "gpu"])


# --------------------------------------------------------------------------- #
# Shared by every child
# --------------------------------------------------------------------------- #
def _write_json(path, data):
    atomic_write_text(path, json.dumps(data, indent=1))


def _array_module(dry_run):
    return np if dry_run else backend.require_gpu()


def wire_kernels():
    """Point resnet_np.functional's layer functions at resnet_np.kernels' dispatchers for the
    rest of this (child) process, so that layers and models use the kernels while enabled."""
    from .. import kernels as K
    K.wired_into_functional().__enter__()


def _torch(precision, dry_run):
    """torch with TF32 on or off for both GEMMs and convolutions, cuDNN's autotuner on."""
    import torch
    tf32 = precision == "tf32"
    b = torch.backends
    if hasattr(getattr(b.cudnn, "conv", None), "fp32_precision"):     # torch >= 2.9
        b.cuda.matmul.fp32_precision = "tf32" if tf32 else "ieee"
        b.cudnn.conv.fp32_precision = "tf32" if tf32 else "ieee"
    else:
        b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = tf32
    b.cudnn.benchmark = not dry_run
    return torch


def _sync(framework, dry_run):
    if dry_run:
        return lambda: None
    if framework == "torch":
        import torch
        return torch.cuda.synchronize
    cp = backend.require_gpu()
    return lambda: cp.cuda.Device().synchronize()


class PoolPeak:
    """The high-water mark of CuPy's default memory pool (bytes in use, not cached).

    CuPy keeps no peak of its own: between :meth:`start` and :meth:`stop` an
    allocator that calls the pool and notes ``used_bytes()`` after every
    allocation sees each peak, since usage only rises at an allocation. Outside
    that window the pool allocates directly, so timed runs pay nothing.
    """

    def __init__(self, cp):
        self._cuda = cp.cuda
        self.pool = cp.get_default_memory_pool()
        self.peak = 0

    def malloc(self, size):
        memory = self.pool.malloc(size)
        self.peak = max(self.peak, self.pool.used_bytes())
        return memory

    def start(self):
        self.peak = self.pool.used_bytes()
        self._cuda.set_allocator(self.malloc)

    def stop(self):
        """-> the peak in bytes since :meth:`start`."""
        self._cuda.set_allocator(self.pool.malloc)
        return self.peak


# --------------------------------------------------------------------------- #
# Child: the layers on one backend
# --------------------------------------------------------------------------- #
def _loss_layer(xp_or_device, batch, framework):
    """Softmax cross-entropy over 1000 classes -> (forward, fresh cache, backward(cache))."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((batch, 1000)).astype(np.float32)
    labels = rng.integers(0, 1000, batch)
    if framework == "torch":
        import torch
        x = torch.tensor(logits, device=xp_or_device, requires_grad=True)
        y = torch.tensor(labels, device=xp_or_device)
        forward = lambda: torch.nn.functional.cross_entropy(x, y)
        return forward, forward, (lambda out: torch.autograd.grad(out, [x]))
    from .. import functional as F
    x, y = xp_or_device.asarray(logits), xp_or_device.asarray(labels)
    forward = lambda: F.softmax_cross_entropy_forward(x, y)
    backward = lambda cache: F.softmax_cross_entropy_backward(1.0, cache)
    return forward, (lambda: forward()[1]), backward


def layers_child(job):
    """Time every layer of ``job["specs"]`` (and the loss) on one backend; the results file
    is rewritten after each layer."""
    from . import runs
    from .shapes import LayerSpec
    from .timing import measure
    dry, key, out = job["dry_run"], job["backend"], Path(job["out"])
    deadline = time.monotonic() + job["seconds"]
    framework = "torch" if key == "torch" else "resnet-np"
    if framework == "torch":
        _torch("float32", dry)
        device = "cpu" if dry else "cuda"
    else:
        from .. import kernels as K
        from ..kernels import host
        xp = _array_module(dry)
        wire_kernels()
        K.use_kernels(key == "kernels")
        if dry and key == "kernels" and host.host_compiler():   # the kernels, emulated
            K.emulated_on_host(host.HostLauncher()).__enter__()
    sync = _sync(framework, dry)
    rows = []
    for spec in [LayerSpec.from_json(s) for s in job["specs"]] + ["loss"]:
        name = "softmax cross-entropy" if spec == "loss" else spec.describe()
        kind = "loss" if spec == "loss" else spec.kind
        row = dict(backend=key, kind=kind, shape=name, batch=job["batch"])
        if time.monotonic() > deadline:
            rows.append(dict(row, error="not run: the part's time ran out"))
            continue
        try:
            if spec == "loss":
                fwd, fresh, bwd = _loss_layer(device if framework == "torch" else xp,
                                              job["batch"], framework)
            elif framework == "torch":
                fwd, fresh, bwd = runs._torch_layer(spec, job["batch"], device)
            else:
                fwd, fresh, bwd = runs._np_layer(spec, job["batch"], xp)
            row["forward_ms"] = 1e3 * measure(fwd, warmup=job["warmup"], reps=job["reps"],
                                              sync=sync).median
            row["backward_ms"] = 1e3 * measure(bwd, setup=fresh, warmup=job["warmup"],
                                               reps=job["reps"], sync=sync).median
        except Exception as err:                      # one layer's failure is one row's
            row["error"] = f"{type(err).__name__}: {err}"[:300]
        rows.append(row)
        _write_json(out, {"rows": rows})
    _write_json(out, {"rows": rows, "done": True})


# --------------------------------------------------------------------------- #
# Child: the models in one framework and one precision
# --------------------------------------------------------------------------- #
def _ours_steps(name, batch, precision, dry, image_size):
    """resnet-np's (inference, train step) for one model and batch."""
    from .. import amp
    from .. import kernels as K
    from ..models import build_model
    from ..nn import CrossEntropyLoss, no_grad
    from ..optim import SGD
    xp = _array_module(dry)
    model = build_model(name)
    if not dry:
        model.to("gpu")
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((batch, 3, image_size, image_size), dtype=np.float32))
    labels = xp.asarray(rng.integers(0, 1000, batch))
    criterion = CrossEntropyLoss()
    K.set_tf32(precision == "tf32" and not dry)
    if precision == "amp":
        mp = amp.MixedPrecision(model, "float16")
        optimizer, scaler = SGD(mp.master_parameters(), lr=1e-3, momentum=0.9), amp.GradScaler()
        x16 = mp.cast_input(x)

        def inference():
            model.eval()
            with no_grad():
                model(x16)

        def train():
            model.train()
            mp.train_step(x, labels, criterion, optimizer, scaler)
        return inference, train

    def inference():
        model.eval()
        with no_grad():
            model(x)

    def train():
        model.train()
        model.zero_grad()
        criterion(model(x), labels)
        model.backward(criterion.backward(), input_grad=False)
    return inference, train


def _torch_steps(name, batch, precision, dry, image_size):
    """torchvision's (inference, train step) for one model and batch."""
    from .runs import _torchvision
    torch = _torch(precision, dry)
    device = "cpu" if dry else "cuda"
    torch.manual_seed(0)
    model = getattr(_torchvision().models, name)().to(device)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    if precision == "amp":
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
        dtype = torch.bfloat16 if dry else torch.float16        # CPU autocast: bfloat16
        autocast = lambda: torch.autocast(device, dtype=dtype)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        scaler = torch.amp.GradScaler(device, enabled=not dry)

        def inference():
            model.eval()
            with torch.no_grad(), autocast():
                model(x)

        def train():
            model.train()
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(model(x), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return inference, train

    def inference():
        model.eval()
        with torch.no_grad():
            model(x)

    def train():
        model.train()
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), labels).backward()
    return inference, train


def _peak_meter(framework, dry):
    """(start(), stop() -> peak MB) for this framework's GPU memory; (None, None) on the dry run."""
    if dry:
        return None, None
    if framework == "torch":
        import torch
        return (torch.cuda.reset_peak_memory_stats,
                lambda: torch.cuda.max_memory_allocated() / 2 ** 20)
    meter = PoolPeak(backend.require_gpu())
    return meter.start, lambda: meter.stop() / 2 ** 20


def models_child(job):
    """Time inference and a train step of each model and batch, in one framework and
    precision; the results file is rewritten after each run."""
    from .timing import measure
    dry, framework, precision = job["dry_run"], job["framework"], job["precision"]
    if framework == "resnet-np":
        wire_kernels()
    deadline = time.monotonic() + job["seconds"]
    sync = _sync(framework, dry)
    start_peak, stop_peak = _peak_meter(framework, dry)
    make = _torch_steps if framework == "torch" else _ours_steps
    rows = []
    for name in job["models"]:
        for batch in job["batches"]:
            labels = dict(framework=framework, precision=precision, model=name, batch=batch)
            if time.monotonic() > deadline:
                rows += [dict(labels, mode=m, error="not run: the part's time ran out")
                         for m in ("inference", "train")]
                continue
            try:
                steps = make(name, batch, precision, dry, job["image_size"])
            except Exception as err:
                rows += [dict(labels, mode=m, error=f"{type(err).__name__}: {err}"[:300])
                         for m in ("inference", "train")]
                continue
            for mode, step in zip(("inference", "train"), steps):
                row = dict(labels, mode=mode)
                try:
                    if start_peak is not None:
                        sync()
                        start_peak()
                    step()                           # the first warm-up, with its peak memory
                    sync()
                    row["peak_mb"] = stop_peak() if stop_peak is not None else None
                    timing = measure(step, warmup=max(job["warmup"] - 1, 0), reps=job["reps"],
                                     sync=sync)
                    row["median_ms"] = 1e3 * timing.median
                    row["images_per_s"] = batch / timing.median
                except Exception as err:
                    row["error"] = f"{type(err).__name__}: {err}"[:300]
                rows.append(row)
                _write_json(job["out"], {"rows": rows})
            del steps
            _free_memory(framework, dry)
    _write_json(job["out"], {"rows": rows, "done": True})


def _free_memory(framework, dry):
    import gc
    gc.collect()
    if dry:
        return
    if framework == "torch":
        import torch
        torch.cuda.empty_cache()
    else:
        backend.require_gpu().get_default_memory_pool().free_all_blocks()


# --------------------------------------------------------------------------- #
# The parent: run each part within its time, then write the report
# --------------------------------------------------------------------------- #
_CHILD = ("import json, sys\n"
          "from resnet_np.bench import gpu\n"
          "getattr(gpu, sys.argv[1])(json.loads(sys.argv[2]))\n")


def _environment():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    env["CUPY_TF32"] = "0"
    return env


def run_child(function, job, timeout, log):
    """``function(job)`` in a fresh process, killed after ``timeout`` s -> None, or why it failed.

    Whatever the child wrote into job["out"] before failing stays there.
    """
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, function, json.dumps(job)],
                              env=_environment(), timeout=max(timeout, 1), cwd=PACKAGE_ROOT)
    except subprocess.TimeoutExpired:
        log(f"  killed after {timeout:.0f} s")
        return f"killed after its {timeout:.0f} s"
    log(f"  ({time.monotonic() - start:.1f} s)")
    return None if proc.returncode == 0 else f"exit status {proc.returncode}"


def run_pytest(out, config, timeout, log):
    """The GPU tests -> writes parts/pytest.xml (JUnit) and pytest.txt; -> None or why it failed."""
    parts = out / "parts"
    command = [sys.executable, "-m", "pytest", *config["pytest_args"], "-q", "-p",
               "no:cacheprovider", f"--junitxml={parts / 'pytest.xml'}"]
    log("pytest: " + " ".join(command[1:]))
    try:
        proc = subprocess.run(command, env=_environment(), cwd=PACKAGE_ROOT, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        text, problem = proc.stdout, None
        if proc.returncode not in (0, 5):          # 5: nothing collected
            problem = f"pytest exit status {proc.returncode}"
    except subprocess.TimeoutExpired as err:
        text = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        problem = f"pytest killed after {timeout:.0f} s"
    atomic_write_text(out / "pytest.txt", text)
    log(text.strip().splitlines()[-1] if text.strip() else "(no output)")
    return problem


def _layer_specs(config):
    from ..models import build_model
    from .shapes import layer_shapes
    groups = layer_shapes(build_model(config["layer_model"]), config["layer_image"])
    groups = groups[:config["layer_limit"]] if config["layer_limit"] else groups
    return [g.spec.to_json() for g in groups], {g.spec.describe(): g.uses for g in groups}


def run_layers(out, config, seconds, log):
    specs, uses = _layer_specs(config)
    atomic_write_text(out / "parts" / "layer_uses.json", json.dumps(uses))
    problems = {}
    for i, key in enumerate(LAYER_BACKENDS):
        share = seconds / (len(LAYER_BACKENDS) - i)
        started = time.monotonic()
        log(f"layers on {key} ({len(specs)} shapes + the loss, {share:.0f} s at most)")
        job = dict(backend=key, specs=specs, batch=config["layer_batch"], warmup=1,
                   reps=config["reps"] + 2, dry_run=config["dry_run"], seconds=share * 0.85,
                   out=str(out / "parts" / f"layers-{key}.json"))
        problem = run_child("layers_child", job, share, log)
        if problem:
            problems[key] = problem
        seconds -= time.monotonic() - started
    return problems


def run_models(out, config, seconds, log):
    problems = {}
    combos = [(f, p) for p in PRECISIONS for f in FRAMEWORKS]
    for i, (framework, precision) in enumerate(combos):
        share = seconds / (len(combos) - i)
        started = time.monotonic()
        log(f"models: {framework} {precision} ({share:.0f} s at most)")
        job = dict(framework=framework, precision=precision, models=config["models"],
                   batches=config["batches"], image_size=config["image_size"],
                   warmup=config["warmup"], reps=config["reps"], dry_run=config["dry_run"],
                   seconds=share * 0.8,
                   out=str(out / "parts" / f"models-{framework}-{precision}.json"))
        problem = run_child("models_child", job, share, log)
        if problem:
            problems[f"{framework} {precision}"] = problem
        seconds -= time.monotonic() - started
    return problems


PARTS = ("pytest", "layers", "models")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh",
                                description="Run the GPU tests and benchmarks; write report.md, "
                                            "CSVs and plots into OUT.")
    p.add_argument("out", help="folder for the report (created if missing)")
    p.add_argument("--dry-run", action="store_true",
                   help="NumPy and torch on the CPU, tiny shapes: checks the steps and the report")
    p.add_argument("--parts", default=",".join(PARTS),
                   help="comma-separated, some of %(default)s")
    p.add_argument("--budget", type=float, default=440,
                   help="seconds for all parts together (default: %(default)s)")
    args = p.parse_args(argv)
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = [s for s in args.parts if s not in PARTS]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    if args.budget <= 0:
        p.error("--budget must be > 0")
    return args


def main(argv=None):
    from .gpu_report import write_report
    args = parse_args(argv)
    log = lambda message: print(message, file=sys.stderr, flush=True)
    if not args.dry_run and not backend.gpu_available():
        log("no usable GPU (CuPy missing or no CUDA device): use --dry-run to check the steps")
        return 2
    out = Path(args.out)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    config = dict(settings(args.dry_run), dry_run=args.dry_run)
    started = time.monotonic()
    # shares of the budget: tests 35 %, layers 20 %, models the rest
    shares = {"pytest": 0.35, "layers": 0.2, "models": 0.45}
    problems, written = {}, []
    for part in PARTS:
        if part not in args.parts:
            continue
        left = args.budget - (time.monotonic() - started)
        later = sum(shares[p] for p in PARTS[PARTS.index(part):] if p in args.parts)
        seconds = max(left * shares[part] / later, 5)
        try:
            if part == "pytest":
                problem = run_pytest(out, config, seconds, log)
                problems.update({"pytest": problem} if problem else {})
            elif part == "layers":
                problems.update({f"layers {k}": v for k, v in run_layers(out, config, seconds,
                                                                          log).items()})
            else:
                problems.update({f"models {k}": v for k, v in run_models(out, config, seconds,
                                                                          log).items()})
        except Exception as err:                    # the report still gets written
            problems[part] = f"{type(err).__name__}: {err}"
            log(f"{part} failed: {problems[part]}")
        # after every part, so that even a kill from outside leaves a report of what finished
        written = write_report(out, config, problems, time.monotonic() - started)
    for path in written:
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
