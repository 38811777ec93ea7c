"""Runs cases against a target and records a Result for each."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from .casespec import Level
from .catalogue import Case
from .context import CaseFailed, Context
from .probe import Conn, ProbeError, Target

__all__ = ["Outcome", "Result", "Transcript", "run_case", "run_cases"]

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    passed = "pass"
    failed = "fail"
    info = "info"  # an info case: recorded, neither passes nor fails


@dataclass(frozen=True)
class Transcript:
    """The bytes each way on one connection: the first ones, the totals, and
    the latest write with what came back after it."""

    sent: bytes
    sent_total: int
    received: bytes
    received_total: int
    ended: str | None  # "fin" / "reset" if the server closed
    last_sent: bytes = b""  # the latest write
    last_received: bytes = b""  # what arrived after it

    @classmethod
    def of(cls, conn: Conn) -> Transcript:
        return cls(
            bytes(conn.sent),
            conn.sent_total,
            bytes(conn.received),
            conn.received_total,
            conn.ended,
            bytes(conn.last_sent),
            bytes(conn.last_received),
        )


@dataclass(frozen=True)
class Result:
    """What one case found. `level` is the case's, except that a failed
    isolation check (a second connection no longer served) counts as must."""

    case: Case
    outcome: Outcome
    level: Level
    detail: str
    seconds: float
    transcripts: list[Transcript] = field(default_factory=list)


def run_case(case: Case, target: Target, timeout: float, idle: float) -> Result:
    """Run one case (never raises for the server's misbehaviour)."""
    ctx = Context(target, timeout, idle)
    start = time.monotonic()
    level = case.level
    failed = False
    try:
        detail = case.run(ctx)
    except (CaseFailed, ProbeError) as exc:
        failed, detail = True, str(exc)
    except OSError as exc:
        failed, detail = True, f"socket error: {exc.strerror or exc}"
    except Exception as exc:  # a bug in the case itself: reported as its failure, the run goes on
        log.exception("tofu conform: case %s raised", case.id)
        failed, detail = True, f"the case itself failed: {type(exc).__name__}: {exc}"
    transcripts = [Transcript.of(c) for c in ctx.conns]
    ctx.close_all()
    if case.isolation:
        # Twice, one after the other: a server that dies of what the case did
        # may still be finishing the first check when it goes down.
        problem = ctx.health() or ctx.health()
        if problem is not None:
            failed, level = True, Level.must
            detail = f"a second connection is not served afterwards: {problem} (the case: {detail})"
    if case.level is Level.info and not failed:
        outcome = Outcome.info
    elif case.level is Level.info and level is Level.info:
        outcome, detail = Outcome.info, f"no answer to record: {detail}"
    else:
        outcome = Outcome.failed if failed else Outcome.passed
    return Result(case, outcome, level, detail, time.monotonic() - start, transcripts)


def run_cases(
    cases: Iterable[Case],
    target: Target,
    timeout: float,
    idle: float,
    on_result: Callable[[Result], None] | None = None,
    on_start: Callable[[Case], None] | None = None,
) -> list[Result]:
    """Run `cases` in order; `on_start` sees each case before it runs,
    `on_result` each Result as it is made."""
    results = []
    for case in cases:
        if on_start is not None:
            on_start(case)
        result = run_case(case, target, timeout, idle)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
