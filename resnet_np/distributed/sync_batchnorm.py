"""Batch normalisation over the whole global batch: the statistics of every rank's part.

    x (N_r, C, H, W) on rank r, gamma, beta, running_mean, running_var (C,)  ->  out (N_r, C, H, W)

The single-process code (:mod:`resnet_np.functional.batchnorm`) with its
per-channel sums added over every rank by ``comm.allreduce`` (its ``reduce``
hook), so the float64 block sums and the float64 rounding of the mean are the
same. With M = sum over ranks of N_r*H*W values per channel:

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

Three allreduces of C + 1 or fewer float64 numbers: the sums and M, the sums of
squares, and in the backward dbeta, dgamma and M. Eval mode is BatchNorm2d's:
the running statistics, no communication.
"""
from .. import backend
from ..functional.batchnorm import batch_norm2d_backward, batch_norm2d_forward
from ..nn import BatchNorm2d


def sync_batch_norm2d_forward(x, gamma, beta, running_mean, running_var, comm,
                              momentum=0.1, eps=1e-5):
    """Train-mode batch norm with the statistics of every rank's batch.

    Returns ``out (N_r, C, H, W), cache``; updates the running statistics in
    place (equally on every rank), unless they are None. ``gamma`` and ``beta``
    may be None (no affine parameters: 1 and 0).
    """
    return batch_norm2d_forward(x, gamma, beta, running_mean, running_var, True, momentum, eps,
                                reduce=comm.allreduce)


def sync_batch_norm2d_backward(dout, cache):
    """dout (N_r, C, H, W)  ->  dx (N_r, C, H, W), dgamma_r (C,), dbeta_r (C,) of this rank."""
    return batch_norm2d_backward(dout, cache)


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
