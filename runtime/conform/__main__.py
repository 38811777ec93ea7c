"""python -m tofu.conform URL [options]: the same as `tofu conform`."""

import sys

from .command import main

sys.exit(main())
