"""The catalogue: every case, numbered by group, with its level.

    for case in catalogue(): print(case.id, case.level, case.title)

Cases are written in cases.py (the service a peer owes: handshake, framing,
streams, close) and robustness.py (bad input and limits, derived from the
spec's op code table, proto bits and limits): a spec change changes the suite.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from .context import Context

__all__ = ["GROUPS", "Case", "CaseSpec", "Level", "catalogue", "select"]


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


@dataclass(frozen=True)
class Case:
    """A numbered case: `id` is "GROUP.N", e.g. "2.3"."""

    id: str
    group: str
    title: str
    level: Level
    run: Callable[[Context], str]
    isolation: bool = False


def _groups() -> list[tuple[str, str, Callable[[], list[CaseSpec]]]]:
    from . import cases, robustness

    return [
        ("handshake", "HelloRequest and HelloResponse", cases.handshake),
        ("framing", "frames of every size and cut", cases.framing),
        ("streams", "multi-frame messages (the more flag)", cases.streams),
        ("close", "ByeRequest, ByeResponse and closes", cases.close),
        ("robustness", "bad input from one peer", robustness.robustness),
        ("limits", "the largest frames and silent peers", robustness.limits),
    ]


GROUPS: list[tuple[str, str]] = [(name, doc) for name, doc, _ in _groups()]
"""(group name, description) in catalogue order; group N is GROUPS[N-1]."""


def catalogue() -> list[Case]:
    """Every case, in order."""
    out: list[Case] = []
    for g, (group, _doc, make) in enumerate(_groups(), start=1):
        for n, spec in enumerate(make(), start=1):
            out.append(Case(f"{g}.{n}", group, spec.title, spec.level, spec.run, spec.isolation))
    return out


def select(cases: Iterable[Case], patterns: list[str]) -> list[Case]:
    """The cases whose id or group matches one of the glob `patterns`
    (each may be a comma-separated list: "1.*,close,5.1?"); all of them when
    there are no patterns."""
    globs = [p.strip() for pattern in patterns for p in pattern.split(",") if p.strip()]
    if not globs:
        return list(cases)
    return [c for c in cases if any(fnmatch.fnmatchcase(c.id, g) or fnmatch.fnmatchcase(c.group, g) for g in globs)]
