"""`tofu bench --plot FILE`: the figures as bar charts, tofu, pyzmq and the floor side by side.

Needs matplotlib (`pip install 'tofu-messaging[plot]'`); the format follows
the file's extension, .svg or .png.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

FORMATS = (".svg", ".png")
COLORS = {"tofu": "#d95f02", "pyzmq": "#7570b3", "floor": "#1b9e77"}
_COLUMNS = 4


class PlotError(Exception):
    """--plot cannot be honoured: a bad file name, or no matplotlib."""


def check_plot_target(path: str) -> None:
    """Fail early (before a long run) when `path` or matplotlib will not do."""
    if Path(path).suffix.lower() not in FORMATS:
        raise PlotError(f"--plot {path}: the file name must end in .svg or .png")
    _pyplot()


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotError("--plot needs matplotlib: pip install 'tofu-messaging[plot]'") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def write_plot(figs: dict[str, dict[str, Any]], impls: list[str], path: str, title: str = "tofu bench") -> int:
    """Draw one chart per figure (peak RSS left out): for each transport, a bar per
    implementation. Returns the number of charts drawn."""
    check_plot_target(path)
    plt = _pyplot()
    metrics: dict[str, list[dict[str, Any]]] = {}
    for fig in figs.values():
        if not fig["metric"].startswith("peak_rss"):
            metrics.setdefault(fig["metric"], []).append(fig)
    if not metrics:
        raise PlotError("--plot: no figure to draw (every trial failed?)")
    rows = math.ceil(len(metrics) / _COLUMNS)
    cols = min(_COLUMNS, len(metrics))
    canvas, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    width = 0.8 / max(1, len(impls))
    for n, per_transport in enumerate(metrics.values()):
        ax = axes[n // _COLUMNS][n % _COLUMNS]
        transports = [f["transport"] for f in per_transport]
        for i, impl in enumerate(impls):
            values = [f.get(impl) or 0.0 for f in per_transport]
            xs = [x + (i - (len(impls) - 1) / 2) * width for x in range(len(transports))]
            ax.bar(xs, values, width, label=impl, color=COLORS.get(impl))
        first = per_transport[0]
        better = "higher" if first["higher_is_better"] else "lower"
        ax.set_title(f"{first['title']}\n({better} is better)", fontsize=9)
        ax.set_ylabel(first["unit"], fontsize=8)
        ax.set_xticks(range(len(transports)), transports)
        ax.tick_params(labelsize=8)
        if n == 0:
            ax.legend(fontsize=8)
    for n in range(len(metrics), rows * cols):
        axes[n // _COLUMNS][n % _COLUMNS].set_visible(False)
    canvas.suptitle(title, fontsize=10)
    canvas.tight_layout()
    canvas.savefig(path)
    plt.close(canvas)
    return len(metrics)
