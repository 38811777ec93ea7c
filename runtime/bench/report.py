"""The bench's output: the tables and the warnings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .metrics import METRICS
from .trials import Trial
from .workloads import TLS_IMPLS


def _fmt(v: float | None, fmt: str) -> str:
    return "—" if v is None else fmt.format(v)


def _ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


WIDTH = 100  # the bench's output fits in this many columns
TARGET_STYLES = {"ok": "green", "MISS": "red", "?": "yellow"}


def _table_rows(figs: dict[str, dict[str, Any]], impls: list[str], peak: bool) -> list[list[str]]:
    fmts = {m.key: m.fmt for m in METRICS}
    rows = []
    for fig in figs.values():
        if fig["metric"].startswith("peak_rss") != peak:
            continue
        fmt = fmts[fig["metric"]]
        row = [f"{fig['title']} ({fig['unit']})", fig["transport"]]
        row += ["n/a" if fig["transport"] == "tls" and i not in TLS_IMPLS else _fmt(fig.get(i), fmt) for i in impls]
        if not peak:
            row += [
                "n/a" if fig["transport"] == "tls" and o not in TLS_IMPLS else _ratio(fig.get(f"tofu/{o}"))
                for o in ("pyzmq", "floor")
            ]
        rows.append(row)
    return rows


def _tls_rows(figs: dict[str, dict[str, Any]]) -> list[list[str]]:
    """TLS against plaintext TCP: figure, tofu's tcp, tls and tls/tcp, the floor's tls/tcp."""
    fmts = {m.key: m.fmt for m in METRICS}
    rows = []
    for key, fig in figs.items():
        if fig["transport"] != "tls" or fig["metric"].startswith("peak_rss"):
            continue
        fmt = fmts[fig["metric"]]
        tcp = figs.get(key.removesuffix("/tls") + "/tcp", {})
        floor_tls, floor_tcp = fig.get("floor"), tcp.get("floor")
        rows.append(
            [
                f"{fig['title']} ({fig['unit']})",
                _fmt(tcp.get("tofu"), fmt),
                _fmt(fig.get("tofu"), fmt),
                _ratio(fig.get("tls/tcp")),
                _ratio(floor_tls / floor_tcp if floor_tls is not None and floor_tcp else None),
            ]
        )
    return rows


def _scaling_lines(figs: dict[str, dict[str, Any]]) -> list[str]:
    """For every figure that has a base: tofu with N server processes against
    1 ("scaling ..."), through the service layer against the engine alone
    ("layer ...")."""
    out = []
    for fig in figs.values():
        if "base" not in fig:
            continue
        base = figs.get(f"{fig['base']}/{fig['transport']}", {}).get("tofu")
        ratio = fig[fig["base_key"]]
        fmt = {"µs": "{:,.1f}", "cores": "{:,.2f}"}.get(fig["unit"], "{:,.0f}")
        value = f"{_fmt(fig.get('tofu'), fmt)} {fig['unit']}"
        if fig["base_line"] == "scaling":
            line = f"tofu {value} against {_fmt(base, fmt)} {fig['base_text']}"
        else:  # the layer against the engine alone
            line = f"{value}, {fig['base_text']} {_fmt(base, fmt)}"
        out.append(f"{fig['base_line']} {fig['title']}, {fig['transport']}: {line}: {_ratio(ratio)}")
    return out


def say(console: Any, text: str, style: str | None = None) -> None:
    """One line of text as it is: never read as rich markup (`[bench]` stays `[bench]`)."""
    if console is None:
        print(text)
    else:
        console.print(text, style=style, markup=False, highlight=False, soft_wrap=False)


def render(
    figs: dict[str, dict[str, Any]],
    impls: list[str],
    meta: dict[str, Any],
    errors: list[str],
    console: Any,
    targets: Sequence[tuple[str, str]] = (),
) -> None:
    """The figures as tables (within WIDTH columns), the targets' (mark, text)
    lines (targets.report_lines), then the errors."""
    head = ["figure", "via"] + impls + ["tofu/pyzmq", "tofu/floor"]
    rows = _table_rows(figs, impls, peak=False)
    peak_rows = _table_rows(figs, impls, peak=True)
    peak_head = ["peak RSS of each side", "via"] + impls
    tls_rows = _tls_rows(figs)
    tls_head = ["TLS against plaintext", "tofu tcp", "tofu tls", "tofu tls/tcp", "floor tls/tcp"]
    title = (
        f"tofu bench: median of {meta['repeat']} run(s) over loopback; {meta['cpus']} CPUs, "
        f"load {meta['loadavg_before']:.1f}→{meta['loadavg_after']:.1f}; "
        f"{meta['python']}; {meta['pyzmq'] or 'pyzmq absent'}"
    )
    if console is not None:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        console.print(Text(title), width=min(WIDTH, console.width))
        for hd, table_rows in ((head, rows), (peak_head, peak_rows), (tls_head, tls_rows)):
            if not table_rows:
                continue
            t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, padding=(0, 1))
            for i, h in enumerate(hd):
                t.add_column(h, justify="left" if i < 2 else "right", no_wrap=i > 0)
            for r in table_rows:
                t.add_row(*(Text(c) for c in r))
            console.print(t, width=min(WIDTH, console.width))
        for line in _scaling_lines(figs):
            say(console, line)
        for mark, text in targets:
            say(console, f"target {mark:<4} {text}", TARGET_STYLES.get(mark))
        for e in errors:
            say(console, f"error {e}", "red")
        return
    print(title)
    for table, hd in ((rows, head), (peak_rows, peak_head), (tls_rows, tls_head)):
        if not table:
            continue
        widths = [max(len(str(x)) for x in col) for col in zip(hd, *table)]
        print("  ".join(h.ljust(w) for h, w in zip(hd, widths)))
        for r in table:
            print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
        print()
    for line in _scaling_lines(figs):
        print(line)
    for mark, text in targets:
        print(f"target {mark:<4} {text}")
    for e in errors:
        print("error", e)


def trial_warnings(trials: list[Trial]) -> list[str]:
    """What went wrong without failing a trial: a Bye exchange that did not
    finish, messages a side did not expect, and how often the engine warned
    that its pool ran empty."""
    out = []
    pool_empty: dict[str, list[int]] = {}
    for t in trials:
        for side in ("server", "client"):
            r = t.server if side == "server" else t.client
            where = f"{t.workload.name} {t.transport} {t.impl} run {t.run + 1} {side}"
            if r.get("clean_close") is False:
                out.append(f"{where}: channels did not close within {t.spec['close_timeout']:.0f} s after Bye")
            if r.get("unexpected"):
                out.append(f"{where}: {r['unexpected']} unexpected message(s)")
            if r.get("pool_empty"):
                pool_empty.setdefault(t.workload.name, []).append(r["pool_empty"])
    for w, counts in pool_empty.items():
        out.append(
            f"{w}: tofu sent the application {min(counts)}-{max(counts)} pool_empty warnings per process and run "
            "(the benchmark's application held more messages than the pool keeps: see docs/concepts.md)"
        )
    return out
