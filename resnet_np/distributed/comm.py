"""Communicators: the few collective operations data-parallel training needs.

Every rank calls the same operations in the same order (that is what makes them
collective). Arrays are summed or broadcast in place:

    allreduce(a)         a <- sum over ranks of a                   (blocking)
    iallreduce(a)        the same, started now; ``.wait()`` finishes it
    broadcast(a, root)   a <- a of rank ``root``
    sum_host(values)     a float64 NumPy array of the sums over ranks (host numbers)
    any(flag)            True on every rank if it is true on one
    bcast_object(obj)    rank 0's Python object, on every rank (pickled)
    allgather_object(o)  the list of every rank's object, in rank order

Every blocking operation of :class:`MPICommunicator` goes through MPI's buffer
calls (objects are pickled into byte arrays first), which release Python's
global lock while they wait, and records when it started waiting
(``waiting_since``): a watchdog thread (:mod:`.watchdog`) can then end a job
whose main thread waits for a rank that will never come.

Three implementations:

    SingleProcess        size 1: every operation is the identity, nothing is imported
    MPICommunicator      mpi4py over MPI.COMM_WORLD, NumPy arrays
    NCCLCommunicator     CuPy arrays through NCCL (cupy.cuda.nccl), one GPU per rank;
                         host numbers and objects through MPI, which also hands every
                         rank the NCCL unique id
"""
import contextlib
import pickle
import sys
import time

import numpy as np


class SingleProcess:
    """The communicator of a run in one process: rank 0 of 1, every operation the identity."""

    rank, size = 0, 1
    waiting_since = None

    def allreduce(self, array):
        return array

    def iallreduce(self, array):
        return _Done()

    def broadcast(self, array, root=0):
        return array

    def sum_host(self, values):
        return np.asarray(values, dtype=np.float64)

    def any(self, flag):
        return bool(flag)

    def bcast_object(self, obj, root=0):
        return obj

    def allgather_object(self, obj):
        return [obj]

    def finish(self, timeout=None):
        """Wait for every rank to get here (nothing to wait for in one process)."""

    def abort(self, code=1):
        raise SystemExit(code)

    def __repr__(self):
        return "SingleProcess()"


class _Done:
    """The request of an operation that had nothing to do."""

    def wait(self):
        pass

    def test(self):
        return True


class MPICommunicator:
    """Collectives over an mpi4py communicator (default ``MPI.COMM_WORLD``) on NumPy arrays.

    Arrays must be C-contiguous NumPy arrays; CuPy arrays go through
    :class:`NCCLCommunicator` (an MPI library built with CUDA support is not
    assumed).
    """

    overlaps = False   # DataParallel's default: MPICH progresses Iallreduce only inside MPI calls

    def __init__(self, comm=None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.waiting_since = None   # time.monotonic() when a blocking call began, else None

    @contextlib.contextmanager
    def _waiting(self):
        """Mark a blocking call (the outermost one, when calls nest)."""
        if self.waiting_since is not None:
            yield
            return
        self.waiting_since = time.monotonic()
        try:
            yield
        finally:
            self.waiting_since = None

    def allreduce(self, array):
        with self._waiting():
            self.comm.Allreduce(self.MPI.IN_PLACE, _host_buffer(array), op=self.MPI.SUM)
        return array

    def iallreduce(self, array):
        return _MPIRequest(self.comm.Iallreduce(self.MPI.IN_PLACE, _host_buffer(array),
                                                op=self.MPI.SUM), self)

    def broadcast(self, array, root=0):
        with self._waiting():
            self.comm.Bcast(_host_buffer(array), root=root)
        return array

    def sum_host(self, values):
        values = np.array(values, dtype=np.float64)
        with self._waiting():
            self.comm.Allreduce(self.MPI.IN_PLACE, values, op=self.MPI.SUM)
        return values

    def any(self, flag):
        value = np.array([int(bool(flag))], dtype=np.int64)
        with self._waiting():
            self.comm.Allreduce(self.MPI.IN_PLACE, value, op=self.MPI.MAX)
        return bool(value[0])

    def bcast_object(self, obj, root=0):
        with self._waiting():
            data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8) if self.rank == root else None
            length = np.array([0 if data is None else data.size], dtype=np.int64)
            self.comm.Bcast(length, root=root)
            if data is None:
                data = np.empty(int(length[0]), dtype=np.uint8)
            self.comm.Bcast(data, root=root)
        return obj if self.rank == root else pickle.loads(data.tobytes())

    def allgather_object(self, obj):
        with self._waiting():
            mine = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
            lengths = np.empty(self.size, dtype=np.int64)
            self.comm.Allgather(np.array([mine.size], dtype=np.int64), lengths)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            data = np.empty(int(offsets[-1]), dtype=np.uint8)
            self.comm.Allgatherv(mine, [data, lengths.tolist(), offsets[:-1].tolist(),
                                        self.MPI.BYTE])
        return [pickle.loads(data[start:end].tobytes())
                for start, end in zip(offsets[:-1], offsets[1:])]

    def finish(self, timeout=60.0):
        """Wait for every rank to get here; abort the job if one has not after ``timeout`` s.

        A rank that took another path (it stopped while the others still wait
        in a collective) would otherwise leave them waiting forever.
        """
        request = self.comm.Ibarrier()
        deadline = time.monotonic() + timeout
        while not request.Test():   # Python code runs in between: signals are handled
            if time.monotonic() > deadline:
                _say(f"rank {self.rank} of {self.size}: the other ranks did not finish within "
                     f"{timeout:.0f} s; aborting the job")
                self.abort(1)
            time.sleep(0.01)

    def abort(self, code=1):
        """End every process of the job at once (MPI_Abort); never returns."""
        self.comm.Abort(code)

    def __repr__(self):
        return f"MPICommunicator(rank={self.rank}, size={self.size})"


class _MPIRequest:
    def __init__(self, request, owner):
        self.request, self.owner = request, owner

    def wait(self):
        with self.owner._waiting():
            self.request.Wait()

    def test(self):
        """Let MPI progress the operation; True once it is complete."""
        return self.request.Test()


def _host_buffer(array):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"MPICommunicator works on NumPy arrays, got {type(array).__name__}; "
                        "GPU arrays go through NCCLCommunicator (--device gpu)")
    if not array.flags.c_contiguous:
        raise ValueError("MPICommunicator needs C-contiguous arrays (a flat buffer)")
    return array


class NCCLCommunicator:
    """Collectives on CuPy arrays through NCCL; the rest through an :class:`MPICommunicator`.

    Each rank drives one GPU, chosen before this communicator is made (see
    :func:`resnet_np.distributed.init`). Operations on device arrays run on a
    stream of their own, ordered after the work already queued on the current
    stream, and the current stream waits for them in turn: the host never
    blocks on a reduction, and :meth:`iallreduce` overlaps it with the kernels
    queued after it.
    """

    overlaps = True    # its reductions run on a stream of their own, beside the backward

    def __init__(self, mpi=None):
        import cupy
        from cupy.cuda import nccl
        self.cupy, self.nccl = cupy, nccl
        self.mpi = MPICommunicator() if mpi is None else mpi
        self.rank, self.size = self.mpi.rank, self.mpi.size
        uid = self.mpi.bcast_object(nccl.get_unique_id() if self.rank == 0 else None)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
                       "float16": nccl.NCCL_FLOAT16, "int64": nccl.NCCL_INT64,
                       "int32": nccl.NCCL_INT32}

    @property
    def waiting_since(self):
        """The host waits only in the MPI calls (NCCL's run on a stream)."""
        return self.mpi.waiting_since

    def _dtype(self, array):
        if not isinstance(array, self.cupy.ndarray):
            raise TypeError(f"NCCLCommunicator works on CuPy arrays, got {type(array).__name__}")
        if not array.flags.c_contiguous:
            raise ValueError("NCCLCommunicator needs C-contiguous arrays (a flat buffer)")
        try:
            return self._types[array.dtype.name]
        except KeyError:
            raise TypeError(f"NCCL cannot reduce {array.dtype} arrays") from None

    def _on_own_stream(self, launch):
        """Run ``launch(stream_ptr)`` after the current stream's work; return its end event."""
        current = self.cupy.cuda.get_current_stream()
        self.stream.wait_event(current.record())
        launch(self.stream.ptr)
        return _NCCLRequest(self.stream.record(), current)

    def iallreduce(self, array):
        kind = self._dtype(array)
        return self._on_own_stream(lambda stream: self.comm.allReduce(
            array.data.ptr, array.data.ptr, array.size, kind, self.nccl.NCCL_SUM, stream))

    def allreduce(self, array):
        self.iallreduce(array).wait()
        return array

    def broadcast(self, array, root=0):
        kind = self._dtype(array)
        self._on_own_stream(lambda stream: self.comm.bcast(
            array.data.ptr, array.size, kind, root, stream)).wait()
        return array

    def sum_host(self, values):
        return self.mpi.sum_host(values)

    def any(self, flag):
        return self.mpi.any(flag)

    def bcast_object(self, obj, root=0):
        return self.mpi.bcast_object(obj, root)

    def allgather_object(self, obj):
        return self.mpi.allgather_object(obj)

    def finish(self, timeout=60.0):
        self.cupy.cuda.get_current_stream().synchronize()
        self.mpi.finish(timeout)

    def abort(self, code=1):
        self.mpi.abort(code)

    def __repr__(self):
        return f"NCCLCommunicator(rank={self.rank}, size={self.size})"


class _NCCLRequest:
    def __init__(self, done, stream):
        self.done, self.stream = done, stream

    def wait(self):
        """The stream that started the operation waits for it (the host does not)."""
        self.stream.wait_event(self.done)

    def test(self):
        return self.done.done


def _say(message):
    print(message, file=sys.stderr, flush=True)
