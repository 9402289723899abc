"""Mixed-precision training: half-precision compute, float32 master weights, loss scaling.

    compute      convolutions, linear layer, ReLU, pooling, residual adds in float16
                 (or bfloat16 where the array module has it), on half-precision copies
                 of the weights
    float32      batch norm (its input is widened, its statistics, running estimates
                 and parameters stay float32, its output is narrowed again), the loss,
                 the master weights and every optimizer update
    scaling      the loss gradient is multiplied by ``scale`` before the backward, so
                 small gradients do not flush to zero in float16; the master gradients
                 are divided by it again, and a step whose gradients hold inf or NaN is
                 skipped and the scale halved (:class:`GradScaler`, as torch.amp's)

One step, as :meth:`MixedPrecision.train_step` does it::

    amp = MixedPrecision(model, "float16")
    optimizer = SGD(amp.master_parameters(), lr=0.1, momentum=0.9)
    scaler = GradScaler()
    loss, stepped = amp.train_step(x, labels, criterion, optimizer, scaler)

bfloat16: NumPy has no bfloat16 of its own; with the ``ml_dtypes`` package
installed it has one (slow, for tests). CuPy has no bfloat16 dtype, so on the
GPU only float16 is offered. bfloat16's exponent range equals float32's, so
it rarely needs loss scaling; the scaler is harmless there.

Everything is written with ``xp``, so the logic runs on NumPy float16 (in CI)
exactly as on CuPy.
"""
import math

import numpy as np

from . import backend
from .nn import BatchNorm2d
from .nn.module import Parameter, weights_changed

COMPUTE_DTYPES = ("float16", "bfloat16")


def compute_dtype_for(name, xp=np):
    """'float16' or 'bfloat16' -> a dtype the array module ``xp`` can compute in."""
    if name == "float16":
        return np.dtype("float16")
    if name != "bfloat16":
        raise ValueError(f"mixed precision: compute dtype must be one of {COMPUTE_DTYPES}, "
                         f"got {name!r}")
    if xp is not np:
        raise ValueError("mixed precision: CuPy has no bfloat16 dtype; use 'float16' on the GPU")
    try:
        import ml_dtypes
    except ImportError:
        raise ValueError("mixed precision: NumPy needs the ml_dtypes package for bfloat16 "
                         "(pip install ml_dtypes), or use 'float16'") from None
    return np.dtype(ml_dtypes.bfloat16)


# --------------------------------------------------------------------------- #
# Dynamic loss scaling
# --------------------------------------------------------------------------- #
class GradScaler:
    """Dynamic loss scaling with the rule and defaults of ``torch.amp.GradScaler``.

    After each step, :meth:`update` sets
        scale <- scale * backoff_factor             if that step's gradients held inf/NaN
        scale <- scale * growth_factor              after growth_interval clean steps in a row
    An overflowing step is skipped: the optimizer does not run.
    """

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        if not (init_scale > 0 and math.isfinite(init_scale)):
            raise ValueError(f"GradScaler: init_scale must be a finite number > 0, "
                             f"got {init_scale}")
        if not growth_factor > 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor}")
        if not (isinstance(growth_interval, int) and growth_interval >= 1):
            raise ValueError(f"GradScaler: growth_interval must be an int >= 1, "
                             f"got {growth_interval!r}")
        self._scale = float(init_scale)
        self._growth_factor, self._backoff_factor = float(growth_factor), float(backoff_factor)
        self._growth_interval = growth_interval
        self._growth_tracker = 0
        self._enabled = bool(enabled)
        self._found_inf = {}          # id(optimizer) -> flag: on the device from unscale_,
                                      # a bool once step() has read it

    def is_enabled(self):
        return self._enabled

    def get_scale(self):
        """The current scale (1.0 when disabled)."""
        return self._scale if self._enabled else 1.0

    def scale(self, value):
        """``value * scale``: apply to the loss gradient before the backward."""
        return value * self._scale if self._enabled else value

    def unscale_(self, optimizer):
        """Divide every gradient of ``optimizer`` by the scale (in place), noting any inf/NaN.

        At most once per optimizer between two :meth:`update` calls, as in torch.
        """
        if not self._enabled:
            return
        if id(optimizer) in self._found_inf:
            raise RuntimeError("GradScaler.unscale_ has already been called on this optimizer "
                               "since the last update()")
        inverse = 1.0 / self._scale
        found = None
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                xp = backend.get_array_module(p.grad)
                p.grad *= p.grad.dtype.type(inverse)
                bad = ~xp.isfinite(p.grad).all()          # stays on the device
                found = bad if found is None else found | bad
        self._found_inf[id(optimizer)] = found

    def step(self, optimizer):
        """Unscale (unless done already) and run ``optimizer.step()`` unless a gradient
        overflowed -> True if the optimizer stepped."""
        if not self._enabled:
            optimizer.step()
            return True
        if id(optimizer) not in self._found_inf:
            self.unscale_(optimizer)
        found = self._found_inf[id(optimizer)]
        if found is not None:
            found = self._found_inf[id(optimizer)] = bool(found)   # the step's one host sync
        if found:
            return False
        optimizer.step()
        return True

    def update(self):
        """Back the scale off after an overflow, grow it after growth_interval clean steps."""
        if not self._enabled:
            return
        # step() has read each flag to the host already: no second sync
        found_inf = any(f is not None and bool(f) for f in self._found_inf.values())
        self._found_inf = {}
        if found_inf:
            self._scale *= self._backoff_factor
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self._growth_interval:
                self._scale *= self._growth_factor
                self._growth_tracker = 0

    def state_dict(self):
        """torch.amp.GradScaler's keys: scale, growth_factor, backoff_factor,
        growth_interval, _growth_tracker (empty when disabled, as torch's)."""
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state):
        if not self._enabled:
            return
        if not state:
            raise RuntimeError("GradScaler.load_state_dict: the state dict is empty (it was "
                               "saved by a disabled scaler)")
        missing = [k for k in ("scale", "growth_factor", "backoff_factor", "growth_interval",
                               "_growth_tracker") if k not in state]
        if missing:
            raise ValueError(f"GradScaler.load_state_dict: missing keys {missing}")
        self._scale = float(state["scale"])
        self._growth_factor = float(state["growth_factor"])
        self._backoff_factor = float(state["backoff_factor"])
        self._growth_interval = int(state["growth_interval"])
        self._growth_tracker = int(state["_growth_tracker"])


# --------------------------------------------------------------------------- #
# Master weights and half-precision compute
# --------------------------------------------------------------------------- #
class MixedPrecision:
    """Puts a float32 model into mixed precision, and keeps its float32 master weights.

    Every parameter outside a batch norm gets a half-precision copy in the model
    (what the layers compute with) and a float32 master (what the optimizer
    updates); a batch norm keeps its float32 parameters and buffers, which are
    their own masters, and runs in float32 on a widened input.
    """

    def __init__(self, model, dtype="float16"):
        if model.dtype != np.float32:
            raise ValueError(f"mixed precision: the model must be float32 to start with, got "
                             f"{model.dtype}")
        xp = backend.get_array_module(model.parameters()[0].data)
        self.model = model
        self.compute_dtype = compute_dtype_for(dtype, xp)
        in_batch_norm = {id(p) for m in model.modules() if isinstance(m, BatchNorm2d)
                         for p in m.parameters()}
        self._pairs = []              # (model parameter, master parameter)
        for p in model.parameters():
            if id(p) in in_batch_norm:
                self._pairs.append((p, p))
            else:
                master = Parameter(p.data)                       # the float32 array itself
                p.data = p.data.astype(self.compute_dtype)
                p.grad = None
                self._pairs.append((p, master))
        self._batch_norms = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
        for m in self._batch_norms:
            _run_in_float32(m, self.compute_dtype)

    def master_parameters(self):
        """The float32 parameters for the optimizer, in the model's parameter order."""
        return [master for _, master in self._pairs]

    def cast_input(self, x):
        """Images into the compute dtype."""
        return x.astype(self.compute_dtype, copy=False)

    def copy_grads_to_master(self):
        """master.grad = float32(model grad); the half-precision gradients are released."""
        for p, master in self._pairs:
            if p is master:
                continue
            master.grad = None if p.grad is None else p.grad.astype(np.float32)
            p.grad = None

    def copy_master_to_model(self):
        """The model's half-precision weights from the (updated) masters, in place."""
        for p, master in self._pairs:
            if p is not master:
                xp = backend.get_array_module(p.data)
                xp.copyto(p.data, master.data, casting="same_kind")

    def zero_grad(self):
        for p, master in self._pairs:
            p.grad = master.grad = None

    def train_step(self, x, labels, criterion, optimizer, scaler, input_grad=False):
        """One mixed-precision step -> (loss as a float, whether the optimizer stepped).

        The logits are widened to float32 for the loss; its gradient goes back
        through :meth:`backward_and_step`.
        """
        # float16 overflow is expected now and then: the scaler sees it and skips the step
        with np.errstate(over="ignore", invalid="ignore"):
            logits = self.model(self.cast_input(x))
            loss = criterion(logits.astype(np.float32), labels)
        stepped = self.backward_and_step(criterion.backward(), optimizer, scaler,
                                         input_grad=input_grad)
        return float(loss), stepped

    def backward_and_step(self, dlogits, optimizer, scaler, backward=None, input_grad=False):
        """The float32 loss gradient ``dlogits`` scaled, narrowed and sent back through the
        model (by ``backward``: the model's own, or a wrapper's such as DataParallel's);
        the master gradients unscaled and checked by ``scaler``, which skips the step on
        inf/NaN; the scale updated -> whether the optimizer stepped."""
        backward = self.model.backward if backward is None else backward
        with np.errstate(over="ignore", invalid="ignore"):
            backward(scaler.scale(dlogits).astype(self.compute_dtype), input_grad=input_grad)
        self.copy_grads_to_master()
        stepped = scaler.step(optimizer)
        scaler.update()
        if stepped:
            self.copy_master_to_model()
        self.zero_grad()
        return stepped

    def state_dict(self):
        """The float32 weights (masters) and buffers, under the model's usual keys."""
        state = self.model.state_dict()
        names = [name for name, _ in self.model.named_parameters()]
        for name, (_, master) in zip(names, self._pairs):
            state[name] = master.data
        return state

    def load_state_dict(self, state):
        """Float32 weights (as :meth:`state_dict` gives them) into the masters, in place
        (the optimizer keeps its parameters), and their half-precision copies into the model."""
        self.model.load_state_dict(state)                  # buffers, batch norm, the copies
        names = [name for name, _ in self.model.named_parameters()]
        for name, (p, master) in zip(names, self._pairs):
            if p is not master:
                xp = backend.get_array_module(master.data)
                xp.copyto(master.data, xp.asarray(state[name]), casting="same_kind")
        weights_changed()


def _run_in_float32(bn, compute_dtype):
    """Shadow a batch norm's forward and backward (on the instance) so that it
    computes in float32 between half-precision neighbours."""
    forward = bn.forward
    # The class's backward checks dout against the output the module returned (half
    # precision here); the float32 dout this shadow hands on goes to the check-free inner one.
    cls_backward = type(bn).backward
    inner_backward = getattr(cls_backward, "__wrapped__", cls_backward)

    def forward_in_float32(x):
        return forward(x.astype(np.float32)).astype(compute_dtype)

    def backward_in_float32(dout):
        return inner_backward(bn, dout.astype(np.float32)).astype(compute_dtype)

    object.__setattr__(bn, "forward", forward_in_float32)
    object.__setattr__(bn, "backward", backward_in_float32)
