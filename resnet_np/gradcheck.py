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

Run ``python -m resnet_np.gradcheck`` for a table, layer by layer.
"""
import argparse
import sys

import numpy as np

from . import backend
from .layer_cases import LAYER_CASES, to_backend
from .nn.module import no_grad


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


def check_model(model, x, h=1e-5, seed=0, max_tries=4, kink_tolerance=1e-3):
    """Directional check of every parameter tensor and of the input of ``model``.

    The model must be float64. Train-mode batch norm is fine: its output does
    not depend on the running statistics, which are restored afterwards.
    Returns a list of rows ``(name, shape, analytic, numeric, relative error)``,
    the input first (named ``"input"``). A direction whose one-sided slopes differ
    by more than ``kink_tolerance`` crossed a kink and is redrawn (``max_tries``).
    """
    _check_float64([x] + [p.data for p in model.parameters()])
    saved = {k: v.copy() for k, v in model.state_dict().items()}
    gen = np.random.default_rng([seed, 2])
    xp = backend.get_array_module(x)
    out = model(x)
    g = xp.asarray(gen.standard_normal(out.shape))
    model.zero_grad()
    dx = model.backward(g)

    def loss():
        with no_grad():
            return float((model(x) * g).sum())

    base = loss()
    rows = []
    targets = [("input", x, dx)] + [(n, p.data, p.grad) for n, p in model.named_parameters()]
    for name, array, grad in targets:
        for _ in range(max_tries):
            v = xp.asarray(gen.standard_normal(array.shape))
            v /= float(xp.linalg.norm(v))   # a unit step: h is then the distance moved
            array += h * v
            plus = loss()
            array -= 2 * h * v
            minus = loss()
            array += h * v
            # A ResNet has about a million ReLU and max-pool kinks; a step of h
            # can cross one, where the one-sided slopes disagree. Such a direction
            # says nothing about the gradient: draw another (as Chainer does).
            forward_slope, backward_slope = (plus - base) / h, (base - minus) / h
            if relative_error(forward_slope, backward_slope) < kink_tolerance:
                break
        numeric = (plus - minus) / (2 * h)
        analytic = float((grad * v).sum())
        rows.append((name, tuple(array.shape), analytic, numeric,
                     relative_error(analytic, numeric)))
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


def main(argv=None):
    """``python -m resnet_np.gradcheck [--model resnet18] [--size 32]``: print the tables."""
    from .models import MODELS, build_model
    parser = argparse.ArgumentParser(
        prog="resnet-np gradcheck",
        description="Compare analytic gradients with central finite differences (float64): "
                    "every functional layer entry-wise, then a whole model tensor by tensor "
                    "along random directions.")
    parser.add_argument("--model", default="resnet18", choices=sorted(MODELS))
    parser.add_argument("--size", type=int, default=64, help="input height and width (default 64; at 32 the last stage sees 1x1 maps, where train-mode batch norm over 2 values is so curved that finite differences lose accuracy)")
    parser.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    parser.add_argument("--eval", action="store_true", help="check the model in eval mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-6,
                        help="largest relative error counted as a pass (default 1e-6)")
    args = parser.parse_args(argv)

    print("Functional layers (entry-wise, 16 sampled entries per argument)")
    print(f"{'layer':<36} {'arg':>3} {'rel. error':>11}")
    worst = 0.0
    for name, i, err in layer_table(args.seed):
        worst = max(worst, err)
        print(f"{name:<36} {i:>3} {err:>11.2e}")

    backend.manual_seed(args.seed)
    model = build_model(args.model, num_classes=10, dtype="float64").train(not args.eval)
    x = np.random.default_rng(args.seed).standard_normal((args.batch, 3, args.size, args.size))
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
    sys.exit(main())
