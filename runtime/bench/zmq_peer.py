"""The pyzmq side of every workload: PUSH/PULL, REQ/REP, DEALER/ROUTER."""

from __future__ import annotations

import time
from typing import Any

from ._process import BenchError, ParentLink, peak_rss, settled_rss


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
            result["rss_before"] = settled_rss()
            chan.sync("measured-alone")
            _zmq_recv_count(s, 0, spec["idle"], timeout_ms)  # one message from each idle socket
            result["rss_idle"] = settled_rss()
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
        result["rss_peak"] = peak_rss()
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
            result["rss_before"] = settled_rss()
            for _ in range(spec["idle"]):
                sock(zmq.PUSH).send(payload)
            result["rss_idle"] = settled_rss()
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
        result["rss_peak"] = peak_rss()
        for s in socks:
            s.close()  # lingers until what is queued has gone out
        return result
    except zmq.Again:
        raise BenchError(f"pyzmq {kind} client: timed out") from None
    finally:
        ctx.term() if not socks or all(s.closed for s in socks) else ctx.destroy(linger=0)


def have_pyzmq() -> str | None:
    """pyzmq's version, or None when it is not installed."""
    try:
        import zmq
    except ImportError:
        return None
    return f"pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()})"
