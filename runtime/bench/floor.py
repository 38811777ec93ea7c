"""The floor: plain blocking sockets carrying the same frames, no engine, no threads."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from ._process import BenchError, ParentLink, peak_rss, settled_rss

FLOOR_BATCH = 64 * 1024  # the floor sender writes frames in batches of about this size
RECV_BUFFER = 512 * 1024  # > one max frame (131086 bytes), as the engine's


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
    if a[0] in ("tcp", "tls"):
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
    if a[0] in ("tcp", "tls"):
        s = socket.create_connection((a[1], a[2]), timeout=spec["step_timeout"])
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if a[0] == "tls":  # a blocking ssl.SSLSocket: the same loops, over TLS
            s = _floor_tls_context(spec, server=False).wrap_socket(s, server_hostname=a[1])
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


def _floor_tls_context(spec: dict[str, Any], server: bool) -> Any:
    """The floor's ssl.SSLContext on the tls transport, made as the engine's
    (tofu.server_tls_context / client_tls_context: plain `ssl`, no engine)."""
    import tofu

    files = spec["tls"]
    if not server:
        return tofu.client_tls_context(ca=files["ca"])
    ctx = tofu.server_tls_context(files["server"])
    # No TLS 1.3 session tickets: the one-way client never reads, and a socket
    # closed with unread tickets resets, losing frames the server has not read.
    ctx.num_tickets = 0
    return ctx


def _floor_accept(lsock: Any, spec: dict[str, Any]) -> Any:
    """One blocking accepted connection, tuned; on tls an ssl.SSLSocket after its handshake."""
    lsock.settimeout(spec["step_timeout"])
    s, _ = lsock.accept()
    _floor_tune(s, spec)
    if spec["address"][0] == "tls":
        s = _floor_tls_context(spec, server=True).wrap_socket(s, server_side=True)
    return s


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
            s = _floor_accept(lsock, spec)
            t0, t1 = _floor_read_count(s, warmup, n)
            result["t_last"] = time.monotonic()
            result["seconds"] = t1 - t0
            _drain_until_eof(s)
        elif kind in ("rtt", "pipeline"):
            lsock.settimeout(spec["step_timeout"])
            s = _floor_accept(lsock, spec)
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
                    result["rss_before"] = settled_rss()
                    chan.sync("measured-alone")
                    base = reader.frames
                    reader.run_until(base + spec["idle"], opened=1 + spec["idle"])
                    result["rss_idle"] = settled_rss()
                    chan.sync("idle-connected")
                    base = reader.frames
                    reader.run_until(base + warmup + n, mark(base, warmup, warmup + n))
                    result["seconds_with_idle"] = marks["t1"] - marks["t0"]
                result["rss_peak"] = peak_rss()
                chan.emit("result", **result)
                # until the client has closed everything
                deadline = time.monotonic() + spec["close_timeout"]
                while reader.closed < reader.opened and time.monotonic() < deadline:
                    for key, _ in reader.sel.select(0.5):
                        if key.data is not None:
                            reader._read(key.data)
            finally:
                reader.close()
        result["rss_peak"] = peak_rss()
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
            result["rss_before"] = settled_rss()
            pack, _, proto, _, _ = _floor_codec()
            hello = pack(1, proto, 0, 1, 0, len(payload)) + payload
            for _ in range(spec["idle"]):
                s = _floor_connect(spec)
                s.sendall(hello)
                socks.append(s)
            result["rss_idle"] = settled_rss()
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
        result["rss_peak"] = peak_rss()
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
