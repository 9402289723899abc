"""Tall float32 products of a ResNet's convolutions: one call against blocks of rows.

    python benchmarks/gemm_blocks.py [--reps 5]

For each (m, k) @ (k, n) of the im2col convolutions of ResNet-50 at batch 8 and of the
CIFAR-stem ResNet-18 at batch 128, prints GFLOP/s of ``a @ b`` in one call and in blocks
of 1024, 2048 and 4096 rows written into one result (what resnet_np.backend.matmul does
from TALL_ROWS rows on, for an inner dimension of BLOCK_MIN_INNER or more), interleaved,
best of --reps. Run it on a quiet machine.
"""
import argparse
import time

import numpy as np

SHAPES = [((25088, 576), 64), ((25088, 64), 256), ((25088, 256), 64), ((25088, 64), 64),
          ((100352, 147), 64), ((6272, 1152), 128), ((6272, 128), 512), ((1568, 2304), 256),
          ((131072, 576), 64), ((32768, 1152), 128), ((131072, 27), 64)]


def blocked(a, b, rows):
    out = np.empty((a.shape[0], b.shape[1]), np.float32)
    for start in range(0, a.shape[0], rows):
        np.matmul(a[start:start + rows], b, out=out[start:start + rows])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'m x k @ n':>22}  one call  blocks 1024  2048  4096   (GFLOP/s)")
    for (m, k), n in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        runs = {"one": lambda: a @ b}
        for rows in (1024, 2048, 4096):
            runs[rows] = lambda rows=rows: blocked(a, b, rows)
        best = {key: float("inf") for key in runs}
        for run in runs.values():
            run()
        for _ in range(args.reps):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                best[key] = min(best[key], time.perf_counter() - start)
        rates = [2 * m * k * n / best[key] / 1e9 for key in runs]
        print(f"{m:>8} x {k:>4} @ {n:<4}  " + "  ".join(f"{r:7.0f}" for r in rates))


if __name__ == "__main__":
    main()
