"""``python -m minipacs``: the same as the ``minipacs`` command."""

import sys

from minipacs.cli import main

if __name__ == "__main__":
    sys.exit(main())
