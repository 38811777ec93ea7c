"""`python -m tofu`: the same as the `tofu` command (see tofu.cli)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
