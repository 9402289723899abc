"""Run the benchmark suite: ``python benchmarks/run.py [--quick] [--threads N] [--out DIR]``.

Everything is in :mod:`resnet_np.bench`; ``--help`` lists the options and
benchmarks/README.md says how to read the results.
"""
import os
import sys

# The repository root, so that a checkout runs without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resnet_np.bench import main  # noqa: E402  (after the path is set)

if __name__ == "__main__":
    sys.exit(main())
