"""Starting and ending a run of several processes.

    world_size()      the number of processes an MPI launcher started (1 when none),
                      read from its environment variables: mpi4py is imported only
                      where those do not say
    init(device)      the communicator of this process: MPI for NumPy, NCCL for CuPy
    for_device        the same from an MPI communicator (on a GPU: this rank's GPU, NCCL)
    check_same_run    every rank holds the data and settings of rank 0, or all stop
    abort_on_error    a rank that fails prints its message and ends every rank
"""
import contextlib
import os
import sys
import traceback

from .comm import MPICommunicator, NCCLCommunicator

# Set by the launchers of MPICH and Intel MPI (Hydra, also Slurm's PMI-2), Open MPI, MVAPICH.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
# Set by launchers that do not give the size (PMIx): ask MPI.
RANK_VARIABLES = ("PMIX_RANK", "PMI_RANK")
LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK",
                        "MV2_COMM_WORLD_LOCAL_RANK")
INSTALL_HINT = "pip install 'resnet-np[mpi]' (mpi4py and an MPI library)"


def world_size(environ=None):
    """How many processes the MPI launcher started; 1 when this process was started alone."""
    environ = os.environ if environ is None else environ
    for name in SIZE_VARIABLES:
        if environ.get(name, "").isdigit():
            return int(environ[name])
    if any(name in environ for name in RANK_VARIABLES):
        return _mpi().COMM_WORLD.Get_size()
    return 1


def init(device="cpu"):
    """This process's communicator: MPI over NumPy arrays, or NCCL with ``device="gpu"``.

    On a GPU each rank takes the GPU of its index among the ranks of its
    machine (modulo the GPUs it sees), so ``mpiexec -n 4`` on a 4-GPU machine
    uses all four, and ``CUDA_VISIBLE_DEVICES`` still picks which.
    """
    return for_device(MPICommunicator(_mpi().COMM_WORLD), device)


def for_device(comm, device):
    """``comm`` as the communicator for ``device``: an MPICommunicator becomes an
    NCCLCommunicator on "gpu", after this rank has taken its GPU."""
    if device not in ("gpu", "cuda") or not isinstance(comm, MPICommunicator):
        return comm
    from .. import backend
    cupy = backend.require_gpu()
    count = cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(local_rank(comm) % count).use()
    return NCCLCommunicator(comm)


def local_rank(mpi):
    """The index of this rank among the ranks of its machine."""
    for name in LOCAL_RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    MPI = mpi.MPI
    return mpi.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise ImportError(f"this process was started by an MPI launcher but mpi4py cannot "
                          f"be imported ({err}); {INSTALL_HINT}") from None
    return MPI


class RanksDisagree(ValueError):
    """Raised alike on every rank (they all compared the same facts): the job stops
    with one line, printed by rank 0, and no rank is left waiting."""


def check_same_run(comm, facts):
    """Raise :class:`RanksDisagree` on every rank unless every rank's ``facts`` equal rank 0's.

    ``facts`` is a list of ``(what, value)`` pairs, the same ``what`` in the same
    order on every rank (the size of the training set, its classes, a fingerprint
    of its images, each setting...). Ranks whose data differ would otherwise
    take different numbers of steps and wait for each other forever.
    """
    if comm.size == 1:
        return
    every = comm.allgather_object(list(facts))
    for rank, theirs in enumerate(every[1:], start=1):
        for (what, ours), (_, value) in zip(every[0], theirs):
            if value != ours:
                raise RanksDisagree(
                    f"rank {rank} of {comm.size} does not hold what rank 0 holds: its {what} "
                    f"is {_short(value)}, rank 0's {_short(ours)}; every rank must train on "
                    "the same data with the same settings")


def _short(value, width=60):
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[:width - 3] + "..."


@contextlib.contextmanager
def abort_on_error(comm, prog="resnet-np", show_traceback=False, user_errors=(Exception,)):
    """Turn an exception on one rank into the end of the whole job, with that rank's message.

    Without this, a rank that stops leaves the others waiting forever in
    their next collective. Inside the block an exception is printed as
    ``prog: error: rank R of N: message`` (with the traceback when it is not
    one of ``user_errors`` or ``show_traceback`` is set), then MPI Abort ends
    every process of the job with a non-zero status: 130 for Ctrl-C, 1 else.
    When the block ends normally the rank waits (bounded) for the others.
    ``comm`` None (one process) makes this a no-op.
    """
    if comm is None or comm.size == 1:
        yield
        return
    try:
        yield
        comm.finish()
    except SystemExit as err:
        if err.code in (0, None):
            comm.finish()
            raise
        _report(comm, prog, f"exit status {err.code}", None)
        comm.abort(err.code if isinstance(err.code, int) else 1)
    except KeyboardInterrupt:
        _report(comm, prog, "interrupted", None)
        comm.abort(130)
    except RanksDisagree as err:   # every rank stops here by itself: no abort needed
        if comm.rank == 0:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            sys.stderr.write(f"{prog}: error: {err}\n")
            sys.stderr.flush()
        raise SystemExit(1) from None
    except BaseException as err:
        message = " ".join(str(err).split()) or type(err).__name__
        trace = None
        if show_traceback or not isinstance(err, user_errors):
            trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        _report(comm, prog, message, trace)
        comm.abort(1)


def _report(comm, prog, message, trace):
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    if trace:
        sys.stderr.write(trace)
    sys.stderr.write(f"{prog}: error: rank {comm.rank} of {comm.size}: {message}; "
                     "stopping every rank\n")
    sys.stderr.flush()
