"""Trials with N server processes sharing one TCP port (the `fanin-N` workloads).

tofu's server side runs N processes, each its own engine listening with
`TCPServerAddress(host, port, reuse_port=True)`, so the kernel spreads the
connections over them (SO_REUSEPORT), the way `tofu serve --workers N` and
the multi-process pattern of docs/concepts.md do. The client side runs N
processes too, each with its share of the `--clients` connections and of the
messages, so that the offered load grows with the servers.

The steps, driven by this parent process:

1. every server listens and says `ready`; then every client gets `go`;
2. every client connects all its channels and says `sync`; when all have,
   every client gets `go` (so no data flows before every connection exists:
   each server then knows its share of the connections, and of the warm-up);
3. the clients send round-robin over their channels, close them with
   ByeRequest (queued behind the data) and report; when every client has
   ended, every server has received all its data and gets `go`;
4. each server reports its count, its warm-up share, and the CLOCK_MONOTONIC
   times of the message ending its warm-up and of its last message.

The trial's receiver-side rate is the messages after the warm-up, summed over
the servers, divided by the window from the earliest server's warm-up end to
the latest server's last message.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import tempfile
import time
from typing import Any

from ._process import BenchError
from .trials import Events, Trial, go, kill, spawn


def _shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` whole numbers that differ by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _specs(spec: dict[str, Any], procs: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The spec of every server process and of every client process."""
    servers = [dict(spec, clients_total=spec["clients"], index=i) for i in range(procs)]
    clients = [
        dict(spec, clients=c, warmup=w, count=n, index=i)
        for i, (c, w, n) in enumerate(
            zip(_shares(spec["clients"], procs), _shares(spec["warmup"], procs), _shares(spec["count"], procs))
        )
    ]
    return servers, clients


def run_shared_trial(trial: Trial) -> Trial:
    """Run N server and N client processes of one trial to completion (or its deadline)."""
    spec = trial.spec
    procs = int(spec["procs"])
    if spec["clients"] < procs:
        trial.error = f"--clients {spec['clients']} is fewer than the {procs} client processes"
        return trial
    deadline = time.monotonic() + spec["timeout"]
    events: Events = queue.Queue()
    server_specs, client_specs = _specs(spec, procs)
    servers = [f"server{i}" for i in range(procs)]
    clients = [f"client{i}" for i in range(procs)]
    procs_by_label: dict[str, subprocess.Popen[str]] = {}
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    files = contextlib.ExitStack()
    errs: dict[str, Any] = {}
    try:
        for label, role, s in [
            *zip(servers, ["server"] * procs, server_specs),
            *zip(clients, ["client"] * procs, client_specs),
        ]:
            errs[label] = files.enter_context(tempfile.TemporaryFile("w+"))  # noqa: SIM115
            procs_by_label[label] = spawn(role, s, events, errs[label], label=label)
        ready: set[str] = set()
        synced: set[str] = set()
        ended: set[str] = set()
        while len(ended) < 2 * procs:
            try:
                label, ev = events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError("trial timed out") from None
            if ev is None:
                ended.add(label)
                if label not in results:
                    raise BenchError(f"{label} exited without a result")
                if label in clients and ended >= set(clients):
                    for s_label in servers:  # every client is done: every server has all its data
                        go(procs_by_label[s_label])
                continue
            kind = ev["ev"]
            if kind == "error":
                raise BenchError(f"{label}: {ev.get('message')}")
            if kind == "ready" and label in servers:
                ready.add(label)
                if ready == set(servers):
                    for c_label in clients:
                        go(procs_by_label[c_label])
            elif kind == "sync" and label in clients:
                synced.add(label)
                if synced == set(clients):
                    for c_label in clients:
                        go(procs_by_label[c_label])
            elif kind == "result":
                results.setdefault(label, {}).update({k: v for k, v in ev.items() if k != "ev"})
        for p in procs_by_label.values():
            p.wait(max(0.1, deadline - time.monotonic()))
    except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
        trial.error = str(exc) or type(exc).__name__
    finally:
        if trial.error:
            for p in procs_by_label.values():
                if p.poll() is None:
                    with contextlib.suppress(OSError):
                        p.send_signal(signal.SIGUSR1)
            time.sleep(0.5)  # let them print what their engines were doing
        for p in procs_by_label.values():
            kill(p)
        if trial.error:
            for label, f in errs.items():
                f.seek(0)
                for ln in f.read().splitlines():
                    if ln.startswith(("[SIGUSR1]", "BenchError", "Traceback")):
                        trial.error += f"\n    [{label}] {ln.strip()[:600]}"
        files.close()
    if not trial.error:
        trial.server = _join_servers([results[s] for s in servers])
        trial.client = _join_clients([results[c] for c in clients])
    trial.wall = time.monotonic() - started
    return trial


def _join_servers(rs: list[dict[str, Any]]) -> dict[str, Any]:
    t0 = min(r["t0"] for r in rs)
    t_last = max(r["t_last"] for r in rs)
    return {
        "seconds": t_last - t0,
        "measured": sum(r["received"] - r["warm"] for r in rs),
        "cpu_seconds": sum(r["cpu_seconds"] for r in rs),
        "t_last": t_last,
        "rss_peak": max(r["rss_peak"] for r in rs),
        "clean_close": all(r.get("clean_close", True) for r in rs),
        "unexpected": sum(r.get("unexpected", 0) for r in rs),
        "pool_empty": sum(r.get("pool_empty", 0) for r in rs),
        "processes": [{k: r[k] for k in ("received", "warm", "accepted", "cpu_seconds") if k in r} for r in rs],
    }


def _join_clients(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "t_first": min(r["t_first"] for r in rs),
        "cpu_seconds": sum(r["cpu_seconds"] for r in rs),
        "rss_peak": max(r["rss_peak"] for r in rs),
        "clean_close": all(r.get("clean_close", True) for r in rs),
        "unexpected": sum(r.get("unexpected", 0) for r in rs),
        "pool_empty": sum(r.get("pool_empty", 0) for r in rs),
    }
