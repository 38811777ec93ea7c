"""The figures: what each trial measures, the targets, the medians over runs."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .trials import Trial
from .workloads import TRANSPORTS, WORKLOADS


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    workload: str
    higher_is_better: bool
    extract: Callable[[Trial], float | None]
    fmt: str = "{:,.0f}"
    base: str | None = None  # the same figure with 1 server process (fan-in with N processes), or without the layer
    base_key: str = "tofu/1 process"  # the ratio's key in the figure
    base_text: str = "with 1 process"  # how the report names the base figure
    base_line: str = "scaling"  # the word the report's line of it starts with


def _rate(t: Trial, seconds_key: str = "seconds", side: str = "server") -> float | None:
    d = t.server if side == "server" else t.client
    s = d.get(seconds_key)
    # With several server processes, each counts its own share: "measured" is their sum.
    return d.get("measured", t.spec["count"]) / s if s else None


def _e2e_rate(t: Trial) -> float | None:
    """Messages per second from the sender's first measured send to the
    receiver's last receive (CLOCK_MONOTONIC is shared by every process)."""
    a, b = t.client.get("t_first"), t.server.get("t_last")
    return t.spec["count"] / (b - a) if a is not None and b is not None and b > a else None


def _cpu_us(side: str) -> Callable[[Trial], float | None]:
    """CPU time (every thread of the side's processes) per message, µs: reported by tofu only."""

    def f(t: Trial) -> float | None:
        d = t.server if side == "server" else t.client
        cpu = d.get("cpu_seconds")
        n = d.get("measured", t.spec["count"]) if side == "server" else t.spec["count"]
        return cpu / n * 1e6 if cpu is not None and n else None

    return f


def _cores(t: Trial) -> float | None:
    """CPU seconds of every server and client process per second of the send→receive
    window: how many cores the trial kept busy (tofu only)."""
    a, b = t.client.get("t_first"), t.server.get("t_last")
    cs, cc = t.server.get("cpu_seconds"), t.client.get("cpu_seconds")
    if a is None or b is None or b <= a or cs is None or cc is None:
        return None
    return float((cs + cc) / (b - a))


def _mbps(t: Trial) -> float | None:
    r = _rate(t)
    return r * t.spec["size"] / 1e6 if r else None


def _lat(q: float) -> Callable[[Trial], float | None]:
    def f(t: Trial) -> float | None:
        lat: list[float] | None = t.client.get("latencies_us")
        return _percentile(sorted(lat), q) if lat else None

    return f


def _per_idle(side: str) -> Callable[[Trial], float | None]:
    def f(t: Trial) -> float | None:
        d = t.server if side == "server" else t.client
        if "rss_idle" not in d:
            return None
        return float((d["rss_idle"] - d["rss_before"]) / t.spec["idle"])

    return f


def _peak(side: str) -> Callable[[Trial], float | None]:
    def f(t: Trial) -> float | None:
        v = (t.server if side == "server" else t.client).get("rss_peak")
        return v / 2**20 if v else None

    return f


METRICS: list[Metric] = [
    Metric("oneway_64_msgs", "one-way 64 B", "msg/s", "oneway-64", True, _rate),
    Metric("oneway_1k_msgs", "one-way 1 KiB", "msg/s", "oneway-1k", True, _rate),
    Metric("oneway_64k_msgs", "one-way 65535 B", "msg/s", "oneway-64k", True, _rate),
    Metric("oneway_64k_mbps", "one-way 65535 B", "MB/s", "oneway-64k", True, _mbps, "{:,.1f}"),
    Metric("oneway_64_e2e_msgs", "one-way 64 B, send→receive", "msg/s", "oneway-64", True, _e2e_rate),
    Metric("oneway_1k_e2e_msgs", "one-way 1 KiB, send→receive", "msg/s", "oneway-1k", True, _e2e_rate),
    Metric(
        "oneway_64k_e2e_mbps",
        "one-way 65535 B, send→receive",
        "MB/s",
        "oneway-64k",
        True,
        lambda t: r * t.spec["size"] / 1e6 if (r := _e2e_rate(t)) else None,
        "{:,.1f}",
    ),
    Metric("rtt_p50_us", "round trip p50", "µs", "rtt", False, _lat(0.50), "{:,.1f}"),
    Metric("rtt_p99_us", "round trip p99", "µs", "rtt", False, _lat(0.99), "{:,.1f}"),
    Metric("pipeline_msgs", "req/resp, 64 outstanding", "msg/s", "pipeline", True, lambda t: _rate(t, side="client")),
    *(
        Metric(
            f"{w.name.replace('-', '_')}_msgs",
            f"req/resp, {'tofu.aio' if w.face == 'aclient' else 'tofu'}.Client, 64 out",
            "msg/s",
            w.name,
            True,
            lambda t: _rate(t, side="client"),
            base="pipeline_msgs",
            base_key="tofu/engine alone",
            base_text="the engine alone",
            base_line="layer",
        )
        for w in WORKLOADS.values()
        if w.face
    ),
    Metric("fanin_msgs", "fan-in, 64 B, all clients", "msg/s", "fanin", True, _rate),
    Metric("fanin_e2e_msgs", "fan-in, send→receive", "msg/s", "fanin", True, _e2e_rate),
    Metric("fanin_server_cpu_us", "fan-in, server CPU per msg", "µs", "fanin", False, _cpu_us("server"), "{:,.1f}"),
    Metric("fanin_client_cpu_us", "fan-in, client CPU per msg", "µs", "fanin", False, _cpu_us("client"), "{:,.1f}"),
    Metric("fanin_cores", "fan-in, cores busy", "cores", "fanin", True, _cores, "{:,.2f}"),
    *(
        m
        for w in WORKLOADS.values()
        if w.kind == "fanin" and w.procs > 1
        for m in (
            Metric(
                f"fanin{w.procs}_msgs",
                f"fan-in, {w.procs} server procs",
                "msg/s",
                w.name,
                True,
                _rate,
                base="fanin_msgs",
            ),
            Metric(
                f"fanin{w.procs}_e2e_msgs",
                f"fan-in, {w.procs} procs, send→receive",
                "msg/s",
                w.name,
                True,
                _e2e_rate,
                base="fanin_e2e_msgs",
            ),
            Metric(
                f"fanin{w.procs}_server_cpu_us",
                f"fan-in, {w.procs} procs, server CPU/msg",
                "µs",
                w.name,
                False,
                _cpu_us("server"),
                "{:,.1f}",
                base="fanin_server_cpu_us",
            ),
            Metric(
                f"fanin{w.procs}_client_cpu_us",
                f"fan-in, {w.procs} procs, client CPU/msg",
                "µs",
                w.name,
                False,
                _cpu_us("client"),
                "{:,.1f}",
                base="fanin_client_cpu_us",
            ),
            Metric(
                f"fanin{w.procs}_cores",
                f"fan-in, {w.procs} procs, cores busy",
                "cores",
                w.name,
                True,
                _cores,
                "{:,.2f}",
                base="fanin_cores",
            ),
        )
    ),
    Metric("idle_rss_server_b", "RSS per idle conn, server", "B", "idle", False, _per_idle("server")),
    Metric("idle_rss_client_b", "RSS per idle conn, client", "B", "idle", False, _per_idle("client")),
    Metric(
        "idle_active_alone_msgs", "active channel, alone", "msg/s", "idle", True, lambda t: _rate(t, "seconds_alone")
    ),
    Metric(
        "idle_active_with_idle_msgs",
        "active channel, beside idle",
        "msg/s",
        "idle",
        True,
        lambda t: _rate(t, "seconds_with_idle"),
    ),
]
for _w in WORKLOADS:
    METRICS.append(
        Metric(f"peak_rss_server_mib[{_w}]", f"peak RSS server, {_w}", "MiB", _w, False, _peak("server"), "{:,.1f}")
    )
    METRICS.append(
        Metric(f"peak_rss_client_mib[{_w}]", f"peak RSS client, {_w}", "MiB", _w, False, _peak("client"), "{:,.1f}")
    )


# The transports the targets are for: plaintext (TLS costs what it costs; it
# is compared with plaintext TCP in a table of its own).
TARGET_TRANSPORTS = ("tcp", "uds")

# The workloads `tofu bench --instructions` counts (tofu.bench.instructions):
# `tofu bench` workload -> (in-process workload, title); fan-in takes --clients connections.
BENCH_WORKLOADS = {
    "oneway-64": ("oneway", "one-way 64 B"),
    "rtt": ("rtt", "round trip 64 B (per round trip)"),
    "fanin": ("oneway", "fan-in 64 B, {clients} connections"),
}
_OP_SIGNS = {">=": "≥", "<=": "≤", "<": "<"}


@dataclass(frozen=True)
class Target:
    """A goal for one of tofu's figures: its ratio to pyzmq's or the floor's,
    or an absolute bound. `instructions`: a figure of `tofu bench
    --instructions` (`metric` is then one of its workloads, counted in one
    process over TCP) rather than of a timed run."""

    metric: str  # a METRICS key; with instructions, a key of BENCH_WORKLOADS
    against: str  # "pyzmq" | "floor" | "absolute"
    op: str  # ">=" | "<=" | "<"
    value: float
    instructions: bool = False
    transports: tuple[str, ...] = TARGET_TRANSPORTS

    def met(self, measured: float) -> bool:
        """Whether `measured` (tofu's ratio, or its figure for an absolute target) meets it."""
        if self.op == ">=":
            return measured >= self.value
        if self.op == "<=":
            return measured <= self.value
        return measured < self.value

    def bound(self, times: str = "x", space: str = "") -> str:
        """The bound alone: "≥0.75x pyzmq", "<10 KiB" (`times`, `space`: as Markdown writes it)."""
        if self.against == "absolute":
            return f"{_OP_SIGNS[self.op]}{space}{_absolute(self.value, METRIC_BY_KEY[self.metric].unit)}"
        return f"{_OP_SIGNS[self.op]}{space}{_number(self.value)}{times} {self.against}"

    @property
    def text(self) -> str:
        """As the bench prints it: "≥0.75x pyzmq"."""
        return self.bound()


def _number(v: float) -> str:
    """0.75 -> "0.75", 1.0 -> "1.0", 0.5 -> "0.5"."""
    text = f"{v:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _absolute(v: float, unit: str) -> str:
    """10240 B -> "10 KiB"."""
    if unit == "B" and v >= 1024 and v % 1024 == 0:
        return f"{v / 1024:,.0f} KiB"
    return f"{v:,.0f} {unit}"


METRIC_BY_KEY = {m.key: m for m in METRICS}

# The targets of this round. `tofu bench` prints a line for each (ok, MISS by
# how much, or not judged) and `tofu bench --check` exits 1 when one is
# missed; the instruction counts are judged by `tofu bench --instructions
# --check`. benchmarks/README.md's table of targets is rendered from this list
# (python -m tofu.bench.targets --update benchmarks/README.md; a test compares).
TARGETS = [
    Target("oneway_64_msgs", "pyzmq", ">=", 0.75),
    Target("oneway_64_msgs", "floor", ">=", 0.5),
    Target("fanin_msgs", "pyzmq", ">=", 0.5),
    Target("pipeline_msgs", "pyzmq", ">=", 1.0),
    Target("rtt_p50_us", "pyzmq", "<=", 1.0),
    Target("oneway_64k_mbps", "pyzmq", ">=", 1.0),
    Target("idle_rss_server_b", "absolute", "<", 10240),
    Target("oneway-64", "pyzmq", "<=", 2.0, instructions=True, transports=("tcp",)),
    Target("rtt", "pyzmq", "<=", 1.5, instructions=True, transports=("tcp",)),
]
TIMED_TARGETS = [t for t in TARGETS if not t.instructions]
INSTRUCTION_TARGETS = [t for t in TARGETS if t.instructions]


def figures(trials: list[Trial], impls: list[str]) -> dict[str, dict[str, Any]]:
    """Median of every metric per (metric, transport) and implementation, with ratios."""
    out: dict[str, dict[str, Any]] = {}
    for m in METRICS:
        for transport in TRANSPORTS:
            runs: dict[str, list[float]] = {}
            for t in trials:
                if t.workload.name != m.workload or t.transport != transport or t.error:
                    continue
                v = m.extract(t)
                if v is not None:
                    runs.setdefault(t.impl, []).append(v)
            if not runs:
                continue
            fig: dict[str, Any] = {
                "metric": m.key,
                "title": m.title,
                "unit": m.unit,
                "transport": transport,
                "higher_is_better": m.higher_is_better,
                "runs": runs,
            }
            for impl in impls:
                fig[impl] = statistics.median(runs[impl]) if impl in runs else None
            for other in ("pyzmq", "floor"):
                a, b = fig.get("tofu"), fig.get(other)
                fig[f"tofu/{other}"] = a / b if a is not None and b else None
            if m.base is not None:  # N server processes against 1, the layer against the engine alone
                one = out.get(f"{m.base}/{transport}", {}).get("tofu")
                fig["base"] = m.base
                fig["base_key"], fig["base_text"], fig["base_line"] = m.base_key, m.base_text, m.base_line
                fig[m.base_key] = fig["tofu"] / one if fig.get("tofu") is not None and one else None
            checks = []
            for tg in TIMED_TARGETS:
                if tg.metric != m.key or transport not in tg.transports:
                    continue
                v = target_value(tg, fig)
                checks.append({"target": tg.text, "ok": None if v is None else tg.met(v)})
            fig["targets"] = checks
            out[f"{m.key}/{transport}"] = fig
    for key, fig in out.items():  # what TLS costs tofu: its tls figure over its plaintext tcp one
        if fig["transport"] == "tls":
            plain = out.get(key.removesuffix("/tls") + "/tcp", {}).get("tofu")
            fig["tls/tcp"] = fig["tofu"] / plain if fig.get("tofu") is not None and plain else None
    return out


def target_value(tg: Target, fig: dict[str, Any]) -> float | None:
    """What `tg` judges in a figure: tofu's ratio to the other implementation, or tofu's own figure."""
    value: float | None = fig.get("tofu") if tg.against == "absolute" else fig.get(f"tofu/{tg.against}")
    return value


def _percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]
