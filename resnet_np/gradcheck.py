"""Gradient checking by central finite differences, in float64.

Every check compares an analytic gradient (from a backward pass) with

    numeric = (L(theta + h*v) - L(theta - h*v)) / (2*h)

for a scalar loss L. Two flavours:

* entry-wise (:func:`check_layer`): v runs over sampled single entries of each
  input, so every sampled partial derivative is checked on its own;
* directional (:func:`check_model`): v is one random direction per tensor, so
  a single pair of forwards checks a whole tensor's gradient at once
  (``<grad, v>`` against the numeric slope) - cheap enough for a whole ResNet.

The loss is ``L = sum(out * g)`` for a fixed random ``g``, whose gradient with
respect to ``out`` is ``g`` itself. The error of each tensor is relative:
``|analytic - numeric| / max(|analytic|, |numeric|, tiny)``.

A ResNet is not differentiable everywhere: a ReLU has a kink at 0 and a max
pool where two entries of a window tie, and a model has about a million of
them. A finite difference across a kink measures neither side's slope, so
:func:`check_model` keeps a direction only if no ReLU and no max pool changes
its choice within the step (:class:`Decisions`), else it draws another with a
shorter step, as Chainer's ``check_backward`` guards its checks. Train-mode
batch norm over very few values per channel is smooth but so curved that no
step length works: such inputs are refused (:func:`check_input`).

Run ``python -m resnet_np.gradcheck`` for a table, layer by layer.
"""
import argparse
import sys

import numpy as np

from . import backend
from . import functional as F
from .layer_cases import LAYER_CASES, to_backend
from .nn.module import no_grad, weights_changed


def relative_error(a, b, tiny=1e-30):
    """Norm-wise ||a - b|| / max(||a||, ||b||, tiny): one number per tensor.

    Norm-wise rather than entry-wise, since a gradient entry that is nearly 0
    makes an entry-wise ratio meaningless (batch norm's dx sums to 0 by design).
    """
    a = np.asarray(backend.to_numpy(a), dtype=np.float64)
    b = np.asarray(backend.to_numpy(b), dtype=np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b), tiny)
    return float(np.linalg.norm(a - b) / scale)


def _check_float64(arrays):
    for a in arrays:
        if hasattr(a, "dtype") and a.dtype.kind == "f" and a.dtype != np.float64:
            raise ValueError(f"gradient checks need float64 inputs, got {a.dtype}: "
                             "finite differences in float32 are dominated by rounding")


def check_layer(forward, backward, args, wrt, h=1e-6, num_samples=16, seed=0):
    """Check a functional layer's gradients entry by entry.

    forward(*args) -> (out, cache);  backward(dout, cache) -> gradients, a tuple
    with one entry per index in ``wrt`` (a single array when ``wrt`` has one).
    ``wrt``: indices into ``args`` of the arrays to check (float64).
    Returns ``{index: relative error}``.
    """
    _check_float64([args[i] for i in wrt])
    # A stream of its own: drawn from a generator seeded like the caller's, g
    # could equal the input itself, a degenerate loss with a near-zero gradient.
    gen = np.random.default_rng([seed, 1])
    args = list(args)
    out, cache = forward(*args)
    xp = backend.get_array_module(out)
    g = xp.asarray(gen.standard_normal(out.shape))
    grads = backward(g, cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    errors = {}
    for i, grad in zip(wrt, grads):
        x = args[i]
        flat = gen.choice(x.size, size=min(num_samples, x.size), replace=False)
        numeric, analytic = [], []
        for j in flat:
            idx = np.unravel_index(j, x.shape)
            old = float(x[idx])        # a copy: CuPy's x[idx] would be a view
            x[idx] = old + h
            plus = float((forward(*args)[0] * g).sum())
            x[idx] = old - h
            minus = float((forward(*args)[0] * g).sum())
            x[idx] = old
            numeric.append((plus - minus) / (2 * h))
            analytic.append(float(grad[idx]))
        errors[i] = relative_error(analytic, numeric)
    return errors


class Decisions:
    """Within ``with Decisions() as d:``, every forward's discrete choices are recorded.

    A ResNet is smooth except where a ReLU's input crosses 0 or a max-pool
    window changes its winner. Along a step from ``theta - h*v`` to
    ``theta + h*v`` the loss is smooth when these choices are the same at
    both ends and in the middle; then the central difference is accurate to
    O(h^2) and tells whether the backward is right. Also recorded: over how
    many values each batch norm that uses batch statistics normalises a
    channel (``batch_norm_counts``, N*H*W of its input).

    The functional ReLU, max pool and batch norm are wrapped while the context
    is open (every module calls them through :mod:`resnet_np.functional`).
    """

    def __init__(self):
        self.choices = []             # a bool mask per ReLU, a winner array per max pool
        self.batch_norm_counts = []

    def __enter__(self):
        self._saved = F.relu_forward, F.max_pool2d_forward, F.batch_norm2d_forward
        relu, pool, batch_norm = self._saved

        def relu_forward(x, *args, **kwargs):
            self.choices.append(x > 0)      # taken before an in-place ReLU overwrites x
            return relu(x, *args, **kwargs)

        def max_pool2d_forward(*args, **kwargs):
            out, cache = pool(*args, **kwargs)
            self.choices.append(F.max_pool2d_winners(cache))
            return out, cache

        def batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training,
                                 *args, **kwargs):
            if training:
                self.batch_norm_counts.append(x.size // x.shape[1])
            return batch_norm(x, gamma, beta, running_mean, running_var, training,
                              *args, **kwargs)

        F.relu_forward, F.max_pool2d_forward = relu_forward, max_pool2d_forward
        F.batch_norm2d_forward = batch_norm2d_forward
        return self

    def __exit__(self, *exc):
        F.relu_forward, F.max_pool2d_forward, F.batch_norm2d_forward = self._saved

    def same_as(self, other):
        """True if ``other`` made the same choice at every ReLU and max pool."""
        return len(self.choices) == len(other.choices) and all(
            a.shape == b.shape and bool((a == b).all())
            for a, b in zip(self.choices, other.choices))


# A train-mode batch norm over 2 values per channel (a batch of 2 at 1x1 maps) gives
# +-d / sqrt(d^2 + eps): so curved where d ~ sqrt(eps) that finite differences of any
# step disagree with correct gradients. Inputs giving any batch norm fewer values are
# refused (the smallest maps are layer4's, 1/32 of the input's side).
MIN_BATCH_NORM_VALUES = 8


def check_input(model, x, what=None):
    """Raise a ValueError if ``model`` cannot be checked on ``x``: a train-mode batch norm
    would normalise over fewer than :data:`MIN_BATCH_NORM_VALUES` values per channel.

    One forward without gradients; the model's state is restored afterwards.
    """
    saved = {k: v.copy() for k, v in model.state_dict().items()}
    try:
        with no_grad(), Decisions() as decisions:
            model(x)
    finally:
        model.load_state_dict(saved)
    few = [n for n in decisions.batch_norm_counts if n < MIN_BATCH_NORM_VALUES]
    if few:
        raise ValueError(
            f"{what or f'input {tuple(x.shape)}'} cannot be checked in train mode: a batch "
            f"norm normalises over {min(few)} value(s) per channel (batch x height x width of "
            f"its maps), fewer than {MIN_BATCH_NORM_VALUES}, where the loss is too curved for "
            "finite differences; use a larger input or batch, or eval mode")


def check_model(model, x, h=1e-5, seed=0, tries_per_step=2, steps=3):
    """Directional check of every parameter tensor and of the input of ``model``.

    The model must be float64. Train-mode batch norm is fine: its output does
    not depend on the running statistics, which are restored afterwards.
    Returns a list of rows ``(name, shape, analytic, numeric, relative error)``,
    the input first (named ``"input"``).

    Kinks: a step of ``h`` along a random unit direction ``v`` is used only if
    every ReLU and max pool makes the same choice at ``theta - h*v``, ``theta``
    and ``theta + h*v`` (see :class:`Decisions`); otherwise another direction
    is drawn, ``tries_per_step`` times for each step length, from ``h`` down to
    ``h / 10**(steps - 1)`` (a shorter step crosses fewer kinks, but rounding
    weighs more in its difference).

    Raises
    ------
    ValueError
        float32 arrays; an input that :func:`check_input` refuses; a tensor
        for which every direction tried crossed a kink.
    """
    _check_float64([x] + [p.data for p in model.parameters()])
    check_input(model, x)
    saved = {k: v.copy() for k, v in model.state_dict().items()}
    gen = np.random.default_rng([seed, 2])
    xp = backend.get_array_module(x)
    out = model(x)
    g = xp.asarray(gen.standard_normal(out.shape))
    model.zero_grad()
    dx = model.backward(g)

    def loss():
        """The loss, and the choices its forward made."""
        weights_changed()      # a weight moved in place: eval mode's folded batch norms too
        with no_grad(), Decisions() as choices:
            return float((model(x) * g).sum()), choices

    _, base = loss()
    rows = []
    targets = [("input", x, dx)] + [(n, p.data, p.grad) for n, p in model.named_parameters()]
    try:
        for name, array, grad in targets:
            original = array.copy()
            for attempt in range(tries_per_step * steps):
                step = h / 10 ** (attempt // tries_per_step)
                v = xp.asarray(gen.standard_normal(array.shape))
                v /= float(xp.linalg.norm(v))   # a unit direction: ``step`` is the distance
                array[...] = original + step * v
                plus, plus_choices = loss()
                array[...] = original - step * v
                minus, minus_choices = loss()
                array[...] = original
                if base.same_as(plus_choices) and base.same_as(minus_choices):
                    break                       # no kink within the step
            else:
                raise ValueError(f"{name}: each of {tries_per_step * steps} directions crossed "
                                 f"a ReLU or max-pool kink, down to a step of {step:.0e}; "
                                 "this point cannot be checked (try another seed)")
            numeric = (plus - minus) / (2 * step)
            analytic = float((grad * v).sum())
            rows.append((name, tuple(array.shape), analytic, numeric,
                         relative_error(analytic, numeric)))
    finally:
        model.load_state_dict(saved)
    return rows


# --------------------------------------------------------------------------- #
# The functional layers: every case of resnet_np.layer_cases
# --------------------------------------------------------------------------- #
def check_case(case, xp=np, seed=0, num_samples=16):
    """Finite differences of one :class:`~resnet_np.layer_cases.LayerCase` on ``xp``'s
    device, in float64 -> ``{argument index: relative error}``."""
    forward, backward, args = case.make(np.random.default_rng(seed))
    args = [to_backend(a, xp) for a in args]
    return check_layer(forward, backward, args, case.wrt, num_samples=num_samples, seed=seed)


def layer_table(seed=0):
    """Rows ``(layer, argument index, relative error)`` for every differentiable layer case."""
    rows = []
    for case in LAYER_CASES:
        if case.differentiable:
            for i, err in check_case(case, seed=seed).items():
                rows.append((case.name, i, err))
    return rows


ARG_LEGEND = ("arg: the argument of the layer's forward that is checked: 0 the input,\n"
              "     1 the weight (batch norm: gamma), 2 the bias (batch norm: beta;\n"
              "     add: its second input)")


def build_parser():
    """The options of ``resnet-np gradcheck``; a bad value is one line, as everywhere."""
    from .cli import PROG, _Parser, non_negative_int, positive_float, positive_int
    from .models import MODELS
    parser = _Parser(
        prog=f"{PROG} gradcheck", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Compare analytic gradients with central finite differences (float64): "
                    "every functional layer entry-wise (the arg column: the argument "
                    "checked, 0 the input, 1 the weight or batch norm's gamma, 2 the bias or "
                    "beta), then a whole model tensor by tensor along random directions. A "
                    "direction whose step would cross a ReLU or max-pool kink is redrawn "
                    "with a shorter step. In train mode every batch norm must normalise "
                    f"over at least {MIN_BATCH_NORM_VALUES} values per channel (batch x "
                    "height x width of its maps; layer4's are 1/32 of --size wide): "
                    "--size 64 needs --batch 2, --size 32 --batch 8; --eval has no such "
                    "limit.")
    parser.add_argument("--model", default="resnet18", choices=sorted(MODELS), metavar="NAME",
                        help=f"one of {', '.join(sorted(MODELS))}")
    parser.add_argument("--size", type=positive_int, default=64, metavar="PX",
                        help="input height and width")
    parser.add_argument("--batch", type=positive_int, default=2, metavar="N", help="batch size")
    parser.add_argument("--eval", action="store_true",
                        help="check the model in eval mode (batch norm with running statistics)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seeds the weights, the input and the directions")
    parser.add_argument("--tolerance", type=positive_float, default=1e-6, metavar="TOL",
                        help="largest relative error counted as a pass")
    return parser


def main(argv=None):
    """``python -m resnet_np.gradcheck [--model resnet18] [--size 64]``: print the tables.

    Returns 0 when every relative error is within the tolerance, 1 otherwise;
    an input that cannot be checked (see :func:`check_input`) is a ValueError,
    raised before any table.
    """
    from .models import build_model
    args = build_parser().parse_args(argv)
    backend.manual_seed(args.seed)
    model = build_model(args.model, num_classes=10, dtype="float64").train(not args.eval)
    x = np.random.default_rng(args.seed).standard_normal((args.batch, 3, args.size, args.size))
    check_input(model, x, f"--size {args.size} --batch {args.batch}")

    print("Functional layers (entry-wise, 16 sampled entries per argument)")
    print(ARG_LEGEND + "\n")
    print(f"{'layer':<36} {'arg':>3} {'rel. error':>11}")
    worst = 0.0
    for name, i, err in layer_table(args.seed):
        worst = max(worst, err)
        print(f"{name:<36} {i:>3} {err:>11.2e}")

    print(f"\n{args.model} ({'eval' if args.eval else 'train'} mode, input "
          f"{x.shape}): directional check of every tensor")
    print(f"{'tensor':<34} {'shape':<18} {'analytic':>13} {'numeric':>13} {'rel. error':>11}")
    for name, shape, analytic, numeric, err in check_model(model, x, seed=args.seed):
        worst = max(worst, err)
        print(f"{name:<34} {str(shape):<18} {analytic:>13.6e} {numeric:>13.6e} {err:>11.2e}")
    status = "PASS" if worst <= args.tolerance else "FAIL"
    print(f"\nworst relative error {worst:.2e} (tolerance {args.tolerance:.0e}): {status}")
    return 0 if status == "PASS" else 1


if __name__ == "__main__":
    from resnet_np.cli import main as command      # its errors are one line
    sys.exit(command(["gradcheck", *sys.argv[1:]]))
