"""Stochastic gradient descent with momentum, the update of ``torch.optim.SGD``."""
from .optimizer import Optimizer


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

    Parameters
    ----------
    params : iterable of Parameter, or iterable of dict
        Parameters, or parameter groups ``{"params": [...], "lr": ...}``.
    lr : float
        Learning rate.
    momentum : float, default 0
        Momentum factor; 0 is plain SGD.
    dampening : float, default 0
        Dampening of the gradient's share in the momentum buffer.
    weight_decay : float, default 0
        L2 penalty: ``weight_decay * p`` is added to the gradient.
    nesterov : bool, default False
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    maximize : bool, default False
        Ascend the objective instead of descending it.

    Notes
    -----
    For a parameter :math:`p` with gradient :math:`g_t` at its step :math:`t`:

    .. math::

        g &\leftarrow -g_t \text{ if maximize else } g_t \\
        g &\leftarrow g + \lambda p \\
        b_t &= g \text{ at the first step, else }
              \mu b_{t-1} + (1 - \tau) g \\
        g &\leftarrow g + \mu b_t \text{ if nesterov else } b_t
              \qquad (\text{when } \mu \ne 0) \\
        p &\leftarrow p - \eta g

    with learning rate :math:`\eta`, momentum :math:`\mu`, dampening
    :math:`\tau` and weight decay :math:`\lambda`. The first buffer is the
    gradient itself, not :math:`(1 - \tau) g`, exactly as in torch.
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        self._check_non_negative(group, "momentum")
        self._check_non_negative(group, "weight_decay")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening == 0, "
                             f"got momentum={group['momentum']}, dampening={group['dampening']}")

    def _update(self, param, grad, state, group):
        momentum = group["momentum"]
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param.data
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                # A copy: the parameter's gradient may be accumulated into in place later.
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        param.data -= group["lr"] * grad
