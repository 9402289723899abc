"""Data parallelism: every rank holds the whole model, sees its own part of each batch,
and applies the same averaged gradient, so the ranks stay equal step after step.

    broadcast_state(model, comm)      parameters and buffers of rank 0, on every rank
    GradientAllreduce(params, comm)   gradients averaged over ranks after each backward,
                                      in a few large flat buffers (buckets)
    DataParallel(model, comm)         both, around a model

Buckets. The parameters are taken in reverse order (the order in which a
backward pass completes their gradients) and packed, per dtype, into flat
buffers of about ``bucket_mb`` megabytes. One allreduce per bucket, not one per
tensor: ResNet-50 has 161 parameter tensors, and each call costs a latency.

Overlap. Each parameter's ``accumulate_grad`` is wrapped, so the moment the
last gradient of a bucket arrives the bucket is copied into its buffer and its
non-blocking allreduce starts, while the backward pass goes on with the layers
below. With NCCL the reduction runs on its own CUDA stream; with MPI it
progresses whenever MPI is entered (each wrapped call tests the requests in
flight). ``finish()`` waits for the rest, divides by the number of ranks and
makes each ``param.grad`` a view of its bucket (no copy back).

A parameter is expected to receive one gradient per backward pass (true of
every model in this package); one that receives none counts as a zero gradient.
"""
import time

import numpy as np

from .. import backend


def broadcast_state(model, comm, root=0, parameters=True, buffers=True):
    """Overwrite ``model``'s parameters and/or buffers with those of rank ``root``.

    Arrays are packed per dtype into one flat buffer each: a ResNet's state
    is sent in two or three broadcasts.
    """
    if comm.size == 1:
        return model
    state = model.state_dict()
    trained = {name for name, _ in model.named_parameters()}
    keys = [key for key in state if (parameters if key in trained else buffers)]
    received = {}
    for dtype in sorted({state[key].dtype.name for key in keys}):
        group = [key for key in keys if state[key].dtype.name == dtype]
        xp = backend.get_array_module(state[group[0]])
        flat = xp.concatenate([xp.asarray(state[key]).reshape(-1) for key in group])
        comm.broadcast(flat, root)
        offset = 0
        for key in group:
            shape = state[key].shape
            size = int(np.prod(shape))
            received[key] = flat[offset:offset + size].reshape(shape)
            offset += size
    model.load_state_dict(received, strict=False)
    return model


class _Bucket:
    """Parameters whose gradients are reduced together in one flat buffer."""

    def __init__(self, params):
        self.params = params
        self.offsets = np.cumsum([0] + [p.size for p in params]).tolist()
        xp = backend.get_array_module(params[0].data)
        self.flat = xp.zeros(self.offsets[-1], dtype=params[0].dtype)
        self.arrived = 0        # gradients received in the current backward pass
        self.request = None     # the allreduce in flight

    @property
    def nbytes(self):
        return self.flat.nbytes

    def pack(self):
        """Copy the gradients into the flat buffer (zeros where a gradient is missing)."""
        for p, start, end in zip(self.params, self.offsets, self.offsets[1:]):
            if p.grad is None:
                self.flat[start:end] = 0
            else:
                self.flat[start:end] = p.grad.reshape(-1)

    def unpack(self, scale):
        """flat *= scale, then each gradient becomes a view of its slice."""
        self.flat *= scale
        for p, start, end in zip(self.params, self.offsets, self.offsets[1:]):
            p.grad = self.flat[start:end].reshape(p.shape)


class GradientAllreduce:
    """Average the gradients of ``params`` over the ranks of ``comm`` after each backward.

    Parameters
    ----------
    params : iterable of Parameter
        In the model's order (``model.parameters()``).
    comm : communicator
        See :mod:`resnet_np.distributed.comm`.
    bucket_mb : float
        Size of a bucket, in megabytes (25, as torch's DDP).
    overlap : bool or None
        Start each bucket's allreduce during the backward pass as soon as its
        gradients are complete; otherwise reduce every bucket after it. None: the
        communicator's ``overlaps`` (NCCL yes, on its own stream; MPI no: MPICH
        moves a non-blocking reduction on only inside MPI calls, and
        benchmarks/distributed.py measured a ResNet-18 step 6% slower with it).

    Call :meth:`finish` after each backward pass, before the optimizer step.
    """

    def __init__(self, params, comm, bucket_mb=25.0, overlap=None):
        if bucket_mb <= 0:
            raise ValueError(f"bucket_mb must be > 0, got {bucket_mb}")
        self.comm = comm
        self.overlap = getattr(comm, "overlaps", False) if overlap is None else overlap
        self.params = list(params)
        self.buckets = _make_buckets(self.params, bucket_mb * 2 ** 20)
        self._bucket_of = {id(p): b for b in self.buckets for p in b.params}
        self._started = []      # buckets launched in the current backward, in order
        self.seconds = 0.0      # time spent inside finish() (waiting for communication)
        if comm.size > 1:
            for p in self.params:
                _wrap_accumulate(p, self._arrived)

    @property
    def nbytes(self):
        """Bytes reduced per step."""
        return sum(b.nbytes for b in self.buckets)

    def _arrived(self, param):
        bucket = self._bucket_of[id(param)]
        bucket.arrived += 1
        if bucket.arrived > len(bucket.params):
            raise RuntimeError("a parameter received two gradients in one backward pass; "
                               "GradientAllreduce expects one (call finish() after each backward)")
        if bucket.arrived == len(bucket.params):
            self._start(bucket)
        for b in self._started:   # lets MPI progress what is in flight
            if b.request is not None:
                b.request.test()

    def _start(self, bucket):
        bucket.pack()
        bucket.request = self.comm.iallreduce(bucket.flat) if self.overlap else None
        self._started.append(bucket)

    def finish(self):
        """Wait for every bucket's allreduce; each ``param.grad`` is then the mean over ranks."""
        if self.comm.size == 1:
            return
        tick = time.perf_counter()
        for bucket in self.buckets:     # buckets some of whose gradients never came
            if bucket not in self._started:
                self._start(bucket)
        for bucket in self._started:
            if bucket.request is None:
                self.comm.allreduce(bucket.flat)
            else:
                bucket.request.wait()
            bucket.unpack(1.0 / self.comm.size)
            bucket.arrived, bucket.request = 0, None
        self._started = []
        self.seconds += time.perf_counter() - tick


def _make_buckets(params, max_bytes):
    """Parameters in reverse order, grouped by dtype, cut into buckets of at most max_bytes
    (a single larger parameter gets a bucket of its own)."""
    buckets, open_buckets = [], {}
    for p in reversed(params):
        key = (p.dtype.name, backend.device_of(p.data))
        current = open_buckets.get(key)
        size = p.size * p.dtype.itemsize
        if current is not None and current[1] + size > max_bytes:
            buckets.append(_Bucket(current[0]))
            current = None
        if current is None:
            current = open_buckets[key] = [[], 0]
        current[0].append(p)
        current[1] += size
    buckets += [_Bucket(params) for params, _ in open_buckets.values() if params]
    return buckets


def _wrap_accumulate(param, arrived):
    """Make ``param.accumulate_grad(g)`` also call ``arrived(param)``."""
    accumulate = param.accumulate_grad

    def accumulate_and_signal(grad):
        accumulate(grad)
        arrived(param)

    param.accumulate_grad = accumulate_and_signal


class DataParallel:
    """A model trained on every rank at once.

    At construction the parameters and buffers of rank 0 are broadcast (every
    rank starts equal, whatever its seed) and, with ``sync_bn``, every
    BatchNorm2d becomes a :class:`SyncBatchNorm2d`. Call the wrapper as the
    model; its :meth:`backward` runs the model's and averages the gradients.

    Examples
    --------
    >>> comm = distributed.init()
    >>> parallel = DataParallel(model, comm, sync_bn=True)
    >>> loader = ShardedLoader(train_set, 64, comm.rank, comm.size, shuffle=True)
    >>> for x, y in loader:
    ...     loss = criterion(parallel(x), y)
    ...     optimizer.zero_grad()
    ...     parallel.backward(criterion.backward(), input_grad=False)
    ...     optimizer.step()
    """

    def __init__(self, model, comm, sync_bn=False, bucket_mb=25.0, overlap=None):
        from .sync_batchnorm import SyncBatchNorm2d
        self.module, self.comm = model, comm
        if sync_bn:
            SyncBatchNorm2d.convert_sync_batchnorm(model, comm)
        broadcast_state(model, comm)
        self.gradients = GradientAllreduce(model.parameters(), comm, bucket_mb, overlap)

    def __call__(self, x):
        return self.module(x)

    def backward(self, *args, **kwargs):
        out = self.module.backward(*args, **kwargs)
        self.gradients.finish()
        return out
