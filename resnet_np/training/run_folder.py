"""A run's folder: one run at a time, nothing of another run ever overwritten or moved.

    config.json             the settings, resolved (image size, stem, normalisation)
    last.npz, best.npz      checkpoints (see :mod:`.checkpoint`)
    metrics.jsonl           one JSON line per epoch
    curves.png              loss and accuracy per epoch
    confusion_matrix.png    of the final evaluation
    .lock                   the process id of the run that holds the folder

The lock is an exclusive ``fcntl.flock`` on ``.lock``, held while the run
lives: a second run on the folder is refused, naming the holder's process id.
The system drops the lock when its process ends, however it ends (kill -9
included), so a folder is never left locked. Only once the lock is held are the
temporary files of an interrupted save removed: no live run owns them then.

A fresh run refuses a folder holding a checkpoint (resume it instead), and a
``config.json`` that resnet-np did not write (someone's own file). A folder
whose run died before its first checkpoint holds nothing to protect: its
leftovers move into ``abandoned-<date-time>/`` and the new run starts there.
"""
import contextlib
import json
import os
import time
from pathlib import Path

from .atomic import atomic_write_text, remove_stale_temp_files
from .checkpoint import CheckpointError

RUN_FILES = ("last.npz", "best.npz", "metrics.jsonl")
# Everything a run writes into its folder (the leftovers of a run that died early).
OUTPUT_FILES = ("config.json", *RUN_FILES, "curves.png", "confusion_matrix.png")
LOCK_FILE = ".lock"
# Keys every config.json a run writes holds (TrainConfig's oldest fields).
CONFIG_KEYS = ("model", "dataset", "epochs", "batch_size", "lr", "optimizer", "num_classes")


class FolderInUse(RuntimeError):
    """Another live run holds the folder's lock."""


class RunFolder:
    """The folder ``path`` of one run, locked from :meth:`open` to :meth:`close`.

    Parameters
    ----------
    path : str or path-like
    log : callable
        Receives each message line.
    """

    def __init__(self, path, log):
        self.path, self.log = Path(path), log
        self._lock = None

    def open(self, config, continuing):
        """Create and lock the folder, clean it for this run, write ``config.json``.

        ``continuing``: the run resumes a checkpoint of this folder, whose
        files are its own; otherwise the folder must hold no run.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        own = self.path / "config.json"
        if not continuing and own.exists() and not _written_by_a_run(own):
            raise FileExistsError(f"{own} was not written by resnet-np (it lacks the settings "
                                  "a run writes); it is left as it is: choose another --out, "
                                  "or move the file away")
        self._acquire()
        removed = remove_stale_temp_files(self.path, OUTPUT_FILES)
        if removed:
            self.log(f"removed {len(removed)} temporary file{'s' * (len(removed) != 1)} of "
                     f"an interrupted save in {self.path}")
        if not continuing:
            self._refuse_or_clear()
        atomic_write_text(self.path / "config.json", json.dumps(config, indent=2) + "\n")

    def close(self):
        """Release the lock (also released by the system when the process ends)."""
        if self._lock is not None:
            import fcntl
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

    def _acquire(self):
        """Hold the folder's lock, or raise FolderInUse naming the process that holds it."""
        try:
            import fcntl
        except ImportError:      # no fcntl (Windows): no lock
            return
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderInUse(f"{self.path} is in use by another run (process {holder}); "
                              "wait for it to end, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = fd

    def _refuse_or_clear(self):
        """A fresh run never overwrites a checkpoint, nor moves a file it did not write;
        leftovers of a run without a checkpoint are moved aside."""
        checkpoints = [name for name in ("last.npz", "best.npz") if (self.path / name).exists()]
        if checkpoints:
            existing = [name for name in RUN_FILES if (self.path / name).exists()]
            raise FileExistsError(f"{self.path} already holds a run ({', '.join(existing)}); "
                                  f"continue it with --resume {self.path / checkpoints[0]} or "
                                  "choose another --out")
        leftovers = [name for name in OUTPUT_FILES if (self.path / name).exists()]
        if not leftovers:
            return
        aside = self.path / f"abandoned-{time.strftime('%Y%m%d-%H%M%S')}"
        suffix = 1
        while aside.exists():
            suffix += 1
            aside = aside.with_name(f"{aside.name.split('.')[0]}.{suffix}")
        aside.mkdir()
        for name in leftovers:
            os.replace(self.path / name, aside / name)
        self.log(f"{self.path} held a run that stopped before its first checkpoint; moved "
                 f"its {', '.join(leftovers)} to {aside} and starting afresh")

    def plot(self, plot, *args, **kwargs):
        """Draw a plot into the folder; without matplotlib, say so once and go on."""
        try:
            plot(*args, **kwargs)
        except ImportError as err:
            if not getattr(self, "_warned_plots", False):
                self.log(f"note: no plots ({err})")
                self._warned_plots = True


def _written_by_a_run(path):
    with contextlib.suppress(OSError, ValueError):
        config = json.loads(Path(path).read_text(encoding="utf-8"))
        return isinstance(config, dict) and all(key in config for key in CONFIG_KEYS)
    return False


def resume_path(path):
    """The checkpoint to resume: ``path`` itself, or the ``last.npz`` of a run's folder."""
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / "last.npz").is_file():
        return path / "last.npz"
    if (path / "best.npz").is_file():
        raise CheckpointError(f"{path} has no last.npz, only best.npz; resume that with "
                              f"--resume {path / 'best.npz'}")
    what = "holds a run that stopped before its first checkpoint" if any(
        (path / name).exists() for name in OUTPUT_FILES) else "is not a run's folder"
    raise CheckpointError(f"{path} {what}: there is no last.npz to resume; start a new run "
                          f"(with --out {path} it starts afresh and moves the leftovers aside)")
