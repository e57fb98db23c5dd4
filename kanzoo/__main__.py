"""``python -m kanzoo`` (and ``torchrun -m kanzoo``) runs the command line."""

import sys

from kanzoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
