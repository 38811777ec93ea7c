#!/usr/bin/env python
"""Run the tofu benchmark harness: tofu against pyzmq and a plain-socket floor.

    .venv/bin/python benchmarks/run_bench.py --quick
    .venv/bin/python benchmarks/run_bench.py --json bench.json

A thin wrapper around `tofu.bench` (the same as `tofu bench` and
`python -m tofu.bench`); see benchmarks/README.md for what it measures.
"""

import sys

from tofu.bench import main

if __name__ == "__main__":
    sys.exit(main())
