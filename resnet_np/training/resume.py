"""Resuming a run: which settings may change, and what a change of data or length means.

A checkpoint fixes the recipe (the optimizer's and the schedule's state depend
on it), so a resumed run keeps its settings, except:

    device, data_dir      where it runs and where the data lies
    epochs                the run's new length (more than the epochs done): the
                          schedule is rebuilt for it and continues from the
                          current step, as torchvision's and timm's scripts allow

A checkpoint also holds the size and a fingerprint (:meth:`Dataset.fingerprint`)
of the training and test sets. Resuming on other data is refused, since it
would silently change the steps of every epoch (and so the schedule) and the
normalisation, unless ``allow_data_change`` is given; the run then says what
changes.

:func:`restore` puts a freshly built trainer in the checkpoint's state.
"""
from pathlib import Path

from .checkpoint import (CheckpointError, check_model_config, describe_model, restore_model,
                         restore_rng_state)
from .config import TrainConfig

# Settings a resumed run may change: where it runs and where the data lies, not its recipe.
RESUME_OVERRIDES = ("device", "data_dir")
SPLITS = {"train_data": "training set", "test_data": "test set"}


def apply_overrides(checkpoint, overrides):
    """The checkpoint's TrainConfig with the settings given again applied.

    ``overrides`` maps TrainConfig fields to values (None: not given). Only
    :data:`RESUME_OVERRIDES` and ``epochs`` may differ from the saved run;
    another change raises a one-line CheckpointError.
    """
    config = TrainConfig.from_dict(checkpoint.config)
    for key, value in overrides.items():
        saved = getattr(config, key)
        if value is None or value == saved:
            continue
        if key in RESUME_OVERRIDES:
            setattr(config, key, value)
        elif key == "epochs":
            config.epochs = _new_length(checkpoint, value)
        elif key == "amp":
            raise CheckpointError(
                f"{checkpoint.path} was trained in {_precision(saved)}; resuming it in "
                f"{_precision(value)} is refused: a run keeps its precision (resume without "
                "--amp to continue it as it was, or start a new run)")
        else:
            check_model_config(checkpoint.config, {key: value}, checkpoint.path)
            raise CheckpointError(
                f"{checkpoint.path} was trained with {key}={saved!r}; a resumed run keeps its "
                f"settings, so {key}={value!r} cannot apply (only --device, --data-dir, "
                "--epochs and --out may change; start a new run instead)")
    return config


def _new_length(checkpoint, epochs):
    done = checkpoint.progress.get("epoch", 0)
    warmup = checkpoint.config.get("warmup_epochs", 0) or 0
    if epochs <= max(done, warmup):
        why = (f"{done} epoch{'s' * (done != 1)} are already done" if epochs <= done
               else f"its warm-up lasts {warmup} epochs")
        raise CheckpointError(f"{checkpoint.path}: --epochs {epochs} cannot apply, {why}; "
                              f"give more than {max(done, warmup)}")
    return epochs


def data_changes(saved, current):
    """How the data of a run (``current``, a checkpoint config) differ from those of the
    checkpoint (``saved``): a list of phrases, empty when they are the same (or when the
    checkpoint is older than the fingerprints)."""
    changes = []
    for key, what in SPLITS.items():
        before, now = saved.get(key), current.get(key)
        if before is None or before == now:
            continue
        changes.append(f"its {what} had {before['images']} images (fingerprint "
                       f"{before['fingerprint']}), this one has {now['images']} "
                       f"({now['fingerprint']})")
    return changes


def check_data(checkpoint, current, allow_change):
    """Refuse to resume on other data, or, with ``allow_change``, return the note that says
    what changes (None when nothing does)."""
    changes = data_changes(checkpoint.config, current)
    if not changes:
        return None
    if not allow_change:
        raise CheckpointError(
            f"{checkpoint.path} was trained on other data: {'; '.join(changes)}; resuming would "
            "change the steps of every epoch and the normalisation. Resume with the same data, "
            "or add --allow-data-change to go on with these")
    saved = checkpoint.config
    note = f"the data differ from {Path(checkpoint.path).name}'s ({'; '.join(changes)})"
    before = saved.get("steps_per_epoch")
    if before is not None and before != current["steps_per_epoch"]:
        note += f": {current['steps_per_epoch']} steps per epoch (was {before})"
    if (saved.get("mean"), saved.get("std")) != (current["mean"], current["std"]):
        note += (f"; normalisation mean {_rounded(current['mean'])}, std "
                 f"{_rounded(current['std'])} (was {_rounded(saved.get('mean'))}, "
                 f"{_rounded(saved.get('std'))})")
    return note + "; going on as --allow-data-change asks"


def restore(trainer, checkpoint, allow_data_change=False):
    """Put a freshly built :class:`~.trainer.Trainer` in the state ``checkpoint`` saved:
    weights, optimizer, schedule, loader position, generators and counters. Data that
    differ are refused (or, allowed, noted); a new length or other data rebuild the
    schedule from the step reached."""
    from .trainer import new_sums
    note = check_data(checkpoint, trainer.checkpoint_config(), allow_data_change)
    restore_model(trainer.weights, checkpoint.model_state, checkpoint.path,
                  f"a {describe_model(trainer.checkpoint_config())}")
    if trainer.scaler is not None:
        if not checkpoint.scaler:
            raise CheckpointError(f"{checkpoint.path} has no loss-scaler state, so its "
                                  "mixed-precision run cannot be resumed exactly")
        trainer.scaler.load_state_dict(checkpoint.scaler)
    trainer.optimizer.load_state_dict(checkpoint.optimizer)
    trainer.scheduler.load_state_dict(checkpoint.scheduler)
    trainer.train_loader.load_state_dict(checkpoint.loader)
    restore_rng_state(checkpoint.rng)
    progress = checkpoint.progress
    trainer.epoch, trainer.batch = progress["epoch"], progress["batch"]
    trainer.sums = {**new_sums(), **progress["sums"]}
    trainer.history, trainer.best_top1 = list(progress["history"]), progress["best_top1"]
    trainer._loader_state = checkpoint.loader
    trainer.resumed_from = Path(checkpoint.path)
    if note is not None:
        trainer.resume_notes.append(note)
    saved_epochs = checkpoint.config.get("epochs")
    if note is None and saved_epochs == trainer.config.epochs:
        return
    step = trainer.scheduler.last_epoch
    trainer.scheduler = trainer._build_schedule()
    continue_schedule(trainer.scheduler, step)
    if saved_epochs != trainer.config.epochs:
        config = trainer.config
        trainer.resume_notes.append(
            f"the run now lasts {config.epochs} epochs (it was {saved_epochs}): the "
            f"{config.schedule} schedule is recomputed for "
            f"{config.epochs * len(trainer.train_loader)} steps and goes on from step {step} "
            f"(learning rate {trainer.optimizer.param_groups[0]['lr']:.4g} now)")


def continue_schedule(scheduler, step):
    """Put a freshly built schedule at ``step`` (steps taken) and set its learning rate."""
    scheduler.last_epoch = step - 1
    scheduler.step()


def _rounded(values):
    return "n/a" if values is None else "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def _precision(amp):
    return "float32" if amp is None else f"mixed precision (--amp {amp})"
