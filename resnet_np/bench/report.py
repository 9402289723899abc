"""What the runs found, for people: the machine, Markdown tables, ratios, CSVs and plots,
for ``resnet-np bench`` and the GPU check alike. Every file is written atomically."""
import contextlib
import csv
import functools
import io
import os
import platform
import sys
from pathlib import Path

import numpy as np

from .. import backend
from ..training.atomic import atomic_write, atomic_write_text
from .runs import BACKENDS, FIELDS, PRECISIONS, _torch, build_np_model
from .shapes import layer_shapes, model_flops
from .timing import thread_report

DEVICE_PAIRS = (("np-cpu", "torch-cpu"), ("np-native", "torch-cpu"), ("np-gpu", "torch-cuda"),
                ("np-gpu-generic", "torch-cuda"))
# Short names of resnet-np's backends, for column headings and ratio lines.
LABELS = {"np-cpu": "CPU", "np-native": "CPU, native BLAS", "np-gpu": "GPU",
          "np-gpu-generic": "GPU, generic CuPy"}
# Above this 1-minute load average the machine is not quiet: figures are not to be quoted.
QUIET_LOAD = 0.5
SHORT = {"forward": "fwd", "backward": "bwd"}
# resnet-np GPU / PyTorch+cuDNN bounds, at ResNet-50, batch 64: (mode or "memory", precision)
GPU_TARGETS = {("train", "float32"): 1.5, ("train", "tf32"): 1.5, ("train", "amp"): 2.0,
               ("inference", "float32"): 1.5, ("memory", "float32"): 1.5}
# float32 kernels against the generic code: the largest relative difference allowed
CHECK_TOLERANCE = 1e-4
METHOD = ["times: median [min-max] of the timed runs, in ms (the CSVs add the quartiles); on a "
          "GPU each run timed between two CUDA events",
          "peak MB: on the CPU the RSS high-water mark during the first train step of a fresh "
          "process minus the RSS just before it, for both frameworks (tracemalloc: NumPy's peak "
          "during that step); on a GPU, during the second run: CuPy's memory-pool high-water "
          "mark against torch.cuda.max_memory_allocated()",
          "GFLOP: the convolutions' and the fc layer's multiply-adds x 2 (a train step: forward, "
          "weight and input gradients, none for the images); floor ms: those FLOPs at the "
          "measured sgemm ceiling of the same backend"]


def _cpu_name():
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in (line for line in f if line.startswith("model name")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average():
    """The 1-minute load average, or None where the system does not tell."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def environment(backends, load_at_start, command):
    """The facts a reader needs to trust and compare the numbers -> {label: text}."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = {"command": f"`{command}`", "CPU": f"{_cpu_name()}, {cores} cores usable",
           "Python": platform.python_version(), "NumPy": np.__version__}
    if any(k.startswith("np-gpu") for k in backends) and backend.gpu_available():
        cp = backend.require_gpu()
        try:
            props = cp.cuda.runtime.getDeviceProperties(0)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            env["CuPy"] = (f"{cp.__version__} on {name}, {props['totalGlobalMem'] / 2 ** 30:.0f} "
                           f"GiB, CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}")
        except Exception as err:
            env["CuPy"] = f"{getattr(cp, '__version__', '?')} on an unknown GPU ({err})"
    torch = _torch()
    if torch is not None:
        env["PyTorch"] = torch.__version__
        if "torch-cuda" in backends and torch.cuda.is_available():
            env["PyTorch"] += (f" on {torch.cuda.get_device_name(0)}, cuDNN "
                               f"{torch.backends.cudnn.version()}")
    env["threads"] = thread_report() + " (each run reports its own in the CSVs)"
    forced = {name: os.environ[name] for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
              if name in os.environ}
    env["OpenBLAS kernels"] = (
        ("forced by " + ", ".join(f"{k}={v}" for k, v in forced.items())
         + " for resnet-np CPU; unset for resnet-np CPU, native BLAS (--native-blas)")
        if forced else "OpenBLAS's own choice for this processor")
    env["allocator"] = ("glibc's defaults for every process (RESNET_NP_MALLOC=default)"
                        if backend.allocator_left_alone() else
                        "resnet-np processes keep freed memory for reuse (backend."
                        "retain_freed_memory, as the train command does); PyTorch's as it "
                        "sets them")
    env["dtype"] = ("float32 with TF32 off on both sides (torch's allow_tf32 flags, CUPY_TF32=0),"
                    " but for the rows of precision tf32 or amp")
    if load_at_start is not None:
        env["load average (1 min)"] = (f"{load_at_start:.2f} before the runs, "
                                       f"{load_average():.2f} after")
        # Multi-threaded BLAS and OpenMP slow down badly when another program holds a
        # core: one thread is descheduled and the others wait for it at every barrier.
        # Only the load before the runs tells whether others use the machine: during
        # them the benchmark's own threads keep the load near the thread count.
        if load_at_start > QUIET_LOAD:
            env["WARNING"] = (f"NOT A QUIET MACHINE: the load average was above {QUIET_LOAD} "
                              "(other programs were using the CPU): times are slower and "
                              "noisier than on a quiet machine, multi-threaded ones most, and "
                              "the ratios are not to be quoted; rerun on a quiet machine")
    return env


def find(rows, **labels):
    """The first row (that did not fail) whose fields equal ``labels``, or None."""
    for row in rows:
        if not row.get("error") and all(row.get(k) == v for k, v in labels.items()):
            return row
    return None


def _ratio(a, b):
    return None if a is None or not b else a / b


def model_ratios(rows, model, batch, ours="np-cpu", theirs="torch-cpu", precision="float32"):
    """resnet-np / PyTorch: inference time, train-step time and train-step peak memory."""
    a, b = ({mode: find(rows, part="models", model=model, batch=batch, mode=mode, backend=key,
                        precision=precision) or {} for mode in ("inference", "train")}
            for key in (ours, theirs))
    return {"inference": _ratio(a["inference"].get("median_ms"), b["inference"].get("median_ms")),
            "train": _ratio(a["train"].get("median_ms"), b["train"].get("median_ms")),
            "memory": _ratio(a["train"].get("peak_mb"), b["train"].get("peak_mb"))}


def _ms(v):
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _spread(row):
    """'median [min-max]', in ms."""
    if not row:
        return "-"
    return f"{_ms(row['median_ms'])} [{_ms(row['min_ms'])}-{_ms(row['max_ms'])}]"


def _x(v):
    return "-" if v is None else f"{v:.2f}x"


def _num(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)


def _median(row):
    return row and row["median_ms"]


def _table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]


def _present(rows, part):
    return [k for k in BACKENDS if any(r["part"] == part and r["backend"] == k for r in rows)]


def _items(rows, part):
    """The distinct (layer, pass) of ``part``'s rows, in the order first met -> first rows."""
    first = {}
    for r in rows:
        if r["part"] == part:
            first.setdefault((r["layer"], r["pass_"]), r)
    return list(first.values())


def layer_table(rows):
    """Per (layer, pass): each backend's median [min-max] ms, resnet-np / PyTorch, GFLOP/s."""
    backends = _present(rows, "layers")
    pairs = [(a, b) for a, b in DEVICE_PAIRS if a in backends and b in backends]
    ours = [k for k in backends if k.startswith("np")]
    header = (["layer", "uses", "shape", "pass", "GFLOP"] + [f"{BACKENDS[k]} ms" for k in backends]
              + [f"{LABELS[a]} np/torch" for a, _ in pairs]
              + [f"{BACKENDS[k]} GFLOP/s" for k in ours])
    lines = []
    for row in _items(rows, "layers"):
        same = {k: find(rows, part="layers", layer=row["layer"], pass_=row["pass_"], backend=k)
                for k in backends}
        lines.append([row["layer"], row["uses"], row["shape"], row["pass_"],
                      _num(row.get("gflop"), "{:.2f}")] + [_spread(same[k]) for k in backends]
                     + [_x(_ratio(_median(same[a]), _median(same[b]))) for a, b in pairs]
                     + [_num(same[k] and same[k].get("gflop_per_s"), "{:.1f}") for k in ours])
    failed = sorted({f"{BACKENDS[r['backend']]} {r['layer']}: {r['error']}" for r in rows
                     if r["part"] == "layers" and r.get("error")})
    return _table(header, lines) + [f"- failed: {why}" for why in failed]


def kernel_table(rows):
    """Per layer kind and pass: the kernels against generic CuPy, times summed over every
    layer of the model (each shape times its uses), and the largest difference found."""
    sums = {}
    total = lambda row: sums.setdefault((row["kind"], row["pass_"]),
                                        dict(generic=0.0, ours=0.0, shapes=0, error=None))
    for row in _items(rows, "layers"):
        generic, ours = (find(rows, part="layers", layer=row["layer"], pass_=row["pass_"],
                              backend=k) for k in ("np-gpu-generic", "np-gpu"))
        if generic and ours:
            s = total(row)
            s["generic"] += generic["median_ms"] * row["uses"]
            s["ours"] += ours["median_ms"] * row["uses"]
            s["shapes"] += 1
    for row in rows:
        if row["part"] == "checks" and row.get("rel_error") is not None:
            s = total(row)
            s["error"] = max(s["error"] or 0.0, row["rel_error"])
    lines = [[kind, pass_, s["shapes"], _ms(s["generic"] or None), _ms(s["ours"] or None),
              _x(_ratio(s["generic"] or None, s["ours"])), _num(s["error"], "{:.1e}"),
              "-" if s["error"] is None else "yes" if s["error"] <= CHECK_TOLERANCE else "NO"]
             for (kind, pass_), s in sums.items()]
    notes = [f"- {'check failed' if r.get('error') else 'differs'}: {r['layer']} {r['shape']} "
             f"{r['pass_']}: {r.get('error') or format(r['rel_error'], '.1e')}" for r in rows
             if r["part"] == "checks" and (r.get("error") or r["rel_error"] > CHECK_TOLERANCE)]
    return _table(["kind", "pass", "shapes timed", "generic CuPy ms", "kernels ms", "speed-up",
                   "largest difference", f"within {CHECK_TOLERANCE:.0e}"], lines) + notes


def _ceilings(rows):
    return [r for r in rows if r["part"] == "gemm" and not r.get("error")]


def best_gflop_per_s(ceiling):
    """The GEMM ceiling: a gemm row's rate at its fastest run."""
    return ceiling["gflop"] * 1e3 / ceiling["min_ms"]


@functools.lru_cache(maxsize=None)
def _shapes(model, image_size):
    return layer_shapes(build_np_model(model), image_size)


def add_floors(rows):
    """Give each model row its GFLOP (its convolutions' and fc layer's: shapes.model_flops)
    and, for resnet-np's backends, its floor: those FLOPs at the backend's measured sgemm
    ceiling (a gemm row), the time the step would take if every FLOP ran at GEMM speed."""
    best = {c["backend"]: best_gflop_per_s(c) for c in _ceilings(rows)}
    for row in (r for r in rows if r["part"] == "models" and not r.get("error")):
        row["gflop"] = model_flops(_shapes(row["model"], row["image_size"]), row["batch"],
                                   row["mode"]) / 1e9
        row["floor_ms"] = (row["gflop"] / best[row["backend"]] * 1e3 if row["backend"] in best
                           else None)


def model_table(rows):
    header = ["model", "batch", "mode", "backend", "precision", "median [min-max] ms",
              "images/s", "GFLOP", "floor ms", "peak MB", "peak MB (tracemalloc)"]
    lines = []
    for r in (r for r in rows if r["part"] == "models"):
        first = [r["model"], r["batch"], r["mode"], BACKENDS[r["backend"]], r["precision"]]
        if r.get("error"):
            lines.append(first + [f"failed: {r['error']}", "-", "-", "-", "-", "-"])
        else:
            lines.append(first + [_spread(r), _num(r["images_per_s"], "{:.1f}"),
                                  _num(r.get("gflop"), "{:.1f}"), _ms(r.get("floor_ms")),
                                  _num(r.get("peak_mb")), _num(r.get("peak_tracemalloc_mb"))])
    return _table(header, lines)


def observations(rows, top=5):
    """Markdown lines: the layers furthest from PyTorch on the CPU, by ratio and by the time
    lost in one pass of the whole model (the difference times the layer's uses)."""
    gaps = []
    for row in (r for r in rows if r["part"] == "layers" and r["backend"] == "np-cpu"):
        other = not row.get("error") and find(rows, part="layers", layer=row["layer"],
                                              pass_=row["pass_"], backend="torch-cpu")
        if other:
            gaps.append((row["median_ms"] / other["median_ms"],
                         (row["median_ms"] - other["median_ms"]) * row["uses"], row, other))
    if not gaps:
        return []
    name = lambda row: f"- {row['layer']} {row['shape']} {row['pass_']}: "
    return (["", "Furthest from PyTorch CPU (resnet-np time / PyTorch time):", ""]
            + [name(r) + f"{ratio:.1f}x ({_ms(r['median_ms'])} vs {_ms(o['median_ms'])} ms)"
               for ratio, _, r, o in sorted(gaps, key=lambda g: -g[0])[:top]]
            + ["", "Most time lost in one pass of the whole model (difference x uses):", ""]
            + [name(r) + f"{_ms(lost)} ms over {r['uses']} use(s)"
               for _, lost, r, _ in sorted(gaps, key=lambda g: -g[1])[:top]])


def ratio_lines(rows, model, batch, quiet=True):
    """Markdown lines: resnet-np / PyTorch for one model and batch, per device and precision,
    with the GPU targets at ResNet-50, batch 64."""
    backends = _present(rows, "models")
    lines = []
    for ours, theirs in [p for p in DEVICE_PAIRS if p[0] in backends and p[1] in backends]:
        for precision in PRECISIONS:
            r = model_ratios(rows, model, batch, ours, theirs, precision)
            if all(v is None for v in r.values()):
                continue
            bounds = GPU_TARGETS if (model, batch, ours) == ("resnet50", 64, "np-gpu") else {}
            target = lambda key, bound: "" if r[key] is None or bound is None else \
                f" (target <= {bound}x: {'met' if r[key] <= bound else 'NOT MET'})"
            line = f"- {LABELS[ours]}, {precision}: " + ", ".join(
                f"{what} {_x(r[key])}{target(key, bounds.get((key, precision)))}"
                for key, what in (("inference", "inference"), ("train", "train step"),
                                  ("memory", "train-step peak memory")))
            floors = [row for row in rows if row.get("floor_ms") and row["backend"] == ours
                      and (row["model"], row["batch"], row["precision"]) == (model, batch,
                                                                             precision)]
            line += "".join(f"; {row['mode']} {_ms(row['median_ms'])} ms against a floor of "
                            f"{_ms(row['floor_ms'])} ms" for row in floors)
            lines.append(line + ("" if quiet else " (NOT A QUIET MACHINE)"))
    return (["", f"## resnet-np / PyTorch ({model}, batch {batch}, measured in this run)", ""]
            + lines) if lines else []


def render_report(title, env, notes, rows, ratio_runs, sections=()):
    """The whole report as Markdown: machine and method, ``sections`` (Markdown lines),
    then the tables, the kernels' check, the ratios and observations."""
    if "WARNING" in env:
        title += " -- NOT A QUIET MACHINE: do not quote these figures"
    parts = [f"# {title}", ""] + [f"- {k}: {v}" for k, v in env.items()]
    parts += [f"- {note}" for note in list(notes) + METHOD] + [""] + list(sections)
    parts += [f"Float32 GEMM ceiling, {BACKENDS[c['backend']]} ({c['shape']}): "
              f"{best_gflop_per_s(c):.1f} GFLOP/s best, {c['gflop_per_s']:.1f} median."
              for c in _ceilings(rows)]
    layers = [r for r in rows if r["part"] == "layers"]
    if layers:
        parts += ["", f"## Per layer (batch {layers[0]['batch']})", ""] + layer_table(rows)
        parts += observations(rows)
    if any(r["part"] == "checks" for r in rows) or {"np-gpu", "np-gpu-generic"} <= set(
            r["backend"] for r in layers):
        parts += ["", "## The CUDA kernels against the generic CuPy code", ""] + kernel_table(rows)
    if any(r["part"] == "models" for r in rows):
        parts += ["", "## Models", ""] + model_table(rows)
    for model, batch in ratio_runs:
        parts += ratio_lines(rows, model, batch, "WARNING" not in env)
    return "\n".join(parts) + "\n"


def write_csv(path, rows):
    """The rows as CSV, with the columns of :data:`FIELDS` that any of them fills."""
    fields = [f for f in FIELDS if f == "error" or any(r.get(f) is not None for r in rows)]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


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
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def plot_layers(plt, rows, path):
    """Horizontal bars, log scale: each layer's forward and backward time, a bar per backend."""
    keys = _present(rows, "layers")
    items = _items(rows, "layers")
    height = 0.8 / len(keys)
    # A constrained layout widens the left margin to fit the longest label.
    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.18 * len(items) * len(keys)),
                           layout="constrained")
    for j, key in enumerate(keys):
        found = [find(rows, part="layers", layer=r["layer"], pass_=r["pass_"], backend=key)
                 for r in items]
        ax.barh([i + j * height for i in range(len(items))],
                [row["median_ms"] if row else 0 for row in found], height, label=BACKENDS[key])
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(items))])
    ax.set_yticklabels([f"{r['layer']} {r['shape']} {SHORT[r['pass_']]}" for r in items],
                       fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"median time (ms), batch {items[0]['batch']}")
    ax.set_title("Per layer: forward (fwd) and backward (bwd) time")
    ax.legend()
    _save(plt, fig, path)


def plot_throughput(plt, rows, path):
    """Images/s against batch size: a panel per mode, a line per model, backend, precision."""
    rows = [r for r in rows if r["part"] == "models" and not r.get("error")]
    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, mode in zip(axes, ("inference", "train")):
        series = sorted({(r["model"], r["backend"], r["precision"]) for r in rows
                         if r["mode"] == mode})
        for model, key, precision in series:
            points = sorted((r["batch"], r["images_per_s"]) for r in rows
                            if (r["model"], r["backend"], r["precision"], r["mode"])
                            == (model, key, precision, mode))
            ax.plot(*zip(*points), marker="o", label=f"{model} {BACKENDS[key]}"
                    + ("" if precision == "float32" else f" {precision}"))
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


def plot_conv_gflops(plt, rows, path):
    """Achieved GFLOP/s of every conv pass, against the measured sgemm ceiling, per device."""
    backends = _present(rows, "layers")
    pairs = [p for p in DEVICE_PAIRS if p[0] in backends]
    fig, axes = plt.subplots(len(pairs), 1, figsize=(11, 4.5 * len(pairs)), squeeze=False)
    for ax, (ours, theirs) in zip(axes[:, 0], pairs):
        convs = [r for r in _items(rows, "layers") if r["kind"] == "conv"]
        for offset, key in ((-0.2, ours), (0.2, theirs)):
            rates = [(find(rows, part="layers", layer=r["layer"], pass_=r["pass_"], backend=key)
                      or {}).get("gflop_per_s", 0) for r in convs]
            if any(rates):
                ax.bar([i + offset for i in range(len(convs))], rates, 0.4, label=BACKENDS[key])
        for c in (c for c in _ceilings(rows) if c["backend"] == ours):
            ax.axhline(best_gflop_per_s(c), color="k", linestyle="--",
                       label=f"{c['shape']} ceiling, {best_gflop_per_s(c):.0f} GFLOP/s")
        ax.set_xticks(range(len(convs)))
        ax.set_xticklabels([f"{r['layer']} {SHORT[r['pass_']]}" for r in convs], rotation=75,
                           fontsize=7)
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"Convolutions, achieved GFLOP/s ({LABELS[ours]})")
        ax.legend(fontsize=7)
    _save(plt, fig, path)


def write_outputs(out, report, rows):
    """report.md, a CSV per part of the rows (layers.csv, models.csv, ...) and the plots
    into folder ``out`` -> the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.md"]
    atomic_write_text(written[0], report)
    for part in dict.fromkeys(r["part"] for r in rows):
        written.append(out / f"{part}.csv")
        write_csv(written[-1], [r for r in rows if r["part"] == part])
    plt = _pyplot()
    if plt is None:
        print("matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return written
    ok = [r for r in rows if not r.get("error")]
    for name, plot, part in (("layers.png", plot_layers, "layers"),
                             ("conv_gflops.png", plot_conv_gflops, "conv"),
                             ("throughput.png", plot_throughput, "models")):
        if any(r["part"] == part or (part == "conv" and r.get("kind") == "conv"
                                     and r["part"] == "layers") for r in ok):
            plot(plt, rows, out / name)
            written.append(out / name)
    return written
