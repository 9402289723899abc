"""Where one resnet-np step spends its time: every functional call, timed, by layer and shape.

    python benchmarks/profile_step.py [--model resnet50] [--batch 8] [--size 224] [--mode train]

Each function of ``resnet_np.functional`` whose name ends in ``_forward`` or
``_backward`` is wrapped with a timer; after --warmup steps, --steps steps are run
and the mean time per step is printed per function, then the costliest (function,
input shape) pairs. A train step is a forward, the loss and the backward without the
images' gradient (as the train command runs it); "inference" is an eval-mode forward
under no_grad. Freed memory is kept for reuse, as the train command does. Run it on a
quiet machine.
"""
import argparse
import collections
import sys
import time

import numpy as np

import resnet_np as rn
from resnet_np import functional as F


def instrument():
    """Wrap the functional layer calls -> (seconds, calls), keyed by (name, input shape)."""
    seconds, calls = collections.defaultdict(float), collections.Counter()
    for name in [n for n in dir(F) if n.endswith(("_forward", "_backward"))]:
        def timed(*args, _f=getattr(F, name), _name=name, **kwargs):
            start = time.perf_counter()
            result = _f(*args, **kwargs)
            key = (_name, tuple(getattr(args[0], "shape", ())))
            seconds[key] += time.perf_counter() - start
            calls[key] += 1
            return result
        # and in its own module, where resnet_np.dispatch finds the layers' generic code
        for owner in (F, sys.modules[getattr(F, name).__module__]):
            setattr(owner, name, timed)
    return seconds, calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="a torchvision name, or resnet18_cifar")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--mode", choices=("train", "inference"), default="train")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    rn.backend.retain_freed_memory()
    seconds, calls = instrument()
    cifar = args.model.endswith("_cifar")
    model = rn.models.build_model(args.model.replace("_cifar", ""), num_classes=10,
                                  cifar_stem=cifar)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size), dtype=np.float32)
    labels = np.arange(args.batch) % 10
    criterion = rn.nn.CrossEntropyLoss()

    def step():
        if args.mode == "inference":
            model.eval()
            with rn.no_grad():
                model(x)
        else:
            model.train()
            criterion(model(x), labels)
            model.backward(criterion.backward(), input_grad=False)

    for _ in range(args.warmup):
        step()
    seconds.clear()
    calls.clear()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    total = (time.perf_counter() - start) / args.steps
    inside = sum(seconds.values()) / args.steps
    print(f"{args.model} {args.mode}, batch {args.batch}, {args.size}x{args.size}: "
          f"{total * 1e3:.0f} ms a step, {inside * 1e3:.0f} ms in the layer functions")
    by_function = collections.defaultdict(float)
    for (name, _), s in seconds.items():
        by_function[name] += s / args.steps
    for name, s in sorted(by_function.items(), key=lambda kv: -kv[1]):
        print(f"  {name:32s} {s * 1e3:8.1f} ms")
    print("costliest (function, input shape), per step:")
    for (name, shape), s in sorted(seconds.items(), key=lambda kv: -kv[1])[:args.top]:
        uses = calls[(name, shape)] // args.steps
        print(f"  {name:30s} {str(shape):22s} x{uses:<3d} {s / args.steps * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
