"""Benchmarks: resnet-np against PyTorch, layer by layer and model by model.

    resnet-np bench --quick       # ResNet-50 at batch 8 and one layer of each kind
    resnet-np bench               # every layer shape; ResNet-50/101 at several batches
    python -m resnet_np.bench     # the same from a checkout; --help lists the options

Each backend's layers, and each model run, go in a fresh process with a time limit
(:mod:`.runs`); :mod:`.report` writes report.md (also printed), a CSV per part and
the plots into --out. The GPU check (:mod:`.gpu`) runs the same jobs and writes the
same report. What is timed, how, and how to read it: benchmarks/README.md.
"""
import shlex
import sys
import time

from ..cli import _Parser, non_negative_int, positive_float, positive_int
from ..models import build_model
from .report import QUIET_LOAD, add_floors, environment, load_average, render_report, write_outputs
from .runs import BACKENDS, CIFAR_MODEL, GPU_BACKENDS, layer_list, run_jobs, unavailable_backends
from .shapes import (LayerGroup, LayerSpec, conv_flops, layer_flops, layer_shapes,
                     linear_flops, model_flops, quick_selection)
from .timing import Timing, measure, set_threads

__all__ = ["BACKENDS", "LayerGroup", "LayerSpec", "Timing", "conv_flops", "layer_flops",
           "layer_shapes", "linear_flops", "main", "measure", "model_flops", "quick_selection"]


def _ints(text):
    """An argparse type: comma-separated integers >= 1, e.g. '1,8,16'."""
    return [positive_int(v) for v in text.split(",") if v.strip()]


def _names(text):
    """An argparse type: comma-separated names."""
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_args(argv=None):
    p = _Parser(
        prog="resnet-np bench",
        description="Time resnet-np against PyTorch: every layer shape of a ResNet and whole "
                    "models, on the CPU and, where there is one, the GPU.")
    p.add_argument("--quick", action="store_true",
                   help="ResNet-50 at batch 8, one layer of each kind, 1 warm-up + 3 reps")
    p.add_argument("--out", default="benchmarks/results",
                   help="folder for report.md, the CSVs and the plots (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads for NumPy's BLAS and torch (default: the environment's)")
    p.add_argument("--models", type=_names, default=None,
                   help="comma-separated; the first gives the layer shapes and the ratios "
                        "(default: resnet50,resnet101; --quick: resnet50)")
    p.add_argument("--batch", type=positive_int, default=8,
                   help="batch of the per-layer runs and of the ratios (default: %(default)s)")
    p.add_argument("--batch-sizes", type=_ints, default=None,
                   help="model batch sizes on the CPU (default: 1,8,16; --quick: the --batch)")
    p.add_argument("--gpu-batch-sizes", type=_ints, default=None,
                   help="model batch sizes on a GPU (default: 1,8,32,64; --quick: the --batch)")
    p.add_argument("--image-size", type=positive_int, default=224, help="default: %(default)s")
    p.add_argument("--backends", type=_names, default=None,
                   help=f"some of {','.join(BACKENDS)} (default: every one available)")
    p.add_argument("--warmup", type=non_negative_int, default=None,
                   help="untimed runs first (default: 2 per layer, 1 per model; --quick: 1)")
    p.add_argument("--reps", type=positive_int, default=None,
                   help="timed runs (default: 7 per layer, 5 per model; --quick: 3)")
    p.add_argument("--gemm-size", type=non_negative_int, default=2048,
                   help="n of the n x n sgemm of the GEMM ceiling; 0 skips it "
                        "(default: %(default)s)")
    p.add_argument("--native-blas", action="store_true",
                   help="also run backend np-native: NumPy with OPENBLAS_CORETYPE and "
                        "OPENBLAS_L2_SIZE unset, OpenBLAS's own kernels for this processor")
    p.add_argument("--cifar-batch", type=non_negative_int, default=128,
                   help="batch of ResNet-18 with the CIFAR stem at 32x32, on both sides; 0 "
                        "skips it (default: %(default)s)")
    p.add_argument("--require-quiet", action="store_true",
                   help=f"refuse to run when the 1-minute load average is above {QUIET_LOAD} "
                        "(without it such a run is marked NOT A QUIET MACHINE)")
    p.add_argument("--no-layers", action="store_true", help="skip the per-layer runs")
    p.add_argument("--no-models", action="store_true", help="skip the model runs")
    p.add_argument("--timeout", type=positive_float, default=3600,
                   help="seconds one child process may take (default: %(default)s)")
    args = p.parse_args(argv)
    unknown = [k for k in args.backends or () if k not in BACKENDS]
    if unknown:
        p.error(f"unknown backend(s) {', '.join(unknown)}: choose from {', '.join(BACKENDS)}")
    return args


def _fill_defaults(args):
    """Fill the settings that depend on --quick -> a one-line description of them."""
    quick = args.quick
    args.models = args.models or (["resnet50"] if quick else ["resnet50", "resnet101"])
    args.batch_sizes = args.batch_sizes or ([args.batch] if quick else [1, 8, 16])
    args.gpu_batch_sizes = args.gpu_batch_sizes or ([args.batch] if quick else [1, 8, 32, 64])
    args.layer_warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    args.layer_reps = args.reps or (3 if quick else 7)
    args.model_warmup = args.warmup if args.warmup is not None else 1
    args.model_reps = args.reps or (3 if quick else 5)
    return (f"{'quick' if quick else 'full'} run, {args.image_size}x{args.image_size} images; "
            f"per layer {args.layer_warmup} warm-up + {args.layer_reps} timed runs, "
            f"per model {args.model_warmup} warm-up + {args.model_reps} timed runs")


def model_runs(args, backends):
    """One job per model run (a fresh process each): every model, mode, backend and batch,
    and the CIFAR-size row on the CPU backends."""
    runs = [dict(model=name, batch=batch, image_size=args.image_size, mode=mode, backend=key)
            for name in args.models for mode in ("inference", "train") for key in backends
            for batch in (args.gpu_batch_sizes if key in GPU_BACKENDS else args.batch_sizes)]
    if args.cifar_batch:
        runs += [dict(model=CIFAR_MODEL, batch=args.cifar_batch, image_size=32, mode=mode,
                      backend=key)
                 for mode in ("inference", "train") for key in backends
                 if key not in GPU_BACKENDS]
    return [dict(backend=run.pop("backend"), runs=[run], warmup=args.model_warmup,
                 reps=args.model_reps, threads=args.threads) for run in runs]


def main(argv=None):
    """Run the benchmarks, print the Markdown report, write the files into --out -> 0."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    settings = _fill_defaults(args)
    log = lambda message: print(message, file=sys.stderr, flush=True)
    started, load_at_start = time.perf_counter(), load_average()
    if args.require_quiet and load_at_start is not None and load_at_start > QUIET_LOAD:
        print(f"resnet-np bench: error: the 1-minute load average is {load_at_start:.2f}, above "
              f"{QUIET_LOAD}: other programs are using the CPU, so the figures would not be "
              "worth quoting; wait for a quiet machine (see `uptime`)", file=sys.stderr)
        return 2
    missing = unavailable_backends(args.native_blas)  # loads torch, before set_threads
    restore_threads = set_threads(args.threads)
    try:
        wanted = args.backends or list(BACKENDS)
        backends = [k for k in BACKENDS if k in wanted and k not in missing]
        notes = [f"backends: {', '.join(BACKENDS[k] for k in backends)}"]
        notes += [f"not run: {BACKENDS[k]} ({missing[k]})" for k in wanted if k in missing]
        rows, problems = [], {}
        if not args.no_layers:
            log(f"layer shapes of {args.models[0]} at {args.image_size}x{args.image_size}")
            groups = layer_shapes(build_model(args.models[0]), args.image_size)
            groups = quick_selection(groups) if args.quick else groups
            jobs = [dict(backend=key, batch=args.batch, warmup=args.layer_warmup,
                         reps=args.layer_reps, threads=args.threads, gemm_size=args.gemm_size,
                         layers=layer_list(groups)) for key in backends]
            rows, problems = run_jobs("layers_job", jobs, log, each=args.timeout)
        if not args.no_models:
            found, failed = run_jobs("models_job", model_runs(args, backends), log,
                                     each=args.timeout)
            add_floors(rows + found)
            rows, problems = rows + found, dict(problems, **failed)
        notes += [f"failed: {what}: {why}" for what, why in problems.items()]
        command = shlex.join(["resnet-np", "bench"] + list(argv))
        ratio_runs = [(args.models[0], args.batch)] + (
            [(CIFAR_MODEL, args.cifar_batch)] if args.cifar_batch else [])
        report = render_report("resnet-np benchmarks",
                               environment(backends, load_at_start, command),
                               [settings] + notes, rows, ratio_runs)
        report += f"\nTotal time: {time.perf_counter() - started:.0f} s.\n"
        print(report)
        for path in write_outputs(args.out, report, rows):
            log(f"wrote {path}")
    finally:
        restore_threads()
    return 0
