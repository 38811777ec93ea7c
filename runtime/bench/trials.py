"""The parent side: plan the trials, run each as a server and a client process."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ._process import PREFIX, BenchError
from .workloads import (
    FACE_BASE,
    FACE_IMPLS,
    IMPL_SCALE,
    MULTI_PROC_IMPLS,
    MULTI_PROC_TRANSPORTS,
    SCALED_KINDS,
    TLS_FLOOR_KINDS,
    TLS_IMPLS,
    WORKLOADS,
    Workload,
)


@dataclass
class Trial:
    workload: Workload
    impl: str
    transport: str
    run: int
    spec: dict[str, Any]
    server: dict[str, Any] = field(default_factory=dict)
    client: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    failures: list[str] = field(default_factory=list)
    wall: float = 0.0


# A child's output lines, as (role, parsed JSON event or None at end of output).
Events = queue.Queue[tuple[str, Any]]


def spawn(
    role: str, spec: dict[str, Any], events: Events, errfile: Any, label: str | None = None
) -> subprocess.Popen[str]:
    """Start a server or client process; its events go to `events` as (label or role, event)."""
    tag = label or role
    cmd = [sys.executable, "-m", "tofu.bench", "--role", role, "--spec", json.dumps(spec)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errfile,
        env=env,
        text=True,
        bufsize=1,
        start_new_session=True,
    )

    def reader() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            if line.startswith(PREFIX):
                try:
                    events.put((tag, json.loads(line[len(PREFIX) :])))
                except ValueError:
                    pass
        events.put((tag, None))  # end of output

    threading.Thread(target=reader, daemon=True).start()
    return p


def kill(p: subprocess.Popen[str]) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            p.kill()
    with contextlib.suppress(Exception):
        p.wait(5)


def go(p: subprocess.Popen[str]) -> None:
    """Let a child waiting in ParentLink.wait_go() go on."""
    assert p.stdin is not None
    p.stdin.write("go\n")
    p.stdin.flush()


def run_trial(trial: Trial) -> Trial:
    """Run one server/client pair to completion (or to its deadline)."""
    spec = trial.spec
    deadline = time.monotonic() + spec["timeout"]
    events: Events = queue.Queue()
    procs: dict[str, subprocess.Popen[str]] = {}
    started = time.monotonic()
    files = contextlib.ExitStack()
    errs = {r: files.enter_context(tempfile.TemporaryFile("w+")) for r in ("server", "client")}  # noqa: SIM115
    results: dict[str, dict[str, Any]] = {}
    ended: set[str] = set()
    try:
        # Both processes start at once (an interpreter takes a good part of a
        # second to start on a loaded machine); the client waits for a `go`
        # from the parent, sent when the server says it is ready.
        procs["server"] = spawn("server", spec, events, errs["server"])
        procs["client"] = spawn("client", spec, events, errs["client"])
        ready = False
        while len(ended) < 2:
            try:
                role, ev = events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError("trial timed out") from None
            if not ready and role == "server":
                if ev is None or ev["ev"] == "error":
                    raise BenchError(f"server failed before it was ready: {ev and ev.get('message')}")
                if ev["ev"] == "ready":
                    ready = True
                    go(procs["client"])
                    continue
            if ev is None:
                ended.add(role)
                if role not in results:
                    raise BenchError(f"{role} exited without a result")
                continue
            kind = ev["ev"]
            if kind == "error":
                raise BenchError(f"{role}: {ev.get('message')}")
            if kind == "result":
                results.setdefault(role, {}).update({k: v for k, v in ev.items() if k != "ev"})
            elif kind == "sync":
                go(procs["client" if role == "server" else "server"])
        for p in procs.values():
            p.wait(max(0.1, deadline - time.monotonic()))
    except (BenchError, queue.Empty, subprocess.TimeoutExpired, OSError) as exc:
        trial.error = str(exc) or type(exc).__name__
    finally:
        if trial.error:
            for p in procs.values():
                if p.poll() is None:
                    with contextlib.suppress(OSError):
                        p.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
        for p in procs.values():
            kill(p)
        for role, f in errs.items():
            if trial.error:
                f.seek(0)
                lines = f.read().splitlines()
                # What the child said about itself: its engine snapshot, and the
                # last line of a traceback unless the event already carried it.
                keep = [ln for ln in lines if ln.startswith("[SIGUSR1]")]
                last = next((ln for ln in reversed(lines) if ln.strip() and not ln.startswith("[SIGUSR1]")), "")
                if last and not last.startswith(" ") and last.split(":")[-1].strip()[:40] not in trial.error:
                    keep.append(last)
                for ln in keep:
                    trial.error += f"\n    [{role}] {ln.strip()[:600]}"
        files.close()
        a = spec["address"]
        if a[0] == "uds":
            with contextlib.suppress(OSError):
                os.unlink(a[1])
    trial.server = results.get("server", {})
    trial.client = results.get("client", {})
    trial.wall = time.monotonic() - started
    return trial


def fresh_address(transport: str) -> list[Any]:
    """A trial run's address spec for `transport`: a free TCP port on loopback, or a new socket path."""
    import tofu

    if transport in ("tcp", "tls"):
        return [transport, "127.0.0.1", tofu.find_free_tcp_port()]
    return ["uds", tofu.temp_uds_path("tofu-bench")]


def plan(args: argparse.Namespace) -> list[Trial]:
    trials = []
    for wname in args.workload_list:
        w = WORKLOADS[wname]
        count = args.messages or (w.quick_count if args.quick else w.count)
        warmup = w.quick_warmup if args.quick else w.warmup
        if args.messages:
            warmup = max(1, min(warmup, args.messages // 10))
        for transport in args.transport_list:
            if w.procs > 1 and transport not in MULTI_PROC_TRANSPORTS:
                continue
            for run_no in range(args.repeat):
                for impl in args.impl_list:
                    if (w.procs > 1 and impl not in MULTI_PROC_IMPLS) or (w.face and impl not in FACE_IMPLS):
                        continue
                    if transport == "tls" and (
                        impl not in TLS_IMPLS or (impl == "floor" and w.kind not in TLS_FLOOR_KINDS)
                    ):
                        continue
                    scale = IMPL_SCALE[impl] if w.kind in SCALED_KINDS and not args.messages else 1
                    spec = {
                        "impl": impl,
                        "kind": w.kind,
                        "workload": w.name,
                        "size": w.size,
                        "count": count * scale,
                        "warmup": warmup * scale,
                        "clients": args.clients,
                        "idle": args.idle,
                        "window": args.window,
                        "timeout": args.timeout,
                        "step_timeout": min(args.stall_timeout, args.timeout / 4),
                        "tofu_options": args.tofu_options_dict,
                        "close_timeout": 10.0,
                        "procs": w.procs,
                        "face": w.face,
                    }
                    if transport == "tls":
                        spec["tls"] = getattr(args, "tls_files", None)
                    trials.append(Trial(w, impl, transport, run_no, spec))
    return _face_beside_base(trials)


def _face_beside_base(trials: list[Trial]) -> list[Trial]:
    """The trials with each service-layer run (Workload.face) moved right after
    the tofu run of FACE_BASE with the same transport and run number (when that
    one is planned)."""
    faces = [t for t in trials if t.workload.face]
    out: list[Trial] = []
    for t in trials:
        if t.workload.face:
            continue
        out.append(t)
        if t.workload.name == FACE_BASE and t.impl == "tofu":
            out += [f for f in faces if f.transport == t.transport and f.run == t.run]
    return out + [f for f in faces if f not in out]
