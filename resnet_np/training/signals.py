"""Ctrl-C and SIGTERM during a run: stop after this batch and save, or stop at once.

A first Ctrl-C (SIGINT) or SIGTERM (as a timeout or a scheduler sends) asks the
loop to stop after the current batch (:attr:`StopSignals.requested`); the loop
saves ``last.npz`` and ends with exit status 130 or 143, as shells report. A
second one raises KeyboardInterrupt at once and sets :attr:`StopSignals.forced`:
the run stops without saving anything, wherever it is (inside a batch, or
half-way through writing ``best.npz``), so every file keeps its last complete
state.

Under several processes, a :class:`~resnet_np.distributed.SignalWatchdog` also
runs: a rank that a signal finds waiting for the others in MPI (where Python
runs no handler) ends the whole job within seconds.
"""
import contextlib
import os
import signal
import threading

# Exit statuses of a run stopped by a signal: 128 + the signal's number, as shells report.
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopSignals:
    """While the ``with`` block runs in the main thread: Ctrl-C and SIGTERM handled as the
    module docstring says; the previous handlers come back afterwards.

    Attributes
    ----------
    requested : bool
        A stop was asked for (the first signal).
    forced : bool
        A second signal came: stop now, save nothing.
    signal : signal.Signals or None
        The first signal received.
    """

    def __init__(self, comm=None):
        self.comm = comm
        self.requested, self.forced, self.signal = False, False, None
        self._previous, self._watchdog = {}, None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self   # signal handlers can only be set from the main thread
        self._previous = {signum: signal.signal(signum, self._handle) for signum in EXIT_STATUS}
        if self.comm is not None and self.comm.size > 1:
            from ..distributed import SignalWatchdog
            self._watchdog = SignalWatchdog(self.comm).__enter__()
        return self

    def __exit__(self, *exc):
        if self._watchdog is not None:
            self._watchdog.__exit__(*exc)
            self._watchdog = None
        for signum, old in self._previous.items():
            signal.signal(signum, old)
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested, self.signal = True, signal.Signals(signum)
        name = b"Ctrl-C" if signum == signal.SIGINT else b"SIGTERM"
        again = b"Ctrl-C" if signum == signal.SIGINT else b"it"
        # os.write: safe inside a signal handler, unlike print or tqdm.
        with contextlib.suppress(OSError):
            os.write(2, b"\n" + name + b": saving a checkpoint after this batch (send " + again
                     + b" again to stop at once)\n")
