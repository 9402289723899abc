"""Batch normalisation over (N, H, W) for each channel, as torch.nn.BatchNorm2d.

    x (N, C, H, W), gamma, beta, running_mean, running_var (C,)  ->  out (N, C, H, W)

Train mode, with M = N*H*W values per channel:

    mu    = mean(x)                          var = mean((x - mu)^2)   (biased)
    xhat  = (x - mu) / sqrt(var + eps)       out = gamma * xhat + beta
    running_mean <- (1 - momentum) * running_mean + momentum * mu
    running_var  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (unbiased)

Eval mode uses running_mean and running_var in place of mu and var.

Backward in the compact closed form (train mode):

    dbeta  = sum(dout)          dgamma = sum(dout * xhat)
    dx     = gamma / sqrt(var + eps) * (dout - dbeta / M - xhat * dgamma / M)

In eval mode mu and var are constants, so dx = gamma / sqrt(running_var + eps) * dout.
"""
from .. import backend
from ._checks import check_dout, check_float, check_rank, check_same_dtype


def _channels_last_matrix(x):
    """(N, C, H, W) -> (N*H*W, C) view of channels-last memory (a copy otherwise)."""
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    return xp.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(N * H * W, C)


def batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training,
                         momentum=0.1, eps=1e-5):
    """Normalise each channel; in train mode also update the running statistics in place.

    Returns ``out (N, C, H, W), cache``. As torch's ``F.batch_norm`` does,
    ``running_mean`` and ``running_var`` are modified in place in train mode.
    """
    layer = "batch_norm2d"
    check_rank(layer, x, 4, "(N, C, H, W)")
    check_float(layer, x)
    check_same_dtype(layer, x, gamma, "weight")
    N, C, H, W = x.shape
    if gamma.shape != (C,):
        raise ValueError(f"{layer}: input has {C} channels but the layer has {gamma.shape[0]} "
                         f"(x.shape={tuple(x.shape)})")
    xp = backend.get_array_module(x)
    x_mat = _channels_last_matrix(x)
    M = x_mat.shape[0]
    if training:
        if M < 2:
            raise ValueError(f"{layer}: train mode needs more than 1 value per channel, got "
                             f"input shape {tuple(x.shape)}")
        mean = x_mat.mean(axis=0)
        centered = x_mat - mean
        var = xp.einsum("mc,mc->c", centered, centered) / M   # one pass, no squared temporary
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (M / (M - 1))
    else:
        mean, var, centered = running_mean, running_var, None
    inv_std = 1 / xp.sqrt(var + eps)
    # out = gamma * (x - mean) * inv_std + beta, as one scale and one shift per channel:
    # two passes over the activations instead of four.
    scale = gamma * inv_std
    if training:
        out = centered * scale
        out += beta
    else:
        out = x_mat * scale
        out += beta - mean * scale
    # Train mode keeps x - mean; eval mode keeps x (its own input, no new memory).
    cache = (None if training else x_mat, centered, mean, inv_std, gamma, training, x.shape)
    return out.reshape(N, H, W, C).transpose(0, 3, 1, 2), cache


def batch_norm2d_backward(dout, cache):
    """dout (N, C, H, W)  ->  dx (N, C, H, W), dgamma (C,), dbeta (C,)"""
    x_mat, centered, mean, inv_std, gamma, training, shape = cache
    check_dout("batch_norm2d", dout, shape)
    xp = backend.get_array_module(dout)
    N, C, H, W = shape
    dout_mat = _channels_last_matrix(dout)
    M = dout_mat.shape[0]
    if centered is None:                       # eval mode: the forward kept x only
        centered = x_mat - mean
    dbeta = dout_mat.sum(axis=0)
    dgamma = xp.einsum("mc,mc->c", dout_mat, centered) * inv_std       # sum(dout * xhat)
    scale = gamma * inv_std
    if training:
        # dx = scale * (dout - dbeta / M - xhat * dgamma / M), with xhat = centered * inv_std
        dx = centered * (-inv_std * dgamma / M)
        dx += dout_mat
        dx -= dbeta / M
        dx *= scale
    else:
        dx = dout_mat * scale
    return dx.reshape(N, H, W, C).transpose(0, 3, 1, 2), dgamma, dbeta
