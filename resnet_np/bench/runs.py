"""The runs, each job in a child process with a time limit: layers, models, the kernels' check.

Backends: :data:`BACKENDS`; np-gpu is resnet-np on CuPy with its CUDA kernels,
np-gpu-generic without (``kernels.use_kernels(False)``). Where no GPU is visible (the
GPU check's dry run) these run on NumPy, np-gpu through the kernels' CPU emulation, and
torch-cuda on the CPU. A fresh process per job: OpenBLAS's and torch's thread pools
would compete for the cores in one; each CPU model run gets the same heap and an RSS
high-water mark of its own; a job that fails or overruns loses only itself (a child
rewrites its rows file after every measurement). A row is a flat dict with those of
:data:`FIELDS` that apply, the same for the CPU and the GPU, the CSVs and the report.
"""
import contextlib
import gc
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

from .. import backend, dispatch
from .. import functional as F
from ..models import build_model
from ..nn import CrossEntropyLoss, no_grad
from ..training.atomic import atomic_write_text
from .shapes import LayerSpec, is_channels_last, layer_flops
from .timing import event_timer, measure, set_threads, thread_report

BACKENDS = {"np-cpu": "resnet-np CPU", "np-native": "resnet-np CPU, native BLAS",
            "np-gpu": "resnet-np GPU", "np-gpu-generic": "resnet-np GPU, generic CuPy",
            "torch-cpu": "PyTorch CPU", "torch-cuda": "PyTorch CUDA"}
GPU_BACKENDS = ("np-gpu", "np-gpu-generic", "torch-cuda")
# np-native: without these variables, so that OpenBLAS picks this processor's kernels
NATIVE_BLAS_UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# A CIFAR-size run: ResNet-18 with the 3x3 stride-1 stem and no max-pool, 10 classes.
CIFAR_MODEL = "resnet18_cifar"
PASSES = ("forward", "backward")
PRECISIONS = ("float32", "tf32", "amp")
FIELDS = ["part", "model", "layer", "uses", "kind", "shape", "pass_", "mode", "precision",
          "backend", "batch", "image_size", "gflop", "median_ms", "min_ms", "max_ms", "q1_ms",
          "q3_ms", "reps", "gflop_per_s", "images_per_s", "floor_ms", "peak_mb",
          "peak_tracemalloc_mb", "rel_error", "threads", "error"]
TIME_RAN_OUT = "not run: the time ran out"
MB = 2 ** 20


# --------------------------------------------------------------------------- #
# Backends: where each runs, its clock, its memory meter
# --------------------------------------------------------------------------- #
def _torch():
    """torch, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torchvision():
    """torchvision, or None. Installed with --no-deps beside a CPU build of torch, its
    compiled operators (nms...) fail to load and its import would crash registering their
    meta and autograd kernels: ResNets need none, two empty modules skip that step."""
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(name, types.ModuleType(name))
    try:
        import torchvision
    except Exception:
        return None
    return torchvision


def unavailable_backends(native_blas=False):
    """{backend: why not} for every backend that cannot run here."""
    torch, missing = _torch(), {} if native_blas else {"np-native": "not asked for (--native-blas)"}
    if not backend.gpu_available():
        missing["np-gpu"] = missing["np-gpu-generic"] = "no CuPy or no CUDA device"
    if torch is None:
        missing["torch-cpu"] = missing["torch-cuda"] = "torch is not installed"
    elif not torch.cuda.is_available():
        missing["torch-cuda"] = "torch sees no CUDA device"
    return missing


def on_gpu(key):
    """Whether ``key`` runs on a GPU here."""
    if key.startswith("np-gpu"):
        return backend.gpu_available()
    return key == "torch-cuda" and _torch().cuda.is_available()


def array_module(key):
    return backend.require_gpu() if key.startswith("np-gpu") and on_gpu(key) else np


def torch_device(key):
    return "cuda" if key == "torch-cuda" and on_gpu(key) else "cpu"


def timer_for(key):
    """How ``key`` is timed: between two CUDA events on a GPU, else None (the host's clock)."""
    if not on_gpu(key):
        return None
    if key == "torch-cuda":
        torch = _torch()
        return event_timer(lambda: torch.cuda.Event(enable_timing=True),
                           lambda start, end: start.elapsed_time(end))
    cp = backend.require_gpu()
    return event_timer(cp.cuda.Event, cp.cuda.get_elapsed_time)


class PoolPeak:
    """The high-water mark of CuPy's memory pool (bytes in use, not cached), which CuPy
    does not keep: between start() and stop() an allocator notes ``used_bytes()`` after
    every allocation, where alone usage rises; outside, timed runs pay nothing."""

    def __init__(self, cp):
        self._cuda, self.pool, self.peak = cp.cuda, cp.get_default_memory_pool(), 0

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


def gpu_peak_mb(key, step):
    """Run ``step`` once -> the peak GPU memory its framework held meanwhile, in MB:
    torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), or CuPy's pool's."""
    if key == "torch-cuda":
        cuda = _torch().cuda
        start, stop, sync = cuda.reset_peak_memory_stats, cuda.max_memory_allocated, \
            cuda.synchronize
    else:
        cp = backend.require_gpu()
        meter, sync = PoolPeak(cp), cp.cuda.Device().synchronize
        start, stop = meter.start, meter.stop
    sync()
    start()
    try:
        step()
        sync()
    finally:
        peak = stop()
    return peak / MB


def _max_rss_bytes():
    """This process's RSS high-water mark (ru_maxrss counts KiB on Linux, bytes on macOS)."""
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def step_memory(step, trace):
    """Run ``step`` once -> {peak_mb: RSS, peak_tracemalloc_mb: if ``trace``}, in MB.

    RSS: the high-water mark after the step minus the RSS just before it (Linux's /proc;
    elsewhere the earlier mark, a lower bound); None when the step never rose above the
    process's earlier high-water mark (importing and building took more).
    """
    import tracemalloc
    gc.collect()
    high_before = baseline = _max_rss_bytes()
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/statm") as f:
            baseline = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    if trace:
        tracemalloc.start()
    step()
    traced = tracemalloc.get_traced_memory()[1] / MB if trace else None
    tracemalloc.stop()
    high_after = _max_rss_bytes()
    return {"peak_mb": (high_after - baseline) / MB if high_after > high_before else None,
            "peak_tracemalloc_mb": traced}


def set_tf32(key, enabled):
    """TF32 for the float32 GEMMs (and torch's convolutions) of ``key``'s framework, or not."""
    if key.startswith("torch"):
        torch = _torch()
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    elif on_gpu(key):
        from .. import kernels
        kernels.set_tf32(enabled)


def _setup(job):
    """Threads, TF32 off and the kernels' switch for the child's backend -> undo()."""
    key, undo = job["backend"], contextlib.ExitStack()
    if key.startswith("torch"):
        _torch().backends.cudnn.benchmark = True      # as anyone timing PyTorch sets it
    else:
        backend.retain_freed_memory()                 # as the train command does
    if key.startswith("np-gpu"):
        from .. import kernels
        from ..kernels import host
        undo.enter_context(kernels.use_kernels(key == "np-gpu"))
        if key == "np-gpu" and not on_gpu(key) and host.host_compiler():
            undo.enter_context(kernels.emulated_on_host(host.HostLauncher()))  # on the CPU
    set_tf32(key, False)
    undo.callback(set_threads(job.get("threads")))
    return undo.close


# --------------------------------------------------------------------------- #
# One layer: (forward, fresh, backward) closures for measure()
# --------------------------------------------------------------------------- #
def _random(xp, rng, shape, channels_last=False):
    """Standard-normal float32 of ``shape``; for (N, C, H, W), channels-last memory if asked."""
    if channels_last:
        N, C, H, W = shape
        return xp.asarray(rng.standard_normal((N, H, W, C), dtype=np.float32)).transpose(0, 3, 1, 2)
    return xp.asarray(rng.standard_normal(shape, dtype=np.float32))


def np_layer(spec, batch, xp):
    """One layer as a train step runs it (the implementation :mod:`resnet_np.dispatch`
    picks) -> (forward, fresh cache, backward(cache))."""
    rng = np.random.default_rng(0)
    x = _random(xp, rng, (batch,) + spec.in_shape, spec.channels_last)
    C, call = spec.in_shape[0], dispatch.call
    if spec.kind == "conv":
        w = _random(xp, rng, (spec.out_features, C // spec.groups) + spec.kernel) * 0.05
        b = _random(xp, rng, (spec.out_features,)) if spec.bias else None
        forward = lambda: F.conv2d_forward(x, w, b, spec.stride, spec.padding, spec.dilation,
                                           spec.groups, winograd=dispatch.winograd_mode(True))
        backward = lambda dout, cache: F.conv2d_backward(dout, cache, spec.input_grad)
    elif spec.kind == "fc":
        w = _random(xp, rng, (spec.out_features, C)) * 0.05
        b = _random(xp, rng, (spec.out_features,)) if spec.bias else None
        forward = lambda: F.linear_forward(x, w, b)
        backward = F.linear_backward
    else:
        if spec.kind == "bn":
            ones, zeros = xp.ones(C, np.float32), xp.zeros(C, np.float32)
            args = ("batch_norm2d", ones, zeros, zeros.copy(), ones.copy(), True)
        elif spec.kind == "maxpool":
            args = ("max_pool2d", spec.kernel, spec.stride, spec.padding)
        else:
            args = ("softmax_cross_entropy", xp.asarray(rng.integers(0, C, batch)))
        forward = lambda: call(args[0] + "_forward", x, *args[1:])
        backward = lambda dout, cache: dispatch.backward(args[0] + "_backward", dout, cache)
    out, _ = forward()
    dout = 1.0 if spec.kind == "loss" else _random(xp, rng, out.shape, is_channels_last(out))
    return forward, (lambda: forward()[1]), (lambda cache: backward(dout, cache))


def torch_layer(spec, batch, device):
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
    elif spec.kind == "loss":
        labels = torch.randint(0, C, (batch,), device=device)
        layer = lambda logits: torch.nn.functional.cross_entropy(logits, labels)
    else:
        layer = torch.nn.Linear(C, spec.out_features, bias=spec.bias)
    if isinstance(layer, torch.nn.Module):
        layer = layer.to(device).train()
    x = torch.randn((batch,) + spec.in_shape, device=device, requires_grad=spec.input_grad)
    inputs = ([x] if spec.input_grad else []) + list(getattr(layer, "parameters", list)())
    dout = torch.randn_like(layer(x).detach())
    forward = lambda: layer(x)  # autograd on: a training forward that keeps what backward needs
    return forward, forward, (lambda out: torch.autograd.grad(out, inputs, dout))


def bench_layer(spec, batch, key, warmup, reps):
    """{"forward": Timing, "backward": Timing} of one layer shape on one backend; each timed
    backward gets a fresh, untimed forward."""
    if key.startswith("np"):
        forward, fresh, backward = np_layer(spec, batch, array_module(key))
    else:
        forward, fresh, backward = torch_layer(spec, batch, torch_device(key))
    timer = timer_for(key)
    return {"forward": measure(forward, warmup=warmup, reps=reps, timer=timer),
            "backward": measure(backward, setup=fresh, warmup=warmup, reps=reps, timer=timer)}


def gemm_ceiling(key, n, warmup, reps):
    """A row: the float32 GEMM rate of ``key``'s array module on n x n matrices."""
    xp = array_module(key)
    rng = np.random.default_rng(0)
    a, b = _random(xp, rng, (n, n)), _random(xp, rng, (n, n))
    timing = measure(lambda: a @ b, warmup=warmup, reps=reps, timer=timer_for(key))
    return timing_row(timing, part="gemm", kind="gemm", shape=f"{n}x{n} sgemm", backend=key,
                      gflop=2 * n ** 3 / 1e9)


def timing_row(timing, **labels):
    """A flat row of a Timing and its labels; times in ms."""
    q1, q3 = timing.quartiles
    row = dict(labels, median_ms=timing.median * 1e3, min_ms=timing.min * 1e3,
               max_ms=timing.max * 1e3, q1_ms=q1 * 1e3, q3_ms=q3 * 1e3, reps=len(timing.times))
    if row.get("gflop") is not None:
        row["gflop_per_s"] = row["gflop"] / timing.median
    return row


# --------------------------------------------------------------------------- #
# The children's jobs
# --------------------------------------------------------------------------- #
def _failure(err):
    return f"{type(err).__name__}: {err}"[:300]


def _loop(job, items, run_one):
    """Every job's loop: for each (labels, item), ``run_one(item, labels)`` -> its rows, one
    per labels; where it fails or the time is up, the labels with the reason. The rows file
    job["out"] is rewritten after each item."""
    rows, deadline = [], time.monotonic() + job.get("seconds", math.inf)
    restore = _setup(job)
    try:
        for labels, item in items:
            try:
                if time.monotonic() > deadline:
                    raise TimeoutError
                print("  " + ", ".join(str(labels[0][k]) for k in ("backend", "precision",
                      "model", "mode", "batch", "layer", "shape") if k in labels[0]),
                      file=sys.stderr, flush=True)
                rows += run_one(item, labels)
            except Exception as err:                  # one item's failure is its rows'
                why = TIME_RAN_OUT if isinstance(err, TimeoutError) else _failure(err)
                rows += [dict(row, error=why) for row in labels]
            atomic_write_text(job["out"], json.dumps({"rows": rows}))
    finally:
        restore()


def _layer_items(job, part):
    """(labels of a row per pass, spec) of each layer of the job."""
    for layer in job["layers"]:
        spec = LayerSpec.from_json(layer["spec"])
        yield [dict(part=part, layer=layer["name"], uses=layer["uses"], kind=spec.kind,
                    shape=spec.describe(), pass_=pass_, backend=job["backend"],
                    batch=job["batch"]) for pass_ in PASSES], spec


def layers_job(job):
    """Every layer of ``job["layers"]`` on one backend, and first resnet-np's GEMM ceiling
    where ``job["gemm_size"]`` asks -> a row per (layer, pass)."""
    key, batch = job["backend"], job["batch"]

    def run_one(spec, labels):
        if spec is None:
            return [gemm_ceiling(key, job["gemm_size"], 1, max(job["reps"], 3))]
        timings = bench_layer(spec, batch, key, job["warmup"], job["reps"])
        flops = [layer_flops(spec, batch, row["pass_"]) for row in labels]
        return [timing_row(timings[row["pass_"]], **row, threads=thread_report(),
                           gflop=None if f is None else f / 1e9) for row, f in zip(labels, flops)]
    gemm = [([dict(part="gemm", backend=key)], None)] if key.startswith("np") and \
        job.get("gemm_size") else []
    _loop(job, gemm + list(_layer_items(job, "layers")), run_one)


def _rel_error(ours, reference):
    """max |ours - reference| / max |reference|, on the host in float64."""
    a, b = (np.asarray(backend.to_numpy(v), dtype=np.float64) for v in (ours, reference))
    return float(np.abs(a - b).max() / max(np.abs(b).max(), np.finfo(np.float64).tiny))


def check_job(job):
    """Each layer of ``job["layers"]`` through the CUDA kernels and through the generic code,
    on the same inputs -> a row per (layer, pass): the largest relative difference of any
    output (forward) or gradient (backward)."""
    from .. import kernels

    def run_one(spec, labels):
        forward, _, backward = np_layer(spec, job["batch"], array_module("np-gpu"))
        results = []
        for enabled in (False, True):
            with kernels.use_kernels(enabled):
                out, cache = forward()
                grads = backward(cache)
            results.append(([out], [g for g in (grads if isinstance(grads, tuple) else (grads,))
                                    if g is not None]))
        return [dict(row, rel_error=max(map(_rel_error, results[1][i], results[0][i])))
                for i, row in enumerate(labels)]
    job = dict(job, backend="np-gpu")
    _loop(job, list(_layer_items(job, "checks")), run_one)


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


def np_steps(key, name, batch, size, precision):
    """resnet-np's {"inference": step, "train": step} for one model and batch. Float32 and
    TF32: forward, cross-entropy, backward; mixed precision (float16 compute, float32 master
    weights) also the loss scaler and an SGD step, which its skip-or-step is part of."""
    from .. import amp
    from ..optim import SGD
    xp = array_module(key)
    model = build_np_model(name)
    if xp is not np:
        model.to("gpu")
    rng = np.random.default_rng(0)
    x = _random(xp, rng, (batch, 3, size, size))
    labels = xp.asarray(rng.integers(0, model.num_classes, batch))
    criterion, x_in = CrossEntropyLoss(), x
    if precision == "amp":
        mp = amp.MixedPrecision(model, "float16")
        optimizer, scaler = SGD(mp.master_parameters(), lr=1e-3, momentum=0.9), amp.GradScaler()
        x_in = mp.cast_input(x)
        update = lambda: mp.train_step(x, labels, criterion, optimizer, scaler)
    else:
        def update():
            model.zero_grad()
            criterion(model(x), labels)
            model.backward(criterion.backward(), input_grad=False)   # as torch: x needs no grad

    def inference():
        model.eval()
        with no_grad():
            model(x_in)
    return {"inference": inference, "train": lambda: (model.train(), update())}


def torch_steps(key, name, batch, size, precision):
    """torchvision's {"inference": step, "train": step}, as :func:`np_steps`; mixed precision
    under autocast (float16 with a GradScaler on CUDA, bfloat16 on the CPU) in channels_last
    memory, PyTorch's fastest setting."""
    torch, device, amp = _torch(), torch_device(key), precision == "amp"
    torch.manual_seed(0)
    model = build_torch_model(name).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, model.fc.out_features, (batch,), device=device)
    if amp:
        model, x = (v.to(memory_format=torch.channels_last) for v in (model, x))
    autocast = lambda: torch.autocast(device, enabled=amp, dtype=torch.float16
                                      if device == "cuda" else torch.bfloat16)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device, enabled=amp and device == "cuda")

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
        if amp:
            scaler.step(optimizer)
            scaler.update()
    return {"inference": inference, "train": train}


def models_job(job):
    """Each run of ``job["runs"]`` (model, batch, image_size, mode, and precision: float32,
    tf32 or amp; float32 if not given) on one backend -> a row per run.

    Peak memory: on the CPU, of the first train step of the fresh process (the RSS
    high-water mark can see no later one), counted as the first warm-up; on a GPU, of
    the second run on both sides, after the first has compiled CuPy's kernels and
    tuned cuDNN's, both counted as warm-ups.
    """
    key, built = job["backend"], {}

    def run_one(run, labels):
        shape = (run["model"], run["batch"], run["image_size"], labels[0]["precision"])
        if built.get("shape") != shape:
            built.clear()
            gc.collect()
            if on_gpu(key):
                (_torch().cuda.empty_cache() if key == "torch-cuda" else
                 backend.require_gpu().get_default_memory_pool().free_all_blocks())
            set_tf32(key, shape[-1] == "tf32")
            built.update(steps=(np_steps if key.startswith("np") else torch_steps)(key, *shape),
                         shape=shape)
        step, warmup, memory = built["steps"][run["mode"]], job["warmup"], {}
        if on_gpu(key):
            step()
            memory, warmup = {"peak_mb": gpu_peak_mb(key, step)}, warmup - 2
        elif run["mode"] == "train":
            memory, warmup = step_memory(step, trace=key.startswith("np")), warmup - 1
        timing = measure(step, warmup=max(warmup, 0), reps=job["reps"], timer=timer_for(key))
        return [timing_row(timing, **labels[0], **memory, threads=thread_report(),
                           images_per_s=run["batch"] / timing.median)]
    _loop(job, [([model_labels(key, run)], run) for run in job["runs"]], run_one)


def model_labels(key, run):
    return dict({"part": "models", "backend": key, "precision": "float32"}, **run)


# --------------------------------------------------------------------------- #
# The parent: each job in a child process with a time limit
# --------------------------------------------------------------------------- #
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_CHILD = ("import json, sys\n"
          "from resnet_np.bench import runs\n"
          "getattr(runs, sys.argv[1])(json.loads(sys.argv[2]))\n")


def child_environment(job):
    """The environment of a child process: this one's, with the package on PYTHONPATH
    (a checkout works uninstalled), TF32 off until asked for, and for np-native without
    :data:`NATIVE_BLAS_UNSET`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH"))
                                        if p)
    env["CUPY_TF32"] = "0"  # read when CuPy is imported: float32 GEMMs stay float32
    if job.get("backend") == "np-native":
        for name in NATIVE_BLAS_UNSET:
            env.pop(name, None)
    return env


def run_command(command, timeout, output=None, env=None):
    """``command`` in a child process (a session of its own, so that whatever it starts
    goes with it), killed after ``timeout`` s; its output to the file ``output``, else to
    this process's stderr -> None, or why it failed."""
    with subprocess.Popen(command, stdout=output or 2, stderr=subprocess.STDOUT if output else
                          None, env=env or child_environment({}), cwd=PACKAGE_ROOT,
                          start_new_session=True) as proc:
        try:
            code = proc.wait(timeout=max(timeout, 1))
        except BaseException as err:              # its time is up, or this process's
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if not isinstance(err, subprocess.TimeoutExpired):
                raise
            return f"killed after its {timeout:.0f} s"
    return None if code == 0 else f"exit status {code}"


def run_in_child(function, job, timeout, log):
    """``function(job)`` (a name in this module) in a fresh Python process, killed after
    ``timeout`` s (it starts no measurement after 85 % of it) -> (its rows, None or why
    it failed)."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="resnet-np-bench-") as folder:
        job = dict(job, out=str(Path(folder) / "rows.json"), seconds=0.85 * timeout)
        problem = run_command([sys.executable, "-c", _CHILD, function, json.dumps(job)],
                              timeout, env=child_environment(job))
        try:
            rows = json.loads(Path(job["out"]).read_text())["rows"]
        except (OSError, ValueError, KeyError):
            rows = []
    log(f"  ({time.monotonic() - start:.1f} s{'; ' + problem if problem else ''})")
    return rows, problem


def run_jobs(function, jobs, log, each=None, seconds=None):
    """Each job in a child of its own, one after another, with ``each`` s, or sharing
    ``seconds`` (each gets what is left over the jobs left) -> (rows, {label: why it failed})."""
    rows, problems, started = [], {}, time.monotonic()
    for i, job in enumerate(jobs):
        timeout = each if each is not None else \
            (seconds - (time.monotonic() - started)) / (len(jobs) - i)
        label = f"{function[:-4]} {BACKENDS[job['backend']]}"
        log(f"{label} (a fresh process, {timeout:.0f} s at most)")
        found, problem = run_in_child(function, job, timeout, log)
        rows += found
        for run in job.get("runs", ())[len(found):]:  # a models job writes a row per run
            rows.append(dict(model_labels(job["backend"], run), error=problem or "no result"))
        if problem:
            problems[label] = problem
    return rows, problems


def layer_list(groups):
    """LayerGroups -> the ``layers`` of a job."""
    return [dict(name=g.name, uses=g.uses, spec=g.spec.to_json()) for g in groups]
