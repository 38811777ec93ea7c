"""The bench's output: the tables and the warnings."""

from __future__ import annotations

from typing import Any

from .metrics import METRICS
from .trials import Trial


def _fmt(v: float | None, fmt: str) -> str:
    return "—" if v is None else fmt.format(v)


def _ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


def _table_rows(figs: dict[str, dict[str, Any]], impls: list[str], peak: bool) -> list[list[str]]:
    fmts = {m.key: m.fmt for m in METRICS}
    rows = []
    for fig in figs.values():
        if fig["metric"].startswith("peak_rss") != peak:
            continue
        fmt = fmts[fig["metric"]]
        row = [fig["title"], fig["unit"], fig["transport"]]
        row += [_fmt(fig.get(i), fmt) for i in impls]
        row += [_ratio(fig.get("tofu/pyzmq")), _ratio(fig.get("tofu/floor"))]
        tg = []
        for c in fig["targets"]:
            mark = "?" if c["ok"] is None else ("ok" if c["ok"] else "MISS")
            tg.append(f"{c['target']} {mark}")
        row.append(", ".join(tg))
        rows.append(row)
    return rows


def render(
    figs: dict[str, dict[str, Any]], impls: list[str], meta: dict[str, Any], errors: list[str], console: Any
) -> None:
    head = ["figure", "unit", "via"] + impls + ["tofu/pyzmq", "tofu/floor", "target"]
    rows = _table_rows(figs, impls, peak=False)
    peak_rows = [r[: 3 + len(impls)] for r in _table_rows(figs, impls, peak=True)]
    title = (
        f"tofu bench — median of {meta['repeat']} run(s); loopback; "
        f"{meta['cpus']} CPUs, load {meta['loadavg_before']:.1f}→{meta['loadavg_after']:.1f}; "
        f"{meta['python']}; {meta['pyzmq'] or 'pyzmq absent'}"
    )
    if console is not None:
        from rich.table import Table

        t = Table(title=title, show_lines=False)
        for i, h in enumerate(head):
            t.add_column(h, justify="left" if i < 3 or h == "target" else "right")
        for r in rows:
            style = "red" if "MISS" in r[-1] else ("green" if r[-1].endswith("ok") else None)
            t.add_row(*r, style=style)
        console.print(t)
        if peak_rows:
            t2 = Table(title="peak RSS of each side (MiB)")
            for i, h in enumerate(head[: 3 + len(impls)]):
                t2.add_column(h, justify="left" if i < 3 else "right")
            for r in peak_rows:
                t2.add_row(*r)
            console.print(t2)
        for e in errors:
            console.print(f"[red]error[/red] {e}", markup=True, highlight=False)
        return
    print(title)
    for table, hd in ((rows, head), (peak_rows, head[: 3 + len(impls)])):
        if not table:
            continue
        widths = [max(len(str(x)) for x in col) for col in zip(hd, *table)]
        print("  ".join(h.ljust(w) for h, w in zip(hd, widths)))
        for r in table:
            print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
        print()
    for e in errors:
        print("error", e)


def _warnings(trials: list[Trial]) -> list[str]:
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
            "(the pool, Options.max_pool_msgs, is smaller than one I/O batch)"
        )
    return out
