"""`python -m codegen [--check]`: regenerate generated/ from spec/, or check it."""

import sys

from codegen.generator import main

sys.exit(main(sys.argv[1:]))
