"""``python -m inference``: the ``vilab`` command line."""

import sys

from inference.lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
