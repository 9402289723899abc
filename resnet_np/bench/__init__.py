"""Benchmarks: resnet-np against PyTorch, layer by layer and model by model.

    python benchmarks/run.py --quick     # ResNet-50 at batch 8 and a few layers
    python benchmarks/run.py             # every layer shape; ResNet-50/101 at several batches
    python -m resnet_np.bench --help     # the same, from an installed package

What is timed
    per layer   forward and backward of every distinct layer shape that one forward
                pass of the model meets (convolutions, batch norms, the max-pool,
                the fc layer), through :mod:`resnet_np.functional` and through torch.nn
    per model   inference (eval mode, no_grad) and a train step (forward,
                cross-entropy, backward; no optimiser step) at each batch size
    memory      the peak of a train step on the CPU

Backends: resnet-np on NumPy; resnet-np on CuPy when a GPU is visible; PyTorch
(torchvision's models) on the CPU when torch is installed, and on CUDA when
torch sees a GPU. Each backend's layers, and each model run, run in a fresh
process (see :mod:`.runs` for why).

Method
    - ``warmup`` untimed runs, then ``reps`` timed runs: median, min, max and
      quartiles. GPUs are synchronised before the clock starts and before it stops.
    - float32 everywhere; TF32 off on both GPU sides.
    - Threads: as the environment sets them, and reported; ``--threads N`` sets
      NumPy's BLAS (threadpoolctl) and torch alike.
    - FLOPs from the layer shapes (:mod:`.shapes`); the GEMM ceiling is a large
      float32 matrix product measured in the same run.
    - Peak memory of a train step: the first train step of a fresh process
      (untimed, the first warm-up), as the RSS high-water mark minus the RSS just
      before the step, for both frameworks; for resnet-np also tracemalloc's peak.
    - Inputs are laid out as the models hand them on: resnet-np layers get
      channels-last memory (what the layer before them returns), PyTorch layers
      its default contiguous NCHW.

Files written into ``--out``: report.md (also printed), layers.csv, models.csv,
layers.png, conv_gflops.png, throughput.png.
"""
import argparse
import sys
import time

from ..models import build_model
from .report import (QUIET_LOAD, add_floors, environment, load_average, render_report,
                     write_outputs)
from .runs import (BACKENDS, run_layer_benchmarks, run_model_benchmarks,
                   unavailable_backends)
from .shapes import (LayerGroup, LayerSpec, conv_flops, layer_flops, layer_shapes,
                     linear_flops, model_flops, quick_selection)
from .timing import Timing, measure, set_threads

__all__ = ["BACKENDS", "LayerGroup", "LayerSpec", "Timing", "conv_flops", "layer_flops",
           "layer_shapes", "linear_flops", "main", "measure", "quick_selection"]


def _at_least(low):
    """An argparse type: an integer >= ``low``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value
    return parse


def _ints(text):
    """An argparse type: comma-separated integers >= 1, e.g. '1,8,16'."""
    return [_at_least(1)(v) for v in text.split(",") if v.strip()]


def _names(text):
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="resnet-np bench",
        description="Time resnet-np against PyTorch: every layer shape of a ResNet and whole "
                    "models, on the CPU and, where there is one, the GPU.")
    p.add_argument("--quick", action="store_true",
                   help="ResNet-50 at batch 8, one layer of each kind, 1 warm-up + 3 reps")
    p.add_argument("--out", default="benchmarks/results",
                   help="folder for report.md, the CSVs and the plots (default: %(default)s)")
    p.add_argument("--threads", type=_at_least(1), default=None,
                   help="threads for NumPy's BLAS and for torch (default: as the environment "
                        "sets them)")
    p.add_argument("--models", type=_names, default=None,
                   help="comma-separated; the first gives the layer shapes and the ratios "
                        "(default: resnet50,resnet101; --quick: resnet50)")
    p.add_argument("--batch", type=_at_least(1), default=8,
                   help="batch of the per-layer runs and of the ratios (default: %(default)s)")
    p.add_argument("--batch-sizes", type=_ints, default=None,
                   help="model batch sizes on the CPU (default: 1,8,16; --quick: the --batch)")
    p.add_argument("--gpu-batch-sizes", type=_ints, default=None,
                   help="model batch sizes on a GPU (default: 1,8,32,64; --quick: the --batch)")
    p.add_argument("--image-size", type=_at_least(1), default=224, help="default: %(default)s")
    p.add_argument("--backends", type=_names, default=None,
                   help=f"some of {','.join(BACKENDS)} (default: every one available)")
    p.add_argument("--warmup", type=_at_least(0), default=None,
                   help="untimed runs first (default: 2 per layer, 1 per model; --quick: 1)")
    p.add_argument("--reps", type=_at_least(1), default=None,
                   help="timed runs (default: 7 per layer, 5 per model; --quick: 3)")
    p.add_argument("--gemm-size", type=_at_least(0), default=2048,
                   help="n of the n x n sgemm that measures the GEMM ceiling; 0 skips it "
                        "(default: %(default)s)")
    p.add_argument("--native-blas", action="store_true",
                   help="also run resnet-np on NumPy with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE "
                        "unset in its processes, so OpenBLAS picks its own kernels for this "
                        "processor (backend np-native, reported beside np-cpu)")
    p.add_argument("--cifar-batch", type=_at_least(0), default=128,
                   help="batch of the CIFAR-size row: ResNet-18 with the CIFAR stem at 32x32 "
                        "against torchvision's resnet18 with the same stem; 0 skips it "
                        "(default: %(default)s)")
    p.add_argument("--require-quiet", action="store_true",
                   help=f"refuse to run when the 1-minute load average is above {QUIET_LOAD} "
                        "(without it such a run is marked NOT A QUIET MACHINE)")
    p.add_argument("--no-layers", action="store_true", help="skip the per-layer runs")
    p.add_argument("--no-models", action="store_true", help="skip the model runs")
    p.add_argument("--timeout", type=float, default=3600,
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


def _model_flops(model_rows):
    """{(model, image size, batch, mode): FLOPs} of every model run in ``model_rows``."""
    from .runs import build_np_model
    flops, groups = {}, {}
    for row in model_rows:
        shape = (row["model"], row["image_size"])
        if shape not in groups:
            groups[shape] = layer_shapes(build_np_model(row["model"]), row["image_size"])
        flops[shape + (row["batch"], row["mode"])] = model_flops(groups[shape], row["batch"],
                                                                row["mode"])
    return flops


def main(argv=None):
    """Run the benchmarks, print the Markdown report, write the files into --out -> 0."""
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
        skipped = {k: missing[k] for k in wanted if k in missing}

        layer_rows, ceilings = [], []
        if not args.no_layers:
            log(f"layer shapes of {args.models[0]} at {args.image_size}x{args.image_size}")
            groups = layer_shapes(build_model(args.models[0]), args.image_size)
            if args.quick:
                groups = quick_selection(groups)
            layer_rows, ceilings = run_layer_benchmarks(
                groups, args.batch, backends, args.layer_warmup, args.layer_reps, args.threads,
                args.gemm_size, args.timeout, log)
        model_rows = []
        if not args.no_models:
            model_rows = run_model_benchmarks(
                args.models, args.batch_sizes, args.gpu_batch_sizes, args.image_size, backends,
                args.model_warmup, args.model_reps, args.threads, args.timeout, log,
                args.cifar_batch)
            add_floors(model_rows, _model_flops(model_rows), ceilings)

        env = environment(backends, load_at_start)
        report = render_report(env, settings, ceilings, layer_rows, model_rows, backends,
                               skipped, args.models[0], args.batch,
                               0 if args.no_models else args.cifar_batch)
        report += f"\nTotal time: {time.perf_counter() - started:.0f} s.\n"
        print(report)
        for path in write_outputs(args.out, report, layer_rows, model_rows, ceilings):
            log(f"wrote {path}")
    finally:
        restore_threads()
    return 0
