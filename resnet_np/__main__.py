"""``python -m resnet_np``: the ``resnet-np`` command line (see :mod:`resnet_np.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
