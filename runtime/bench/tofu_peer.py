"""The tofu side of every workload: an engine in a child process, through the public API."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ._diagnostics import engine_snapshot
from ._process import BenchError, ParentLink, peak_rss, settled_rss
from .tls_certs import tls_options


def spec_procs(spec: dict[str, Any]) -> int:
    """Server processes sharing the port in this trial (1: the usual pair of processes)."""
    return int(spec.get("procs", 1))


class _TofuPeer:
    """One tofu engine in a child process, with one channel group."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import tofu

        self.tofu = tofu
        self.spec = spec
        self.rtr = tofu.Reactor(tofu.Options(**spec.get("tofu_options", {}), **tls_options(spec)))
        self.ampe = self.rtr.ampe()
        self.grp = self.ampe.create()
        self.accepted = 0
        self.closed = 0
        self.unexpected = 0
        self.pool_empty = 0
        self.step_timeout = float(spec["step_timeout"])
        self.cpu_window = [0.0, 0.0]  # process CPU seconds at the start and the end of a measured window
        # The parent sends SIGUSR1 before it kills a failed trial: say what the engine was doing.
        signal.signal(signal.SIGUSR1, lambda *_: print(f"[SIGUSR1] {self.diag()}", file=sys.stderr, flush=True))

    def new(self) -> Any:
        return self.ampe.get(self.tofu.AllocationStrategy.always)

    def server_address(self) -> Any:
        a = self.spec["address"]
        if a[0] == "tls":
            return self.tofu.TLSServerAddress(a[1], a[2])
        if a[0] == "tcp":  # several server processes share the port
            return self.tofu.TCPServerAddress(a[1], a[2], reuse_port=spec_procs(self.spec) > 1)
        return self.tofu.UDSServerAddress(a[1])

    def client_address(self) -> Any:
        a = self.spec["address"]
        if a[0] == "tls":
            return self.tofu.TLSClientAddress(a[1], a[2])
        if a[0] == "tcp":
            return self.tofu.TCPClientAddress(a[1], a[2])
        return self.tofu.UDSClientAddress(a[1])

    def receive(self) -> Any:
        m = self.grp.wait_receive(self.step_timeout)
        if m is None:
            raise BenchError(f"tofu: nothing received for {self.step_timeout:.0f} s [{self.diag()}]")
        return m

    def diag(self) -> str:
        """What the engine was doing (diagnostics only: see _diagnostics)."""
        return engine_snapshot(self.rtr, self.grp)

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
                peer.cpu_window[0] = time.process_time()  # this process's CPU time, every thread
            elif count == target:
                peer.cpu_window[1] = time.process_time()
                return t0, perf()
        elif not peer.control(m):
            peer.unexpected += 1
            put(m)


def _tofu_receive_shared(peer: _TofuPeer, spec: dict[str, Any], chan: ParentLink) -> dict[str, Any]:
    """One of several server processes sharing the port (fan-in): receive data
    Signals until the parent says every client process has finished.

    This server cannot know in advance how many messages it gets: the kernel
    spreads the connections over the servers. Every client connects all its
    channels before any data flows, so at the first data message `accepted` is
    this server's share of the connections, and of the warm-up (the clients
    send round-robin over their channels). Times are CLOCK_MONOTONIC, shared
    by every process, so the parent can join the servers' windows."""
    tofu = peer.tofu
    Signal = tofu.OpCode.Signal
    receiver_update = tofu.AmpeStatus.receiver_update
    get = peer.grp.wait_receive
    put = peer.ampe.put
    mono = time.monotonic
    done = threading.Event()

    def wait_for_the_end() -> None:
        chan.wait_go()
        done.set()
        peer.grp.update_receiver(None)  # wakes wait_receive

    threading.Thread(target=wait_for_the_end, name="bench-end", daemon=True).start()
    count = 0
    warm = -1  # this server's share of the warm-up, known at the first data message
    t0 = t_last = cpu0 = 0.0
    while True:
        m = get(peer.step_timeout)
        if m is None:
            if count:
                continue  # its share has arrived; the others may still be receiving
            raise BenchError(f"tofu: no data for {peer.step_timeout:.0f} s [{peer.diag()}]")
        bh = m.bhdr
        if bh.proto.op_code is Signal and not bh.status:
            put(m)
            count += 1
            t_last = mono()
            if warm < 0:
                warm = max(1, round(spec["warmup"] * peer.accepted / spec["clients_total"]))
            if count == warm:
                t0 = t_last
                cpu0 = time.process_time()
        elif bh.status == receiver_update:
            put(m)
            if done.is_set():
                break
        elif not peer.control(m):
            peer.unexpected += 1
            put(m)
    if count <= warm:
        raise BenchError(f"tofu: this server received {count} messages, not more than its warm-up ({warm})")
    cpu = time.process_time() - cpu0  # to the end: what follows the last message is little more than waiting
    return {"t0": t0, "t_last": t_last, "received": count, "warm": warm, "accepted": peer.accepted, "cpu_seconds": cpu}


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
        if kind == "fanin" and spec_procs(spec) > 1:
            result.update(_tofu_receive_shared(peer, spec, chan))
        elif kind in ("oneway", "fanin"):
            t0, t1 = _tofu_receive_count(peer, spec["warmup"], spec["count"])
            result["t_last"] = time.monotonic()
            result["seconds"] = t1 - t0
            result["cpu_seconds"] = peer.cpu_window[1] - peer.cpu_window[0]
        elif kind in ("rtt", "pipeline"):
            _tofu_echo(peer)
        elif kind == "idle":
            t0, t1 = _tofu_receive_count(peer, spec["warmup"], spec["count"])
            result["seconds_alone"] = t1 - t0
            result["rss_before"] = settled_rss()
            chan.sync("measured-alone")
            idle = spec["idle"]
            while peer.accepted < 1 + idle:
                m = peer.receive()
                if not peer.control(m):
                    raise BenchError(f"tofu: unexpected {m!r} while idle channels connect")
            result["rss_idle"] = settled_rss()
            chan.sync("idle-connected")
            t0, t1 = _tofu_receive_count(peer, spec["warmup"], spec["count"])
            result["seconds_with_idle"] = t1 - t0
        result["rss_peak"] = peak_rss()
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
    cpu0 = 0.0
    try:
        if kind == "fanin" and spec_procs(spec) > 1:  # one of several client processes
            chans = peer.connect(spec["clients"])
            chan.sync("connected")  # the parent says go when every client process is connected
            chan.wait_go()
            _tofu_send(peer, chans, warmup, payload)
            result["t_first"] = time.monotonic()
            cpu0 = time.process_time()
            _tofu_send(peer, chans, n, payload, first=warmup)
        elif kind in ("oneway", "fanin"):
            chans = peer.connect(1 if kind == "oneway" else spec["clients"])
            _tofu_send(peer, chans, warmup, payload)
            result["t_first"] = time.monotonic()
            cpu0 = time.process_time()
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
            result["rss_before"] = settled_rss()
            chans += peer.connect(spec["idle"])
            result["rss_idle"] = settled_rss()
            chan.sync("idle-connected")
            chan.wait_go()
            _tofu_send(peer, chans[:1], warmup + n, payload)
        else:
            raise BenchError(f"unknown workload kind {kind}")
        result["rss_peak"] = peak_rss()
        result["clean_close"] = peer.bye(chans, spec["close_timeout"])
        if kind in ("oneway", "fanin"):  # the sends, and the engine writing them out until the Byes are answered
            result["cpu_seconds"] = time.process_time() - cpu0
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
