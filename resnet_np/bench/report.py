"""What the runs found, for people: the machine, Markdown tables, ratios, CSVs and plots.

Every file is written atomically (a temporary file beside it, then os.replace),
so a reader, or a run interrupted half-way, never leaves half a file.
"""
import csv
import io
import os
import platform
import sys
from pathlib import Path

import numpy as np

from .. import backend
from .runs import BACKENDS, CIFAR_MODEL, GPU_BACKENDS
from .timing import thread_report

LAYER_FIELDS = ["layer", "uses", "kind", "shape", "pass_", "backend", "batch", "gflop",
                "median_ms", "min_ms", "max_ms", "q1_ms", "q3_ms", "reps", "gflop_per_s",
                "threads"]
MODEL_FIELDS = ["model", "batch", "image_size", "mode", "backend", "median_ms", "min_ms",
                "max_ms", "q1_ms", "q3_ms", "reps", "images_per_s", "gflop", "floor_ms",
                "peak_rss_mb",
                "peak_tracemalloc_mb", "threads", "error"]
DEVICE_PAIRS = (("np-cpu", "torch-cpu"), ("np-native", "torch-cpu"), ("np-gpu", "torch-cuda"))
# Short names of resnet-np's backends, for column headings and ratio lines.
LABELS = {"np-cpu": "CPU", "np-native": "CPU, native BLAS", "np-gpu": "GPU"}
# Above this 1-minute load average the machine is not quiet: figures are not to be quoted.
QUIET_LOAD = 0.5
SHORT = {"forward": "fwd", "backward": "bwd"}


# --------------------------------------------------------------------------- #
# The machine
# --------------------------------------------------------------------------- #
def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_average():
    """The 1-minute load average, or None where the system does not tell."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def environment(backends, load_at_start):
    """The facts a reader needs to trust and compare the numbers -> {label: text}."""
    cores = usable_cores()
    env = {"CPU": f"{_cpu_name()}, {cores} cores usable", "Python": platform.python_version(),
           "NumPy": np.__version__}
    if "torch" in sys.modules:
        env["PyTorch"] = sys.modules["torch"].__version__
    if "np-gpu" in backends:
        cp = backend.require_gpu()
        name = cp.cuda.runtime.getDeviceProperties(0)["name"]
        env["CuPy"] = f"{cp.__version__} on {name.decode() if isinstance(name, bytes) else name}"
    env["threads"] = thread_report() + " (each run reports its own in the CSVs)"
    forced = {name: os.environ[name] for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
              if name in os.environ}
    env["OpenBLAS kernels"] = (
        ("forced by " + ", ".join(f"{k}={v}" for k, v in forced.items())
         + " for resnet-np CPU; unset for resnet-np CPU, native BLAS (--native-blas)")
        if forced else "OpenBLAS's own choice for this processor")
    if backend.allocator_left_alone():
        env["allocator"] = "glibc's defaults for every process (RESNET_NP_MALLOC=default)"
    else:
        env["allocator"] = ("resnet-np processes keep freed memory for reuse "
                            "(backend.retain_freed_memory, as the train command does); "
                            "PyTorch's processes as PyTorch sets them")
    env["dtype"] = "float32; TF32 off (torch's allow_tf32 flags off, CUPY_TF32=0)"
    load_now = load_average()
    if load_at_start is not None:
        env["load average (1 min)"] = f"{load_at_start:.2f} before the runs, {load_now:.2f} after"
        # Multi-threaded BLAS and OpenMP slow down badly when another program holds a
        # core: one thread is descheduled and the others wait for it at every barrier.
        # Only the load before the runs tells whether others use the machine: during
        # them the benchmark's own threads keep the load near the thread count.
        if not is_quiet(load_at_start):
            env["WARNING"] = (f"NOT A QUIET MACHINE: the load average was above {QUIET_LOAD} "
                              "(other programs were using the CPU): times are slower and "
                              "noisier than on a quiet machine, multi-threaded ones most, and "
                              "the ratios are not to be quoted; rerun on a quiet machine")
    return env


def is_quiet(*loads):
    """Whether every known 1-minute load average is at most :data:`QUIET_LOAD`."""
    return all(load is None or load <= QUIET_LOAD for load in loads)


# --------------------------------------------------------------------------- #
# Ratios and observations
# --------------------------------------------------------------------------- #
def find(rows, **labels):
    """The first row (that did not fail) whose fields equal ``labels``, or None."""
    for row in rows:
        if "error" not in row and all(row.get(k) == v for k, v in labels.items()):
            return row
    return None


def _ratio(a, b):
    return None if a is None or b is None or not b else a / b


def model_ratios(model_rows, model, batch, ours="np-cpu", theirs="torch-cpu"):
    """resnet-np / PyTorch: inference time, train-step time and train-step peak memory."""
    ratios = {}
    for mode in ("inference", "train"):
        a = find(model_rows, model=model, batch=batch, mode=mode, backend=ours)
        b = find(model_rows, model=model, batch=batch, mode=mode, backend=theirs)
        ratios[mode] = _ratio(a and a["median_ms"], b and b["median_ms"])
        if mode == "train":
            ratios["memory"] = _ratio(a and a["peak_rss_mb"], b and b["peak_rss_mb"])
    return ratios


def layer_gaps(layer_rows, ours="np-cpu", theirs="torch-cpu"):
    """Per (layer, pass): both times, their ratio, and the difference times the layer's uses."""
    gaps = []
    for row in (r for r in layer_rows if r["backend"] == ours):
        other = find(layer_rows, layer=row["layer"], pass_=row["pass_"], backend=theirs)
        if other is not None:
            gaps.append(dict(layer=row["layer"], shape=row["shape"], pass_=row["pass_"],
                             uses=row["uses"], ours_ms=row["median_ms"],
                             theirs_ms=other["median_ms"],
                             ratio=row["median_ms"] / other["median_ms"],
                             total_gap_ms=(row["median_ms"] - other["median_ms"]) * row["uses"]))
    return gaps


# --------------------------------------------------------------------------- #
# Markdown
# --------------------------------------------------------------------------- #
def _ms(v):
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _spread(row):
    """'median [min-max]', in ms."""
    return f"{_ms(row['median_ms'])} [{_ms(row['min_ms'])}-{_ms(row['max_ms'])}]"


def _x(v):
    return "-" if v is None else f"{v:.2f}x"


def _num(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)


def _table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(str(c) for c in line) + " |" for line in lines])


def layer_table(layer_rows, backends):
    """Per (layer, pass): each backend's median [min-max] ms, resnet-np / PyTorch, GFLOP/s."""
    pairs = [(a, b) for a, b in DEVICE_PAIRS if a in backends and b in backends]
    ours = [k for k in backends if k.startswith("np")]
    header = (["layer", "uses", "shape", "pass", "GFLOP"] + [f"{BACKENDS[k]} ms" for k in backends]
              + [f"{LABELS[a]} np/torch" for a, _ in pairs]
              + [f"{BACKENDS[k]} GFLOP/s" for k in ours])
    lines = []
    for row in (r for r in layer_rows if r["backend"] == backends[0]):
        same = {k: find(layer_rows, layer=row["layer"], pass_=row["pass_"], backend=k)
                for k in backends}
        lines.append([row["layer"], row["uses"], row["shape"], row["pass_"],
                      _num(row["gflop"], "{:.2f}")]
                     + [_spread(same[k]) if same[k] else "-" for k in backends]
                     + [_x(_ratio(same[a] and same[a]["median_ms"],
                                  same[b] and same[b]["median_ms"])) for a, b in pairs]
                     + [_num(same[k] and same[k].get("gflop_per_s"), "{:.1f}") for k in ours])
    return _table(header, lines)


def add_floors(model_rows, flops, ceilings):
    """Give each model row its GFLOP (``flops``: {(model, image size, batch, mode): FLOPs})
    and, for resnet-np's backends, its floor: those FLOPs at the backend's measured sgemm
    ceiling, the time the step would take if every FLOP ran at full GEMM speed."""
    best = {c["backend"]: c["best_gflop_per_s"] for c in ceilings}
    for row in model_rows:
        key = (row["model"], row["image_size"], row["batch"], row["mode"])
        row["gflop"] = flops[key] / 1e9 if key in flops else None
        ceiling = best.get(row["backend"])
        row["floor_ms"] = (row["gflop"] / ceiling * 1e3
                           if row["gflop"] is not None and ceiling else None)


def model_table(model_rows):
    header = ["model", "batch", "mode", "backend", "median [min-max] ms", "images/s", "GFLOP",
              "floor ms", "peak MB (RSS)", "peak MB (tracemalloc)"]
    lines = []
    for r in model_rows:
        first = [r["model"], r["batch"], r["mode"], BACKENDS[r["backend"]]]
        if "error" in r:
            lines.append(first + [f"failed: {r['error']}", "-", "-", "-", "-", "-"])
        else:
            lines.append(first + [_spread(r), _num(r["images_per_s"], "{:.1f}"),
                                  _num(r.get("gflop"), "{:.1f}"), _ms(r.get("floor_ms")),
                                  _num(r["peak_rss_mb"]), _num(r["peak_tracemalloc_mb"])])
    return _table(header, lines)


def observations(layer_rows, top=5):
    """Markdown lines: the layers furthest from PyTorch on the CPU, by ratio and by time lost."""
    gaps = layer_gaps(layer_rows)
    if not gaps:
        return []
    lines = ["", "Furthest from PyTorch CPU (resnet-np time / PyTorch time):", ""]
    lines += [f"- {g['layer']} {g['shape']} {g['pass_']}: {g['ratio']:.1f}x "
              f"({_ms(g['ours_ms'])} vs {_ms(g['theirs_ms'])} ms)"
              for g in sorted(gaps, key=lambda g: -g["ratio"])[:top]]
    lines += ["", "Most time lost in one pass of the whole model (difference x uses):", ""]
    lines += [f"- {g['layer']} {g['shape']} {g['pass_']}: {_ms(g['total_gap_ms'])} ms "
              f"over {g['uses']} use(s)"
              for g in sorted(gaps, key=lambda g: -g["total_gap_ms"])[:top]]
    return lines


def render_report(env, settings, ceilings, layer_rows, model_rows, backends, skipped,
                  ratio_model, ratio_batch, cifar_batch=0):
    """The whole report as Markdown: machine and method, tables, ratios, observations."""
    title = "# resnet-np benchmarks"
    if "WARNING" in env:
        title += " -- NOT A QUIET MACHINE: do not quote these figures"
    parts = [title, ""]
    parts += [f"- {k}: {v}" for k, v in env.items()]
    parts += [f"- backends: {', '.join(BACKENDS[k] for k in backends)}"]
    parts += [f"- not run: {BACKENDS[k]} ({why})" for k, why in skipped.items()]
    parts += [f"- {settings}",
              "- times: median [min-max] of the timed repetitions, in ms (the CSVs add the "
              "quartiles); GPUs synchronised before and after every timed run",
              "- peak MB (RSS): in a fresh process, the RSS high-water mark during the first "
              "train step minus the RSS just before it, the same for both frameworks; "
              "tracemalloc: the peak NumPy allocation during that step (resnet-np only)",
              "- GFLOP: the convolutions' and the fc layer's multiply-adds x 2 (a train step: "
              "forward, weight and input gradients, no input gradient for the first layer); "
              "floor ms: those FLOPs at the measured sgemm ceiling of the same backend", ""]
    parts += [f"Float32 GEMM ceiling, {BACKENDS[c['backend']]} ({c['n']}x{c['n']} sgemm): "
              f"{c['best_gflop_per_s']:.1f} GFLOP/s best, {c['median_gflop_per_s']:.1f} median."
              for c in ceilings]
    if layer_rows:
        present = [k for k in backends if any(r["backend"] == k for r in layer_rows)]
        parts += ["", f"## Per layer (batch {layer_rows[0]['batch']})", "",
                  layer_table(layer_rows, present)]
        parts += observations(layer_rows)
    if model_rows:
        parts += ["", "## Models", "", model_table(model_rows)]
    pairs = [(a, b) for a, b in DEVICE_PAIRS if a in backends and b in backends and model_rows]
    runs = [(ratio_model, ratio_batch)] + ([(CIFAR_MODEL, cifar_batch)] if cifar_batch else [])
    for model, batch in runs:
        if pairs:
            parts += ["", f"## resnet-np / PyTorch ({model}, batch {batch})", ""]
        for ours, theirs in pairs:
            if model == CIFAR_MODEL and ours in GPU_BACKENDS:
                continue
            r = model_ratios(model_rows, model, batch, ours, theirs)
            line = f"- {LABELS[ours]}: inference {_x(r['inference'])}, train step {_x(r['train'])}"
            if ours not in GPU_BACKENDS:
                line += f", train-step peak memory (RSS) {_x(r['memory'])}"
            floors = [row for row in model_rows if row.get("floor_ms") and row["backend"] == ours
                      and row["model"] == model and row["batch"] == batch and "error" not in row]
            line += "".join(f"; {row['mode']} {_ms(row['median_ms'])} ms against a floor of "
                            f"{_ms(row['floor_ms'])} ms" for row in floors)
            if "WARNING" in env:
                line += " (NOT A QUIET MACHINE)"
            parts.append(line)
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- #
# Files
# --------------------------------------------------------------------------- #
def write_atomically(path, write):
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then rename it over
    ``path``: readers see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_csv(path, rows, fields):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda f: f.write(text.getvalue().encode()))


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(plt, fig, path):
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def plot_layers(plt, layer_rows, path):
    """Horizontal bars, log scale: each layer's forward and backward time, a bar per backend."""
    keys = [k for k in BACKENDS if any(r["backend"] == k for r in layer_rows)]
    items = [(r["layer"], r["shape"], r["pass_"]) for r in layer_rows if r["backend"] == keys[0]]
    height = 0.8 / len(keys)
    # A constrained layout widens the left margin to fit the longest label.
    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.18 * len(items) * len(keys)),
                           layout="constrained")
    for j, key in enumerate(keys):
        rows = [find(layer_rows, layer=layer, pass_=pass_, backend=key)
                for layer, _, pass_ in items]
        ax.barh([i + j * height for i in range(len(items))],
                [row["median_ms"] if row else 0 for row in rows], height, label=BACKENDS[key])
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(items))])
    ax.set_yticklabels([f"{layer} {shape} {SHORT[pass_]}" for layer, shape, pass_ in items],
                       fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"median time (ms), batch {layer_rows[0]['batch']}")
    ax.set_title("Per layer: forward (fwd) and backward (bwd) time")
    ax.legend()
    _save(plt, fig, path)


def plot_throughput(plt, model_rows, path):
    """Images/s against batch size: a panel per mode, a line per model and backend."""
    rows = [r for r in model_rows if "error" not in r]
    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, mode in zip(axes, ("inference", "train")):
        series = sorted({(r["model"], r["backend"]) for r in rows if r["mode"] == mode})
        for model, key in series:
            points = sorted((r["batch"], r["images_per_s"]) for r in rows
                            if (r["model"], r["backend"], r["mode"]) == (model, key, mode))
            ax.plot(*zip(*points), marker="o", label=f"{model} {BACKENDS[key]}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.set_title("train step" if mode == "train" else "inference")
        if series:
            ax.legend(fontsize=7)
    _save(plt, fig, path)


def plot_conv_gflops(plt, layer_rows, ceilings, path):
    """Achieved GFLOP/s of every conv pass, against the measured sgemm ceiling, per device."""
    pairs = [p for p in DEVICE_PAIRS if any(r["backend"] == p[0] for r in layer_rows)]
    fig, axes = plt.subplots(len(pairs), 1, figsize=(11, 4.5 * len(pairs)), squeeze=False)
    for ax, (ours, theirs) in zip(axes[:, 0], pairs):
        convs = [r for r in layer_rows if r["kind"] == "conv" and r["backend"] == ours]
        for offset, key in ((-0.2, ours), (0.2, theirs)):
            rates = [(find(layer_rows, layer=r["layer"], pass_=r["pass_"], backend=key) or {})
                     .get("gflop_per_s", 0) for r in convs]
            if any(rates):
                ax.bar([i + offset for i in range(len(convs))], rates, 0.4, label=BACKENDS[key])
        for c in (c for c in ceilings if c["backend"] == ours):
            ax.axhline(c["best_gflop_per_s"], color="k", linestyle="--",
                       label=f"sgemm {c['n']} ceiling, {c['best_gflop_per_s']:.0f} GFLOP/s")
        ax.set_xticks(range(len(convs)))
        ax.set_xticklabels([f"{r['layer']} {SHORT[r['pass_']]}" for r in convs], rotation=75,
                           fontsize=7)
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"Convolutions, achieved GFLOP/s ({LABELS[ours]})")
        ax.legend(fontsize=7)
    _save(plt, fig, path)


def write_outputs(out, report, layer_rows, model_rows, ceilings):
    """report.md, layers.csv, models.csv and the plots into folder ``out`` -> paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.md"]
    write_atomically(written[0], lambda f: f.write(report.encode()))
    if layer_rows:
        write_csv(out / "layers.csv", layer_rows, LAYER_FIELDS)
        written.append(out / "layers.csv")
    if model_rows:
        write_csv(out / "models.csv", model_rows, MODEL_FIELDS)
        written.append(out / "models.csv")
    plt = _pyplot()
    if plt is None:
        print("matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return written
    if layer_rows:
        plot_layers(plt, layer_rows, out / "layers.png")
        written.append(out / "layers.png")
    if any(r["kind"] == "conv" for r in layer_rows):
        plot_conv_gflops(plt, layer_rows, ceilings, out / "conv_gflops.png")
        written.append(out / "conv_gflops.png")
    if any("error" not in r for r in model_rows):
        plot_throughput(plt, model_rows, out / "throughput.png")
        written.append(out / "throughput.png")
    return written
