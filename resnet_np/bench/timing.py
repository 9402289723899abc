"""Timing done the same way for every backend, and the thread pools that decide it.

``measure`` runs a function ``warmup`` times untimed, then ``reps`` times
timed: on the host's clock with the device synchronised around every run, or
on a GPU between two CUDA events. ``Timing`` keeps the raw times and gives the
median, min, max and quartiles.
"""
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """The seconds of each timed repetition, and their statistics."""
    times: tuple

    @property
    def median(self):
        return statistics.median(self.times)

    @property
    def min(self):
        return min(self.times)

    @property
    def max(self):
        return max(self.times)

    @property
    def quartiles(self):
        """(Q1, Q3), linearly interpolated as numpy.percentile does."""
        q1, q3 = np.percentile(self.times, [25, 75])
        return float(q1), float(q3)


def no_sync():
    """The CPU needs no synchronisation: its work is done when the call returns."""


def event_timer(make_event, elapsed_ms):
    """A timer on the GPU's own clock: events recorded on the stream before and after the
    run; the time between them once the second has happened (gaps in the queue included)."""
    def timer(run):
        start, end = make_event(), make_event()
        start.record()
        run()
        end.record()
        end.synchronize()
        return elapsed_ms(start, end) / 1e3
    return timer


def measure(fn, setup=None, warmup=1, reps=3, sync=no_sync, clock=time.perf_counter, timer=None):
    """Time ``fn``: ``warmup`` untimed calls, then ``reps`` timed ones -> Timing.

    setup  called untimed before every call; its result is fn's argument (a
           fresh forward before each backward, so no run reuses another's cache)
    timer  ``timer(run) -> seconds`` (:func:`event_timer`); by default ``clock``
           (a fake one in the tests), with ``sync`` (waiting for the device) called
           before the clock starts and before it stops
    """
    if reps < 1:
        raise ValueError(f"measure: reps must be >= 1, got {reps}")

    def on_the_clock(run):
        sync()
        start = clock()
        run()
        sync()
        return clock() - start

    def once():
        args = (setup(),) if setup is not None else ()
        return (timer or on_the_clock)(lambda: fn(*args))

    for _ in range(warmup):
        once()
    return Timing(tuple(once() for _ in range(reps)))


def set_threads(threads):
    """Give NumPy's BLAS (through threadpoolctl), resnet-np's elementwise passes and torch
    ``threads`` threads.

    ``None`` leaves both as the environment set them. Import torch first where
    it is wanted: a torch loaded later keeps its own default. Returns a function
    that restores what was there before.
    """
    if threads is None:
        return no_sync
    torch = sys.modules.get("torch")  # only if loaded: importing it would cost seconds
    from .. import backend
    backend.set_elementwise_threads(threads)
    undo = [lambda: backend.set_elementwise_threads(None)]
    try:
        from threadpoolctl import threadpool_limits
        undo.append(threadpool_limits(limits=threads).restore_original_limits)
    except ImportError:
        print("warning: threadpoolctl is not installed, so NumPy's BLAS threads are left as "
              "they are (pip install threadpoolctl)", file=sys.stderr)
    if torch is not None:
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        undo.append(lambda: torch.set_num_threads(old))

    def restore():
        for step in reversed(undo):
            step()
    return restore


def thread_report():
    """The thread pools as they are now, e.g. 'BLAS openblas (Haswell kernels) 2 threads,
    torch 2 threads': the kernels are those OpenBLAS chose for this processor, or the ones
    OPENBLAS_CORETYPE forces."""
    parts = []
    try:
        from threadpoolctl import threadpool_info
        parts += [f"BLAS {pool['internal_api']}"
                  + (f" ({pool['architecture']} kernels)" if pool.get("architecture") else "")
                  + f" {pool['num_threads']} threads"
                  for pool in threadpool_info() if pool["user_api"] == "blas"]
    except ImportError:
        parts.append("BLAS threads unknown (no threadpoolctl)")
    if "torch" in sys.modules:
        parts.append(f"torch {sys.modules['torch'].get_num_threads()} threads")
    return ", ".join(parts)
