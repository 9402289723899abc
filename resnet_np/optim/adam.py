"""Adam and AdamW, the updates of ``torch.optim.Adam`` and ``torch.optim.AdamW``.

The order of operations is torch's single-tensor one (``foreach=False``), so
in float64 the parameters agree with torch's to rounding.
"""
from .. import backend
from .optimizer import Optimizer


class Adam(Optimizer):
    r"""Adam, with optional AMSGrad and L2 weight decay.

    Parameters
    ----------
    params : iterable of Parameter, or iterable of dict
        Parameters, or parameter groups ``{"params": [...], "lr": ...}``.
    lr : float, default 1e-3
        Learning rate.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment estimates, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator, > 0.
    weight_decay : float, default 0
        L2 penalty: ``weight_decay * p`` is added to the gradient.
    amsgrad : bool, default False
        Normalise by the largest second moment seen so far.
    maximize : bool, default False
        Ascend the objective instead of descending it.

    Notes
    -----
    For a parameter :math:`p` with gradient :math:`g_t` at its step
    :math:`t = 1, 2, \dots`, with :math:`m_0 = v_0 = 0`:

    .. math::

        g &\leftarrow -g_t \text{ if maximize else } g_t \\
        g &\leftarrow g + \lambda p \\
        m_t &= m_{t-1} + (1 - \beta_1)(g - m_{t-1}) \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \text{ if amsgrad else } v_t \\
        p &\leftarrow p - \frac{\eta}{1 - \beta_1^t} \, m_t \Big/
             \left(\frac{\sqrt{\hat v_t}}{\sqrt{1 - \beta_2^t}} + \epsilon\right)

    The first moment is torch's ``lerp``, equal to
    :math:`\beta_1 m_{t-1} + (1 - \beta_1) g`. :class:`AdamW` replaces the
    L2 term by decoupled decay, :math:`p \leftarrow p (1 - \eta\lambda)`,
    applied before the moments.
    """

    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        name = type(self).__name__
        if len(group["betas"]) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), "
                             f"got {group['betas']!r}")
        for i, beta in enumerate(group["betas"]):
            if not 0 <= beta < 1:
                raise ValueError(f"{name}: invalid beta {i} = {beta!r}: "
                                 "each beta must be in [0, 1)")
        if not group["eps"] > 0:
            raise ValueError(f"{name}: invalid eps {group['eps']!r}: eps must be > 0")
        self._check_non_negative(group, "weight_decay")

    def _update(self, param, grad, state, group):
        xp = backend.get_array_module(param.data)
        lr, weight_decay = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if group["maximize"]:
            grad = -grad
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(param.data)
            state["exp_avg_sq"] = xp.zeros_like(param.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(param.data)
        state["step"] += 1
        step = state["step"]

        if weight_decay != 0:
            if self.decoupled_weight_decay:
                param.data *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * param.data

        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg += (1 - beta1) * (grad - exp_avg)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad

        # The bias corrections are Python floats: no host-device traffic.
        step_size = lr / (1 - beta1 ** step)
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        second_moment = exp_avg_sq
        if group["amsgrad"]:
            second_moment = xp.maximum(state["max_exp_avg_sq"], exp_avg_sq,
                                       out=state["max_exp_avg_sq"])
        denom = xp.sqrt(second_moment) / bias_correction2_sqrt + group["eps"]
        param.data -= step_size * exp_avg / denom


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter).

    Takes the parameters of :class:`Adam`, with ``weight_decay`` defaulting to
    1e-2. Instead of adding :math:`\lambda p` to the gradient, each step first
    shrinks the parameter, :math:`p \leftarrow p (1 - \eta \lambda)`, then
    applies the Adam update.
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)
