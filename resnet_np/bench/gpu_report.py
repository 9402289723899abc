"""The report of the GPU check (:mod:`.gpu`): report.md, layers.csv, models.csv and plots.

Reads what the parts left in ``OUT/parts`` (any of them may be missing or
partial: the report says which) and writes into ``OUT``:

    report.md     environment, test summary, the GPU targets with their measured
                  ratios, the kernels' speed-ups, the per-layer and the model tables
    layers.csv    one row per (layer shape, backend): forward and backward medians
    models.csv    one row per (framework, precision, model, batch, mode): median,
                  images/s, peak GPU memory
    layers.png    speed-up of the kernels over the generic CuPy code, per layer
    models.png    resnet-np's time over PyTorch's, per model run
"""
import json
import math
import platform
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from .. import backend
from .report import _pyplot, _save, write_atomically, write_csv

LAYER_FIELDS = ["backend", "kind", "shape", "uses", "batch", "forward_ms", "backward_ms", "error"]
MODEL_FIELDS = ["framework", "precision", "model", "batch", "mode", "median_ms", "images_per_s",
                "peak_mb", "error"]
# (description, mode, precision, measure, bound): measured on ResNet-50 at batch 64
TARGETS = [("train step, float32 (TF32 off on both sides)", "train", "float32", "time", 1.5),
           ("train step, TF32", "train", "tf32", "time", 1.5),
           ("train step, mixed precision (cuDNN channels_last AMP)", "train", "amp", "time", 2.0),
           ("inference, float32", "inference", "float32", "time", 1.5),
           ("peak memory of a float32 train step", "train", "float32", "memory", 1.5)]
TARGET_MODEL, TARGET_BATCH = "resnet50", 64


# --------------------------------------------------------------------------- #
# Reading the parts
# --------------------------------------------------------------------------- #
def _rows(paths):
    rows = []
    for path in paths:
        try:
            rows += json.loads(Path(path).read_text())["rows"]
        except (OSError, ValueError, KeyError):
            continue
    return rows


def load_parts(out):
    """-> (layer rows, model rows, test summary or None) from OUT/parts."""
    parts = Path(out) / "parts"
    layers = _rows(sorted(parts.glob("layers-*.json")))
    try:
        uses = json.loads((parts / "layer_uses.json").read_text())
    except (OSError, ValueError):
        uses = {}
    for row in layers:
        row["uses"] = uses.get(row["shape"], 1)
    models = _rows(sorted(parts.glob("models-*.json")))
    return layers, models, test_summary(parts / "pytest.xml")


def test_summary(junit_xml):
    """{tests, failures, errors, skipped, failed: [names]} from pytest's JUnit XML, or None."""
    try:
        root = ET.parse(junit_xml).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    summary = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    summary["failed"] = [f"{case.get('classname')}::{case.get('name')}"
                         for case in suite.iter("testcase")
                         if case.find("failure") is not None or case.find("error") is not None]
    summary["seconds"] = float(suite.get("time", 0))
    return summary


# --------------------------------------------------------------------------- #
# Tables
# --------------------------------------------------------------------------- #
def _fmt(value, digits=2):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _by_layer(layer_rows):
    """{(shape, kind): {backend: row}}, in the order first met."""
    table = {}
    for row in layer_rows:
        table.setdefault((row["shape"], row["kind"]), {})[row["backend"]] = row
    return table


def _ratio(a, b):
    return a / b if a is not None and b else None


def kernel_speedups(layer_rows):
    """Per layer kind and pass: total generic time / total kernel time over every layer
    of the model (each shape weighted by how often the model uses it)."""
    sums = {}
    for (shape, kind), rows in _by_layer(layer_rows).items():
        generic, kernels = rows.get("generic", {}), rows.get("kernels", {})
        for pass_ in ("forward", "backward"):
            g, k = generic.get(f"{pass_}_ms"), kernels.get(f"{pass_}_ms")
            if g is None or k is None:
                continue
            uses = generic.get("uses", 1)
            total = sums.setdefault((kind, pass_), [0.0, 0.0, 0])
            total[0] += g * uses
            total[1] += k * uses
            total[2] += 1
    return {key: dict(generic_ms=g, kernels_ms=k, layers=n, speedup=g / k if k else None)
            for key, (g, k, n) in sums.items()}


def _kernel_table(layer_rows):
    speedups = kernel_speedups(layer_rows)
    if not speedups:
        return ["No layer was timed on both the generic path and the kernels."]
    lines = ["| layers | pass | shapes | generic CuPy ms | kernels ms | speed-up | keep |",
             "|---|---|---:|---:|---:|---:|---|"]
    names = {"conv": "conv (im2col/col2im kernels)", "bn": "batch norm", "maxpool": "max-pool",
             "fc": "fc (no kernel: same path)", "loss": "softmax cross-entropy"}
    for (kind, pass_), s in speedups.items():
        keep = "-" if kind == "fc" else ("yes" if (s["speedup"] or 0) > 1 else "no")
        lines.append(f"| {names.get(kind, kind)} | {pass_} | {s['layers']} | "
                     f"{_fmt(s['generic_ms'])} | {_fmt(s['kernels_ms'])} | "
                     f"{_fmt(s['speedup'])}x | {keep} |")
    lines.append("")
    lines.append("Times are summed over every layer of the model (each shape times its uses). "
                 "A kernel is kept where its speed-up exceeds 1.")
    return lines


def _layer_table(layer_rows):
    lines = ["| layer | uses | pass | generic CuPy ms | kernels ms | PyTorch ms | kernels speed-up "
             "| kernels / PyTorch |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for (shape, kind), rows in _by_layer(layer_rows).items():
        errors = [f"{k}: {r['error']}" for k, r in rows.items() if r.get("error")]
        uses = next(iter(rows.values())).get("uses", 1)
        for pass_ in ("forward", "backward"):
            g, k, t = (rows.get(b, {}).get(f"{pass_}_ms") for b in ("generic", "kernels", "torch"))
            lines.append(f"| {shape} | {uses} | {pass_} | {_fmt(g, 3)} | {_fmt(k, 3)} | "
                         f"{_fmt(t, 3)} | {_fmt(_ratio(g, k))} | {_fmt(_ratio(k, t))} |")
        if errors:
            lines.append(f"| {shape} | | errors | {'; '.join(errors)} | | | | |")
    return lines


def _model_pairs(model_rows):
    """{(model, batch, mode, precision): {framework: row}}."""
    pairs = {}
    for row in model_rows:
        key = (row["model"], row["batch"], row["mode"], row["precision"])
        pairs.setdefault(key, {})[row["framework"]] = row
    return pairs


def _model_table(model_rows):
    lines = ["| model | batch | mode | precision | resnet-np ms | PyTorch ms | ratio "
             "| resnet-np img/s | PyTorch img/s | resnet-np peak MB | PyTorch peak MB | memory ratio |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (model, batch, mode, precision), rows in _model_pairs(model_rows).items():
        ours, torch = rows.get("resnet-np", {}), rows.get("torch", {})
        lines.append(
            f"| {model} | {batch} | {mode} | {precision} | {_fmt(ours.get('median_ms'), 1)} | "
            f"{_fmt(torch.get('median_ms'), 1)} | "
            f"{_fmt(_ratio(ours.get('median_ms'), torch.get('median_ms')))} | "
            f"{_fmt(ours.get('images_per_s'), 0)} | {_fmt(torch.get('images_per_s'), 0)} | "
            f"{_fmt(ours.get('peak_mb'), 0)} | {_fmt(torch.get('peak_mb'), 0)} | "
            f"{_fmt(_ratio(ours.get('peak_mb'), torch.get('peak_mb')))} |")
        for name, row in (("resnet-np", ours), ("PyTorch", torch)):
            if row.get("error"):
                lines.append(f"| {model} | {batch} | {mode} | {precision} | {name} failed: "
                             f"{row['error']} | | | | | | | |")
    return lines


def targets(model_rows):
    """[(description, bound, measured ratio or None)] of the GPU targets (TARGETS)."""
    pairs = _model_pairs(model_rows)
    result = []
    for description, mode, precision, measure, bound in TARGETS:
        rows = pairs.get((TARGET_MODEL, TARGET_BATCH, mode, precision), {})
        field = "median_ms" if measure == "time" else "peak_mb"
        ratio = _ratio(rows.get("resnet-np", {}).get(field), rows.get("torch", {}).get(field))
        result.append((description, bound, ratio))
    return result


def _target_table(model_rows):
    lines = [f"{TARGET_MODEL}, batch {TARGET_BATCH}, 224x224: resnet-np over PyTorch+cuDNN.", "",
             "| target | bound | measured | met |", "|---|---:|---:|---|"]
    for description, bound, ratio in targets(model_rows):
        met = "-" if ratio is None else ("yes" if ratio <= bound else "no")
        measured = "-" if ratio is None else f"{ratio:.2f}x"
        lines.append(f"| {description} | <= {bound}x | {measured} | {met} |")
    return lines


def environment():
    """Lines naming the GPU and the versions of everything timed."""
    lines = [f"- Python {platform.python_version()} on {platform.machine()}"]
    cp = backend._cupy
    if cp is not None and backend.gpu_available():
        try:
            props = cp.cuda.runtime.getDeviceProperties(0)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            runtime = cp.cuda.runtime.runtimeGetVersion()
            lines.append(f"- GPU: {name}, {props['totalGlobalMem'] / 2 ** 30:.0f} GiB; "
                         f"CuPy {cp.__version__}, CUDA runtime {runtime}")
        except Exception as err:
            lines.append(f"- GPU: unknown ({type(err).__name__})")
    else:
        lines.append("- no GPU: a dry run on NumPy and torch-CPU")
    try:
        import torch
        cudnn = torch.backends.cudnn.version() if torch.cuda.is_available() else None
        lines.append(f"- PyTorch {torch.__version__}" + (f", cuDNN {cudnn}" if cudnn else ""))
    except ImportError:
        lines.append("- PyTorch not installed")
    return lines


def render(config, layer_rows, model_rows, tests, problems, seconds):
    """The Markdown report."""
    dry = " (DRY RUN: tiny shapes on the CPU, not a measurement)" if config["dry_run"] else ""
    lines = ["# GPU check", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {seconds:.0f} s in all{dry}.",
             ""]
    lines += environment() + [""]
    lines += ["## Parts that failed or ran out of time", ""]
    lines += [f"- {part}: {why}" for part, why in problems.items()] or ["None."]
    lines += ["", "## Tests (`pytest -m gpu`)", ""]
    if tests is None:
        lines.append("Not run, or no results (see pytest.txt).")
    else:
        passed = tests["tests"] - tests["failures"] - tests["errors"] - tests["skipped"]
        lines.append(f"{tests['tests']} tests: {passed} "
                     f"passed, {tests['failures']} failed, {tests['errors']} errors, "
                     f"{tests['skipped']} skipped, in {tests['seconds']:.0f} s.")
        lines += [f"- failed: `{name}`" for name in tests["failed"][:40]]
    lines += ["", "## Targets", ""] + _target_table(model_rows)
    lines += ["", f"## Kernels against the generic CuPy code ({config['layer_model']}, batch "
              f"{config['layer_batch']})", ""]
    if config["dry_run"]:
        lines += ["Dry run: the kernels column runs the CPU emulation of the kernels (one "
                  "thread after another), so its times say nothing of their speed.", ""]
    lines += _kernel_table(layer_rows)
    lines += ["", "## Every layer", ""] + _layer_table(layer_rows)
    lines += ["", "## Models", "",
              "Train step: forward, cross-entropy, backward (float32, TF32); mixed precision "
              "also runs the loss scaler and an SGD step, on both sides. Peak memory: CuPy's "
              "memory-pool high-water mark against torch.cuda.max_memory_allocated(), over the "
              "first run of each step. The kernels take float32 and float64 arrays: under mixed "
              "precision they serve the batch norms (float32) and the loss, not the float16 "
              "convolutions.", ""] + _model_table(model_rows)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- #
# Plots and files
# --------------------------------------------------------------------------- #
def plot_speedups(plt, layer_rows, path):
    labels, values = [], []
    for (shape, kind), rows in _by_layer(layer_rows).items():
        for pass_ in ("forward", "backward"):
            g = rows.get("generic", {}).get(f"{pass_}_ms")
            k = rows.get("kernels", {}).get(f"{pass_}_ms")
            if g and k:
                labels.append(f"{shape} {pass_[:3]}")
                values.append(g / k)
    if not values:
        return False
    fig, ax = plt.subplots(figsize=(8, max(3, 0.22 * len(values))))
    ax.barh(range(len(values)), values, color=["tab:green" if v > 1 else "tab:red" for v in values])
    ax.axvline(1, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(values)), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of the kernels over generic CuPy (log)")
    _save(plt, fig, path)
    return True


def plot_model_ratios(plt, model_rows, path):
    labels, values = [], []
    for (model, batch, mode, precision), rows in _model_pairs(model_rows).items():
        ratio = _ratio(rows.get("resnet-np", {}).get("median_ms"),
                       rows.get("torch", {}).get("median_ms"))
        if ratio:
            labels.append(f"{model} b{batch} {mode} {precision}")
            values.append(ratio)
    if not values:
        return False
    fig, ax = plt.subplots(figsize=(8, max(3, 0.3 * len(values))))
    ax.barh(range(len(values)), values)
    ax.set_yticks(range(len(values)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1, color="k", lw=0.8)
    ax.set_xlabel("resnet-np time / PyTorch time")
    _save(plt, fig, path)
    return True


def write_report(out, config, problems, seconds):
    """Everything into ``out`` from whatever the parts left -> the paths written."""
    out = Path(out)
    layer_rows, model_rows, tests = load_parts(out)
    report = render(config, layer_rows, model_rows, tests, problems, seconds)
    written = [out / "report.md"]
    write_atomically(written[0], lambda f: f.write(report.encode()))
    write_csv(out / "layers.csv", layer_rows, LAYER_FIELDS)
    write_csv(out / "models.csv", model_rows, MODEL_FIELDS)
    written += [out / "layers.csv", out / "models.csv"]
    plt = _pyplot()
    if plt is not None:
        if plot_speedups(plt, layer_rows, out / "layers.png"):
            written.append(out / "layers.png")
        if plot_model_ratios(plt, model_rows, out / "models.png"):
            written.append(out / "models.png")
    return written
