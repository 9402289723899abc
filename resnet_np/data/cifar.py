"""CIFAR-10 and CIFAR-100 from the official "python version" files.

Download ``cifar-10-python.tar.gz`` or ``cifar-100-python.tar.gz`` from
https://www.cs.toronto.edu/~kriz/cifar.html and put it in ``data_dir``, as it
is or extracted. The loaders look for, in this order:

    data_dir/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    data_dir/cifar-10-python.tar.gz     (read in memory, nothing is extracted)

    data_dir/cifar-100-python/{train, test, meta}
    data_dir/cifar-100-python.tar.gz

Each file is a Python 2 pickle (protocol 2, byte-string keys) of a dict with
``b"data"``, uint8 (n, 3072): per image the 1024 red, then green, then blue
pixels, rows top to bottom; and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"``
(CIFAR-100), a list of ints. The meta file holds the class names under
``b"label_names"`` or ``b"fine_label_names"``.
"""
import gzip
import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import Dataset, check_split

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class _Layout:
    key: str             # the dataset's name in load_dataset
    title: str
    folder: str          # the archive's top folder, and the extracted folder
    archive: str
    train: tuple
    test: tuple
    meta: str
    label_key: str
    names_key: str


CIFAR10 = _Layout("cifar10", "CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                  tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                  "batches.meta", "labels", "label_names")
CIFAR100 = _Layout("cifar100", "CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz",
                   ("train",), ("test",), "meta", "fine_labels", "fine_label_names")


def load_cifar10(data_dir, split="train"):
    """CIFAR-10: 50,000 training and 10,000 test images of 32x32, 10 classes.

    Parameters
    ----------
    data_dir : str or path-like
        Folder holding ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``.
    split : {"train", "test"}

    Returns
    -------
    Dataset
        uint8 images (N, 32, 32, 3), int64 labels (N,), 10 class names.

    Raises
    ------
    FileNotFoundError
        Neither the extracted files nor the archive are in ``data_dir``.
    ValueError
        A file is truncated, corrupt, or not in the official format.
    """
    return _load(CIFAR10, data_dir, split)


def load_cifar100(data_dir, split="train"):
    """CIFAR-100 with its 100 fine labels: 50,000 training and 10,000 test images.

    Parameters and errors as :func:`load_cifar10`, with ``cifar-100-python/``
    or ``cifar-100-python.tar.gz`` in ``data_dir``.
    """
    return _load(CIFAR100, data_dir, split)


def _load(layout, data_dir, split):
    check_split(split)
    batch_names = layout.train if split == "train" else layout.test
    files = _read_files(layout, Path(data_dir), batch_names + (layout.meta,))

    meta = _unpickle(*files[layout.meta])
    classes = [_text(name) for name in _field(meta, layout.names_key, files[layout.meta][1])]
    images, labels = [], []
    for name in batch_names:
        batch_images, batch_labels = _decode_batch(_unpickle(*files[name]), layout, files[name][1])
        images.append(batch_images)
        labels.append(batch_labels)
    return Dataset(np.concatenate(images), np.concatenate(labels), classes,
                   name=f"{layout.key}/{split}")


# --------------------------------------------------------------------------- #
# Finding and reading the files
# --------------------------------------------------------------------------- #
def _read_files(layout, data_dir, names):
    """Return ``{name: (raw bytes, where it came from)}`` from the folder or the archive."""
    folder = data_dir / layout.folder
    if all((folder / name).is_file() for name in names):
        return {name: ((folder / name).read_bytes(), str(folder / name)) for name in names}
    archive = data_dir / layout.archive
    if archive.is_file():
        return _read_archive(archive, [f"{layout.folder}/{name}" for name in names])
    raise FileNotFoundError(
        f"{layout.title} not found: looked for {', '.join(names)} in {folder} and for "
        f"{archive}; download {layout.archive} from {CIFAR_URL} and put it "
        f"(or the {layout.folder} folder it contains) in {data_dir}")


def _read_archive(archive, members):
    """Read the named members of a .tar.gz in memory, keyed by their base name.

    The whole gzip stream is read, to its end, even after the last member is
    found: only there does gzip check its CRC and length, so a corrupted
    archive is reported as corrupt instead of loading with changed pixels.
    """
    found = {}
    try:
        with gzip.open(archive, "rb") as stream:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    name = member.name.removeprefix("./")
                    if name in members and member.isfile() and len(found) < len(members):
                        found[name.rsplit("/", 1)[1]] = (tar.extractfile(member).read(),
                                                         f"{archive}:{name}")
            while stream.read(1 << 20):  # to the end of the stream: the CRC check
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{archive}: truncated or corrupt archive ({err}); "
                         f"download it again from {CIFAR_URL}") from err
    missing = [m for m in members if m.rsplit("/", 1)[1] not in found]
    if missing:
        raise ValueError(f"{archive}: no member {', '.join(missing)}; is it the official "
                         f"archive from {CIFAR_URL}?")
    return found


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that asks to call something a CIFAR file never needs."""


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what the CIFAR files contain.

    Unpickling can call any importable function, and these files come from the
    internet; so only the names a pickled NumPy array needs are allowed.
    """

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"),    # NumPy 1 pickles
               ("numpy._core.multiarray", "_reconstruct"),   # NumPy 2 pickles
               ("numpy.core.numeric", "_frombuffer"),        # protocol 5 (NumPy 1, 2)
               ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}                         # bytes in Python 3 protocol 2

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise UnsafePickleError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _unpickle(raw, source):
    """Load one CIFAR pickle into a dict with str keys."""
    try:
        # Python 2 wrote these files: its byte strings must stay bytes.
        content = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except UnsafePickleError as err:
        raise ValueError(f"{source}: refused as unsafe, not loaded: the pickle asks to call "
                         f"something no CIFAR file holds ({err}); use the official files "
                         f"from {CIFAR_URL}") from None
    except pickle.UnpicklingError as err:
        if "out-of-band" not in str(err):
            raise ValueError(f"{source}: truncated or corrupt CIFAR file "
                             f"({type(err).__name__}: {err}); download it again from "
                             f"{CIFAR_URL}") from err
        raise ValueError(f"{source}: a valid pickle, but not one resnet-np reads: its arrays "
                         "are out-of-band buffers of protocol 5, stored elsewhere; pickle "
                         "it without buffer_callback, or use the official files") from err
    except Exception as err:  # damaged pickles fail in many ways (EOF, KeyError, ...)
        raise ValueError(f"{source}: truncated or corrupt CIFAR file "
                         f"({type(err).__name__}: {err}); download it again from {CIFAR_URL}") from err
    if not isinstance(content, dict):
        raise ValueError(f"{source}: expected a pickled dict, got {type(content).__name__}")
    return {_text(key): value for key, value in content.items()}


def _field(content, key, source):
    if key not in content:
        raise ValueError(f"{source}: no {key!r} entry; found {sorted(content)}")
    return content[key]


def _decode_batch(content, layout, source):
    """Turn a batch dict into uint8 images (n, 32, 32, 3) and int64 labels (n,)."""
    data = np.asarray(_field(content, "data", source))
    labels = np.asarray(_field(content, layout.label_key, source), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{source}: 'data' must be uint8 (n, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise ValueError(f"{source}: {len(data)} images but {labels.size} labels")
    # Each row holds three 32x32 planes, R, G, B: (n, 3, 32, 32) -> (n, 32, 32, 3).
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
