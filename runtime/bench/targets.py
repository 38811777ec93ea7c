"""The targets judged: a verdict per target and transport, `--check`'s exit
status, and the targets as the Markdown table benchmarks/README.md holds.

Each target of metrics.TARGETS is judged once per transport it is for
(tcp and uds; the instruction counts once, in-process over TCP):

  ok          tofu meets it;
  miss        tofu misses it (the line says by how much);
  unjudged    the run was asked to measure it and could not: pyzmq is
              absent, or the trials of the figure failed;
  left out    the user left it out of the run on purpose: its workload,
              transport or an implementation it compares with is not in
              --workloads, --transports or --impls.

`--check` passes (exit 0) only when every target the run was asked for is
ok, and at least one was judged. "Asked for" is what the options name, not
what could run: `tofu bench --check` on a machine without pyzmq fails (the
pyzmq targets are unjudged), `tofu bench --check --impls tofu,floor` does
not (the user left pyzmq out).

    python -m tofu.bench.targets                              # the table, as Markdown
    python -m tofu.bench.targets --update benchmarks/README.md  # rewrite it between the markers
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .metrics import BENCH_WORKLOADS, INSTRUCTION_TARGETS, METRIC_BY_KEY, TARGETS, TIMED_TARGETS, Target, target_value

OK, MISS, UNJUDGED, LEFT_OUT = "ok", "miss", "unjudged", "left out"

BEGIN = "<!-- targets: generated from tofu.bench.metrics.TARGETS by python -m tofu.bench.targets; do not edit -->"
END = "<!-- end of targets -->"
UPDATE = "python -m tofu.bench.targets --update"


@dataclass(frozen=True)
class Scope:
    """What the user asked the run to measure: the options as given (every
    workload, tcp and uds, every implementation by default), before anything
    was dropped because it could not run."""

    workloads: tuple[str, ...]
    transports: tuple[str, ...]
    impls: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    target: Target
    transport: str
    status: str  # OK | MISS | UNJUDGED | LEFT_OUT
    measured: float | None = None
    reason: str = ""  # why it was not judged (LEFT_OUT: the option that left it out)

    @property
    def title(self) -> str:
        return title(self.target)

    def by(self) -> str:
        """How far the measured figure is from the bound: "0.23x short", "0.30x over", "1,760 B over"."""
        assert self.measured is not None
        gap = abs(self.measured - self.target.value)
        word = "short" if self.target.op == ">=" else "over"
        if self.target.against == "absolute":
            return f"{gap:,.0f} {unit(self.target)} {word}"
        return f"{gap:.2f}x {word}"

    def line(self) -> str:
        """One line of the report (after "target ok  " etc.)."""
        t = self.target
        head = f"{self.title}, {self.transport}: tofu {t.text}"
        if self.status == OK:
            return f"{head} (measured {self._measured()})"
        if self.status == MISS:
            return f"{head} (measured {self._measured()}: {self.by()})"
        return f"{head} (not judged: {self.reason})"

    def _measured(self) -> str:
        assert self.measured is not None
        if self.target.against == "absolute":
            return f"{self.measured:,.0f} {unit(self.target)}"
        return f"{self.measured:.2f}x"

    def as_dict(self) -> dict[str, Any]:
        return {
            "figure": self.title,
            "metric": self.target.metric,
            "transport": self.transport,
            "target": self.target.text,
            "instructions": self.target.instructions,
            "status": self.status,
            "measured": self.measured,
            "by": self.by() if self.status == MISS else None,
            "reason": self.reason or None,
        }


# The figure of each `tofu bench --instructions` workload a target can name.
INSTRUCTION_TITLES = {
    "oneway-64": "instructions per one-way message, 64 B",
    "rtt": "instructions per round trip, 64 B",
    "fanin": "instructions per fan-in message, 64 B",
}
assert set(INSTRUCTION_TITLES) == set(BENCH_WORKLOADS)


def title(t: Target) -> str:
    return INSTRUCTION_TITLES[t.metric] if t.instructions else METRIC_BY_KEY[t.metric].title


def unit(t: Target) -> str:
    return "instructions" if t.instructions else METRIC_BY_KEY[t.metric].unit


def _needs(t: Target) -> tuple[str, ...]:
    """The implementations a target compares."""
    return ("tofu",) if t.against == "absolute" else ("tofu", t.against)


def _left_out(t: Target, transport: str, scope: Scope, workload: str) -> str | None:
    """Which option left the target out of the run, or None when it is in."""
    if workload not in scope.workloads:
        return "--workloads"
    if not t.instructions and transport not in scope.transports:
        return "--transports"
    if any(i not in scope.impls for i in _needs(t)):
        return "--impls"
    return None


def _judged(t: Target, transport: str, value: float | None, reason: str) -> Verdict:
    if value is None:
        return Verdict(t, transport, UNJUDGED, None, reason)
    return Verdict(t, transport, OK if t.met(value) else MISS, value)


def judge_timed(figs: dict[str, dict[str, Any]], scope: Scope, impls_run: Iterable[str]) -> list[Verdict]:
    """A verdict for every timed target and transport, from `figures()`'s
    output of a run that ran `impls_run` (what of `scope.impls` could run)."""
    ran = set(impls_run)
    out = []
    for t in TIMED_TARGETS:
        workload = METRIC_BY_KEY[t.metric].workload
        for transport in t.transports:
            left = _left_out(t, transport, scope, workload)
            if left is not None:
                out.append(Verdict(t, transport, LEFT_OUT, None, left))
                continue
            fig = figs.get(f"{t.metric}/{transport}", {})
            absent = [i for i in _needs(t) if i not in ran]
            if absent:
                reason = f"{' and '.join(absent)} is absent"
            else:
                failed = [i for i in _needs(t) if fig.get(i) is None]
                reason = f"its trials gave no figure of {' or '.join(failed) or 'tofu'}"
            out.append(_judged(t, transport, target_value(t, fig) if fig else None, reason))
    return out


def judge_instructions(ratios: dict[str, float | None], scope: Scope, impls_run: Iterable[str]) -> list[Verdict]:
    """A verdict for every instruction target, from tofu/pyzmq per `tofu bench
    --instructions` workload (None or missing: not counted)."""
    ran = set(impls_run)
    out = []
    for t in INSTRUCTION_TARGETS:
        for transport in t.transports:
            left = _left_out(t, transport, scope, t.metric)
            if left is not None:
                out.append(Verdict(t, transport, LEFT_OUT, None, left))
                continue
            absent = [i for i in _needs(t) if i not in ran]
            reason = f"{' and '.join(absent)} is absent" if absent else "not counted"
            out.append(_judged(t, transport, ratios.get(t.metric), reason))
    return out


MARKS = {OK: "ok", MISS: "MISS", UNJUDGED: "?"}


def report_lines(verdicts: list[Verdict]) -> list[tuple[str, str]]:
    """(mark, text) per target the run was asked for, then one line for those
    it was not asked for (left out)."""
    out = [(MARKS[v.status], v.line()) for v in verdicts if v.status != LEFT_OUT]
    left = [v for v in verdicts if v.status == LEFT_OUT]
    if left:
        options = sorted({v.reason for v in left})
        out.append(("-", f"{len(left)} more not in this run: left out by {', '.join(options)}"))
    return out


def check(verdicts: list[Verdict]) -> tuple[int, str]:
    """`--check`'s exit status and its closing line: 0 when every target the
    run was asked for was judged and met (and at least one was), else 1."""
    asked = [v for v in verdicts if v.status != LEFT_OUT]
    missed = [v for v in asked if v.status == MISS]
    unjudged = [v for v in asked if v.status == UNJUDGED]
    if not asked:
        return 1, "check FAILED: this run judged no target (its options left every one out)"
    of = f"of {len(asked)} target{'s' if len(asked) != 1 else ''} of this run"
    if not missed and not unjudged:
        return 0, f"check passed: {len(asked)} {of} met"
    parts = []
    if missed:
        parts.append(f"{len(missed)} missed")
    if unjudged:
        parts.append(f"{len(unjudged)} not judged")
    return 1, f"check FAILED: {', '.join(parts)}, {of}"


# ---------------------------------------------------------------- the table in benchmarks/README.md


def markdown() -> str:
    """TARGETS as a Markdown table (the lines between the README's markers)."""
    lines = ["| figure | transports | target | judged by |", "|---|---|---|---|"]
    for t in TARGETS:
        if t.instructions:
            figure, via, by = (
                f"{title(t)} (`--instructions`)",
                "one process, tcp",
                "`tofu bench --instructions --check`",
            )
        else:
            figure, via, by = f"{title(t)} ({unit(t)})", ", ".join(t.transports), "`tofu bench --check`"
        lines.append(f"| {figure} | {via} | {t.bound(times='×', space=' ')} | {by} |")
    return "\n".join(lines) + "\n"


class MarkersError(Exception):
    """A file has not exactly one pair of target markers, in order."""


def render_into(text: str) -> str:
    """`text` with the table between its markers replaced by markdown()."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise MarkersError(f"needs one line {BEGIN!r} and, after it, one line {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{markdown()}\n{END}{tail}"  # blank lines: the comments are HTML blocks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tofu.bench.targets",
        description="Print the bench's targets as a Markdown table, or rewrite the table between the "
        "target markers of Markdown files.",
    )
    parser.add_argument("--update", nargs="+", metavar="FILE", help="rewrite the table in each FILE")
    args = parser.parse_args(argv)
    if not args.update:
        sys.stdout.write(markdown())
        return 0
    for name in args.update:
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
            new = render_into(text)
        except (OSError, MarkersError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 2
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"{name}: table of targets rewritten")
        else:
            print(f"{name}: table of targets already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
