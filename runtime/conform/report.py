"""The suite's output: a live rich table, summary lines, JSON and a
self-contained HTML page (everything from the peer escaped)."""

from __future__ import annotations

import html
import json
import platform
import time
from collections.abc import Iterable
from typing import Any, Self

from rich.console import Console
from rich.table import Table
from rich.text import Text
from tofu import __version__

from .casespec import Level
from .catalogue import GROUPS, Case
from .runner import Outcome, Result, Transcript

__all__ = [
    "LiveReport",
    "catalogue_markdown",
    "catalogue_table",
    "hexdump",
    "summary",
    "summary_lines",
    "to_html",
    "to_json",
]

HEX_LIMIT = 48  # bytes of each direction shown for a failed case

_STYLE = {Outcome.passed: "green", Outcome.failed: "bold red", Outcome.info: "cyan"}


def hexdump(data: bytes, total: int, limit: int = HEX_LIMIT) -> str:
    """`data` as hex, cut to `limit` bytes, with the total."""
    if total == 0:
        return "nothing"
    shown = data[:limit].hex(" ")
    more = f" ... ({total} B in all)" if total > limit else f" ({total} B)"
    return shown + more


def evidence(result: Result, limit: int = HEX_LIMIT) -> list[str]:
    """For a failed case, on its last connection: the latest write and what
    came back after it (hex, cut to `limit` bytes each), and the totals."""
    if result.outcome is not Outcome.failed or not result.transcripts:
        return []
    t: Transcript = result.transcripts[-1]
    lines = [
        f"last sent: {hexdump(t.last_sent, len(t.last_sent), limit)}",
        f"received after it: {hexdump(t.last_received, len(t.last_received), limit)}",
    ]
    end = f"; the server closed ({t.ended})" if t.ended else "; the connection was open"
    lines.append(f"in all {t.sent_total} B sent, {t.received_total} B received{end}")
    return lines


def summary(results: Iterable[Result]) -> dict[str, dict[str, int]]:
    """Counts per level: {"must": {"pass": n, "fail": m}, ..., "info": {"info": k}}."""
    out: dict[str, dict[str, int]] = {lv.value: {} for lv in Level}
    for r in results:
        bucket = out[r.level.value]
        bucket[r.outcome.value] = bucket.get(r.outcome.value, 0) + 1
    return out


def summary_lines(results: list[Result]) -> list[str]:
    """One line per level, e.g. "must: 30/30 passed"."""
    lines = []
    for level, counts in summary(results).items():
        if level == Level.info.value:
            lines.append(f"info: {counts.get('info', 0)} recorded")
        else:
            passed, failed = counts.get("pass", 0), counts.get("fail", 0)
            lines.append(f"{level}: {passed}/{passed + failed} passed" + (f", {failed} FAILED" if failed else ""))
    return lines


# ================================================================ terminal


def _row(result: Result) -> tuple[str, str, Text, Text]:
    detail = Text(result.detail)
    for line in evidence(result):
        detail.append("\n" + line, style="dim")
    level = result.level.value + ("!" if result.level is not result.case.level else "")
    return result.case.id, level, Text(result.outcome.value.upper(), style=_STYLE[result.outcome]), detail


class LiveReport:
    """The table, printed a row at a time as cases finish (so it scrolls like
    any output and survives a pipe), with a transient line naming the case
    running now when the output is a terminal."""

    _WIDTHS = (5, 7, 6)  # case, level ("should!"), result

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.title = title
        self.status = console.status("", spinner="dots")

    def _table(self, header: bool) -> Table:
        table = Table(show_header=header, box=None, padding=(0, 1), expand=True, header_style="bold")
        for name, width in zip(("case", "level", "result"), self._WIDTHS, strict=True):
            table.add_column(name, width=width, no_wrap=True)
        table.add_column("detail", ratio=1, overflow="fold")
        return table

    def __enter__(self) -> Self:
        self.console.rule(self.title)
        self.console.print(self._table(header=True))
        if self.console.is_terminal:
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.status.stop()
        self.console.rule()

    def starting(self, case: Case) -> None:
        """Name the case now running (terminal only)."""
        self.status.update(f"{case.id} {case.title}")

    def add(self, result: Result) -> None:
        """Print the row of a finished case."""
        case_id, level, outcome, detail = _row(result)
        table = self._table(header=False)
        table.add_row(case_id, level, outcome, Text(result.case.title, style="bold") + Text("\n") + detail)
        self.console.print(table)


def catalogue_table(cases: list[Case]) -> Table:
    """The catalogue as a rich table (--list)."""
    table = Table(title="tofu conformance cases")
    for name in ("case", "group", "level", "description"):
        table.add_column(name, overflow="fold")
    for c in cases:
        table.add_row(c.id, c.group, c.level.value + (" + isolation" if c.isolation else ""), c.title)
    return table


def catalogue_markdown(cases: list[Case]) -> str:
    """The catalogue as a Markdown table (docs/conformance.md embeds it)."""
    lines = ["| case | group | level | description |", "|---|---|---|---|"]
    for c in cases:
        level = c.level.value + (" + isolation" if c.isolation else "")
        title = c.title.replace("|", r"\|")
        lines.append(f"| {c.id} | {c.group} | {level} | {title} |")
    return "\n".join(lines) + "\n"


# ================================================================ machines


def _transcript_json(t: Transcript) -> dict[str, Any]:
    return {
        "sent_hex": t.sent.hex(),
        "sent_total": t.sent_total,
        "received_hex": t.received.hex(),
        "received_total": t.received_total,
        "server_closed": t.ended,
        "last_sent_hex": t.last_sent.hex(),
        "last_received_hex": t.last_received.hex(),
    }


def to_json(results: list[Result], target: str, started: float, seconds: float) -> dict[str, Any]:
    """The run as a JSON-ready dict (bytes as hex, first 4 KiB of each direction)."""
    return {
        "tool": "tofu conform",
        "version": __version__,
        "target": target,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(seconds, 3),
        "passed": all(r.outcome is not Outcome.failed for r in results if r.level is Level.must),
        "summary": summary(results),
        "cases": [
            {
                "id": r.case.id,
                "group": r.case.group,
                "title": r.case.title,
                "level": r.case.level.value,
                "counted_as": r.level.value,
                "isolation": r.case.isolation,
                "result": r.outcome.value,
                "detail": r.detail,
                "seconds": round(r.seconds, 3),
                "connections": [_transcript_json(t) for t in r.transcripts] if r.outcome is Outcome.failed else [],
            }
            for r in results
        ],
    }


def dump_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


# ================================================================ HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0} .pass{color:#070;font-weight:bold} .fail{color:#b00;font-weight:bold}
.info{color:#06c} .ok{background:#e8f5e9;padding:8px} .bad{background:#fdecea;padding:8px}
pre{margin:4px 0;white-space:pre-wrap;word-break:break-all;font-size:85%;color:#555}
h2{margin-top:1.5em}
"""


def to_html(results: list[Result], target: str, started: float, seconds: float) -> str:
    """A one-page, self-contained report; every string from the peer is escaped."""
    e = html.escape
    data = to_json(results, target, started, seconds)
    verdict = "every must case passed" if data["passed"] else "some must cases FAILED"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>tofu conform: {e(target)}</title><style>{_CSS}</style></head><body>",
        f"<h1>tofu conformance report: {e(target)}</h1>",
        f'<p class="{"ok" if data["passed"] else "bad"}"><b>{e(verdict)}</b> &mdash; '
        + " &middot; ".join(e(line) for line in summary_lines(results))
        + "</p>",
        (
            f"<p>started {e(data['started'])}, {seconds:.1f} s; tofu conform {e(__version__)}, "
            f"Python {e(platform.python_version())}</p>"
        ),
    ]
    by_group: dict[str, list[Result]] = {}
    for r in results:
        by_group.setdefault(r.case.group, []).append(r)
    for name, doc in GROUPS:
        group = by_group.get(name)
        if not group:
            continue
        out.append(f"<h2>{e(name)}: {e(doc)}</h2>")
        out.append("<table><tr><th>case</th><th>level</th><th>result</th><th>description and detail</th></tr>")
        for r in group:
            ev = "".join(f"<pre>{e(line)}</pre>" for line in evidence(r, limit=256))
            level = e(r.level.value) + (" (isolation)" if r.level is not r.case.level else "")
            out.append(
                f'<tr id="case-{e(r.case.id)}"><td>{e(r.case.id)}</td><td>{level}</td>'
                f'<td class="{e(r.outcome.value)}">{e(r.outcome.value.upper())}</td>'
                f"<td>{e(r.case.title)}<br><small>{e(r.detail)}</small>{ev}</td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)
