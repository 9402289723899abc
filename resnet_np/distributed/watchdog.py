"""A signal ends a job of several processes within seconds, whatever its ranks are doing.

Python runs a signal handler only in the main thread, between two bytecodes. A
rank waiting inside an MPI call (for a rank that is gone, or that took another
path) runs none, so Ctrl-C and SIGTERM would wait as long as it does: forever.

:class:`SignalWatchdog` is a thread woken by every signal the process has a
Python handler for, through ``signal.set_wakeup_fd`` (the interpreter writes the
signal's number there in C, the moment it arrives, whatever the main thread
does). After a signal it watches the communicator's ``waiting_since`` (the
start of the blocking call the main thread is in, see :mod:`.comm`):

    waiting more than ``grace`` seconds since the signal     MPI Abort: the job ends
    a second signal while waiting                            MPI Abort at once
    not waiting                                              nothing: the main thread's
                                                             handler answers (stop after
                                                             this batch and save)

Ranks step together (every step ends in an allreduce), so a rank that answers
the signal keeps its peers waiting a fraction of a second, not ``grace``.
"""
import contextlib
import os
import select
import signal
import threading
import time

GRACE_S = 5.0
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class SignalWatchdog:
    """While the ``with`` block runs (in the main thread): end the job if a signal finds
    the main thread waiting in a collective operation (see the module docstring).

    Parameters
    ----------
    comm : communicator
        Its ``waiting_since`` is watched, its ``abort`` ends the job.
    grace : float
        Seconds a wait may last after a signal.
    prog : str
        The prefix of the line printed before the job is ended.
    """

    def __init__(self, comm, grace=GRACE_S, prog="resnet-np"):
        self.comm, self.grace, self.prog = comm, grace, prog
        self._stop = threading.Event()
        self._signals = []       # (signal number, time.monotonic()) in arrival order

    def __enter__(self):
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="resnet_np-watchdog",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        signal.set_wakeup_fd(self._previous)
        self._stop.set()
        self._thread.join(timeout=1.0)
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _watch(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self._read], [], [], 0.1)
            now = time.monotonic()
            if ready:
                with contextlib.suppress(OSError):
                    self._signals += [(number, now) for number in os.read(self._read, 64)]
            if self._signals and not self._stop.is_set():
                self._check(now)

    def _check(self, now):
        since = self.comm.waiting_since
        if since is None:
            return
        first, first_at = self._signals[0]
        waited = now - max(since, first_at)
        again = len(self._signals) > 1 and since <= self._signals[-1][1]
        if waited > self.grace or again:
            self._end(first, now - since)

    def _end(self, signum, waited):
        name = NAMES.get(signum, f"signal {signum}")
        line = (f"{self.prog}: error: rank {self.comm.rank} of {self.comm.size}: {name} "
                f"while waiting {waited:.0f} s for the other ranks in a collective operation; "
                "ending the job without saving\n")
        with contextlib.suppress(OSError):
            os.write(2, line.encode())
        code = 128 + signum
        try:
            self.comm.abort(code)
        finally:
            os._exit(code)   # abort returns only if MPI could not end the job
