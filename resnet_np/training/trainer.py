"""The training loop: epochs of optimizer steps, evaluation, checkpoints, metrics, plots.

The step loop lives here; the run's lifecycle around it in its own modules:

    run_folder.py   the folder: its lock, config.json, leftovers of a run that died
    signals.py      Ctrl-C and SIGTERM: stop after this batch and save, or at once
    resume.py       what a resumed run may change (device, data folder, length)
    plots.py        the curves and the confusion matrix drawn into the folder

The learning-rate schedule moves after every batch (a smooth warm-up, and a
decay that fits runs of a few epochs).

Resuming from ``last.npz`` restores the weights, the optimizer's and the
schedule's state, the epoch and batch counters, NumPy's generators and the
data loader's position, so an interrupted run ends with exactly (bit for bit)
the weights of an uninterrupted one.

Mixed precision (``config.amp``, see :mod:`resnet_np.amp`): the model computes
in float16 or bfloat16, the optimizer updates float32 master weights, and a
:class:`~resnet_np.amp.GradScaler` scales the loss gradient. A step whose
gradients hold inf or NaN is skipped (no optimizer update) and the scale
halved; the learning-rate schedule still advances on a skipped step, as
torch's usual loop (``scaler.step(opt); scaler.update(); scheduler.step()``)
does. Checkpoints hold the float32 masters (a float32 model loads them as any
other) and the scaler's state; the precision is part of the run's config, so
a resumed run keeps it. The test evaluation after each epoch runs in the
compute dtype, on the model being trained.

A first Ctrl-C (or SIGTERM) lets the current batch finish, saves ``last.npz``
and stops; a second one stops at once without saving (see :mod:`.signals`). A
loss that is NaN or infinite, or a parameter or buffer that is, stops the run
with a :class:`TrainingError` before anything is saved, so the last good
checkpoint stays as it was: no checkpoint ever holds NaN.

Host synchronisation: a step copies one pair of numbers to the host (its loss,
for the divergence check and the progress bar, and how many images it got
right); the logits stay on the device.

Under several processes every rank first checks that it holds the data and
settings of rank 0 (:func:`~resnet_np.distributed.check_same_run`): ranks whose
data differ would take different numbers of steps and wait for each other
forever.
"""
import contextlib
import functools
import math
import signal
import time
from pathlib import Path

import numpy as np

from .. import backend, distributed
from ..amp import GradScaler, MixedPrecision, compute_dtype_for
from ..data import load_dataset
from ..data.transforms import random_crop, random_flip
from ..nn import CrossEntropyLoss
from ..optim import SGD, Adam, AdamW, build_schedule
from .checkpoint import (CheckpointError, capture_rng_state, describe_model, model_from_config,
                         non_finite_entries, save_checkpoint)
from .evaluate import evaluate
from .metrics import MetricsWriter, format_accuracy
from .plots import plot_confusion_matrix, plot_history
from .progress import log as default_log
from .progress import progress_bar
from .resume import SPLITS, apply_overrides, restore
from .run_folder import RunFolder, resume_path
from .signals import EXIT_STATUS, StopSignals

class TrainingError(RuntimeError):
    """Training cannot go on (the loss diverged)."""


class Trainer:
    """Train a model as a :class:`TrainConfig` describes, writing into ``out_dir``.

    Parameters
    ----------
    config : TrainConfig
    out_dir : str or path-like
        The run's folder (see :mod:`.run_folder`); created if missing. A fresh
        run refuses a folder that already holds a run, so no checkpoint is
        ever overwritten by mistake, and a folder another run is using.
    progress : bool
        Show tqdm progress bars.
    log : callable
        Receives each message line.
    on_batch_end : callable, optional
        ``on_batch_end(trainer)`` after every optimizer step: a hook for
        tests and monitoring. Raising KeyboardInterrupt there stops the run as
        Ctrl-C does.
    comm : communicator, optional
        Train on every rank of ``comm`` (see :mod:`resnet_np.distributed`):
        rank 0's weights broadcast at the start, each rank on its shard of
        every epoch, gradients and metrics averaged; only rank 0 logs, shows
        progress and writes files. None: one process.

    Examples
    --------
    >>> summary = Trainer(TrainConfig(epochs=3), "runs/digits").fit()
    >>> summary = Trainer.resume("runs/digits/last.npz").fit()
    """

    def __init__(self, config, out_dir, progress=True, log=default_log, on_batch_end=None,
                 comm=None):
        self.config = config.validate()
        self.out = Path(out_dir)
        self.comm = (distributed.SingleProcess() if comm is None
                     else distributed.for_device(comm, config.device))
        self.is_main = self.comm.rank == 0
        if config.amp is not None and self.comm.size > 1:
            raise ValueError("--amp is not supported under mpiexec (several processes): "
                             "train in one process, or without --amp")
        self.progress, self.on_batch_end = progress and self.is_main, on_batch_end
        self.log = log if self.is_main else _quiet
        self._build_data()
        backend.manual_seed(config.seed)
        self.model = model_from_config(self.checkpoint_config(), config.device)
        self.parallel = distributed.DataParallel(self.model, self.comm,
                                                 sync_bn=config.sync_bn and self.comm.size > 1)
        self.amp, self.scaler = None, None
        if config.amp is not None:
            _check_compute_dtype(config.amp, backend.get_array_module(
                self.model.parameters()[0].data))
            self.amp = MixedPrecision(self.model, config.amp)
            self.scaler = GradScaler(init_scale=config.loss_scale)
        # What checkpoints hold and restore: the float32 masters under mixed precision.
        self.weights = self.model if self.amp is None else self.amp
        self.optimizer = build_optimizer(
            config, self.model.parameters() if self.amp is None else self.amp.master_parameters())
        self.scheduler = self._build_schedule()
        self.criterion = CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.epoch, self.batch = 0, 0      # epochs done; batches done in the current epoch
        self.sums = new_sums()             # running totals of the current epoch
        self.history, self.best_top1 = [], None
        self.resumed_from, self.resume_notes = None, []
        self._loader_state = self.train_loader.state_dict()
        self._at_boundary = True           # between batches: the state is consistent
        self.signals = StopSignals(self.comm)
        self.folder = RunFolder(self.out, self.log)
        self._last_eval = None

    # ------------------------------------------------------------------ setup
    def _build_data(self):
        """Load both splits; under several processes, check first that every rank holds
        the same data and settings (each rank's own checks come after)."""
        config = self.config
        # --limit applies before the images are resized (a 30000x30000 run of 32 images
        # must not resize all 1438 first)
        self.train_set = load_dataset(config.dataset, config.data_dir, "train",
                                      config.image_size, config.limit, config.seed)
        self.test_set = load_dataset(config.dataset, config.data_dir, "test",
                                     config.image_size, config.test_limit, config.seed)
        self.fingerprints = {"train_data": _describe_data(self.train_set),
                             "test_data": _describe_data(self.test_set)}
        distributed.check_same_run(self.comm, self._run_facts())
        if config.batch_size > len(self.train_set):
            raise ValueError(f"batch size {config.batch_size} is larger than the training set "
                             f"({len(self.train_set)} images); use --batch-size "
                             f"{len(self.train_set)} or less")
        self.image_size = self.train_set.images.shape[1]
        self.mean, self.std = channel_stats(self.train_set.images)
        augment = _augmentation(config, self.image_size)
        self.train_loader = distributed.sharded_loader(
            self.comm, self.train_set, config.batch_size, shuffle=True, seed=config.seed,
            augment=augment, drop_last=True, mean=self.mean, std=self.std)
        self.test_loader = distributed.sharded_loader(
            self.comm, self.test_set, config.batch_size, drop_tail=False, clip_batch=True,
            mean=self.mean, std=self.std)

    def _run_facts(self):
        """What every rank must agree on: the data (sizes, classes, fingerprints) and the
        settings (all but the data folder, whose path may differ between machines)."""
        facts = []
        for key, what in SPLITS.items():
            data = self.fingerprints[key]
            facts += [(f"{what}'s size", f"{data['images']} images"),
                      (f"{what}'s classes", data["classes"]),
                      (f"{what}'s fingerprint", data["fingerprint"])]
        return facts + [(f"setting {key}", value) for key, value in self.config.to_dict().items()
                        if key != "data_dir"]

    def _build_schedule(self):
        """Stepped after every batch, so the warm-up ramps up smoothly and the decay follows
        the run batch by batch even when it is a few epochs long."""
        steps = len(self.train_loader)
        return build_schedule(self.optimizer, self.config.schedule,
                              total_steps=self.config.epochs * steps,
                              lr_decay_rate=self.config.lr_decay_rate,
                              warmup_steps=self.config.warmup_epochs * steps)

    def checkpoint_config(self):
        """The config saved with every checkpoint: settings plus what they resolved to,
        and the size and fingerprint of the data (see :mod:`.resume`)."""
        config = self.config
        cifar_stem = self.image_size <= 64 if config.cifar_stem is None else config.cifar_stem
        return {**config.to_dict(), "image_size": self.image_size, "cifar_stem": cifar_stem,
                "num_classes": len(self.train_set.classes), "classes": list(self.train_set.classes),
                "mean": list(self.mean), "std": list(self.std), "world_size": self.comm.size,
                "steps_per_epoch": len(self.train_loader), **self.fingerprints}

    @classmethod
    def resume(cls, path, out_dir=None, overrides=None, allow_data_change=False, **kwargs):
        """A trainer that continues the run saved in checkpoint ``path``.

        ``overrides`` maps TrainConfig fields to values given again (None
        means not given); see :func:`.resume.apply_overrides` for those that
        may change. ``path`` may also be a run's folder: its ``last.npz`` is
        resumed. Data that differ from the checkpoint's are refused unless
        ``allow_data_change``.
        """
        path = resume_path(path)
        comm = kwargs.get("comm") or distributed.SingleProcess()
        checkpoint = distributed.read_checkpoint(path, comm)
        if checkpoint.optimizer is None or "epoch" not in checkpoint.progress:
            raise CheckpointError(f"{path} holds weights only, not a training state, so it "
                                  "cannot be resumed (use it with evaluate or predict)")
        distributed.check_world_size(checkpoint, comm.size)
        config = apply_overrides(checkpoint, overrides or {})
        trainer = cls(config, Path(path).parent if out_dir is None else out_dir, **kwargs)
        trainer._restore(checkpoint, allow_data_change)
        return trainer

    def _restore(self, checkpoint, allow_data_change=False):
        """Continue from ``checkpoint`` (see :func:`.resume.restore`)."""
        restore(self, checkpoint, allow_data_change)

    # ------------------------------------------------------------------ the run
    def fit(self):
        """Train until ``config.epochs`` epochs are done, or until interrupted.

        Returns
        -------
        dict
            ``out``, ``epochs`` (done), ``interrupted``, ``exit_status`` (0, or
            130 after Ctrl-C and 143 after SIGTERM), ``top1``, ``top5``
            (last evaluation), ``best_top1`` and ``history``.
        """
        if self.is_main:  # only rank 0 writes files
            continuing = (self.resumed_from is not None
                          and self.resumed_from.parent.resolve() == self.out.resolve())
            self.folder.open(self.checkpoint_config(), continuing)
        try:
            return self._run()
        finally:
            self.folder.close()

    def _run(self):
        self.metrics = MetricsWriter(self.out / "metrics.jsonl", self.history)
        if self.is_main:
            self.metrics.write()  # a resumed run drops lines of epochs after its checkpoint
        # Overflow is caught as a non-finite loss or weight and reported as divergence,
        # in one line: NumPy's own warnings about it would only add noise.
        with self.signals, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            self.log(self._start_line())  # once shown, Ctrl-C saves before it stops
            for note in ([self.test_set.note] if self.test_set.note else []) + self.resume_notes:
                self.log(f"note: {note}")
            try:
                while self.epoch < self.config.epochs:
                    self._check_stop()
                    self._train_epoch()
                    self._end_epoch()
            except KeyboardInterrupt:
                if self.signals.signal is None:   # raised by a hook or by Python's own handler
                    self.signals.signal = signal.SIGINT
                return self._interrupted()
        return self._finish()

    @property
    def stop_signal(self):
        """The signal that stopped the run (None if none did)."""
        return self.signals.signal

    def _start_line(self):
        size, epochs = self.image_size, self.config.epochs
        line = (f"{describe_model(self.checkpoint_config())} on {self.config.dataset}: "
                f"{len(self.train_set)} training and {len(self.test_set)} test images of "
                f"{size}x{size}, {epochs} epoch{'s' * (epochs != 1)}, writing to {self.out}")
        if self.amp is not None:
            line += (f"; mixed precision ({self.config.amp} compute, float32 master weights, "
                     f"loss scale {self.scaler.get_scale():g})")
        if self.comm.size > 1:
            line += (f"; {self.comm.size} processes x batch {self.config.batch_size} = "
                     f"{self.comm.size * self.config.batch_size} images per step (lr "
                     f"{self.config.lr:g} as given, not scaled), batch norm "
                     + ("synchronised" if self.config.sync_bn else "per process"))
        if self.resumed_from is not None and self.epoch >= epochs:
            line += f"; {self.resumed_from.name} holds the finished run"
        elif self.resumed_from is not None:
            line += (f"; resuming {self.resumed_from.name} at epoch {self.epoch + 1}, "
                     f"batch {self.batch}/{len(self.train_loader)}")
        return line

    def _train_epoch(self):
        loader = self.train_loader
        self.model.train()
        if self.batch >= len(loader):  # saved after the last batch, before the evaluation
            return
        desc = f"epoch {self.epoch + 1}/{self.config.epochs}"
        # closing(): an interrupted loop stops the loader's prefetch thread here and
        # now, not whenever (and in whichever thread) the garbage collector runs.
        with progress_bar(len(loader), desc, initial=self.batch, enabled=self.progress) as bar, \
                contextlib.closing(iter(loader)) as batches:
            tick = time.perf_counter()
            for x, y in batches:
                self._at_boundary = False
                loss_sum, correct = self._step(x, y)
                now = time.perf_counter()
                self._count_batch(loss_sum, correct, len(y), now - tick)
                tick = now
                bar.update(1)
                bar.set_postfix_str(self._postfix())
                if self.on_batch_end is not None:
                    self.on_batch_end(self)
                self._check_stop()

    def _count_batch(self, loss_sum, correct, size, seconds):
        """Add a finished batch (every rank's) to the epoch's totals: the state is consistent."""
        loss_sum, correct, size = distributed.reduce_sums(self.comm, loss_sum, correct, size)
        self.sums["loss"] += loss_sum
        self.sums["correct"] += int(correct)
        self.sums["seen"] += int(size)
        self.sums["seconds"] += seconds
        self.batch += 1
        self._loader_state = self.train_loader.state_dict()
        self._at_boundary = True

    def _step(self, x, y):
        """One optimizer step on a batch; returns (sum of the losses, number classified right).

        The loss and the count are computed on the device and copied to the host
        together, once: the logits never leave the device.
        """
        device = self.config.device
        x = backend.to_device(x.astype(self.model.dtype, copy=False), device)
        labels, y = y, backend.to_device(y, device)
        logits = self.model(x)
        if self.amp is not None:   # the loss and its gradient in float32
            logits = logits.astype(np.float32)
        loss = self.criterion(logits, labels)   # host labels: checked there, no device sync
        xp = backend.get_array_module(logits)
        correct = (xp.argmax(logits, axis=1) == y).sum()
        loss, correct = backend.to_numpy(xp.stack([loss.astype(np.float64),
                                                   correct.astype(np.float64)])).tolist()
        if not math.isfinite(loss):
            raise TrainingError(self._diverged_message(f"the loss is {loss}"))
        self.sums["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.amp is None:
            self.optimizer.zero_grad()
            self.parallel.backward(self.criterion.backward(), input_grad=False)  # averaged
            self.optimizer.step()
        else:
            self._mixed_precision_step()
        self.scheduler.step()          # also after a skipped step, as torch's loop does
        return loss * len(y), int(correct)

    def _mixed_precision_step(self):
        """Scaled backward in the compute dtype, float32 master gradients unscaled, the
        optimizer step skipped if they overflowed; the scale updated."""
        self.amp.zero_grad()
        if not self.amp.backward_and_step(self.criterion.backward(), self.optimizer, self.scaler,
                                          backward=self.parallel.backward):
            self.sums["skipped"] += 1

    def _end_epoch(self):
        """Evaluate, advance the counters, save, log."""
        # Evaluation changes no training state: interrupted here, the run saves
        # "all batches of this epoch done" and a resumed run evaluates first.
        result = self._evaluate()
        self._at_boundary = False
        record = self._epoch_record(result)
        self.epoch, self.batch, self.sums = self.epoch + 1, 0, new_sums()
        self.history.append(record)
        improved = self.best_top1 is None or result.top1 > self.best_top1
        if improved:
            self.best_top1 = result.top1
        self._loader_state = self.train_loader.state_dict()
        self._at_boundary = True
        # best before last: a crash in between makes a resumed run redo this epoch.
        if improved:
            self._save(self.out / "best.npz")
        self._save(self.out / "last.npz")
        if self.is_main:
            self.metrics.append(record)
        self._plot(plot_history, self.history, self.out / "curves.png")
        self._last_eval = result
        self.log(_epoch_line(record, self.config.epochs))

    def _epoch_record(self, result):
        sums = self.sums
        record = {"epoch": self.epoch + 1, "lr": sums["lr"],
                  "train_loss": sums["loss"] / sums["seen"],
                  "train_acc": sums["correct"] / sums["seen"],
                  "test_loss": result.loss, "top1": result.top1, "top5": result.top5,
                  "images_per_s": sums["seen"] / max(sums["seconds"], 1e-9),
                  "epoch_time_s": sums["seconds"]}
        if self.scaler is not None:   # the scale at the epoch's end, its skipped steps
            record.update(loss_scale=self.scaler.get_scale(), skipped_steps=sums["skipped"])
        return record

    def _finish(self):
        result = self._last_eval
        if result is None:  # resumed from a finished run: evaluate once for the report
            result = self._evaluate(desc="eval")
        cm = result.confusion_matrix(len(self.test_set.classes))
        self._plot(plot_confusion_matrix, cm, self.test_set.classes,
                   self.out / "confusion_matrix.png",
                   title=f"{self.test_set.name} ({len(self.test_set)} test images) after "
                         f"epoch {self.epoch}")
        best = f"{100 * self.best_top1:.2f}%" if self.best_top1 is not None else "n/a"
        self.log(f"done: test {format_accuracy(result.top1, result.top5)} "
                 f"(best top-1 {best}); checkpoints, metrics and plots in {self.out}")
        return self._summary(result, interrupted=False)

    def _interrupted(self):
        """Save ``last.npz`` if the state is consistent and the stop was not forced (a
        second signal stops without saving: it may have cut ``best.npz``'s write short,
        and a ``last.npz`` of this epoch would then disagree with it)."""
        last = self.out / "last.npz"
        where = self._where()
        if self._at_boundary and not self.signals.forced:
            self._save(last)
            by = " by SIGTERM" if self.stop_signal == signal.SIGTERM else ""
            self.log(f"interrupted{by} at {where}: saved {last}; continue with "
                     f"`resnet-np train --resume {last}`")
        else:
            kept = f"; {last} is unchanged" if last.exists() else ""
            inside = "" if self.signals.forced else " inside a batch"
            self.log(f"interrupted{inside} at {where}: nothing saved{kept}")
        return self._summary(self._last_eval, interrupted=True)

    def _where(self):
        """Where the run stands: ``epoch 2/3, batch 4/18``, or ``the end of epoch 3/3``."""
        if self.batch == 0 and self.epoch > 0:
            return f"the end of epoch {self.epoch}/{self.config.epochs}"
        return (f"epoch {self.epoch + 1}/{self.config.epochs}, "
                f"batch {self.batch}/{len(self.train_loader)}")

    def _summary(self, result, interrupted):
        return {"out": str(self.out), "epochs": self.epoch, "interrupted": interrupted,
                "exit_status": EXIT_STATUS[self.stop_signal] if interrupted else 0,
                "top1": None if result is None else result.top1,
                "top5": None if result is None else result.top5,
                "best_top1": self.best_top1, "history": list(self.history)}

    # ------------------------------------------------------------------ helpers
    def _evaluate(self, desc="test"):
        """Every rank evaluates its shard of the test set (with rank 0's batch-norm statistics)."""
        if self.comm.size > 1 and not self.config.sync_bn:
            distributed.broadcast_state(self.model, self.comm, parameters=False)
        result = evaluate(self.model, self.test_loader, self.config.device,
                          progress=self.progress, desc=desc)
        return distributed.reduce_eval(result, self.comm)

    def _save(self, path):
        """Write a checkpoint (rank 0 only), unless a parameter or buffer is NaN or infinite
        (checked on every rank: the weights are the same everywhere, so all stop alike)."""
        bad = non_finite_entries(self.weights.state_dict())
        if bad:
            more = f", and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise TrainingError(self._diverged_message(
                f"{len(bad)} of the model's arrays hold NaN or infinite values "
                f"({', '.join(bad[:3])}{more})", f"before saving {Path(path).name} after "
                f"epoch {self.epoch}, batch {self.batch}"))
        if not self.is_main:
            return
        save_checkpoint(path, self.weights.state_dict(), self.checkpoint_config(),
                        optimizer=self.optimizer.state_dict(),
                        scaler=None if self.scaler is None else self.scaler.state_dict(),
                        scheduler=self.scheduler.state_dict(), loader=self._loader_state,
                        rng=capture_rng_state(),
                        progress={"epoch": self.epoch, "batch": self.batch, "sums": self.sums,
                                  "history": self.history, "best_top1": self.best_top1})

    def _plot(self, plot, *args, **kwargs):
        if self.is_main:
            self.folder.plot(plot, *args, **kwargs)

    def _check_stop(self):
        # Every rank stops after the same batch: a stop asked on one is a stop on all.
        if self.comm.any(self.signals.requested):
            raise KeyboardInterrupt

    def _postfix(self):
        s = self.sums
        line = (f"loss {s['loss'] / s['seen']:.4f}, acc {100 * s['correct'] / s['seen']:.1f}%, "
                f"{s['seen'] / max(s['seconds'], 1e-9):.0f} img/s")
        if self.scaler is not None:
            line += f", scale {self.scaler.get_scale():g}, {s['skipped']} skipped"
        return line

    def _diverged_message(self, what, where=None):
        last = self.out / "last.npz"
        kept = (f"the last good checkpoint {last} is unchanged" if last.exists()
                else "no checkpoint was written")
        where = where or f"at epoch {self.epoch + 1}, batch {self.batch + 1}"
        return (f"training diverged: {what} {where} (learning rate "
                f"{self.optimizer.param_groups[0]['lr']:g}); stopped without saving, {kept}; "
                "try a smaller --lr")


# --------------------------------------------------------------------------- #
# Building blocks
# --------------------------------------------------------------------------- #
def build_optimizer(config, params):
    """The optimizer a config names; ``momentum`` is Adam's beta1."""
    if config.optimizer == "sgd":
        return SGD(params, lr=config.lr, momentum=config.momentum,
                   weight_decay=config.weight_decay)
    adam = Adam if config.optimizer == "adam" else AdamW
    return adam(params, lr=config.lr, betas=(config.momentum, 0.999),
                weight_decay=config.weight_decay)


def channel_stats(images, chunk=1024):
    """Per-channel mean and standard deviation of uint8 (N, H, W, 3) images, in [0, 1] units.

    Computed in float64 over chunks of images, so CIFAR's 50,000 images need
    no 1 GB temporary array.
    """
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for start in range(0, len(images), chunk):
        pixels = images[start:start + chunk].reshape(-1, 3).astype(np.float64)
        total += pixels.sum(axis=0)
        total_sq += (pixels ** 2).sum(axis=0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-6))
    return tuple(float(m) for m in mean / 255), tuple(float(s) for s in std / 255)


def _augmentation(config, image_size):
    """Random crops after zero padding of 1/8 of the side; random flips except for digits."""
    if not config.augment:
        return None
    crop = functools.partial(random_crop, padding=max(1, image_size // 8))
    if config.dataset == "digits":
        return crop  # a mirrored digit is another digit, or none
    return functools.partial(_crop_and_flip, crop)


def _crop_and_flip(crop, images, rng):
    return random_flip(crop(images, rng), rng)


def _check_compute_dtype(name, xp):
    """Refuse a compute dtype the array module lacks, or the layers do not accept."""
    dtype = compute_dtype_for(name, xp)
    if dtype.kind != "f":   # NumPy's bfloat16 (ml_dtypes) is not a floating kind to NumPy
        raise ValueError(f"--amp {name}: the layers (resnet_np.functional) accept floating-point "
                         f"dtypes of NumPy's own only, and {name} is not one; use --amp float16")


def _quiet(message):
    """The log of ranks other than 0."""


def new_sums():
    """Running totals of an epoch; ``lr`` is the rate of its latest batch."""
    return {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "lr": None, "skipped": 0}


def _epoch_line(record, epochs):
    line = (f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f}, "
            f"acc {100 * record['train_acc']:.2f}% | test loss {record['test_loss']:.4f}, "
            f"{format_accuracy(record['top1'], record['top5'])} | "
            f"lr {record['lr']:.4g}, {record['images_per_s']:.0f} img/s, "
            f"{record['epoch_time_s']:.0f} s")
    if "loss_scale" in record:
        line += (f" | loss scale {record['loss_scale']:g}, "
                 f"{record['skipped_steps']} step{'s' * (record['skipped_steps'] != 1)} skipped")
    return line


def _describe_data(dataset):
    """What a checkpoint records of a split: its size, classes and fingerprint."""
    return {"images": len(dataset), "classes": list(dataset.classes),
            "fingerprint": dataset.fingerprint()}
