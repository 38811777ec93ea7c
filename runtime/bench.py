"""tofu bench: tofu against pyzmq and against a no-engine floor, side by side.

    tofu bench                      # every workload, TCP and UDS, 3 runs each
    tofu bench --quick              # a short run (a few seconds per workload)
    python -m tofu.bench --workloads oneway-64,rtt --transports tcp --json out.json

Every trial runs its server and its client in two separate processes
(`python -m tofu.bench --role server|client --spec JSON`), on loopback only:
TCP on 127.0.0.1 and Unix domain sockets. The parent process starts them,
relays their phase signals, collects their results (one JSON line each on
stdout) and kills whatever has not exited by the trial's deadline; each child
also has its own watchdog and dies with its parent (PR_SET_PDEATHSIG).

The three implementations of every workload:

  tofu   the engine: Signals / Requests posted on a ChannelGroup, received
         with wait_receive, every received message put back to the pool.
  pyzmq  PUSH/PULL, REQ/REP, DEALER/ROUTER (optional: skipped when absent).
  floor  plain blocking Python sockets carrying the same 16-byte-header frames,
         built with the generated codec; the reader is a loop over recv_into
         and struct unpack that hands on each body. No engine, no threads: the
         best a Python program can do with the same wire format.

Figures are the median over --repeat runs; throughput is measured at the
receiver from the first message after the warm-up to the last one.

This module imports only the standard library at import time; pyzmq, rich and
psutil are used when installed (`pip install tofu[bench]`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import queue
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["IMPLS", "TRANSPORTS", "WORKLOADS", "add_arguments", "main", "run"]

IMPLS = ("tofu", "pyzmq", "floor")
TRANSPORTS = ("tcp", "uds")

PREFIX = "@@"  # a child's event lines on stdout start with this
FLOOR_BATCH = 64 * 1024  # the floor sender writes frames in batches of about this size
RECV_BUFFER = 512 * 1024  # > one max frame (131086 bytes), as the engine's


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # oneway | rtt | pipeline | fanin | idle
    size: int  # body bytes
    count: int  # measured messages (full run)
    quick_count: int
    warmup: int
    quick_warmup: int
    title: str


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("oneway-64", "oneway", 64, 200_000, 20_000, 20_000, 2_000, "one-way 64 B"),
        Workload("oneway-1k", "oneway", 1024, 100_000, 10_000, 10_000, 1_000, "one-way 1 KiB"),
        Workload("oneway-64k", "oneway", 65535, 12_000, 1_500, 1_000, 150, "one-way 65535 B"),
        Workload("rtt", "rtt", 64, 10_000, 1_000, 1_000, 200, "round trip 64 B, 1 outstanding"),
        Workload("pipeline", "pipeline", 64, 100_000, 10_000, 10_000, 1_000, "request/response 64 B, 64 outstanding"),
        Workload("fanin", "fanin", 64, 200_000, 20_000, 20_000, 2_000, "fan-in 64 B"),
        Workload("idle", "idle", 64, 50_000, 5_000, 5_000, 1_000, "idle connections + one active"),
    )
}

# Throughput workloads run this many times more messages for the faster
# implementations, so that every measured window lasts about as long (about a
# second in a full run). Round trips (rtt) use the same count for all.
IMPL_SCALE = {"tofu": 1, "pyzmq": 4, "floor": 10}
SCALED_KINDS = ("oneway", "pipeline", "fanin", "idle")

# ====================================================================== helpers


def _rss() -> int:
    """Resident set size of this process now, in bytes."""
    try:
        import psutil  # type: ignore[import-untyped]

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    """Peak resident set size of this process, in bytes.

    Linux: VmHWM, the high-water mark of this address space. Not ru_maxrss:
    Linux keeps that across exec, so a child would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _settled_rss() -> int:
    gc.collect()
    time.sleep(0.2)
    gc.collect()
    return _rss()


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so no child outlives a killed bench."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001, S110 - best effort: the watchdog still bounds the child
        pass
    if os.getppid() == 1:  # the parent is already gone
        os._exit(4)


def _percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def have_pyzmq() -> str | None:
    """pyzmq's version, or None when it is not installed."""
    try:
        import zmq
    except ImportError:
        return None
    return f"pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()})"


# ====================================================================== child side


class ParentLink:
    """The child's line to the parent: events out on stdout, `go` lines in on stdin."""

    def __init__(self, role: str) -> None:
        self.role = role

    def emit(self, ev: str, **data: Any) -> None:
        data["ev"] = ev
        sys.stdout.write(PREFIX + json.dumps(data) + "\n")
        sys.stdout.flush()

    def sync(self, phase: str) -> None:
        """Tell the peer (through the parent) that `phase` is done."""
        self.emit("sync", phase=phase)

    def wait_go(self) -> None:
        """Block until the peer has signalled its phase."""
        line = sys.stdin.readline()
        if not line:
            raise RuntimeError("the parent closed stdin")


class BenchError(RuntimeError):
    pass


def _socket_pending(sock: Any) -> int:
    """Bytes waiting in a socket's receive buffer (-1 if unknown)."""
    try:
        import fcntl
        import termios

        buf = bytearray(4)
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
        return int.from_bytes(buf, sys.byteorder)
    except Exception:  # noqa: BLE001 - a diagnostic must never fail
        return -1


def _deadline_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise BenchError("timed out")
    return left


# ---------------------------------------------------------------------- tofu


class _TofuPeer:
    """One tofu engine in a child process, with one channel group."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import tofu

        self.tofu = tofu
        self.spec = spec
        self.rtr = tofu.Reactor(tofu.Options(**spec.get("tofu_options", {})))
        self.ampe = self.rtr.ampe()
        self.grp = self.ampe.create()
        self.accepted = 0
        self.closed = 0
        self.unexpected = 0
        self.pool_empty = 0
        self.step_timeout = float(spec["step_timeout"])
        # The parent sends SIGUSR1 before it kills a failed trial: say what the engine was doing.
        signal.signal(signal.SIGUSR1, lambda *_: print(f"[SIGUSR1] {self.diag()}", file=sys.stderr, flush=True))

    def new(self) -> Any:
        return self.ampe.get(self.tofu.AllocationStrategy.always)

    def server_address(self) -> Any:
        a = self.spec["address"]
        if a[0] == "tcp":
            return self.tofu.TCPServerAddress(a[1], a[2])
        return self.tofu.UDSServerAddress(a[1])

    def client_address(self) -> Any:
        a = self.spec["address"]
        if a[0] == "tcp":
            return self.tofu.TCPClientAddress(a[1], a[2])
        return self.tofu.UDSClientAddress(a[1])

    def receive(self) -> Any:
        m = self.grp.wait_receive(self.step_timeout)
        if m is None:
            raise BenchError(f"tofu: nothing received for {self.step_timeout:.0f} s [{self.diag()}]")
        return m

    def diag(self) -> str:
        """A read-only snapshot of the engine's state, to tell a stall's cause."""
        from .channels import Connection

        r, g = self.rtr, self.grp
        try:
            conns = [c for c in list(r._channels.values()) if isinstance(c, Connection)]
            sendq = sum(len(c.sendq) for c in conns)
            outbuf = sum(len(c.outbuf) for c in conns)
            events = sorted({c.events for c in conns})
            return (
                f"engine: woken={r._woken} inbox={len(r._inbox)} wake_pending={_socket_pending(r._wake_r)} "
                f"dirty={len(r._dirty)} channels={len(r._channels)} conns={len(conns)} sendq={sendq} outbuf={outbuf} events={events} "
                f"group: paused={g._paused} resume_requested={g._resume_requested} queued={g.pending()} "
                f"io_thread_alive={r._thread.is_alive()}"
            )
        except Exception as exc:  # noqa: BLE001 - the engine's internals changed
            return f"engine state unavailable: {exc!r}"

    def listen(self) -> None:
        m = self.new()
        self.server_address().format(m)
        self.grp.post(m)
        r = self.receive()
        if r.bhdr.proto.op_code != self.tofu.OpCode.WelcomeResponse or r.bhdr.status:
            raise BenchError(f"tofu: listen failed: {r!r}")
        self.ampe.put(r)

    def connect(self, n: int) -> list[int]:
        """Open n channels to the server and wait for every HelloResponse."""
        OpCode = self.tofu.OpCode
        chans = []
        for _ in range(n):
            m = self.new()
            self.client_address().format(m)
            chans.append(self.grp.post(m).channel_number)
        pending = set(chans)
        while pending:
            r = self.receive()
            bh = r.bhdr
            if bh.proto.op_code == OpCode.HelloResponse and not bh.status:
                pending.discard(bh.channel_number)
                self.ampe.put(r)
            elif self.control(r):
                continue
            else:
                raise BenchError(f"tofu: connect failed: {r!r}")
        return chans

    def control(self, m: Any) -> bool:
        """Handle a non-data message the way a server application would.
        Returns False for a message it does not know (left with the caller)."""
        tofu = self.tofu
        bh = m.bhdr
        op = bh.proto.op_code
        if bh.proto.origin == tofu.OriginFlag.engine:
            if bh.status == tofu.AmpeStatus.channel_closed and op == tofu.OpCode.Signal:
                self.closed += 1
            elif bh.status == tofu.AmpeStatus.pool_empty:
                self.pool_empty += 1
            else:
                self.unexpected += 1
            self.ampe.put(m)
            return True
        if op == tofu.OpCode.HelloRequest:
            bh.proto.op_code = tofu.OpCode.HelloResponse
            self.grp.post(m)
            self.accepted += 1
            return True
        if op == tofu.OpCode.ByeRequest:
            bh.proto.op_code = tofu.OpCode.ByeResponse
            self.grp.post(m)
            return True
        if op == tofu.OpCode.ByeResponse:
            self.ampe.put(m)
            return True
        return False

    def serve_until_closed(self, timeout: float) -> bool:
        """Answer control messages until every accepted channel has closed."""
        return self._control_until(lambda: self.closed >= self.accepted, timeout)

    def _control_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Answer control messages until done(); False if the time ran out first."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            m = self.grp.wait_receive(min(left, 1.0))
            if m is None:
                continue
            if not self.control(m):
                self.unexpected += 1
                self.ampe.put(m)
        return True

    def bye(self, chans: list[int], timeout: float) -> bool:
        """Close channels gracefully (ByeRequest queued behind the data) and wait."""
        OpCode = self.tofu.OpCode
        for ch in chans:
            m = self.new()
            m.bhdr.proto.op_code = OpCode.ByeRequest
            m.bhdr.channel_number = ch
            self.grp.post(m)
        target = self.closed + len(chans)
        return self._control_until(lambda: self.closed >= target, timeout)

    def stats(self) -> dict[str, Any]:
        return {"unexpected": self.unexpected, "pool_empty": self.pool_empty}

    def close(self) -> None:
        self.rtr.destroy()


def _tofu_receive_count(peer: _TofuPeer, warmup: int, n: int) -> tuple[float, float]:
    """Receive warmup + n data Signals (answering control messages on the way);
    return the times of message `warmup` and of the last one."""
    tofu = peer.tofu
    Signal = tofu.OpCode.Signal
    get = peer.grp.wait_receive
    put = peer.ampe.put
    timeout = peer.step_timeout
    perf = time.perf_counter
    target = warmup + n
    count = 0
    t0 = perf()
    while True:
        m = get(timeout)
        if m is None:
            raise BenchError(
                f"tofu: received {count} of {target} messages, then nothing for {timeout:.0f} s [{peer.diag()}]"
            )
        bh = m.bhdr
        if bh.proto.op_code is Signal and not bh.status:
            count += 1
            put(m)
            if count == warmup:
                t0 = perf()
            elif count == target:
                return t0, perf()
        elif not peer.control(m):
            peer.unexpected += 1
            put(m)


def _tofu_send(peer: _TofuPeer, chans: list[int], total: int, payload: bytes, first: int = 0) -> None:
    """Post `total` Signals round-robin over `chans`, starting with chans[first % len]."""
    if first % len(chans):
        chans = chans[first % len(chans) :] + chans[: first % len(chans)]
    Signal = peer.tofu.OpCode.Signal
    always = peer.tofu.AllocationStrategy.always
    get = peer.ampe.get
    post = peer.grp.post
    nch = len(chans)
    if nch == 1:
        ch = chans[0]
        for _ in range(total):
            m = get(always)
            bh = m.bhdr
            bh.proto.op_code = Signal
            bh.channel_number = ch
            m.body.append(payload)
            post(m)
        return
    for i in range(total):
        m = get(always)
        bh = m.bhdr
        bh.proto.op_code = Signal
        bh.channel_number = chans[i % nch]
        m.body.append(payload)
        post(m)


def tofu_server(spec: dict[str, Any], chan: ParentLink) -> dict[str, Any]:
    kind = spec["kind"]
    peer = _TofuPeer(spec)
    try:
        peer.listen()
        chan.emit("ready")
        result: dict[str, Any] = {}
        if kind in ("oneway", "fanin"):
            t0, t1 = _tofu_receive_count(peer, spec["warmup"], spec["count"])
            result["t_last"] = time.monotonic()
            result["seconds"] = t1 - t0
        elif kind in ("rtt", "pipeline"):
            _tofu_echo(peer)
        elif kind == "idle":
            t0, t1 = _tofu_receive_count(peer, spec["warmup"], spec["count"])
            result["seconds_alone"] = t1 - t0
            result["rss_before"] = _settled_rss()
            chan.sync("measured-alone")
            idle = spec["idle"]
            while peer.accepted < 1 + idle:
                m = peer.receive()
                if not peer.control(m):
                    raise BenchError(f"tofu: unexpected {m!r} while idle channels connect")
            result["rss_idle"] = _settled_rss()
            chan.sync("idle-connected")
            t0, t1 = _tofu_receive_count(peer, spec["warmup"], spec["count"])
            result["seconds_with_idle"] = t1 - t0
        result["rss_peak"] = _peak_rss()
        chan.emit("result", **result)
        result["clean_close"] = peer.serve_until_closed(spec["close_timeout"])
        result.update(peer.stats())
        return result
    finally:
        peer.close()


def _tofu_echo(peer: _TofuPeer) -> None:
    """Answer each Request with a Response until every channel has closed."""
    tofu = peer.tofu
    Request = tofu.OpCode.Request
    Response = tofu.OpCode.Response
    get = peer.grp.wait_receive
    post = peer.grp.post
    timeout = peer.step_timeout
    while peer.accepted == 0 or peer.closed < peer.accepted:
        m = get(timeout)
        if m is None:
            raise BenchError(f"tofu echo: nothing received for {timeout:.0f} s [{peer.diag()}]")
        p = m.bhdr.proto
        if p.op_code is Request and not m.bhdr.status:
            p.op_code = Response
            post(m)
        elif not peer.control(m):
            peer.unexpected += 1
            peer.ampe.put(m)


def tofu_client(spec: dict[str, Any], chan: ParentLink) -> dict[str, Any]:
    kind = spec["kind"]
    payload = b"x" * spec["size"]
    warmup, n = spec["warmup"], spec["count"]
    peer = _TofuPeer(spec)
    result: dict[str, Any] = {}
    try:
        if kind in ("oneway", "fanin"):
            chans = peer.connect(1 if kind == "oneway" else spec["clients"])
            _tofu_send(peer, chans, warmup, payload)
            result["t_first"] = time.monotonic()
            _tofu_send(peer, chans, n, payload, first=warmup)
        elif kind == "rtt":
            chans = peer.connect(1)
            result["latencies_us"] = _tofu_rtt(peer, chans[0], warmup, n, payload)
        elif kind == "pipeline":
            chans = peer.connect(1)
            t0, t1 = _tofu_pipeline(peer, chans[0], warmup, n, spec["window"], payload)
            result["seconds"] = t1 - t0
        elif kind == "idle":
            chans = peer.connect(1)
            _tofu_send(peer, chans, warmup + n, payload)
            chan.wait_go()
            result["rss_before"] = _settled_rss()
            chans += peer.connect(spec["idle"])
            result["rss_idle"] = _settled_rss()
            chan.sync("idle-connected")
            chan.wait_go()
            _tofu_send(peer, chans[:1], warmup + n, payload)
        else:
            raise BenchError(f"unknown workload kind {kind}")
        result["rss_peak"] = _peak_rss()
        result["clean_close"] = peer.bye(chans, spec["close_timeout"])
        result.update(peer.stats())
        return result
    finally:
        peer.close()


def _tofu_rtt(peer: _TofuPeer, ch: int, warmup: int, n: int, payload: bytes) -> list[float]:
    tofu = peer.tofu
    Request, Response = tofu.OpCode.Request, tofu.OpCode.Response
    always = tofu.AllocationStrategy.always
    get, put = peer.ampe.get, peer.ampe.put
    post, receive = peer.grp.post, peer.grp.wait_receive
    timeout = peer.step_timeout
    clock = time.perf_counter_ns
    lat: list[float] = []
    for i in range(warmup + n):
        m = get(always)
        bh = m.bhdr
        bh.proto.op_code = Request
        bh.channel_number = ch
        m.body.append(payload)
        t = clock()
        post(m)
        while True:
            r = receive(timeout)
            if r is None:
                raise BenchError(f"tofu rtt: no response to request {i} within {timeout:.0f} s [{peer.diag()}]")
            if r.bhdr.proto.op_code is Response:
                break
            if not peer.control(r):
                raise BenchError(f"tofu rtt: unexpected {r!r}")
        dt = clock() - t
        put(r)
        if i >= warmup:
            lat.append(dt / 1000.0)
    return lat


def _tofu_pipeline(peer: _TofuPeer, ch: int, warmup: int, n: int, window: int, payload: bytes) -> tuple[float, float]:
    tofu = peer.tofu
    Request, Response = tofu.OpCode.Request, tofu.OpCode.Response
    always = tofu.AllocationStrategy.always
    get, put = peer.ampe.get, peer.ampe.put
    post, receive = peer.grp.post, peer.grp.wait_receive
    timeout = peer.step_timeout
    perf = time.perf_counter
    total = warmup + n

    def send_one() -> None:
        m = get(always)
        bh = m.bhdr
        bh.proto.op_code = Request
        bh.channel_number = ch
        m.body.append(payload)
        post(m)

    sent = 0
    for _ in range(min(window, total)):
        send_one()
        sent += 1
    received = 0
    t0 = perf()
    while received < total:
        r = receive(timeout)
        if r is None:
            raise BenchError(
                f"tofu pipeline: {received} of {total} responses, then nothing for {timeout:.0f} s [{peer.diag()}]"
            )
        if r.bhdr.proto.op_code is not Response:
            if not peer.control(r):
                raise BenchError(f"tofu pipeline: unexpected {r!r}")
            continue
        put(r)
        received += 1
        if received == warmup:
            t0 = perf()
        if sent < total:
            send_one()
            sent += 1
    return t0, perf()


# ---------------------------------------------------------------------- pyzmq


def _zmq_endpoint(spec: dict[str, Any]) -> str:
    a = spec["address"]
    return f"tcp://{a[1]}:{a[2]}" if a[0] == "tcp" else f"ipc://{a[1]}"


def _zmq_recv_count(sock: Any, warmup: int, n: int, timeout_ms: int) -> tuple[float, float]:
    import zmq

    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    recv = sock.recv
    perf = time.perf_counter
    t0 = perf()
    count = 0
    target = warmup + n
    try:
        while True:
            recv()
            count += 1
            if count == warmup:
                t0 = perf()
            elif count == target:
                return t0, perf()
    except zmq.Again:
        raise BenchError(f"pyzmq: received {count} of {target}, then nothing for {timeout_ms / 1000:.0f} s") from None


def zmq_server(spec: dict[str, Any], chan: ParentLink) -> dict[str, Any]:
    import zmq

    kind = spec["kind"]
    timeout_ms = int(spec["step_timeout"] * 1000)
    ctx = zmq.Context()
    result: dict[str, Any] = {}
    try:
        if kind in ("oneway", "fanin", "idle"):
            s = ctx.socket(zmq.PULL)
        elif kind == "rtt":
            s = ctx.socket(zmq.REP)
        else:
            s = ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.bind(_zmq_endpoint(spec))
        chan.emit("ready")
        if kind in ("oneway", "fanin"):
            t0, t1 = _zmq_recv_count(s, spec["warmup"], spec["count"], timeout_ms)
            result["t_last"] = time.monotonic()
            result["seconds"] = t1 - t0
        elif kind == "idle":
            t0, t1 = _zmq_recv_count(s, spec["warmup"], spec["count"], timeout_ms)
            result["seconds_alone"] = t1 - t0
            result["rss_before"] = _settled_rss()
            chan.sync("measured-alone")
            _zmq_recv_count(s, 0, spec["idle"], timeout_ms)  # one message from each idle socket
            result["rss_idle"] = _settled_rss()
            chan.sync("idle-connected")
            t0, t1 = _zmq_recv_count(s, spec["warmup"], spec["count"], timeout_ms)
            result["seconds_with_idle"] = t1 - t0
        elif kind == "rtt":
            s.setsockopt(zmq.RCVTIMEO, timeout_ms)
            while True:
                data = s.recv()
                s.send(data)
                if not data:
                    break
        else:  # pipeline: ROUTER echo
            s.setsockopt(zmq.RCVTIMEO, timeout_ms)
            recv, send = s.recv_multipart, s.send_multipart
            while True:
                parts = recv()
                send(parts)
                if not parts[-1]:
                    break
        result["rss_peak"] = _peak_rss()
        s.close()
        return result
    finally:
        ctx.destroy(linger=0)


def zmq_client(spec: dict[str, Any], chan: ParentLink) -> dict[str, Any]:
    import zmq

    kind = spec["kind"]
    payload = b"x" * spec["size"]
    warmup, n = spec["warmup"], spec["count"]
    timeout_ms = int(spec["step_timeout"] * 1000)
    endpoint = _zmq_endpoint(spec)
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 1_000_000)
    result: dict[str, Any] = {}
    socks: list[Any] = []

    def sock(kind_: int) -> Any:
        s = ctx.socket(kind_)
        s.setsockopt(zmq.LINGER, int(spec["close_timeout"] * 1000))
        s.setsockopt(zmq.SNDTIMEO, timeout_ms)
        s.setsockopt(zmq.RCVTIMEO, timeout_ms)
        s.connect(endpoint)
        socks.append(s)
        return s

    try:
        if kind == "oneway":
            send = sock(zmq.PUSH).send
            for _ in range(warmup):
                send(payload)
            result["t_first"] = time.monotonic()
            for _ in range(n):
                send(payload)
        elif kind == "fanin":
            sends = [sock(zmq.PUSH).send for _ in range(spec["clients"])]
            nch = len(sends)
            for i in range(warmup):
                sends[i % nch](payload)
            result["t_first"] = time.monotonic()
            for i in range(warmup, warmup + n):
                sends[i % nch](payload)
        elif kind == "idle":
            send = sock(zmq.PUSH).send
            for _ in range(warmup + n):
                send(payload)
            chan.wait_go()
            result["rss_before"] = _settled_rss()
            for _ in range(spec["idle"]):
                sock(zmq.PUSH).send(payload)
            result["rss_idle"] = _settled_rss()
            chan.sync("idle-connected")
            chan.wait_go()
            for _ in range(warmup + n):
                send(payload)
        elif kind == "rtt":
            s = sock(zmq.REQ)
            send, recv = s.send, s.recv
            clock = time.perf_counter_ns
            lat = []
            for i in range(warmup + n):
                t = clock()
                send(payload)
                recv()
                dt = clock() - t
                if i >= warmup:
                    lat.append(dt / 1000.0)
            send(b"")
            recv()
            result["latencies_us"] = lat
        elif kind == "pipeline":
            s = sock(zmq.DEALER)
            send, recv = s.send, s.recv
            total = warmup + n
            perf = time.perf_counter
            sent = 0
            for _ in range(min(spec["window"], total)):
                send(payload)
                sent += 1
            received = 0
            t0 = perf()
            while received < total:
                recv()
                received += 1
                if received == warmup:
                    t0 = perf()
                if sent < total:
                    send(payload)
                    sent += 1
            result["seconds"] = perf() - t0
            send(b"")
            recv()
        result["rss_peak"] = _peak_rss()
        for s in socks:
            s.close()  # lingers until what is queued has gone out
        return result
    except zmq.Again:
        raise BenchError(f"pyzmq {kind} client: timed out") from None
    finally:
        ctx.term() if not socks or all(s.closed for s in socks) else ctx.destroy(linger=0)


# ---------------------------------------------------------------------- floor


def _floor_codec() -> tuple[Callable[..., bytes], Callable[..., tuple[int, ...]], int, int, int]:
    from tofu.generated.codec import HEADER_SIZE, pack_header, pack_proto, unpack_header

    signal_proto = pack_proto(2, 0, 0)  # Signal, application, last
    request_proto = pack_proto(0, 0, 0)
    response_proto = pack_proto(1, 0, 0)
    assert HEADER_SIZE == 16
    return pack_header, unpack_header, signal_proto, request_proto, response_proto


def _floor_listen(spec: dict[str, Any]) -> Any:
    import socket

    a = spec["address"]
    if a[0] == "tcp":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a[1], a[2]))
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(a[1])
    s.listen(4096)
    return s


def _floor_connect(spec: dict[str, Any]) -> Any:
    import socket

    a = spec["address"]
    if a[0] == "tcp":
        s = socket.create_connection((a[1], a[2]), timeout=spec["step_timeout"])
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(spec["step_timeout"])
        s.connect(a[1])
    return s


def _floor_tune(s: Any, spec: dict[str, Any]) -> None:
    import socket

    s.settimeout(spec["step_timeout"])
    if s.family == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _floor_read_count(sock: Any, warmup: int, n: int) -> tuple[float, float]:
    """The floor receiver: recv_into a buffer, unpack each header, hand on each body."""
    _, unpack, _, _, _ = _floor_codec()
    buf = bytearray(RECV_BUFFER)
    view = memoryview(buf)
    size = len(buf)
    recv_into = sock.recv_into
    perf = time.perf_counter
    start = end = count = 0
    target = warmup + n
    t0 = perf()
    while True:
        if size - end < 65536 + 32:
            rem = end - start
            buf[:rem] = buf[start:end]
            start, end = 0, rem
        got = recv_into(view[end:])
        if not got:
            raise BenchError(f"floor: peer closed after {count} of {target} frames")
        end += got
        while end - start >= 16:
            _, _, _, _, thl, bl = unpack(buf, start)
            fe = start + 16 + thl + bl
            if fe > end:
                break
            body = buf[fe - bl : fe]  # the body handed to the application
            del body
            start = fe
            count += 1
            if count == warmup:
                t0 = perf()
            elif count == target:
                return t0, perf()
        if start == end:
            start = end = 0


def _floor_send(socks: list[Any], total: int, payload: bytes, first: int = 0) -> None:
    """The floor sender: frames built with the generated codec, round-robin over
    `socks` (starting with socks[first % len]), written in batches of about
    FLOOR_BATCH bytes per socket."""
    pack, _, proto, _, _ = _floor_codec()
    if first % len(socks):
        socks = socks[first % len(socks) :] + socks[: first % len(socks)]
    bl = len(payload)
    nch = len(socks)
    batch = FLOOR_BATCH if nch == 1 else max(4096, FLOOR_BATCH // 8)
    if nch == 1:
        sendall = socks[0].sendall
        out = bytearray()
        for i in range(total):
            out += pack(1, proto, 0, i + 1, 0, bl)
            out += payload
            if len(out) >= batch:
                sendall(out)
                out.clear()
        if out:
            sendall(out)
        return
    outs = [bytearray() for _ in socks]
    for i in range(total):
        j = i % nch
        out = outs[j]
        out += pack(j + 1, proto, 0, i + 1, 0, bl)
        out += payload
        if len(out) >= batch:
            socks[j].sendall(out)
            out.clear()
    for s, out in zip(socks, outs):
        if out:
            s.sendall(out)


class _FloorConn:
    """A connection of the floor's selectors reader: a shared receive buffer and
    only the bytes of a partial frame kept per connection."""

    __slots__ = ("pending", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.pending = b""


class _FloorMultiReader:
    """The floor's selectors reader over many connections (fan-in, idle)."""

    def __init__(self, lsock: Any, spec: dict[str, Any]) -> None:
        import selectors

        self.spec = spec
        self.lsock = lsock
        lsock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(lsock, selectors.EVENT_READ, None)
        self.rbuf = bytearray(RECV_BUFFER)
        self.rview = memoryview(self.rbuf)
        self.conns: list[_FloorConn] = []
        self.frames = 0  # frames received in total
        self.opened = 0
        self.closed = 0
        self.unpack = _floor_codec()[1]

    def _accept(self) -> None:
        import selectors
        import socket

        while True:
            try:
                s, _ = self.lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            s.setblocking(False)
            if s.family == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = _FloorConn(s)
            self.conns.append(c)
            self.opened += 1
            self.sel.register(s, selectors.EVENT_READ, c)

    def _read(self, c: _FloorConn) -> int:
        """Read once from c; return the frames completed."""
        try:
            got = c.sock.recv_into(self.rbuf)
        except (BlockingIOError, InterruptedError):
            return 0
        if not got:
            self.sel.unregister(c.sock)
            c.sock.close()
            self.closed += 1
            return 0
        data = self.rview[:got] if not c.pending else c.pending + self.rview[:got]
        end = len(data)
        unpack = self.unpack
        pos = frames = 0
        while end - pos >= 16:
            _, _, _, _, thl, bl = unpack(data, pos)
            fe = pos + 16 + thl + bl
            if fe > end:
                break
            body = bytes(data[fe - bl : fe])  # the body handed to the application
            del body
            pos = fe
            frames += 1
        c.pending = bytes(data[pos:]) if pos < end else b""
        return frames

    def run_until(self, frames: int, on_frames: Callable[[int], None] | None = None, opened: int = 0) -> None:
        """Serve until `frames` frames in total have arrived and `opened`
        connections have been accepted."""
        timeout = self.spec["step_timeout"]
        last = time.monotonic()
        select = self.sel.select
        while self.frames < frames or self.opened < opened:
            events = select(1.0)
            if not events:
                if time.monotonic() - last > timeout:
                    raise BenchError(f"floor: {self.frames} of {frames} frames, then nothing for {timeout:.0f} s")
                continue
            last = time.monotonic()
            for key, _ in events:
                if key.data is None:
                    self._accept()
                    continue
                got = self._read(key.data)
                if got:
                    before = self.frames
                    self.frames += got
                    if on_frames is not None:
                        on_frames(before)

    def close(self) -> None:
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.sock.close()
        self.sel.close()


def floor_server(spec: dict[str, Any], chan: ParentLink) -> dict[str, Any]:
    kind = spec["kind"]
    warmup, n = spec["warmup"], spec["count"]
    lsock = _floor_listen(spec)
    result: dict[str, Any] = {}
    try:
        chan.emit("ready")
        if kind == "oneway":
            lsock.settimeout(spec["step_timeout"])
            s, _ = lsock.accept()
            _floor_tune(s, spec)
            t0, t1 = _floor_read_count(s, warmup, n)
            result["t_last"] = time.monotonic()
            result["seconds"] = t1 - t0
            _drain_until_eof(s)
        elif kind in ("rtt", "pipeline"):
            lsock.settimeout(spec["step_timeout"])
            s, _ = lsock.accept()
            _floor_tune(s, spec)
            _floor_echo(s)
        elif kind in ("fanin", "idle"):
            reader = _FloorMultiReader(lsock, spec)
            marks: dict[str, float] = {}
            perf = time.perf_counter

            def mark(base: int, w: int, total: int) -> Callable[[int], None]:
                def on_frames(before: int) -> None:
                    if before < base + w <= reader.frames:
                        marks["t0"] = perf()
                    if reader.frames >= base + total:
                        marks["t1"] = perf()

                return on_frames

            try:
                if kind == "fanin":
                    reader.run_until(warmup + n, mark(0, warmup, warmup + n), opened=spec["clients"])
                    result["t_last"] = time.monotonic()
                    result["seconds"] = marks["t1"] - marks["t0"]
                    result["frames_over"] = reader.frames - (warmup + n)
                else:
                    reader.run_until(warmup + n, mark(0, warmup, warmup + n), opened=1)
                    result["seconds_alone"] = marks["t1"] - marks["t0"]
                    result["rss_before"] = _settled_rss()
                    chan.sync("measured-alone")
                    base = reader.frames
                    reader.run_until(base + spec["idle"], opened=1 + spec["idle"])
                    result["rss_idle"] = _settled_rss()
                    chan.sync("idle-connected")
                    base = reader.frames
                    reader.run_until(base + warmup + n, mark(base, warmup, warmup + n))
                    result["seconds_with_idle"] = marks["t1"] - marks["t0"]
                result["rss_peak"] = _peak_rss()
                chan.emit("result", **result)
                # until the client has closed everything
                deadline = time.monotonic() + spec["close_timeout"]
                while reader.closed < reader.opened and time.monotonic() < deadline:
                    for key, _ in reader.sel.select(0.5):
                        if key.data is not None:
                            reader._read(key.data)
            finally:
                reader.close()
        result["rss_peak"] = _peak_rss()
        return result
    finally:
        lsock.close()
        if spec["address"][0] == "uds":
            with contextlib.suppress(OSError):
                os.unlink(spec["address"][1])


def _drain_until_eof(s: Any) -> None:
    buf = bytearray(RECV_BUFFER)
    with contextlib.suppress(OSError):
        while s.recv_into(buf):
            pass
    s.close()


def _floor_echo(s: Any) -> None:
    """Answer every request frame with a response frame carrying its id and body,
    all the answers to one recv in one sendall, until the peer closes."""
    pack, unpack, _, _, response = _floor_codec()
    buf = bytearray(RECV_BUFFER)
    view = memoryview(buf)
    size = len(buf)
    start = end = 0
    recv_into, sendall = s.recv_into, s.sendall
    try:
        while True:
            if size - end < 65536 + 32:
                rem = end - start
                buf[:rem] = buf[start:end]
                start, end = 0, rem
            got = recv_into(view[end:])
            if not got:
                return
            end += got
            out = bytearray()
            while end - start >= 16:
                ch, _, _, mid, thl, bl = unpack(buf, start)
                fe = start + 16 + thl + bl
                if fe > end:
                    break
                out += pack(ch, response, 0, mid, 0, bl)
                out += view[fe - bl : fe]
                start = fe
            if out:
                sendall(out)
            if start == end:
                start = end = 0
    except ConnectionResetError:
        return
    finally:
        s.close()


def floor_client(spec: dict[str, Any], chan: ParentLink) -> dict[str, Any]:
    kind = spec["kind"]
    payload = b"x" * spec["size"]
    warmup, n = spec["warmup"], spec["count"]
    result: dict[str, Any] = {}
    socks: list[Any] = []
    try:
        if kind in ("oneway", "fanin"):
            socks += [_floor_connect(spec) for _ in range(1 if kind == "oneway" else spec["clients"])]
            _floor_send(socks, warmup, payload)
            result["t_first"] = time.monotonic()
            _floor_send(socks, n, payload, first=warmup)
        elif kind == "idle":
            socks.append(_floor_connect(spec))
            _floor_send(socks, warmup + n, payload)
            chan.wait_go()
            result["rss_before"] = _settled_rss()
            pack, _, proto, _, _ = _floor_codec()
            hello = pack(1, proto, 0, 1, 0, len(payload)) + payload
            for _ in range(spec["idle"]):
                s = _floor_connect(spec)
                s.sendall(hello)
                socks.append(s)
            result["rss_idle"] = _settled_rss()
            chan.sync("idle-connected")
            chan.wait_go()
            _floor_send(socks[:1], warmup + n, payload)
        elif kind == "rtt":
            s = _floor_connect(spec)
            socks.append(s)
            result["latencies_us"] = _floor_rtt(s, warmup, n, payload)
        elif kind == "pipeline":
            s = _floor_connect(spec)
            socks.append(s)
            result["seconds"] = _floor_pipeline(s, warmup, n, spec["window"], payload)
        result["rss_peak"] = _peak_rss()
        return result
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()


def _floor_rtt(s: Any, warmup: int, n: int, payload: bytes) -> list[float]:
    pack, unpack, _, request, _ = _floor_codec()
    bl = len(payload)
    buf = bytearray(RECV_BUFFER)
    view = memoryview(buf)
    recv_into, sendall = s.recv_into, s.sendall
    clock = time.perf_counter_ns
    lat = []
    for i in range(warmup + n):
        frame = pack(1, request, 0, i + 1, 0, bl) + payload
        t = clock()
        sendall(frame)
        end = 0
        while True:
            got = recv_into(view[end:])
            if not got:
                raise BenchError("floor rtt: server closed")
            end += got
            if end >= 16:
                _, _, _, mid, thl, rbl = unpack(buf, 0)
                if end >= 16 + thl + rbl:
                    break
        body = buf[16 + thl : 16 + thl + rbl]
        dt = clock() - t
        if mid != i + 1 or len(body) != bl:
            raise BenchError(f"floor rtt: wrong response {mid}")
        if i >= warmup:
            lat.append(dt / 1000.0)
    return lat


def _floor_pipeline(s: Any, warmup: int, n: int, window: int, payload: bytes) -> float:
    pack, unpack, _, request, _ = _floor_codec()
    bl = len(payload)
    total = warmup + n
    buf = bytearray(RECV_BUFFER)
    view = memoryview(buf)
    size = len(buf)
    recv_into, sendall = s.recv_into, s.sendall
    perf = time.perf_counter
    out = bytearray()
    sent = 0
    for _ in range(min(window, total)):
        sent += 1
        out += pack(1, request, 0, sent, 0, bl)
        out += payload
    sendall(out)
    received = start = end = 0
    t0 = perf()
    while received < total:
        if size - end < 65536 + 32:
            rem = end - start
            buf[:rem] = buf[start:end]
            start, end = 0, rem
        got = recv_into(view[end:])
        if not got:
            raise BenchError("floor pipeline: server closed")
        end += got
        out = bytearray()
        while end - start >= 16:
            _, _, _, _, thl, rbl = unpack(buf, start)
            fe = start + 16 + thl + rbl
            if fe > end:
                break
            body = buf[fe - rbl : fe]
            del body
            start = fe
            received += 1
            if received == warmup:
                t0 = perf()
            if sent < total:
                sent += 1
                out += pack(1, request, 0, sent, 0, bl)
                out += payload
        if out:
            sendall(out)
        if start == end:
            start = end = 0
    return perf() - t0


ROLES: dict[tuple[str, str], Callable[[dict[str, Any], ParentLink], dict[str, Any]]] = {
    ("tofu", "server"): tofu_server,
    ("tofu", "client"): tofu_client,
    ("pyzmq", "server"): zmq_server,
    ("pyzmq", "client"): zmq_client,
    ("floor", "server"): floor_server,
    ("floor", "client"): floor_client,
}


def child_main(role: str, spec: dict[str, Any]) -> int:
    """Entry point of a server or client process."""
    _die_with_parent()
    # The watchdog: whatever happens, this process ends by its deadline.
    timer = threading.Timer(spec["timeout"], lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    raise_nofile_limit()
    chan = ParentLink(role)
    try:
        result = ROLES[(spec["impl"], role)](spec, chan)
    except Exception as exc:  # noqa: BLE001 - any failure is reported to the parent, then the child ends
        import traceback

        traceback.print_exc()
        chan.emit("error", message=f"{type(exc).__name__}: {exc}")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)
    chan.emit("result", **result)
    chan.emit("done")
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown (daemon threads of an engine that failed to stop
    # must not keep the process alive).
    os._exit(0)


# ====================================================================== parent side


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
_Events = queue.Queue[tuple[str, Any]]


def _spawn(role: str, spec: dict[str, Any], events: _Events, errfile: Any) -> subprocess.Popen[str]:
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
                    events.put((role, json.loads(line[len(PREFIX) :])))
                except ValueError:
                    pass
        events.put((role, None))  # end of output

    threading.Thread(target=reader, daemon=True).start()
    return p


def _kill(p: subprocess.Popen[str]) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            p.kill()
    with contextlib.suppress(Exception):
        p.wait(5)


def run_trial(trial: Trial) -> Trial:
    """Run one server/client pair to completion (or to its deadline)."""
    spec = trial.spec
    deadline = time.monotonic() + spec["timeout"]
    events: _Events = queue.Queue()
    procs: dict[str, subprocess.Popen[str]] = {}
    started = time.monotonic()
    files = contextlib.ExitStack()
    errs = {r: files.enter_context(tempfile.TemporaryFile("w+")) for r in ("server", "client")}  # noqa: SIM115
    results: dict[str, dict[str, Any]] = {}
    ended: set[str] = set()
    try:
        procs["server"] = _spawn("server", spec, events, errs["server"])
        while True:
            role, ev = events.get(timeout=max(0.01, deadline - time.monotonic()))
            if ev is None or ev["ev"] == "error":
                raise BenchError(f"server failed before it was ready: {ev and ev.get('message')}")
            if ev["ev"] == "ready":
                break
        procs["client"] = _spawn("client", spec, events, errs["client"])
        while len(ended) < 2:
            try:
                role, ev = events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError("trial timed out") from None
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
                peer = procs["client" if role == "server" else "server"]
                assert peer.stdin is not None
                peer.stdin.write("go\n")
                peer.stdin.flush()
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
            _kill(p)
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


def _address(transport: str) -> list[Any]:
    import tofu

    if transport == "tcp":
        return ["tcp", "127.0.0.1", tofu.find_free_tcp_port()]
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
            for run_no in range(args.repeat):
                for impl in args.impl_list:
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
                    }
                    trials.append(Trial(w, impl, transport, run_no, spec))
    return trials


# ---------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    workload: str
    higher_is_better: bool
    extract: Callable[[Trial], float | None]
    fmt: str = "{:,.0f}"


def _rate(t: Trial, seconds_key: str = "seconds", side: str = "server") -> float | None:
    s = (t.server if side == "server" else t.client).get(seconds_key)
    return t.spec["count"] / s if s else None


def _e2e_rate(t: Trial) -> float | None:
    """Messages per second from the sender's first measured send to the
    receiver's last receive (CLOCK_MONOTONIC is shared by every process)."""
    a, b = t.client.get("t_first"), t.server.get("t_last")
    return t.spec["count"] / (b - a) if a is not None and b is not None and b > a else None


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
    Metric("fanin_msgs", "fan-in, 64 B, all clients", "msg/s", "fanin", True, _rate),
    Metric("fanin_e2e_msgs", "fan-in, send→receive", "msg/s", "fanin", True, _e2e_rate),
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


@dataclass(frozen=True)
class Target:
    metric: str
    against: str  # "pyzmq" | "floor" | "absolute"
    op: str  # ">=" | "<="
    value: float
    text: str


TARGETS = [
    Target("oneway_64_msgs", "pyzmq", ">=", 0.5, "≥0.5x pyzmq"),
    Target("oneway_64_msgs", "floor", ">=", 0.5, "≥0.5x floor"),
    Target("rtt_p50_us", "pyzmq", "<=", 1.5, "≤1.5x pyzmq"),
    Target("oneway_64k_mbps", "pyzmq", ">=", 0.7, "≥0.7x pyzmq"),
    Target("idle_rss_server_b", "absolute", "<", 10240, "<10 KiB"),
]


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
            checks = []
            for tg in TARGETS:
                if tg.metric != m.key:
                    continue
                if tg.against == "absolute":
                    v = fig.get("tofu")
                else:
                    v = fig.get(f"tofu/{tg.against}")
                ok = (
                    None
                    if v is None
                    else (v >= tg.value if tg.op == ">=" else v <= tg.value if tg.op == "<=" else v < tg.value)
                )
                checks.append({"target": tg.text, "ok": ok})
            fig["targets"] = checks
            out[f"{m.key}/{transport}"] = fig
    return out


# ---------------------------------------------------------------------- output


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
            "(the benchmark's application held more messages than the pool keeps: see docs/concepts.md)"
        )
    return out


def _split(value: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    items = [x.strip() for x in value.split(",") if x.strip()]
    if items == ["all"]:
        return list(allowed)
    bad = [x for x in items if x not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


PYZMQ_SNDHWM = 1000  # zmq.SNDHWM's default: pyzmq blocks a sender past this many queued messages


def _tofu_options(text: str) -> dict[str, int]:
    """`k=v,k=v` -> keyword arguments of tofu.Options (checked here, in the parent)."""
    import dataclasses

    import tofu

    names = {f.name for f in dataclasses.fields(tofu.Options)}
    out: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in names:
            raise SystemExit(f"--tofu-options: {item!r} is not NAME=INT with NAME in {', '.join(sorted(names))}")
        try:
            out[key.strip()] = int(value)
        except ValueError:
            raise SystemExit(f"--tofu-options: {item!r}: {value!r} is not an integer") from None
    tofu.Options(**out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `tofu bench` (also used by `python -m tofu.bench`)."""
    parser.add_argument("--quick", action="store_true", help="a short run: few messages per workload")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is reported (default 3)")
    parser.add_argument(
        "--messages",
        type=int,
        default=0,
        metavar="N",
        help="measured messages (requests for rtt/pipeline) per run of every workload, overriding the defaults",
    )
    parser.add_argument(
        "--workloads",
        default="all",
        help=f"comma-separated, or all (default): {','.join(WORKLOADS)}",
    )
    parser.add_argument("--transports", default="tcp,uds", help="comma-separated: tcp,uds (default both)")
    parser.add_argument("--impls", default="tofu,pyzmq,floor", help="comma-separated: tofu,pyzmq,floor")
    parser.add_argument("--clients", type=int, default=100, help="fan-in: client connections (default 100)")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections in the memory workload (default 1000)")
    parser.add_argument(
        "--window", type=int, default=64, help="outstanding requests in the pipeline workload (default 64)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a trial is killed (default 120)")
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="run a failed trial again up to this many times (every failure is still reported; default 2)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=5.0,
        help="seconds without progress after which a trial counts as stalled (default 5)",
    )
    parser.add_argument(
        "--tofu-options",
        default=f"max_unsent_msgs={PYZMQ_SNDHWM}",
        metavar="K=V,...",
        help="tofu.Options for the tofu processes, e.g. max_pool_msgs=4096,max_queued_msgs=8192. Default: "
        f"max_unsent_msgs={PYZMQ_SNDHWM}, a send window as large as pyzmq's default send high-water mark, "
        "so that both senders wait instead of queueing without bound; '' runs tofu's own defaults",
    )
    parser.add_argument("--json", metavar="FILE", help="write the raw figures and every run as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the bench as `args` says; print the table; 0 when every trial ran."""
    args.workload_list = _split(args.workloads, list(WORKLOADS), "workload")
    args.transport_list = _split(args.transports, TRANSPORTS, "transport")
    impls = _split(args.impls, IMPLS, "implementation")
    zmq_version = have_pyzmq()
    notes = []
    if "pyzmq" in impls and zmq_version is None:
        impls.remove("pyzmq")
        notes.append("pyzmq is absent (pip install 'tofu[bench]'): only tofu and floor run")
    args.impl_list = impls
    args.tofu_options_dict = _tofu_options(args.tofu_options)
    if args.tofu_options_dict:
        notes.append(f"tofu runs with Options({args.tofu_options})")
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    raise_nofile_limit()
    trials = plan(args)

    console = None
    try:
        from rich.console import Console

        console = Console(width=None if sys.stdout.isatty() else 160)
    except ImportError:
        pass
    for note in notes:
        (console.print if console else print)(note)

    import tofu  # the parent needs it only for ports and paths

    progress_ctx: Any = contextlib.nullcontext()
    task = None
    if console is not None and not args.no_progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress_ctx = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
    started = time.monotonic()
    load_before = os.getloadavg()
    errors: list[str] = []
    with progress_ctx as progress:
        if progress is not None:
            task = progress.add_task("bench", total=len(trials))
        for i, trial in enumerate(trials):
            desc = f"{trial.workload.name} {trial.transport} {trial.impl} run {trial.run + 1}"
            if progress is not None:
                progress.update(task, description=desc)
            elif not args.no_progress:
                print(f"[{i + 1}/{len(trials)}] {desc}", file=sys.stderr, flush=True)
            for attempt in range(1 + max(0, args.retries)):
                trial.error = None
                trial.spec["address"] = _address(trial.transport)
                run_trial(trial)
                if not trial.error:
                    break
                trial.failures.append(trial.error)
                errors.append(f"{desc} (attempt {attempt + 1}): {trial.error}")
            if progress is not None:
                progress.advance(task)

    meta = {
        "tofu": tofu.__version__,
        "python": f"Python {platform.python_version()}",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pyzmq": zmq_version,
        "repeat": args.repeat,
        "quick": args.quick,
        "impls": impls,
        "transports": args.transport_list,
        "workloads": {
            w: {
                "size": t.spec["size"],
                "count": {x.impl: x.spec["count"] for x in trials if x.workload.name == w},
                "warmup": {x.impl: x.spec["warmup"] for x in trials if x.workload.name == w},
            }
            for w, t in {t.workload.name: t for t in trials}.items()
        },
        "clients": args.clients,
        "idle": args.idle,
        "window": args.window,
        "seconds": round(time.monotonic() - started, 1),
        # Other processes on the machine skew every figure: the 1-minute load
        # average before and after the run says how quiet it was.
        "loadavg_before": round(load_before[0], 2),
        "loadavg_after": round(os.getloadavg()[0], 2),
        "notes": notes,
        "tofu_options": args.tofu_options_dict,
        "failed_attempts": sum(len(t.failures) for t in trials),
        "failed_trials": sum(1 for t in trials if t.error),
    }
    warnings = _warnings(trials)
    meta["warnings"] = warnings
    figs = figures(trials, impls)
    render(figs, impls, meta, errors, console)
    for w in warnings:
        (console.print if console else print)(f"warning: {w}")
    if args.json:
        doc = {
            "meta": meta,
            "figures": figs,
            "targets": [t.__dict__ for t in TARGETS],
            "trials": [
                {
                    "workload": t.workload.name,
                    "impl": t.impl,
                    "transport": t.transport,
                    "run": t.run,
                    "spec": t.spec,
                    "server": t.server,
                    "client": {k: v for k, v in t.client.items() if k != "latencies_us"},
                    "error": t.error,
                    "failed_attempts": t.failures,
                    "wall_seconds": round(t.wall, 2),
                }
                for t in trials
            ],
            "errors": errors,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 1 if any(t.error for t in trials) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tofu.bench",
        description="Benchmark tofu against pyzmq and a plain-socket floor, over loopback TCP and UDS.",
    )
    add_arguments(parser)
    # Internal: how the bench starts its server and client processes.
    parser.add_argument("--role", choices=("server", "client"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        return child_main(args.role, json.loads(args.spec))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
