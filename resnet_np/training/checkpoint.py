"""Checkpoints: everything a run needs to continue, in one ``.npz`` file.

Layout of the archive (``numpy.load`` reads it, no pickle, no torch):

    model/<key>          one array per state_dict entry (``model/layer1.0.conv1.weight``)
    state/<path>         the arrays inside the optimizer, schedule and loader
                         states (momentum buffers, Adam moments, ...)
                         (a mixed-precision run also saves its loss scaler's state;
                         its weights are the float32 masters)
    meta                 a JSON string: format, version, ``config`` (model name,
                         num_classes, cifar_stem, dtype and the training
                         settings), ``progress`` (epoch, batch, history, best
                         accuracy) and the other states, with each array
                         replaced by ``{"__array__": "state/<path>"}``

Files are written atomically (see :mod:`.atomic`): a crash while saving
leaves the previous checkpoint intact.

Loading a checkpoint into a model of another architecture, or one with keys
missing, raises a :class:`CheckpointError` whose message is one line naming
the problem.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import backend
from ..models import build_model
from .atomic import atomic_write

FORMAT = "resnet-np checkpoint"
VERSION = 1
MODEL_KEYS = ("model", "num_classes", "cifar_stem", "dtype")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model at hand."""


@dataclass
class Checkpoint:
    """The content of a checkpoint file.

    Attributes
    ----------
    path : str
        Where it was read from (used in error messages).
    model_state : dict of str -> ndarray
        The model's state_dict.
    config : dict
        At least ``model``, ``num_classes``, ``cifar_stem`` and ``dtype``.
    optimizer, scheduler, loader : dict or None
        The state dicts of the optimizer, the learning-rate schedule and the
        training DataLoader.
    scaler : dict or None
        The :class:`~resnet_np.amp.GradScaler` state of a mixed-precision run.
    rng : dict or None
        The NumPy generator states of :func:`capture_rng_state`.
    progress : dict
        The trainer's counters (epoch, batch, history, ...).
    """

    path: str
    model_state: dict
    config: dict
    optimizer: dict = None
    scheduler: dict = None
    loader: dict = None
    rng: dict = None
    scaler: dict = None
    progress: dict = field(default_factory=dict)

    def describe(self):
        """E.g. ``"resnet18 (10 classes, CIFAR stem, float32)"``."""
        return describe_model(self.config)


# --------------------------------------------------------------------------- #
# Saving
# --------------------------------------------------------------------------- #
def save_checkpoint(path, model_state, config, optimizer=None, scheduler=None, loader=None,
                    rng=None, progress=None, scaler=None):
    """Write a checkpoint to ``path`` atomically.

    Parameters
    ----------
    path : str or path-like
        Destination ``.npz``; its folder must exist.
    model_state : mapping of str -> array
        ``model.state_dict()``; CuPy arrays are copied to the host.
    config : dict
        JSON-serialisable; must hold the keys of :data:`MODEL_KEYS`.
    optimizer, scheduler, loader, rng, scaler : dict, optional
        State dicts: nested dicts, lists and tuples of numbers, strings and
        arrays (dicts may have integer keys, as an optimizer's state has).
    progress : dict, optional
        JSON-serialisable counters.
    """
    missing = [key for key in MODEL_KEYS if key not in config]
    if missing:
        raise ValueError(f"checkpoint config lacks {', '.join(missing)}")
    arrays = {f"model/{key}": backend.to_numpy(value) for key, value in model_state.items()}
    states = {"optimizer": optimizer, "scheduler": scheduler, "loader": loader, "rng": rng,
              "scaler": scaler}
    meta = {"format": FORMAT, "version": VERSION, "config": config,
            "progress": progress or {},
            "states": {name: _pack(state, arrays, f"state/{name}")
                       for name, state in states.items()}}
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def non_finite_entries(state):
    """The keys of ``state`` (a state_dict) whose floating-point arrays hold NaN or inf."""
    bad = []
    for key, value in state.items():
        xp = backend.get_array_module(value)
        if np.issubdtype(value.dtype, np.floating) and not bool(xp.isfinite(value).all()):
            bad.append(key)
    return bad


def _pack(value, arrays, name):
    """A JSON-able copy of ``value``; its arrays move into ``arrays`` under ``name/...``."""
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # NumPy or CuPy array
        arrays[name] = backend.to_numpy(value)
        return {"__array__": name}
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {key: _pack(v, arrays, f"{name}/{key}") for key, v in value.items()}
        # JSON keys are strings; keep others (an optimizer's parameter indices) as pairs.
        return {"__items__": [[key, _pack(v, arrays, f"{name}/{key}")] for key, v in value.items()]}
    if isinstance(value, (list, tuple)):
        packed = [_pack(v, arrays, f"{name}/{i}") for i, v in enumerate(value)]
        return {"__tuple__": packed} if isinstance(value, tuple) else packed
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"cannot save a {type(value).__name__} in a checkpoint (at {name})")


def _unpack(value, arrays):
    """Invert :func:`_pack`."""
    if isinstance(value, list):
        return [_unpack(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        return arrays[value["__array__"]]
    if "__items__" in value:
        return {key: _unpack(v, arrays) for key, v in value["__items__"]}
    if "__tuple__" in value:
        return tuple(_unpack(v, arrays) for v in value["__tuple__"])
    return {key: _unpack(v, arrays) for key, v in value.items()}


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #
def read_npz(path):
    """All arrays of an ``.npz`` file, with one-line errors for a missing or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if head != ZIP_MAGIC and head != EMPTY_ZIP_MAGIC:
        raise CheckpointError(f"{path}: not a readable .npz file: it is not a zip archive, as "
                              f"every .npz is ({_describe_head(head)})")
    key = None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {}
            for key in npz.files:
                arrays[key] = npz[key]
            return arrays
    except Exception as err:  # a damaged zip fails in many ways (BadZipFile, zlib, EOF...)
        if key is not None and "allow_pickle" in str(err):
            raise CheckpointError(f"{path}: entry {key!r} holds Python objects, not numbers; "
                                  "resnet-np reads only numeric arrays (it never unpickles "
                                  "a file)") from None
        raise CheckpointError(f"{path}: not a readable .npz file, truncated or corrupt "
                              f"({type(err).__name__}: {err})") from err


# Every .npz starts as a zip archive does: a local file header, or the end record of
# an empty archive.
ZIP_MAGIC, EMPTY_ZIP_MAGIC = b"PK\x03\x04", b"PK\x05\x06"


def _describe_head(head):
    if not head:
        return "it is empty"
    if head.startswith(b"\x93NUMPY"[:len(head)]):
        return "it is a single .npy array"
    return f"it starts with {head!r}"


def load_checkpoint(path, states=True):
    """Read a checkpoint written by :func:`save_checkpoint`.

    ``states=False`` leaves out the optimizer, schedule, loader, generator and
    scaler states (they stay None): enough to use the weights, and a
    checkpoint whose states are damaged or missing still loads.

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointError
        Not a readable ``.npz``, not one this package wrote, a configuration
        that does not say which model it holds, or (with ``states``) a state
        whose arrays are missing.
    """
    arrays = read_npz(path)
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: not a resnet-np checkpoint (no 'meta' entry); "
                              "plain weights load with resnet_np.convert.load_weights")
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError as err:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{path}: not a resnet-np checkpoint (unknown 'meta' entry)")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta['version']} is newer than "
                              f"this resnet-np reads ({VERSION}); upgrade resnet-np")
    check_config(meta["config"], path)
    model_state = {key[len("model/"):]: value for key, value in arrays.items()
                   if key.startswith("model/")}
    checkpoint = Checkpoint(path=str(path), model_state=model_state, config=meta["config"],
                            progress=meta.get("progress", {}))
    if states:
        packed = meta.get("states") or {}
        for name in ("optimizer", "scheduler", "loader", "rng", "scaler"):
            try:
                setattr(checkpoint, name, _unpack(packed.get(name), arrays))
            except KeyError as err:
                raise CheckpointError(
                    f"{path}: the {name} state is incomplete (no entry {err.args[0]!r}); "
                    "the weights still serve evaluate, predict and export, but the run "
                    "cannot be resumed from this file") from None
    return checkpoint


def check_config(config, source):
    """Raise a CheckpointError unless ``config`` names a model and its classes.

    The model name and a positive ``num_classes`` are needed to build the
    model; ``classes``, when present, must name each of the ``num_classes``.
    """
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: the checkpoint's config is a "
                              f"{type(config).__name__}, not a dict")
    missing = [key for key in ("model", "num_classes") if key not in config]
    if missing:
        raise CheckpointError(f"{source}: the checkpoint's config lacks "
                              f"{' and '.join(map(repr, missing))}; it does not say which "
                              "model its weights are")
    num_classes = config["num_classes"]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise CheckpointError(f"{source}: the checkpoint's num_classes is {num_classes!r}, "
                              "not a positive integer")
    classes = config.get("classes")
    if classes is not None and (not isinstance(classes, list) or len(classes) != num_classes):
        count = f"{len(classes)} class names" if isinstance(classes, list) else repr(classes)
        raise CheckpointError(f"{source}: the checkpoint's classes are {count} for "
                              f"{num_classes} classes")


# --------------------------------------------------------------------------- #
# Checkpoint -> model
# --------------------------------------------------------------------------- #
def describe_model(config):
    """One phrase naming a model configuration: ``"resnet18 (10 classes, CIFAR stem, float32)"``."""
    stem = "CIFAR stem" if config.get("cifar_stem") else "ImageNet stem"
    return (f"{config.get('model')} ({config.get('num_classes')} classes, {stem}, "
            f"{config.get('dtype', 'float32')})")


def check_model_config(config, expected, source):
    """Raise a CheckpointError if ``config`` differs from ``expected`` in a model key.

    ``expected`` maps some of :data:`MODEL_KEYS` to the wanted values; keys
    that are absent or None are not checked.
    """
    differ = [key for key in MODEL_KEYS
              if expected.get(key) is not None and config.get(key) != expected[key]]
    if differ:
        raise CheckpointError(
            f"{source} holds a {describe_model(config)}, not a "
            f"{describe_model({**config, **{k: expected[k] for k in differ}})}")


def restore_model(model, state, source, what="the model"):
    """Load ``state`` into ``model``, or raise a one-line CheckpointError.

    The message names the number of missing, unexpected and mis-shaped keys
    and the first few of each, so a wrong architecture is obvious at a glance.
    """
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
              for key in own if key in state and tuple(state[key].shape) != tuple(own[key].shape)]
    problems = [f"{len(keys)} {what} ({_first(keys)})"
                for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                   ("shape mismatches, file vs model", shapes)) if keys]
    if problems:
        raise CheckpointError(f"{source} does not fit {what}: " + "; ".join(problems))
    check_finite(state, source)
    model.load_state_dict(state)


def check_finite(state, source):
    """Raise a CheckpointError naming the tensors of ``state`` that hold NaN or inf.

    Such weights (a run that diverged, a damaged file) would make every
    prediction NaN; they are refused before they are used.
    """
    bad = non_finite_entries(state)
    if bad:
        raise CheckpointError(f"{source}: NaN or infinite weights in {_first(bad)}; "
                              "refusing to use them")


def _first(items, count=3):
    shown = ", ".join(items[:count])
    return shown + (f", ... {len(items) - count} more" if len(items) > count else "")


def model_from_config(config, device="cpu"):
    """A freshly initialised model of the architecture ``config`` names."""
    model = build_model(config["model"], num_classes=config["num_classes"],
                        cifar_stem=bool(config.get("cifar_stem", False)),
                        dtype=config.get("dtype", "float32"))
    return model.to(device)


def load_model(checkpoint, device="cpu"):
    """The model saved in ``checkpoint`` (a :class:`Checkpoint` or a path), in eval mode."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint)
    model = model_from_config(checkpoint.config, device)
    restore_model(model, checkpoint.model_state, checkpoint.path,
                  f"a {describe_model(checkpoint.config)}")
    return model.eval()


# --------------------------------------------------------------------------- #
# Random number generators
# --------------------------------------------------------------------------- #
def capture_rng_state():
    """The states of NumPy's global generator and of the initialisation generator."""
    return {"numpy": np.random.get_state(legacy=False),
            "init": backend.rng().bit_generator.state}


def restore_rng_state(state):
    """Undo :func:`capture_rng_state`: later random draws repeat those of the saved run."""
    np.random.set_state(state["numpy"])
    backend.rng().bit_generator.state = state["init"]
