"""Our float32 train-mode gradients and torchvision's, both against the float64 truth.

    python benchmarks/float32_accuracy.py [model] [batch] [size] [--seeds N]
                                          (default resnet50 4 112, 4 seeds)

The models are those of tests/test_models.py: torchvision's weights, batch norms
randomised, a new draw of weights and data per seed. For each seed and each
tensor (logits, input gradient, every parameter gradient) the error of ours over
torchvision's; printed: per seed the median over tensors, and over the seeds the
median and mean of those, for three ways of computing our 3x3 convolutions:

    im2col      no Winograd at all
    training    what nn.Conv2d does in training: F(2x2) where it is faster
    F(4x4)      the inference choice ("fast") forced into training too

A ratio near 1 is torchvision's accuracy. One seed is not enough: the ratio of
one draw moves between 0.8 and 3 for im2col alone (small batches through
randomised batch norms are ill-conditioned).
"""
import argparse
import pathlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from test_models import rel_err, run_ours, run_torchvision, torchvision_model  # noqa: E402

from resnet_np.functional.winograd import use_winograd  # noqa: E402

VARIANTS = {"im2col": False, "training": True, "F(4x4)": "fast"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default="resnet50")
    parser.add_argument("batch", nargs="?", type=int, default=4)
    parser.add_argument("size", nargs="?", type=int, default=112)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    medians = {name: [] for name in VARIANTS}
    print(f"{args.model} batch {args.batch} {args.size}x{args.size} train mode, float32: "
          f"our error / torchvision's, median over the tensors")
    for seed in range(args.seeds):
        gen = np.random.default_rng(seed)
        x = gen.standard_normal((args.batch, 3, args.size, args.size))
        d = gen.standard_normal((args.batch, 10))
        _, truth = run_torchvision(args.model, "float64", True, x, d, seed)
        _, theirs = run_torchvision(args.model, "float32", True, x, d, seed)
        state = {k: v.numpy() for k, v in
                 torchvision_model(args.model, "float32", seed=seed).state_dict().items()}
        keys = [k for k in truth if "running" not in k and "num_batches" not in k]
        for name, setting in VARIANTS.items():
            with use_winograd(setting):
                ours = run_ours(args.model, "float32", True, state, x, d)
            ratios = [rel_err(ours[k], truth[k]) / rel_err(theirs[k], truth[k]) for k in keys]
            medians[name].append(float(np.median(ratios)))
        print(f"  seed {seed}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in medians.items()),
              flush=True)
    print("over the seeds: " + ", ".join(
        f"{n} median {np.median(v):.3f} mean {np.mean(v):.3f}" for n, v in medians.items()))
    print(f"{len(keys)} tensors, {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
