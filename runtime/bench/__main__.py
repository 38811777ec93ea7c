"""`python -m tofu.bench`: the same as `tofu bench`; also how the bench starts its child processes."""

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
