"""What a case module declares: a case's level and its CaseSpec.

    CaseSpec("a Request with a 0-byte body is echoed", Level.must, run)

The case modules (cases.py, refusals.py, robustness.py) each return lists of
CaseSpecs; the catalogue numbers them into Cases. Of the suite this module
imports only context.py (what a case runs with), so every case module and
the catalogue can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from .context import Context

__all__ = ["CaseSpec", "Level"]


class Level(StrEnum):
    """How much a case counts."""

    must = "must"  # the protocol requires it: a failure fails the run
    should = "should"  # robustness the protocol leaves open
    info = "info"  # recorded only


@dataclass(frozen=True)
class CaseSpec:
    """A case before numbering: what the case modules declare."""

    title: str
    level: Level
    run: Callable[[Context], str]
    isolation: bool = False  # afterwards a second connection must still be served (a must)
