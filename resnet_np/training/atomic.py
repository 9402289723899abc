"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The data goes to a temporary file in the destination's own folder (so the
final rename never crosses file systems), is flushed and fsync'ed, and only
then ``os.replace``-d over the destination, which POSIX and Windows both do in
one step. A crash, a full disk or a Ctrl-C before that point leaves the old
file untouched and removes the temporary one.
"""
import contextlib
import errno
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file that replaces ``path`` when the ``with`` block succeeds.

    Parameters
    ----------
    path : str or path-like
        The destination; its folder must exist.
    mode : {"wb", "w"}
        Binary or text (UTF-8).

    Yields
    ------
    file object
        Write the whole new content to it. If the block raises, the
        destination is left as it was.

    Raises
    ------
    OSError
        Of the same type and errno as the system's, with a message that names
        ``path`` and the cause (its folder is gone, the disk is full...), not
        the temporary file's name.
    """
    path = Path(path)
    prefix, suffix = temp_name_pattern(path.name).split("*")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    except OSError as err:
        raise _naming(err, path) from err
    try:
        # mkstemp makes the file private (0600); give it the usual permissions.
        os.chmod(tmp, 0o666 & ~_umask())
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno is not None:
            raise _naming(err, path) from err
        raise
    _fsync_folder(path.parent)


def _naming(err, path):
    """``err`` (an OSError) again, its message naming what was being written and why."""
    folder = path.parent
    if err.errno == errno.ENOENT and not folder.is_dir():
        cause = f"its folder {folder} does not exist (deleted or moved?)"
    elif err.errno == errno.ENOSPC:
        cause = f"no space left on the device holding {folder}"
    elif err.errno == errno.EDQUOT:
        cause = f"disk quota exceeded on {folder}"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        cause = f"{err.strerror.lower()} in {folder}"
    else:
        cause = f"{err.strerror or err} (in {folder})"
    named = type(err)(f"cannot write {path}: {cause}")
    named.errno = err.errno        # str(named) stays the message above
    return named


def temp_name_pattern(name):
    """The glob pattern of the temporary files :func:`atomic_write` makes for ``name``."""
    return f".{name}.*.tmp"


def remove_stale_temp_files(folder, names):
    """Remove temporary files of ``atomic_write(folder / name)`` left by a killed process.

    Only files of the pattern :func:`atomic_write` uses for the given names are
    touched. Returns the paths removed.
    """
    removed = []
    for name in names:
        for tmp in Path(folder).glob(temp_name_pattern(name)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def atomic_write_text(path, text):
    """Replace ``path`` with ``text`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder):
    """Make the rename itself durable; not possible (nor needed) on every platform."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
