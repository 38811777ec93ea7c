"""The catalogue: every case, numbered by group, with its level.

    for case in catalogue(): print(case.id, case.level, case.title)

The cases come from the case modules: cases.py (the service a peer owes:
handshake, framing, streams, close), refusals.py (what the state machine
refuses, made from the generated table) and robustness.py (bad input and
limits, derived from the spec's op codes, proto bits and limits). A spec
change changes the suite. The catalogue imports the case modules; they import only
casespec.py (Level, CaseSpec), context.py and probe.py, never the catalogue.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .cases import close, framing, handshake, streams
from .casespec import CaseSpec, Level
from .context import Context
from .refusals import refusals
from .robustness import limits, robustness

__all__ = ["GROUPS", "Case", "catalogue", "select"]


@dataclass(frozen=True)
class Case:
    """A numbered case: `id` is "GROUP.N", e.g. "2.3"."""

    id: str
    group: str
    title: str
    level: Level
    run: Callable[[Context], str]
    isolation: bool = False


_MAKERS: list[tuple[str, str, Callable[[], list[CaseSpec]]]] = [
    ("handshake", "HelloRequest and HelloResponse", handshake),
    ("framing", "frames of every size and cut", framing),
    ("streams", "multi-frame messages (the more flag)", streams),
    ("close", "ByeRequest, ByeResponse and closes", close),
    (
        "refusals",
        "what the state machine refuses, per state and op code: the server closes, answering nothing",
        refusals,
    ),
    ("robustness", "bad input from one peer", robustness),
    ("limits", "the largest frames and silent peers", limits),
]

GROUPS: list[tuple[str, str]] = [(name, doc) for name, doc, _ in _MAKERS]
"""(group name, description) in catalogue order; group N is GROUPS[N-1]."""


def catalogue() -> list[Case]:
    """Every case, in order."""
    out: list[Case] = []
    for g, (group, _doc, make) in enumerate(_MAKERS, start=1):
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
