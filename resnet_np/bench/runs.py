"""The runs: every layer shape and every model, on each backend, each backend in its own process.

A backend is one of

    np-cpu      resnet-np on NumPy            torch-cpu   PyTorch on the CPU
    np-gpu      resnet-np on CuPy             torch-cuda  PyTorch on CUDA

Each backend's layers run in one fresh Python process, and so does each model
run. The reasons: NumPy's OpenBLAS and torch's OpenMP keep a thread pool each,
whose threads busy-wait for a moment after every call, so in one process the
two pools would compete for the cores; and a fresh process starts every model
run from the same heap, with an RSS high-water mark of its own, which the
memory measurement needs.
"""
import gc
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

from .. import backend
from .. import functional as F
from ..models import build_model
from ..nn import CrossEntropyLoss, no_grad
from .shapes import LayerSpec, is_channels_last, layer_flops
from .timing import Timing, measure, no_sync, set_threads, thread_report

BACKENDS = {"np-cpu": "resnet-np CPU", "np-native": "resnet-np CPU, native BLAS",
            "np-gpu": "resnet-np GPU", "torch-cpu": "PyTorch CPU", "torch-cuda": "PyTorch CUDA"}
GPU_BACKENDS = ("np-gpu", "torch-cuda")
# np-native: resnet-np on NumPy in a process whose environment lacks these two variables,
# so that OpenBLAS picks the kernels of the processor it runs on (its own default).
NATIVE_BLAS_UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# A CIFAR-size run: ResNet-18 with the 3x3 stride-1 stem and no max-pool, 10 classes.
CIFAR_MODEL = "resnet18_cifar"
PASSES = ("forward", "backward")
MB = 2 ** 20


# --------------------------------------------------------------------------- #
# Backends
# --------------------------------------------------------------------------- #
def _torch():
    """torch, set for float32 comparisons (TF32 off), or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def _torchvision():
    """torchvision, or None.

    Where torchvision was installed with --no-deps beside a CPU build of torch,
    its compiled operators (nms, roi_align...) fail to load, and importing it
    would crash while registering their meta and autograd kernels. ResNets need
    none of them; two empty modules registered under those names skip that step.
    (The same trick as the tests' reference.py, which this package must not import.)
    """
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(name, types.ModuleType(name))
    try:
        import torchvision
    except Exception:
        return None
    return torchvision


def unavailable_backends(native_blas=False):
    """{backend: why not} for every backend that cannot run here."""
    torch = _torch()
    missing = {}
    if not native_blas:
        missing["np-native"] = "not asked for (--native-blas)"
    if not backend.gpu_available():
        missing["np-gpu"] = "no CuPy or no CUDA device"
    if torch is None:
        missing["torch-cpu"] = missing["torch-cuda"] = "torch is not installed"
    elif not torch.cuda.is_available():
        missing["torch-cuda"] = "torch sees no CUDA device"
    return missing


def sync_for(key):
    """The function that waits until ``key``'s device has finished its queued work."""
    if key == "np-gpu":
        cp = backend.require_gpu()
        return lambda: cp.cuda.Device().synchronize()
    if key == "torch-cuda":
        return _torch().cuda.synchronize
    return no_sync


def _array_module(key):
    return backend.require_gpu() if key == "np-gpu" else np


def _random(xp, rng, shape, channels_last=False):
    """Standard-normal float32 of ``shape``; for (N, C, H, W), channels-last memory if asked."""
    if channels_last:
        N, C, H, W = shape
        return xp.asarray(rng.standard_normal((N, H, W, C), dtype=np.float32)).transpose(0, 3, 1, 2)
    return xp.asarray(rng.standard_normal(shape, dtype=np.float32))


# --------------------------------------------------------------------------- #
# One layer: (forward, fresh, backward) closures for measure()
# --------------------------------------------------------------------------- #
def _np_layer(spec, batch, xp):
    """resnet-np's functional calls for one layer -> (forward, fresh cache, backward(cache))."""
    rng = np.random.default_rng(0)
    x = _random(xp, rng, (batch,) + spec.in_shape, spec.channels_last)
    C = spec.in_shape[0]
    if spec.kind == "conv":
        w = _random(xp, rng, (spec.out_features, C // spec.groups) + spec.kernel) * 0.05
        b = _random(xp, rng, (spec.out_features,)) if spec.bias else None
        forward = lambda: F.conv2d_forward(x, w, b, spec.stride, spec.padding, spec.dilation,
                                           spec.groups)
        backward = lambda dout, cache: F.conv2d_backward(dout, cache, spec.input_grad)
    elif spec.kind == "bn":
        gamma, beta = xp.ones(C, np.float32), xp.zeros(C, np.float32)
        mean, var = xp.zeros(C, np.float32), xp.ones(C, np.float32)
        forward = lambda: F.batch_norm2d_forward(x, gamma, beta, mean, var, True)
        backward = F.batch_norm2d_backward
    elif spec.kind == "maxpool":
        forward = lambda: F.max_pool2d_forward(x, spec.kernel, spec.stride, spec.padding)
        backward = F.max_pool2d_backward
    else:
        w = _random(xp, rng, (spec.out_features, C)) * 0.05
        b = _random(xp, rng, (spec.out_features,)) if spec.bias else None
        forward = lambda: F.linear_forward(x, w, b)
        backward = F.linear_backward
    out, _ = forward()
    dout = _random(xp, rng, out.shape, is_channels_last(out))  # the layout backward is handed
    return forward, (lambda: forward()[1]), (lambda cache: backward(dout, cache))


def _torch_layer(spec, batch, device):
    """The same layer from torch.nn -> (forward, fresh output, backward(output))."""
    torch = _torch()
    torch.manual_seed(0)
    C = spec.in_shape[0]
    if spec.kind == "conv":
        layer = torch.nn.Conv2d(C, spec.out_features, spec.kernel, spec.stride, spec.padding,
                                spec.dilation, spec.groups, bias=spec.bias)
    elif spec.kind == "bn":
        layer = torch.nn.BatchNorm2d(C)
    elif spec.kind == "maxpool":
        layer = torch.nn.MaxPool2d(spec.kernel, spec.stride, spec.padding)
    else:
        layer = torch.nn.Linear(C, spec.out_features, bias=spec.bias)
    layer = layer.to(device).train()
    x = torch.randn((batch,) + spec.in_shape, device=device, requires_grad=spec.input_grad)
    inputs = ([x] if spec.input_grad else []) + list(layer.parameters())
    dout = torch.randn_like(layer(x).detach())
    forward = lambda: layer(x)  # autograd on: a training forward that keeps what backward needs
    return forward, forward, (lambda out: torch.autograd.grad(out, inputs, dout))


def bench_layer(spec, batch, key, warmup, reps):
    """{"forward": Timing, "backward": Timing} of one layer shape on one backend.

    Backward is timed alone: each timed backward gets a fresh, untimed forward.
    """
    if key.startswith("np"):
        forward, fresh, backward = _np_layer(spec, batch, _array_module(key))
    else:
        forward, fresh, backward = _torch_layer(spec, batch,
                                                "cuda" if key == "torch-cuda" else "cpu")
    sync = sync_for(key)
    return {"forward": measure(forward, warmup=warmup, reps=reps, sync=sync),
            "backward": measure(backward, setup=fresh, warmup=warmup, reps=reps, sync=sync)}


def gemm_ceiling(key, n, warmup, reps):
    """The float32 GEMM rate of ``key``'s array module on n x n matrices, in GFLOP/s."""
    xp = _array_module(key)
    rng = np.random.default_rng(0)
    a, b = _random(xp, rng, (n, n)), _random(xp, rng, (n, n))
    timing = measure(lambda: a @ b, warmup=warmup, reps=reps, sync=sync_for(key))
    flops = 2 * n ** 3
    return {"backend": key, "n": n, "best_gflop_per_s": flops / timing.min / 1e9,
            "median_gflop_per_s": flops / timing.median / 1e9}


def _set_threads_for(job):
    """set_threads for a child's job, with torch loaded first where the job uses it."""
    if job["backend"].startswith("torch"):
        _torch()
    elif job["backend"].startswith("np"):
        backend.retain_freed_memory()       # as the train command does
    return set_threads(job["threads"])


def layer_job(job):
    """In a child process: every layer shape of ``job`` on one backend (and, for resnet-np,
    the GEMM ceiling first) -> {"ceiling", "times", "threads"}."""
    restore = _set_threads_for(job)
    try:
        key = job["backend"]
        ceiling = None
        if key.startswith("np") and job["gemm_size"]:
            ceiling = gemm_ceiling(key, job["gemm_size"], 1, max(job["reps"], 3))
        times = []
        for i, data in enumerate(job["specs"], 1):
            spec = LayerSpec.from_json(data)
            print(f"  {BACKENDS[key]} layer {i}/{len(job['specs'])}: {spec.describe()}",
                  file=sys.stderr, flush=True)
            timings = bench_layer(spec, job["batch"], key, job["warmup"], job["reps"])
            times.append({p: list(timings[p].times) for p in PASSES})
        return {"ceiling": ceiling, "times": times, "threads": thread_report()}
    finally:
        restore()


# --------------------------------------------------------------------------- #
# One model: an inference or train step, and the step's peak memory
# --------------------------------------------------------------------------- #
def build_np_model(name):
    """A resnet-np model by bench name (a torchvision name, or :data:`CIFAR_MODEL`)."""
    if name == CIFAR_MODEL:
        return build_model("resnet18", num_classes=10, cifar_stem=True, dtype="float32")
    return build_model(name, dtype="float32")


def build_torch_model(name):
    """The torchvision model of the same bench name; for :data:`CIFAR_MODEL` resnet18 with
    the same stem: a 3x3 stride-1 first convolution and no max-pool."""
    torch, torchvision = _torch(), _torchvision()
    if torchvision is None:
        raise RuntimeError("torchvision is not installed (pip install --no-deps torchvision)")
    if name != CIFAR_MODEL:
        return getattr(torchvision.models, name)()
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    torch.nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = torch.nn.Identity()
    return model


def _np_model_step(job):
    """resnet-np's inference or train step for ``job``, on the CPU or the GPU."""
    xp = _array_module(job["backend"])
    model = build_np_model(job["model"])
    if job["backend"] == "np-gpu":
        model.to("gpu")
    rng = np.random.default_rng(0)
    size = job["image_size"]
    x = _random(xp, rng, (job["batch"], 3, size, size))
    labels = xp.asarray(rng.integers(0, model.num_classes, job["batch"]))
    criterion = CrossEntropyLoss()
    model.train(job["mode"] == "train")

    def inference():
        with no_grad():
            model(x)

    def train_step():
        model.zero_grad()
        criterion(model(x), labels)
        model.backward(criterion.backward(), input_grad=False)   # as torch: x needs no grad

    return train_step if job["mode"] == "train" else inference


def _torch_model_step(job):
    """torchvision's model, the same inference or train step for ``job``."""
    torch = _torch()
    device = "cuda" if job["backend"] == "torch-cuda" else "cpu"
    torch.manual_seed(0)
    model = build_torch_model(job["model"]).to(device)
    size = job["image_size"]
    x = torch.randn(job["batch"], 3, size, size, device=device)
    labels = torch.randint(0, model.fc.out_features, (job["batch"],), device=device)
    model.train(job["mode"] == "train")

    def inference():
        with torch.no_grad():
            model(x)

    def train_step():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), labels).backward()

    return train_step if job["mode"] == "train" else inference


def _rss_bytes():
    """This process's resident memory now (Linux /proc); None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _max_rss_bytes():
    """This process's RSS high-water mark (ru_maxrss counts KiB on Linux, bytes on macOS)."""
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def step_memory(step, trace):
    """Run ``step`` once -> its peak memory in MB: RSS, and tracemalloc's if ``trace``.

    RSS: the high-water mark after the step minus the RSS just before it. When
    the step never rose above the process's earlier high-water mark (importing
    and building took more), its peak cannot be told and is None.
    """
    import tracemalloc
    gc.collect()
    high_before = _max_rss_bytes()
    baseline = _rss_bytes()
    if baseline is None:
        baseline = high_before  # no /proc: the difference is then a lower bound
    if trace:
        tracemalloc.start()
    step()
    traced = None
    if trace:
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    high_after = _max_rss_bytes()
    rss = (high_after - baseline) / MB if high_after > high_before else None
    return {"peak_rss_mb": rss, "peak_tracemalloc_mb": None if traced is None else traced / MB}


def model_job(job):
    """In a child process: time one model's inference or train step -> {"times", memory, "threads"}.

    On the CPU the first train step measures the step's peak memory and counts
    as the first warm-up run.
    """
    restore = _set_threads_for(job)
    try:
        make_step = _np_model_step if job["backend"].startswith("np") else _torch_model_step
        step = make_step(job)
        result = {"peak_rss_mb": None, "peak_tracemalloc_mb": None}
        warmup = job["warmup"]
        if job["mode"] == "train" and job["backend"] not in GPU_BACKENDS:
            result.update(step_memory(step, trace=job["backend"] == "np-cpu"))
            warmup = max(warmup - 1, 0)
        timing = measure(step, warmup=warmup, reps=job["reps"], sync=sync_for(job["backend"]))
        result.update(times=list(timing.times), threads=thread_report())
        return result
    finally:
        restore()


# --------------------------------------------------------------------------- #
# Child processes, and the rows the parent makes of their results
# --------------------------------------------------------------------------- #
_CHILD = ("import json, sys\n"
          "from resnet_np.bench import runs\n"
          "result = getattr(runs, sys.argv[1])(json.loads(sys.argv[2]))\n"
          "print('RESULT ' + json.dumps(result))\n")


def child_environment(job):
    """The environment of a child process: this one's, with the package on PYTHONPATH,
    TF32 off, and for np-native without :data:`NATIVE_BLAS_UNSET`."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # so a checkout works uninstalled
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["CUPY_TF32"] = "0"  # read when CuPy is imported: float32 GEMMs stay float32
    if job.get("backend") == "np-native":
        for name in NATIVE_BLAS_UNSET:
            env.pop(name, None)
    return env


def run_in_child(function, job, timeout):
    """``function(job)`` (a name in this module) in a fresh Python process -> its result,
    or {"error": ...}. The child's messages go to this process's stderr as they come."""
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, function, json.dumps(job)],
                              env=child_environment(job), stdout=subprocess.PIPE, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"took longer than {timeout:.0f} s"}
    print(f"  ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": f"exit status {proc.returncode} (messages above)"}


def timing_row(timing, **labels):
    """A flat row (for the CSVs and tables) of a Timing and its labels; times in ms."""
    q1, q3 = timing.quartiles
    row = dict(labels, median_ms=timing.median * 1e3, min_ms=timing.min * 1e3,
               max_ms=timing.max * 1e3, q1_ms=q1 * 1e3, q3_ms=q3 * 1e3, reps=len(timing.times))
    if row.get("gflop") is not None:
        row["gflop_per_s"] = row["gflop"] / timing.median
    return row


def run_layer_benchmarks(groups, batch, backends, warmup, reps, threads, gemm_size, timeout,
                         log):
    """Every layer group on every backend -> (rows, GEMM ceilings); one row per
    (layer, pass, backend)."""
    rows, ceilings = [], []
    for key in backends:
        log(f"layers on {BACKENDS[key]} (a fresh process)")
        job = dict(backend=key, batch=batch, warmup=warmup, reps=reps, threads=threads,
                   gemm_size=gemm_size, specs=[g.spec.to_json() for g in groups])
        result = run_in_child("layer_job", job, timeout)
        if "error" in result:
            log(f"  failed: {result['error']}")
            continue
        if result["ceiling"]:
            ceilings.append(result["ceiling"])
        for group, times in zip(groups, result["times"]):
            for pass_ in PASSES:
                flops = layer_flops(group.spec, batch, pass_)
                rows.append(timing_row(Timing(tuple(times[pass_])), layer=group.name,
                                       uses=group.uses, kind=group.spec.kind,
                                       shape=group.spec.describe(), pass_=pass_, backend=key,
                                       batch=batch, gflop=None if flops is None else flops / 1e9,
                                       threads=result["threads"]))
    return rows, ceilings


def _model_row(labels, warmup, reps, threads, timeout, log):
    """One model run in a child process -> its row (with "error" when it failed)."""
    log(f"{labels['model']} {labels['mode']}, batch {labels['batch']}, "
        f"{BACKENDS[labels['backend']]} (a fresh process)")
    result = run_in_child("model_job", dict(labels, warmup=warmup, reps=reps, threads=threads),
                          timeout)
    if "error" in result:
        log(f"  failed: {result['error']}")
        return dict(labels, error=result["error"])
    row = timing_row(Timing(tuple(result["times"])), **labels)
    row.update(images_per_s=labels["batch"] / (row["median_ms"] / 1e3),
               peak_rss_mb=result["peak_rss_mb"],
               peak_tracemalloc_mb=result["peak_tracemalloc_mb"], threads=result["threads"])
    return row


def run_model_benchmarks(models, batch_sizes, gpu_batch_sizes, image_size, backends, warmup,
                         reps, threads, timeout, log, cifar_batch=0):
    """Inference and train step of every model at every batch size on every backend;
    one row per run. ``cifar_batch`` > 0 adds :data:`CIFAR_MODEL` at 32x32 on the CPU
    backends at that batch."""
    runs = [dict(model=name, batch=batch, image_size=image_size, mode=mode, backend=key)
            for name in models for mode in ("inference", "train") for key in backends
            for batch in (gpu_batch_sizes if key in GPU_BACKENDS else batch_sizes)]
    if cifar_batch:
        runs += [dict(model=CIFAR_MODEL, batch=cifar_batch, image_size=32, mode=mode,
                      backend=key)
                 for mode in ("inference", "train") for key in backends
                 if key not in GPU_BACKENDS]
    return [_model_row(labels, warmup, reps, threads, timeout, log) for labels in runs]
