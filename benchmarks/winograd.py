"""im2col against Winograd F(2x2, 3x3) and F(4x4, 3x3) on ResNet-50's stride-1 3x3 convolutions.

    python benchmarks/winograd.py              # batch 8, float32, the threads the environment sets
    python benchmarks/winograd.py --batch 1 --threads 2

For each shape: forward and backward time of each algorithm (median of
--reps, after a warm-up) and the float32 error of each against the float64
result (norm-wise relative error). These are the figures behind the bounds of
``resnet_np.functional.winograd.winograd_tile`` (F(4x4) in inference only,
F(2x2) in training where it is faster). Run it on a quiet machine (``uptime``
under 0.5).
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout works uninstalled

from resnet_np.bench.timing import measure  # noqa: E402
from resnet_np.functional import conv2d_backward, conv2d_forward  # noqa: E402
from resnet_np.functional.winograd import (use_winograd, winograd_conv3x3_backward,  # noqa: E402
                                           winograd_conv3x3_forward)

# (channels, side) of the stride-1 3x3 convolutions of ResNet-50 at 224x224.
SHAPES = [(64, 56), (128, 28), (256, 14), (512, 7)]


def median_ms(fn, reps):
    return 1e3 * measure(fn, warmup=1, reps=reps).median


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="BLAS threads (threadpoolctl)")
    args = p.parse_args(argv)
    if args.threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    print(f"batch {args.batch}, float32, load average {os.getloadavg()[0]:.2f}")
    print("| C->K @ side | forward ms: im2col | F(2x2) | F(4x4) | backward ms: im2col | F(2x2) | "
          "F(4x4) | float32 error: im2col | F(2x2) | F(4x4) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for C, side in SHAPES:
        x64 = rng.standard_normal((args.batch, side, side, C)).transpose(0, 3, 1, 2)
        w64 = rng.standard_normal((C, C, 3, 3)) * np.sqrt(2 / (9 * C))
        x, w = x64.astype(np.float32), w64.astype(np.float32)
        dout = np.ascontiguousarray(rng.standard_normal((args.batch, side, side, C)),
                                    dtype=np.float32).transpose(0, 3, 1, 2)
        fwd, bwd, outs = {}, {}, {}
        with use_winograd(False):
            truth = conv2d_forward(x64, w64, padding=1)[0]
            outs["im2col"], cache = conv2d_forward(x, w, padding=1)
            fwd["im2col"] = median_ms(lambda: conv2d_forward(x, w, padding=1), args.reps)
            bwd["im2col"] = median_ms(lambda: conv2d_backward(dout, cache), args.reps)
        for m in (2, 4):
            outs[m], cache = winograd_conv3x3_forward(x, w, ((1, 1), (1, 1)), m)
            fwd[m] = median_ms(lambda: winograd_conv3x3_forward(x, w, ((1, 1), (1, 1)), m),
                               args.reps)
            bwd[m] = median_ms(lambda: winograd_conv3x3_backward(dout, cache), args.reps)
        err = {k: np.linalg.norm(v - truth) / np.linalg.norm(truth) for k, v in outs.items()}
        cells = [f"{t[k]:.1f}" for t in (fwd, bwd) for k in ("im2col", 2, 4)]
        cells += [f"{err[k]:.1e}" for k in ("im2col", 2, 4)]
        print(f"| {C}->{C} @ {side}x{side} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
