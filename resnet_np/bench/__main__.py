"""``python -m resnet_np.bench``: the benchmarks (``--help`` lists the options)."""
import sys

from . import main

sys.exit(main())
