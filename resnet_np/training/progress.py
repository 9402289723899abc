"""Progress bars (tqdm when installed and wanted) and log lines that do not break them."""
import contextlib
import sys


class _NoBar:
    """Stands in for a tqdm bar when progress is off or tqdm is missing."""

    def update(self, n=1):
        pass

    def set_postfix_str(self, text, refresh=True):
        pass


@contextlib.contextmanager
def progress_bar(total, desc="", initial=0, enabled=True):
    """A tqdm bar over ``total`` batches, or a silent stand-in.

    Yields an object with ``update(n)`` and ``set_postfix_str(text)``.
    """
    if not enabled:
        yield _NoBar()
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        yield _NoBar()
        return
    bar = tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
               dynamic_ncols=True, file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


def log(message):
    """Print a line to stdout without tearing an active tqdm bar."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(message, flush=True)
        return
    tqdm.write(message, file=sys.stdout)
