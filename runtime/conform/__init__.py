"""`tofu conform`: a black-box conformance suite for tofu peers.

    python -m tofu.conform tcp://127.0.0.1:7099
    python -m tofu.conform --list

`main(argv)` takes exactly the arguments of `tofu conform` and returns the
exit status (0 when every must case passes). `catalogue()` lists the cases;
`run_cases()` runs them and returns a Result each.
"""

from .casespec import Level
from .catalogue import Case, catalogue, select
from .command import main
from .probe import Target, TargetError, parse_target
from .runner import Outcome, Result, run_cases

__all__ = [
    "Case",
    "Level",
    "Outcome",
    "Result",
    "Target",
    "TargetError",
    "catalogue",
    "main",
    "parse_target",
    "run_cases",
    "select",
]
