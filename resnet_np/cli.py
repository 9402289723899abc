"""The ``resnet-np`` command (also ``python -m resnet_np``).

    resnet-np train        train a ResNet (no arguments: ResNet-18 on the bundled digits)
    resnet-np evaluate     top-1/top-5, per-class precision and recall, confusion matrix
    resnet-np predict      top-5 classes of image files
    resnet-np convert      torchvision .pth weights to a NumPy .npz
    resnet-np export       weights to an ONNX file (onnxruntime runs it: predict --onnx)
    resnet-np gradcheck    finite-difference checks of every backward pass
    resnet-np bench        speed of forward and backward passes

Every error the user can fix (a missing file, a bad value, weights of another
architecture...) is printed as one line, ``resnet-np: error: ...``, with a
non-zero exit status; ``--traceback`` shows the full traceback instead.
"""
import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

from . import __version__, backend
from .models import MODELS

PROG = "resnet-np"
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
# Subcommands whose arguments go, unparsed, to ``main(argv)`` of these modules.
DELEGATED = {"gradcheck": "resnet_np.gradcheck", "bench": "resnet_np.bench"}
# Errors that come from the user's input or environment, shown as one line.
USER_ERRORS = (OSError, ValueError, ImportError, RuntimeError)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``resnet-np: error: ...``."""

    def error(self, message):
        hint = f" (see `{self.prog} --help`)" if self.prog != PROG else ""
        self.exit(EXIT_USAGE, f"{PROG}: error: {printable(message)}{hint}\n")


# --------------------------------------------------------------------------- #
# Argument types: reject NaN, inf and out-of-range values while parsing
# --------------------------------------------------------------------------- #
def _number(kind, check, requirement):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value) or not check(value):
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text!r}")
        return value
    return parse


positive_float = _number(float, lambda v: v > 0, "a finite number > 0")
non_negative_float = _number(float, lambda v: v >= 0, "a finite number >= 0")
unit_float = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
momentum_float = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")


def weights_path(text):
    """--weights: a file as given; a training run's folder means its best.npz (said on stderr)."""
    path = Path(text)
    if not path.is_dir():
        return text
    best = path / "best.npz"
    if not best.is_file():
        raise argparse.ArgumentTypeError(
            f"{printable(text)} is a folder without best.npz; give a weights file"
            + (f" (it has {printable(str(path / 'last.npz'))})" if (path / "last.npz").is_file()
               else ""))
    print(f"{PROG}: using {printable(str(best))}, the best checkpoint of the run in "
          f"{printable(text)}", file=sys.stderr)
    return str(best)


def printable(text):
    """``text`` with control characters (newlines, terminal escape codes) escaped as
    ``\\n``, ``\\x1b``..., so a file or class name cannot break a line or drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in str(text))


# --------------------------------------------------------------------------- #
# The parser
# --------------------------------------------------------------------------- #
def build_parser():
    """The ``resnet-np`` parser with its six subcommands."""
    parser = _Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="ResNets written from scratch in NumPy (CuPy on a GPU): train, evaluate,\n"
                    "predict, convert torchvision weights, check gradients, benchmark.",
        epilog="examples:\n"
               "  resnet-np train                        # ResNet-18 on the bundled digits\n"
               "  resnet-np train --dataset cifar10 --data-dir data --epochs 30\n"
               "  resnet-np evaluate --weights runs/digits/best.npz\n"
               "  resnet-np convert resnet50-0676ba61.pth resnet50.npz\n"
               "  resnet-np predict cat.jpg --weights resnet50.npz\n\n"
               "`resnet-np COMMAND --help` describes each command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="on an error, show the full Python traceback instead of one line")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(commands)
    _add_evaluate(commands)
    _add_predict(commands)
    _add_convert(commands)
    _add_export(commands)
    _add_delegated(commands)
    return parser


def _command(commands, name, summary, description, examples):
    return commands.add_parser(name, help=summary, description=description,
                               epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def _default(name):
    """The TrainConfig default of a setting, for the help texts."""
    from .training import TrainConfig
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}[name]


def _add_train(commands):
    p = _command(
        commands, "train", "train a ResNet on digits, CIFAR-10/100 or an image folder",
        "Train a ResNet. Without arguments: ResNet-18 (CIFAR stem) on scikit-learn's\n"
        "handwritten digits at 16x16, 4 epochs of SGD with momentum, one warm-up epoch\n"
        "then a cosine decay: about a minute on two CPU cores, over 95% test accuracy.\n\n"
        "The run's folder (--out) receives last.npz (every epoch, and on Ctrl-C),\n"
        "best.npz (best test top-1), metrics.jsonl, curves.png, confusion_matrix.png\n"
        "and config.json; one run at a time uses a folder. --resume continues a run\n"
        "exactly where it stopped, on the same data (--allow-data-change to go on with\n"
        "other data) and for more --epochs if given. The first Ctrl-C or SIGTERM\n"
        "finishes the current batch, saves last.npz and stops (exit status 130 or\n"
        "143); a second one stops at once, saving nothing. A run that diverges (NaN)\n"
        "stops with an error, and its checkpoints keep the last finite state.\n\n"
        "Under `mpiexec -n N` the N processes train one model (data parallel; MPI, or\n"
        "NCCL with --device gpu): rank 0's weights at the start, gradients averaged.\n"
        "Each epoch's shuffled order is split into N disjoint shares, the last (fewer\n"
        "than N) images of the order dropped, never padded; --batch-size is per process\n"
        "(N x it images per step) and --lr is used as given, not scaled. Rank 0 alone\n"
        "logs and writes files; a run resumes on the same N. Every rank checks at the\n"
        "start that it holds the data and settings of rank 0, and SIGTERM ends the job\n"
        "within seconds. Install: pip install 'resnet-np[mpi]'.",
        ["resnet-np train",
         "resnet-np train --epochs 5 --lr 0.1 --out runs/digits",
         "resnet-np train --dataset cifar10 --data-dir data --epochs 30 --batch-size 128",
         "resnet-np train --dataset folder --data-dir photos --image-size 64 --model resnet34",
         "resnet-np train --resume runs/digits          # or runs/digits/last.npz",
         "resnet-np train --resume runs/digits --epochs 8   # extend it to 8 epochs",
         "resnet-np train --limit 256 --epochs 2 --no-progress     # a quick smoke test",
         "mpiexec -n 2 -genv OMP_NUM_THREADS 1 resnet-np train --sync-bn   # MPICH",
         "mpirun -n 2 -x OMP_NUM_THREADS=1 resnet-np train --sync-bn        # Open MPI "
         "(as root: --allow-run-as-root)"])
    _add_model_flags(p.add_argument_group("model"))
    data = p.add_argument_group("data")
    _add_data_flags(data, for_training=True)
    data.add_argument("--limit", type=positive_int, metavar="N",
                      help="train on N images only (a seeded random subset), for quick runs")
    data.add_argument("--test-limit", type=positive_int, metavar="N",
                      help="evaluate on N test images only")
    data.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                      help="no random crops and flips of the training images")
    _add_optimisation_flags(p.add_argument_group("optimisation"))
    _add_precision_flags(p.add_argument_group(
        "mixed precision",
        "--amp computes in float16 with float32 master weights updated by the optimizer\n"
        "(--amp bfloat16 needs ml_dtypes on NumPy and is not on the GPU; the layers do not\n"
        "take NumPy's bfloat16 yet, so it is refused before training), batch norm and the\n"
        "loss in float32, and dynamic loss scaling (torch.amp's rule). A step whose\n"
        "gradients overflow is skipped (the weights unchanged; the learning-rate schedule\n"
        "still advances, as in torch) and the scale halved; it doubles after 2000 clean\n"
        "steps. Checkpoints hold the float32 masters and the scaler's state; a resumed\n"
        "run keeps its precision. Needs --dtype float32; one process only (no mpiexec)."))
    run = p.add_argument_group("run")
    _add_device_flag(run, default=None)
    run.add_argument("--out", metavar="DIR",
                     help="the run's folder (default: runs/<date-time>-<model>-<dataset>, "
                          "or the checkpoint's folder with --resume)")
    run.add_argument("--resume", metavar="PATH",
                     help="continue the run saved in this checkpoint (or in a run folder's "
                          "last.npz); its settings are kept (only --device, --data-dir, --out "
                          "and --epochs may change: more --epochs extend the run, its "
                          "schedule recomputed from the current step)")
    run.add_argument("--allow-data-change", action="store_true",
                     help="with --resume: go on although the data differ from the "
                          "checkpoint's (the steps per epoch, so the schedule, and the "
                          "normalisation change; the run says how)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--sync-bn", dest="sync_bn", action="store_const", const=True,
                     help="under mpiexec: batch norm with the statistics of the whole batch of "
                          "every process, not of each process's share (default: per process)")
    p.set_defaults(handler=_train)


def _add_model_flags(group):
    group.add_argument("--model", choices=list(MODELS), metavar="NAME",
                       help=f"one of {', '.join(MODELS)} (default: {_default('model')})")
    stem = group.add_mutually_exclusive_group()
    stem.add_argument("--cifar-stem", dest="cifar_stem", action="store_const", const=True,
                      help="3x3 stride-1 first convolution, no max-pool "
                           "(default for images of at most 64 pixels)")
    stem.add_argument("--imagenet-stem", dest="cifar_stem", action="store_const", const=False,
                      help="7x7 stride-2 first convolution and max-pool (default above 64 pixels)")
    group.add_argument("--dtype", choices=["float32", "float64"],
                       help=f"parameter and activation precision (default: {_default('dtype')})")


def _add_precision_flags(group):
    group.add_argument("--amp", nargs="?", const="float16", choices=["float16", "bfloat16"],
                       metavar="DTYPE",
                       help="mixed precision in DTYPE: float16 (when DTYPE is left out) or "
                            "bfloat16 (default: off, everything in --dtype)")
    group.add_argument("--loss-scale", dest="loss_scale", type=positive_float, metavar="S",
                       help=f"initial loss scale of --amp (default: {_default('loss_scale'):g})")


def _add_optimisation_flags(group):
    group.add_argument("--epochs", type=positive_int, metavar="N",
                       help=f"(default: {_default('epochs')})")
    group.add_argument("--batch-size", type=positive_int, metavar="N",
                       help=f"(default: {_default('batch_size')})")
    group.add_argument("--optimizer", choices=["sgd", "adam", "adamw"],
                       help=f"(default: {_default('optimizer')})")
    group.add_argument("--lr", type=positive_float, metavar="LR",
                       help="initial learning rate (default: 0.05 for sgd, 0.001 for adam/adamw)")
    group.add_argument("--momentum", type=momentum_float, metavar="M",
                       help=f"SGD momentum, or Adam's beta1 (default: {_default('momentum')})")
    group.add_argument("--weight-decay", type=non_negative_float, metavar="WD",
                       help=f"(default: {_default('weight_decay')})")
    group.add_argument("--schedule", choices=["step", "multistep", "cosine", "constant"],
                       help="learning-rate schedule, updated after every batch: step (x "
                            "lr-decay-rate every third of the run), multistep (at 1/2 and 3/4), "
                            f"cosine (to 0), constant (default: {_default('schedule')})")
    group.add_argument("--lr-decay-rate", type=non_negative_float, metavar="F",
                       help="factor of the step and multistep schedules "
                            f"(default: {_default('lr_decay_rate')})")
    group.add_argument("--warmup-epochs", type=non_negative_int, metavar="N",
                       help="epochs of linear warm-up from 0.1 x lr "
                            "(default: 1, or 0 for a 1-epoch run)")
    group.add_argument("--label-smoothing", type=unit_float, metavar="EPS",
                       help=f"(default: {_default('label_smoothing')})")
    group.add_argument("--seed", type=non_negative_int,
                       help="seeds weights, shuffling and augmentation "
                            f"(default: {_default('seed')})")


def _add_data_flags(group, for_training):
    from .data import DATASETS
    group.add_argument("--dataset", choices=list(DATASETS),
                       help="digits: bundled with scikit-learn, no download; cifar10/cifar100: "
                            "the official archives in --data-dir; folder: one subfolder of "
                            "images per class in --data-dir (default: "
                            + (f"{_default('dataset')})" if for_training
                               else "the one the weights were trained on)"))
    group.add_argument("--data-dir", metavar="DIR",
                       help="where CIFAR or the image folder lies (CIFAR default: ./data)")
    group.add_argument("--image-size", type=positive_int, metavar="PX",
                       help="side of the square images (default: "
                            + ("16 for digits, whose 8x8 scans gain nothing from more; 32 "
                               "otherwise)" if for_training
                               else "the size the weights were trained at, else 32)"))


def _add_device_flag(group, default="cpu"):
    group.add_argument("--device", choices=["cpu", "gpu"], default=default,
                       help="cpu (NumPy) or gpu (CuPy) (default: cpu)")


def _add_weights_flags(parser, weights_group=None):
    """--weights (in ``weights_group``, an exclusive group, if given) and --model."""
    (weights_group or parser).add_argument(
        "--weights", required=weights_group is None, metavar="PATH", type=weights_path,
        help="a .npz checkpoint or weights file (.pth with PyTorch installed), or a "
             "training run's folder (its best.npz)")
    parser.add_argument("--model", choices=list(MODELS), metavar="NAME",
                        help="the architecture expected (default: whatever the weights hold)")


def _add_evaluate(commands):
    p = _command(
        commands, "evaluate", "measure top-1/top-5 and per-class precision and recall",
        "Evaluate weights (a training checkpoint or converted weights) on a dataset:\n"
        "print top-1 and top-5 accuracy and per-class precision and recall, and write\n"
        "a confusion-matrix PNG. The dataset, image size and normalisation default to\n"
        "those the checkpoint was trained with.",
        ["resnet-np evaluate --weights runs/digits/best.npz",
         "resnet-np evaluate --weights runs/c10/last.npz --split train --limit 1000",
         "resnet-np evaluate --weights r18.npz --dataset folder --data-dir val --image-size 224"])
    _add_weights_flags(p)
    _add_data_flags(p, for_training=False)
    p.add_argument("--split", choices=["train", "test"], default="test", help="(default: test)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="evaluate on N images only")
    p.add_argument("--batch-size", type=positive_int, default=64, metavar="N",
                   help="(default: 64)")
    _add_device_flag(p)
    p.add_argument("--out", metavar="DIR",
                   help="where to write the confusion-matrix PNG (default: the weights' folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_evaluate)


def _add_predict(commands):
    p = _command(
        commands, "predict", "print the top-5 classes of image files",
        "Classify image files. Weights converted from torchvision get torchvision's\n"
        "ImageNet preprocessing (resize 256, centre crop 224) and class names; a\n"
        "resnet-np checkpoint gets the image size, normalisation and class names it\n"
        "was trained with.",
        ["resnet-np predict cat.jpg dog.png --weights resnet50.npz",
         "resnet-np predict cat.jpg --weights resnet18-f37072fd.pth --topk 3   # needs PyTorch",
         "resnet-np predict seven.png --weights runs/digits/best.npz",
         "resnet-np predict cat.jpg --onnx resnet50.onnx        # needs onnxruntime"])
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    source = p.add_mutually_exclusive_group(required=True)
    _add_weights_flags(p, source)
    source.add_argument("--onnx", metavar="PATH",
                        help="a model written by `resnet-np export`, run by onnxruntime "
                             "(preprocessing and class names from its metadata)")
    p.add_argument("--topk", type=positive_int, default=5, metavar="K", help="(default: 5)")
    _add_device_flag(p)
    p.set_defaults(handler=_predict)


def _add_convert(commands):
    p = _command(
        commands, "convert", "turn torchvision .pth weights into a NumPy .npz",
        "Convert a torchvision state_dict (.pth; also a dict holding it under\n"
        "'state_dict' or 'model') into an .npz that resnet-np loads without PyTorch.\n"
        "The architecture is read from the weights. Needs PyTorch.",
        ["resnet-np convert resnet50-0676ba61.pth           # writes resnet50-0676ba61.npz",
         "resnet-np convert my_resnet18.pth weights/r18.npz --model resnet18"])
    p.add_argument("src", metavar="SRC.pth", help="the PyTorch weights")
    p.add_argument("dst", nargs="?", metavar="DST.npz", help="(default: SRC with suffix .npz)")
    p.add_argument("--model", choices=list(MODELS), metavar="NAME",
                   help="the architecture expected; checked against the weights")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.set_defaults(handler=_convert)


def _add_export(commands):
    p = _command(
        commands, "export", "write weights as an ONNX model (opset 17+, dynamic batch)",
        "Export weights to ONNX, built from resnet-np's own layers (no PyTorch). The\n"
        "graph's batch dimension is dynamic; its metadata holds the preprocessing\n"
        "(image size, mean, std) and the class names. Needs the onnx package.",
        ["resnet-np export --weights resnet50.npz resnet50.onnx",
         "resnet-np export --weights runs/digits/best.npz digits.onnx --fold-bn",
         "resnet-np export --weights r18.npz r18.onnx --height 320 --width 480 --opset 18"])
    p.add_argument("out", metavar="OUT.onnx", help="the file to write (its folder must exist)")
    _add_weights_flags(p)
    p.add_argument("--height", type=positive_int, metavar="PX",
                   help="input height (default: the width if given, else the image size "
                        "the weights were trained at, else 224)")
    p.add_argument("--width", type=positive_int, metavar="PX",
                   help="input width (default: the height)")
    p.add_argument("--dynamic-size", action="store_true",
                   help="accept any height and width at run time")
    p.add_argument("--opset", type=positive_int, default=17,
                   help="ONNX opset, 17 or newer (default: 17)")
    p.add_argument("--fold-bn", action="store_true",
                   help="fold each batch norm into the convolution before it")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(handler=_export)


def _add_delegated(commands):
    summaries = {"gradcheck": "compare every backward pass with finite differences",
                 "bench": "time forward and backward passes"}
    for name, summary in summaries.items():
        # No options of its own: every argument, --help included, goes to the tool.
        p = commands.add_parser(name, help=summary, add_help=False,
                                description=f"{summary} (`resnet-np {name} --help` lists "
                                            "its options)")
        p.set_defaults(handler=_delegate)


# --------------------------------------------------------------------------- #
# Handlers
# --------------------------------------------------------------------------- #
def _train(args, rest):
    from . import distributed
    # Under mpiexec: one communicator; a rank that fails ends every rank, with its message.
    comm = distributed.init() if distributed.world_size() > 1 else None
    with distributed.abort_on_error(comm, PROG, args.traceback, USER_ERRORS):
        return _train_on(args, comm)


def _train_on(args, comm):
    from .training import TrainConfig, Trainer
    backend.retain_freed_memory()      # a step's buffers are reused, not page-faulted afresh
    given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}
    progress = not args.no_progress
    ranks = {} if comm is None else {"comm": comm}
    if args.allow_data_change and not args.resume:
        raise ValueError("--allow-data-change applies to --resume only")
    if args.resume:
        trainer = Trainer.resume(args.resume, args.out, overrides=given, progress=progress,
                                 allow_data_change=args.allow_data_change, **ranks)
    else:
        config = TrainConfig(**{k: v for k, v in given.items() if v is not None})
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{config.model}-{config.dataset}"
        if comm is not None:
            name = comm.bcast_object(name)  # one folder for every rank
        trainer = Trainer(config, args.out or Path("runs") / name, progress=progress, **ranks)
    return trainer.fit()["exit_status"]


def _evaluate(args, rest):
    from .convert import load_pretrained
    from .data import IMAGENET_MEAN, IMAGENET_STD, DataLoader
    from .training import evaluate, format_report, plot_confusion_matrix
    from .training.metrics import format_accuracy
    model, config = load_pretrained(args.weights, args.model, args.device)
    dataset = _evaluation_set(args, config)
    loader = DataLoader(dataset, min(args.batch_size, len(dataset)),
                        mean=config.get("mean", IMAGENET_MEAN),
                        std=config.get("std", IMAGENET_STD))
    result = evaluate(model, loader, args.device, progress=not args.no_progress)
    cm = result.confusion_matrix(len(dataset.classes))
    classes = [printable(name) for name in dataset.classes]
    print(f"{printable(dataset.name)}: {result.count} images, loss {result.loss:.4f}, "
          f"{format_accuracy(result.top1, result.top5)}")
    print(format_report(cm, classes))
    weights = Path(args.weights)
    out = Path(args.out) if args.out else weights.parent
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"confusion_matrix_{weights.stem}_{args.split}.png"
    plot_confusion_matrix(cm, classes, png, title=f"{printable(weights.name)} on "
                                                 f"{printable(dataset.name)}")
    print(f"wrote {printable(png)}")
    return 0


def _evaluation_set(args, config):
    """The dataset to evaluate on: the flags given, else what the weights were trained on."""
    from .data import load_dataset
    name = args.dataset or config.get("dataset")
    if name is None:
        raise ValueError(f"{args.weights} does not say which dataset it was trained on: "
                         "pass --dataset (and --data-dir)")
    data_dir = args.data_dir or (config.get("data_dir") if name == config.get("dataset") else None)
    # --limit applies before the images are resized: a few large ones need little memory.
    dataset = load_dataset(name, data_dir, args.split, args.image_size or config.get("image_size"),
                           limit=args.limit, seed=0)
    if len(dataset.classes) != config["num_classes"]:
        raise ValueError(f"{dataset.name} has {len(dataset.classes)} classes but the model "
                         f"in {args.weights} has {config['num_classes']}")
    return dataset


def _predict(args, rest):
    from .predict import predict, predict_onnx
    run, source = (predict_onnx, args.onnx) if args.onnx else (predict, args.weights)
    run(args.images, source, model=args.model, topk=args.topk, device=args.device)
    return 0


def _convert(args, rest):
    from .convert import check_convertible, convert
    from .training import describe_model
    check_convertible(args.src)      # before --force: an .npz has nothing to convert
    dst = Path(args.dst) if args.dst else Path(args.src).with_suffix(".npz")
    if dst.exists() and not args.force:
        raise FileExistsError(f"{dst} exists; pass --force to replace it")
    dst, config = convert(args.src, dst, model=args.model)
    print(f"wrote {printable(dst)}: {describe_model(config)}")
    return 0


def _export(args, rest):
    from .onnx import export_weights
    from .training import describe_model
    size = None if not (args.height or args.width) else (args.height or args.width,
                                                         args.width or args.height)
    proto, config = export_weights(args.weights, args.out, args.model, size, args.dynamic_size,
                                   args.opset, args.fold_bn, args.force)
    shape = proto.graph.input[0].type.tensor_type.shape.dim
    print(f"wrote {printable(args.out)}: {describe_model(config)}, opset {args.opset}, input "
          + " x ".join(d.dim_param or str(d.dim_value) for d in shape))
    return 0


def _delegate(args, rest):
    import importlib
    module_name = DELEGATED[args.command]
    try:
        tool = getattr(importlib.import_module(module_name), "main", None)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        tool = None
    if tool is None:
        raise ImportError(f"`{PROG} {args.command}` is not available: this installation has "
                          f"no {module_name}.main")
    return tool(rest) or 0


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #
def main(argv=None):
    """Run the ``resnet-np`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status on success; errors raise SystemExit with a
    non-zero status after one line on stderr.
    """
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if rest and args.command not in DELEGATED:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.handler(args, rest)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        # The reader of our output has gone (`resnet-np ... | head`): stop quietly, and
        # keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(EXIT_ERROR) from None
    except USER_ERRORS as err:
        if args.traceback:
            raise
        # One line: the message's own line breaks become spaces; a name's control
        # characters (terminal escape codes) are shown escaped.
        message = printable(" ".join(str(err).split())) or type(err).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
