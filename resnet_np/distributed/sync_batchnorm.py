"""Batch normalisation over the whole global batch: the statistics of every rank's part.

    x (N_r, C, H, W) on rank r, gamma, beta, running_mean, running_var (C,)  ->  out (N_r, C, H, W)

With M = sum over ranks of N_r*H*W values per channel, and sums over every rank
(an allreduce of C numbers each):

    mu   = sum(x) / M                        var = sum((x - mu)^2) / M   (two passes:
    xhat = (x - mu) / sqrt(var + eps)        out = gamma * xhat + beta    no cancellation)
    running_mean, running_var: as BatchNorm2d, from mu and var * M / (M - 1)

Backward, from the same formula as one process's batch norm on the global batch:

    dbeta_r  = sum_r(dout)                   dgamma_r = sum_r(dout * xhat)    (this rank's part)
    dbeta, dgamma = allreduce(dbeta_r, dgamma_r)
    dx       = gamma / sqrt(var + eps) * (dout - dbeta / M - xhat * dgamma / M)

and the parameters get this rank's ``dgamma_r, dbeta_r``: the gradient
allreduce averages them like every other gradient. Each rank's loss is the
mean over its own N_r images, so its gradients are R times those of one
process's mean over R*N_r; the factor cancels in the average.

Eval mode is BatchNorm2d's: the running statistics, no communication.
"""
from typing import Any, NamedTuple

from .. import backend
from ..functional._checks import check_dout, check_float, check_rank, check_same_dtype
from ..nn import BatchNorm2d


class SyncBatchNormCache(NamedTuple):
    """What the backward needs: x - mu (channels last), 1/sqrt(var + eps), gamma, M."""
    centered: Any      # (N_r*H*W, C)
    inv_std: Any       # (C,)
    gamma: Any         # (C,)
    count: float       # M, over every rank
    shape: tuple       # (N_r, C, H, W)
    comm: Any


def _channels_last(x):
    """(N, C, H, W) -> (N*H*W, C), contiguous."""
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    return xp.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(N * H * W, C)


def _channels_first(mat, shape):
    N, C, H, W = shape
    return mat.reshape(N, H, W, C).transpose(0, 3, 1, 2)


def sync_batch_norm2d_forward(x, gamma, beta, running_mean, running_var, comm,
                              momentum=0.1, eps=1e-5):
    """Train-mode batch norm with the statistics of every rank's batch.

    Returns ``out (N_r, C, H, W), cache``; updates the running statistics in
    place (equally on every rank), unless they are None. ``gamma`` and ``beta``
    may be None (no affine parameters: 1 and 0). Two allreduces: the sums and M
    (C + 1 float64 numbers), then the sums of squares (C numbers).
    """
    layer = "sync_batch_norm2d"
    check_rank(layer, x, 4, "(N, C, H, W)")
    check_float(layer, x)
    for name, p in (("weight", gamma), ("bias", beta), ("running_mean", running_mean)):
        if p is not None:
            check_same_dtype(layer, x, p, name)
            if p.shape != (x.shape[1],):
                raise ValueError(f"{layer}: input has {x.shape[1]} channels but the layer has "
                                 f"{p.shape[0]} (x.shape={tuple(x.shape)})")
    xp = backend.get_array_module(x)
    x_mat = _channels_last(x)
    C = x_mat.shape[1]
    sums = xp.empty(C + 1, dtype=xp.float64)   # float64: the count M stays exact
    sums[:C] = x_mat.sum(axis=0)
    sums[C] = x_mat.shape[0]
    comm.allreduce(sums)
    count = float(comm.sum_host([x_mat.shape[0]])[0])   # on the host: no device sync
    if count < 2:
        raise ValueError(f"{layer}: train mode needs more than 1 value per channel over all "
                         f"ranks, got input shape {tuple(x.shape)} on {comm.size} rank(s)")
    mean = (sums[:C] / count).astype(x.dtype, copy=False)
    centered = x_mat - mean
    var = xp.einsum("mc,mc->c", centered, centered)
    comm.allreduce(var)
    var /= count
    if running_mean is not None:
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (count / (count - 1))
    inv_std = 1 / xp.sqrt(var + eps)
    out = centered * (inv_std if gamma is None else gamma * inv_std)
    if beta is not None:
        out += beta
    cache = SyncBatchNormCache(centered, inv_std, gamma, count, tuple(x.shape), comm)
    return _channels_first(out, x.shape), cache


def sync_batch_norm2d_backward(dout, cache):
    """dout (N_r, C, H, W)  ->  dx (N_r, C, H, W), dgamma_r (C,), dbeta_r (C,) of this rank."""
    check_dout("sync_batch_norm2d", dout, cache.shape)
    xp = backend.get_array_module(dout)
    dout_mat = _channels_last(dout)
    C = dout_mat.shape[1]
    local = xp.empty(2 * C, dtype=dout.dtype)
    local[:C] = dout_mat.sum(axis=0)                                              # dbeta_r
    local[C:] = xp.einsum("mc,mc->c", dout_mat, cache.centered) * cache.inv_std   # dgamma_r
    total = cache.comm.allreduce(local.copy())
    dbeta, dgamma = total[:C], total[C:]
    M = cache.count
    # dx = scale * (dout - dbeta / M - xhat * dgamma / M), with xhat = centered * inv_std
    dx = cache.centered * (-cache.inv_std * dgamma / M)
    dx += dout_mat
    dx -= dbeta / M
    dx *= cache.inv_std if cache.gamma is None else cache.gamma * cache.inv_std
    return _channels_first(dx, cache.shape), local[C:], local[:C]


class SyncBatchNorm2d(BatchNorm2d):
    """BatchNorm2d whose train-mode statistics are those of the global batch (all ranks).

    Same parameters, buffers and state_dict keys as BatchNorm2d, so checkpoints
    move freely between the two. ``comm`` may be set after construction;
    :meth:`convert_sync_batchnorm` does it for every batch norm of a model.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, *, bias=True, dtype="float32", comm=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, bias=bias,
                         dtype=dtype)
        object.__setattr__(self, "comm", comm)

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        if self.comm is None:
            raise RuntimeError(f"{self.name}: SyncBatchNorm2d has no communicator; "
                               "use SyncBatchNorm2d.convert_sync_batchnorm(model, comm)")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:       # as BatchNorm2d: count, and None's cumulative average
            count = self.num_batches_tracked
            self.num_batches_tracked = backend.get_array_module(count).asarray(count + 1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        out, cache = sync_batch_norm2d_forward(
            x, None if self.weight is None else self.weight.data,
            None if self.bias is None else self.bias.data, self.running_mean, self.running_var,
            self.comm, factor, self.eps)
        self._save(cache)
        return out

    def backward(self, dout):
        cache = self._pop_cache()
        if not isinstance(cache, SyncBatchNormCache):   # an eval-mode forward
            self._save(cache)
            return super().backward(dout)
        dx, dgamma, dbeta = sync_batch_norm2d_backward(dout, cache)
        if self.weight is not None:
            self.weight.accumulate_grad(dgamma)
        if self.bias is not None:
            self.bias.accumulate_grad(dbeta)
        return dx

    @classmethod
    def convert_sync_batchnorm(cls, module, comm):
        """Replace every BatchNorm2d inside ``module`` by a SyncBatchNorm2d using ``comm``.

        The new layers take over the same Parameter objects and buffers, and
        keep their place in the model (state_dict order and optimizer indices
        do not change). Returns ``module`` (or the new layer if ``module`` is
        itself a BatchNorm2d).
        """
        if type(module) is BatchNorm2d:
            return cls._from(module, comm)
        for _, parent in list(module.named_modules()):
            for name, child in list(parent._modules.items()):
                if type(child) is BatchNorm2d:
                    new = cls._from(child, comm)
                    parent._modules[name] = new            # same key, same place
                    object.__setattr__(parent, name, new)
                    new._set_path(child._path)
        return module

    @classmethod
    def _from(cls, bn, comm):
        new = cls.__new__(cls)
        new.__dict__.update(bn.__dict__)   # parameters, buffers, eps, momentum, mode, path
        object.__setattr__(new, "comm", comm)
        return new

    def extra_repr(self):
        return super().extra_repr() + f", comm={self.comm!r}"
