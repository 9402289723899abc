"""The GPU check, in one command that fits in 300 s: ``benchmarks/gpu_check.sh OUT``.

The parts, most important first, so that a cut loses the least: ``tests`` (pytest -m
gpu), ``check`` (the CUDA kernels against the generic CuPy code, forward and backward,
at every layer shape the layers part times), ``models`` (ResNet-50/101 at batch 64 and
128 in float32, TF32 and mixed precision against PyTorch+cuDNN: time, images/s, peak
memory), ``layers`` (ResNet-50's layer shapes: generic CuPy, kernels, cuDNN) and
``sanitizer`` (compute-sanitizer's racecheck and synccheck over a launch of every
kernel). Each part gets its share of what is left of the budget; its jobs run in child
processes killed at their time (:mod:`.runs`), so an overrun is cut and loses only
what it had not finished. After every part OUT holds report.md and results.tar.gz
(CSVs, plots, logs); the script adds gpu_check.log. ``--dry-run``: ResNet-18 at 32x32
on the CuPy stand-in (RESNET_NP_CUPY_STANDIN=1: every GPU branch), else on NumPy and
torch-CPU. More in benchmarks/README.md.
"""
import glob
import shlex
import shutil
import signal
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from .. import backend
from . import _names
from ..models import build_model
from ..training.atomic import atomic_write, atomic_write_text
from .report import add_floors, environment, load_average, render_report, write_outputs
from .runs import (PRECISIONS, _failure, _setup, array_module, layer_list, np_layer, run_command,
                   run_jobs)
from .shapes import LOSS, LayerGroup, LayerSpec, layer_shapes

PARTS = ("tests", "check", "models", "layers", "sanitizer")
SHARES = {"tests": 0.2, "check": 0.08, "models": 0.5, "layers": 0.12, "sanitizer": 0.1}
LAYER_BACKENDS = ("np-gpu-generic", "np-gpu", "torch-cuda")
BUDGET = {False: 250, True: 90}     # seconds for the parts; the script kills all at 280 s


def settings(dry_run):
    """What each part runs: full size on a GPU, tiny for the dry run."""
    if dry_run:
        return dict(layer_model="resnet18", layer_batch=2, image_size=32, layer_limit=4,
                    models=["resnet18"], batches=[2], warmup=2, reps=1, layer_reps=2,
                    tests=["tests/test_kernels.py", "-m", "gpu"])
    return dict(layer_model="resnet50", layer_batch=32, image_size=224, layer_limit=None,
                models=["resnet50", "resnet101"], batches=[64, 128], warmup=2, reps=3,
                layer_reps=5, tests=["-m", "gpu"])


def _layers(config):
    groups = layer_shapes(build_model(config["layer_model"]), config["image_size"])
    return layer_list(groups[:config["layer_limit"]] + [LayerGroup(LOSS, ["loss"])])


def _command(command, seconds, path):
    """``command`` with its output into the file ``path`` -> None, or why it failed."""
    with open(path, "w") as output:
        return run_command(command, seconds, output)


# --------------------------------------------------------------------------- #
# The parts: each -> (rows, {what: why it failed}, Markdown lines)
# --------------------------------------------------------------------------- #
def tests_part(work, config, seconds, log):
    command = [sys.executable, "-m", "pytest", *config["tests"], "-q", "-rfE", "-p",
               "no:cacheprovider"]
    log("  " + shlex.join(command[1:]))
    problem = _command(command, seconds, work / "pytest.txt")
    text = (work / "pytest.txt").read_text(errors="replace").strip().splitlines() or ["-"]
    if problem == "exit status 5":                    # pytest: nothing collected
        problem = None
    return [], {"tests": problem} if problem else {}, (
        [f"## Tests (`pytest {shlex.join(config['tests'])}`)", "", text[-1].strip("= ")]
        + [f"- {line}" for line in text if line.startswith(("FAILED ", "ERROR "))][:40])


def check_part(work, config, seconds, log):
    job = dict(backend="np-gpu", batch=config["layer_batch"], layers=_layers(config))
    rows, problems = run_jobs("check_job", [job], log, seconds=seconds)
    return rows, problems, []


def models_part(work, config, seconds, log):
    runs = [dict(model=m, batch=b, image_size=config["image_size"], precision=p, mode=mode)
            for m in config["models"] for b in config["batches"] for p in PRECISIONS
            for mode in ("inference", "train")]          # ResNet-50, batch 64 first: the targets
    jobs = [dict(backend=key, runs=runs, warmup=config["warmup"], reps=config["reps"])
            for key in ("np-gpu", "torch-cuda")]
    rows, problems = run_jobs("models_job", jobs, log, seconds=seconds)
    return rows, problems, []


def layers_part(work, config, seconds, log):
    jobs = [dict(backend=key, batch=config["layer_batch"], layers=_layers(config), warmup=1,
                 reps=config["layer_reps"]) for key in LAYER_BACKENDS]
    rows, problems = run_jobs("layers_job", jobs, log, seconds=seconds)
    return rows, problems, []


def launch_every_kernel():
    """Every kernel once on small arrays, through the layers with the kernels on (the
    softmax's one-block-per-row version, with barriers, among them): what compute-sanitizer
    watches."""
    restore = _setup({"backend": "np-gpu"})
    conv = LayerSpec("conv", (8, 9, 9), out_features=4, kernel=(3, 3), stride=(2, 2),
                     padding=(1, 1), channels_last=True)
    for spec in (conv, LayerSpec("bn", (8, 9, 9), channels_last=True), LOSS,
                 LayerSpec("maxpool", (8, 9, 9), kernel=(3, 3), stride=(2, 2), padding=(1, 1))):
        forward, _, backward = np_layer(spec, 4, array_module("np-gpu"))
        backward(forward()[1])
    restore()
    print("every kernel launched")


def find_sanitizer():
    """compute-sanitizer on PATH, in a CUDA toolkit or in NVIDIA's pip packages, or None."""
    found = [shutil.which("compute-sanitizer")]
    found += sorted(glob.glob("/usr/local/cuda*/bin/compute-sanitizer"), reverse=True)
    found += [p for root in sys.path for p in glob.glob(f"{root}/nvidia/**/compute-sanitizer",
                                                        recursive=True) if Path(p).is_file()]
    return next((p for p in found if p), None)


def sanitizer_part(work, config, seconds, log):
    sanitizer = find_sanitizer()
    payload = [sys.executable, "-c", "from resnet_np.bench import gpu; gpu.launch_every_kernel()"]
    lines, problems = ["## compute-sanitizer", ""], {}
    tools, started = ("racecheck", "synccheck") if sanitizer else ("none",), time.monotonic()
    for i, tool in enumerate(tools):
        command = [sanitizer, "--tool", tool, "--error-exitcode", "1"] if sanitizer else []
        log("  " + shlex.join(command + payload))
        problem = _command(command + payload, (seconds - time.monotonic() + started) /
                           (len(tools) - i), work / f"sanitizer-{tool}.txt")
        text = (work / f"sanitizer-{tool}.txt").read_text(errors="replace").splitlines()
        summary = [s for s in text if "SUMMARY" in s] or text[-1:]
        lines.append(f"- {tool}: {'; '.join(summary) or 'no output'}"
                     + (f" ({problem})" if problem else ""))
        if problem:
            problems[f"sanitizer {tool}"] = problem
    if not sanitizer:
        lines.append("compute-sanitizer was not found: the kernels' launch ran without it.")
    return [], problems, lines


# --------------------------------------------------------------------------- #
# The report, packed: report.md and results.tar.gz
# --------------------------------------------------------------------------- #
def write_report(out, work, config, done, command, load_at_start, dry_run):
    """report.md into ``out``, and results.tar.gz of everything else -> their paths."""
    rows = [r for part in done for r in part["rows"]]
    title = "GPU check" + (" (DRY RUN: tiny shapes, not a measurement)" if dry_run else "")
    lines = ["## Parts, in the order run", "", "| part | seconds given | seconds taken | outcome |",
             "|---|---:|---:|---|"]
    lines += [f"| {p['part']} | {p['given']:.0f} | {p['taken']:.0f} | "
              + ("; ".join(f"{k}: {v}" for k, v in p["problems"].items()) or "done") + " |"
              for p in done]
    for part in (p for p in done if p["lines"]):
        lines += [""] + part["lines"]
    notes = [f"model runs: {config['warmup']} warm-ups (the second measures the peak memory) + "
             f"{config['reps']} timed; layers: 1 + {config['layer_reps']}; times between two "
             "CUDA events; mixed precision also runs the loss scaler and an SGD step, on both "
             "sides; cuDNN's autotuner on"]
    env = environment(LAYER_BACKENDS, load_at_start, command)
    env.pop("WARNING", None)                        # the CPU's load does not slow a GPU
    add_floors(rows)
    report = render_report(title, env, notes, rows,
                           [(m, b) for m in config["models"] for b in config["batches"]], lines)
    files = work / "files"
    write_outputs(files, report, rows)
    with atomic_write(Path(out) / "results.tar.gz") as f, \
            tarfile.open(fileobj=f, mode="w:gz") as tar:
        for path in sorted(files.iterdir()) + sorted(p for p in work.iterdir() if p.is_file()):
            tar.add(path, arcname=path.name)
    atomic_write_text(Path(out) / "report.md", report)
    return [Path(out) / "report.md", Path(out) / "results.tar.gz"]


def parse_args(argv=None):
    from ..cli import _Parser, positive_float
    p = _Parser(prog="benchmarks/gpu_check.sh", description="The GPU check: tests, the kernels "
                "against the generic code, models, layers, compute-sanitizer.")
    p.add_argument("out", help="folder for report.md and results.tar.gz (created if missing)")
    p.add_argument("--dry-run", action="store_true", help="every step on tiny shapes")
    p.add_argument("--parts", type=_names, default=",".join(PARTS),
                   help="comma-separated, some of %(default)s")
    p.add_argument("--budget", type=positive_float, default=None,
                   help=f"seconds for the parts together (default: {BUDGET[False]}, "
                        f"dry run {BUDGET[True]})")
    args = p.parse_args(argv)
    unknown = [s for s in args.parts if s not in PARTS]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    args.budget = args.budget or BUDGET[args.dry_run]
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    log = lambda message: print(message, file=sys.stderr, flush=True)
    if not args.dry_run and not backend.gpu_available():
        log("no usable GPU (CuPy missing or no CUDA device): use --dry-run to check the steps")
        return 2
    Path(args.out).mkdir(parents=True, exist_ok=True)
    config, started, load_at_start = settings(args.dry_run), time.monotonic(), load_average()
    command = shlex.join(["benchmarks/gpu_check.sh"] + list(argv))
    parts, done, written = [p for p in PARTS if p in args.parts], [], []
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        for i, part in enumerate(parts):
            left = args.budget - (time.monotonic() - started)
            seconds = max(left * SHARES[part] / sum(SHARES[p] for p in parts[i:]), 1)
            log(f"== {part} ({seconds:.0f} s at most)")
            begun = time.monotonic()
            try:
                rows, problems, lines = PART_RUNS[part](work, config, seconds, log)
            except Exception as err:                  # the report still gets written
                rows, problems, lines = [], {part: _failure(err)}, []
            done.append(dict(part=part, given=seconds, taken=time.monotonic() - begun, rows=rows,
                             problems=problems, lines=lines))
            # after every part, so that even a kill from outside leaves a report
            written = write_report(args.out, work, config, done, command, load_at_start,
                                   args.dry_run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for path in written:
        log(f"wrote {path}")
    return 0


PART_RUNS = {"tests": tests_part, "check": check_part, "models": models_part,
             "layers": layers_part, "sanitizer": sanitizer_part}

if __name__ == "__main__":
    # the script's timeout sends SIGTERM: as an exception it ends the children too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
