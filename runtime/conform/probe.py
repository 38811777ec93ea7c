"""The raw-socket client of the conformance suite.

It talks to the server under test with bytes only: frames are written with the
fast codec (`tofu.encode`, or `tofu.generated.codec` for frames no Message can
express) and read back with `tofu.FrameDecoder`. No engine runs on this side,
so the suite can send anything, in any cut, and see exactly what comes back.

    target = parse_target("tcp://127.0.0.1:7099")
    with Conn(target, timeout=5.0) as conn:
        conn.send(frame_bytes)
        reply = conn.recv_frames(1)[0]
"""

from __future__ import annotations

import functools
import re
import select
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from tofu import (
    Body,
    FrameDecoder,
    Message,
    TCPClientAddress,
    TextHeaders,
    TLSClientAddress,
    UDSClientAddress,
    WrongAddress,
    client_tls_context,
    encode,
    parse_url,
)
from tofu.generated import CONNECT_TO_HEADER, AmpeError, OpCode
from tofu.generated.codec import NUM_OP_CODES, pack_header, pack_proto

__all__ = [
    "RECORD_LIMIT",
    "Conn",
    "ProbeBadFrame",
    "ProbeClosed",
    "ProbeError",
    "ProbeTimeout",
    "TLSOptions",
    "Target",
    "TargetError",
    "fill_headers",
    "frame",
    "hello_headers",
    "parse_target",
]

RECORD_LIMIT = 4096  # bytes of each direction kept per connection, for the report
_READ_SIZE = 256 * 1024


class TargetError(Exception):
    """The target URL or its options are unusable (a usage error)."""


class ProbeError(Exception):
    """The server did not do what a case waited for."""


class ProbeTimeout(ProbeError):
    """Nothing (or not enough) arrived within the wait."""


class ProbeClosed(ProbeError):
    """The server closed the connection; `how` is "fin" or "reset"."""

    def __init__(self, how: str, message: str) -> None:
        super().__init__(message)
        self.how = how


class ProbeBadFrame(ProbeError):
    """The server sent bytes that are not a valid frame stream."""


@dataclass(frozen=True)
class TLSOptions:
    """Certificates for a tls:// target: `ca` to verify the server with (None:
    the system's CAs), `cert`/`key` a client certificate for servers that
    require one."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@functools.lru_cache(maxsize=8)
def _tls_context(options: TLSOptions) -> ssl.SSLContext:
    """One client context per set of files (loading them is slow)."""
    return client_tls_context(options.ca, options.cert, options.key)


@dataclass(frozen=True)
class Target:
    """Where the server under test listens."""

    url: str
    scheme: str  # "tcp", "tls" or "uds"
    host: str = ""
    port: int = 0
    path: str = ""
    tls: TLSOptions | None = None

    @property
    def connect_to(self) -> str:
        """The ~connect_to header value a HelloRequest to this target carries."""
        if self.scheme == "uds":
            return f"uds|{self.path}"
        return f"{self.scheme}|{self.host}|{self.port}"

    def open(self, timeout: float) -> socket.socket:
        """A connected, non-blocking socket (TCP with TCP_NODELAY; for tls://
        an ssl.SSLSocket whose handshake is done, the server verified)."""
        sock: socket.socket
        if self.scheme == "uds":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(self.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "tls":
                sock = self._handshake(sock, timeout)
        sock.setblocking(False)
        return sock

    def _handshake(self, sock: socket.socket, timeout: float) -> ssl.SSLSocket:
        """The TLS handshake, blocking for at most `timeout` (ssl errors are OSErrors)."""
        try:
            tls = _tls_context(self.tls or TLSOptions()).wrap_socket(
                sock, server_hostname=self.host, do_handshake_on_connect=False
            )
        except BaseException:
            sock.close()
            raise
        try:
            tls.settimeout(timeout)
            tls.do_handshake()
        except BaseException:
            tls.close()
            raise
        return tls


def parse_target(url: str, tls: TLSOptions | None = None) -> Target:
    """The Target of a tcp://HOST:PORT, tls://HOST:PORT or uds:///PATH URL;
    TargetError otherwise. `tls` (certificates) only goes with tls://; the
    files are loaded here, so a bad one is a TargetError too."""
    try:
        address = parse_url(url, server=False)
    except WrongAddress as exc:
        raise TargetError(str(exc)) from None
    given = tls is not None and bool(tls.ca or tls.cert or tls.key)
    if isinstance(address, TLSClientAddress):
        options = tls or TLSOptions()
        if options.key and not options.cert:
            raise TargetError("--key needs --cert")
        try:
            _tls_context(options)
        except OSError as exc:  # ssl.SSLError too
            files = ", ".join(f for f in (options.ca, options.cert, options.key) if f)
            raise TargetError(f"cannot load the TLS files ({files}): {exc.strerror or exc}") from None
        return Target(url=url, scheme="tls", host=address.host, port=address.port, tls=options)
    if given:
        raise TargetError("--ca, --cert and --key need a tls:// target")
    if isinstance(address, TCPClientAddress):
        return Target(url=url, scheme="tcp", host=address.host, port=address.port)
    if isinstance(address, UDSClientAddress):
        return Target(url=url, scheme="uds", path=address.path)
    raise TargetError(f"{url!r}: use tcp://HOST:PORT, tls://HOST:PORT or uds:///PATH")  # pragma: no cover


def frame(
    op: int,
    message_id: int,
    headers: bytes = b"",
    body: bytes = b"",
    *,
    more: bool = False,
    channel: int = 1,
    origin: int = 0,
    status: int = 0,
    internal: int = 0,
) -> bytes:
    """The bytes of one frame; any op code 0..15, any proto bits, any status.

    Well-formed frames go through `tofu.encode`; the rest are packed with the
    generated fast codec directly."""
    if 0 <= op < NUM_OP_CODES and not origin and not status and not internal:
        msg = Message(OpCode(op))
        bh = msg.bhdr
        bh.channel_number = channel
        bh.message_id = message_id
        bh.proto.more = 1 if more else 0  # type: ignore[assignment]
        msg.thdrs = TextHeaders(headers)  # as given, even headers that do not parse
        msg.body = Body(body)
        return encode(msg)
    proto = pack_proto(op, origin, int(more), internal & 1, (internal >> 1) & 1)
    return pack_header(channel, proto, status, message_id, len(headers), len(body)) + headers + body


def fill_headers(size: int) -> bytes:
    """Valid text headers of exactly `size` bytes (`x-N:vvv...\\r\\n` lines)."""
    out = bytearray()
    n = 0
    while len(out) < size:
        left = size - len(out)
        name = f"x-{n}:".encode()
        if left <= 4096 + len(name) + 2 + 16:
            value = b"v" * (left - len(name) - 2)
            if len(value) < 1:  # too little room for a line: widen the previous one
                raise AssertionError("fill_headers: size too small")
            out += name + value + b"\r\n"
        else:
            out += name + b"v" * 4096 + b"\r\n"
        n += 1
    assert len(out) == size
    return bytes(out)


def hello_headers(target: Target) -> bytes:
    """The text headers of a HelloRequest to `target`."""
    return f"{CONNECT_TO_HEADER}:{target.connect_to}\r\n".encode()


def _ssl_words(exc: ssl.SSLError) -> str:
    """'tlsv13 alert certificate required' from '[SSL: TLSV13_...] tlsv13 alert
    certificate required (_ssl.c:2580)'."""
    text = re.sub(r"^\[[^]]*\]\s*", "", str(exc.args[1] if len(exc.args) > 1 else exc))
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text) or str(exc)


class Conn:
    """One raw connection to the server under test.

    Every send also reads, so a large send never deadlocks against a server
    that answers while it reads. Frames that arrive are queued in order;
    `sent` and `received` keep the first RECORD_LIMIT bytes of each direction
    (and the totals), `last_sent` and `last_received` the latest write and
    what arrived after it, for the report."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.sock = target.open(timeout)
        self.decoder = FrameDecoder()
        self.frames: list[Message] = []
        self.ended: str | None = None  # "fin" or "reset" once the server closed
        self.tls_error: str | None = None  # the TLS error that ended the connection, if one did
        self.bad: str | None = None
        self.sent = bytearray()
        self.received = bytearray()
        self.sent_total = 0
        self.received_total = 0
        self.last_sent = bytearray()  # the latest write, and what arrived since it
        self.last_received = bytearray()
        self.closed = False

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close our side (a FIN)."""
        if not self.closed:
            self.closed = True
            self.sock.close()

    def abort(self) -> None:
        """Close our side with a reset (SO_LINGER 0)."""
        if not self.closed:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            self.close()

    def shutdown_write(self) -> None:
        """Send our FIN but keep reading.

        Over TLS too a bare FIN, no close_notify: the end of the stream, as
        over TCP. (SSLSocket.shutdown() would drop the TLS session, and with
        it what is still to be read, so the plain socket's is called.)"""
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_WR)
        except OSError:
            pass

    # ------------------------------------------------------------ I/O
    def _record(self, buf: bytearray, data: bytes | memoryview) -> None:
        room = RECORD_LIMIT - len(buf)
        if room > 0:
            buf += data[:room]

    def _read_some(self) -> None:
        """One recv into the decoder; notes the end of the stream."""
        try:
            data = self.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):  # TLS: close_notify, or a bare FIN
            self.ended = "fin"
            return
        except ssl.SSLError as exc:  # TLS: an alert (the server refused us), or a broken record
            self.ended = "reset"
            self.tls_error = _ssl_words(exc)
            return
        except ConnectionResetError:
            self.ended = "reset"
            return
        except OSError:
            self.ended = "reset"
            return
        if not data:
            self.ended = "fin"
            return
        self._record(self.received, data)
        self._record(self.last_received, data)
        self.received_total += len(data)
        if self.bad is not None:
            return
        try:
            self.frames.extend(self.decoder.feed(data))
        except AmpeError as exc:
            self.frames.extend(getattr(exc, "frames", []))
            self.bad = f"the server sent an invalid frame: {exc}"

    def send(self, data: bytes, timeout: float | None = None) -> None:
        """Write all of `data`, reading whatever arrives meanwhile.

        ProbeClosed if the server closes before it is all written."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        view = memoryview(data)
        self._record(self.sent, view)
        self.last_sent = bytearray()
        self.last_received = bytearray()
        self._record(self.last_sent, view)
        self.sent_total += len(data)
        while view:
            if self.ended is not None:
                raise ProbeClosed(self.ended, f"the server closed the connection ({self.ended}) while we were sending")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeTimeout(f"the server did not take {len(view)} of {len(data)} bytes within the wait")
            readable, writable, _ = select.select([self.sock], [self.sock], [], 0 if self._pending() else left)
            if readable or self._pending():
                self._read_some()
            if writable:
                try:
                    n = self.sock.send(view)
                except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    self.ended = self.ended or "reset"
                    continue
                except ssl.SSLError as exc:  # TLS: the session ended (an alert came, or we read its end)
                    self.ended = self.ended or "reset"
                    self.tls_error = self.tls_error or _ssl_words(exc)
                    continue
                view = view[n:]

    def _pending(self) -> bool:
        """TLS: decrypted bytes wait inside the SSL object, where select() cannot see them."""
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def _wait_readable(self, deadline: float) -> bool:
        if self._pending():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        readable, _, _ = select.select([self.sock], [], [], left)
        return bool(readable)

    def recv_frames(self, count: int, timeout: float | None = None) -> list[Message]:
        """The next `count` frames from the server, in order.

        ProbeTimeout / ProbeClosed / ProbeBadFrame when they do not all come."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.frames) < count:
            if self.bad is not None:
                raise ProbeBadFrame(self.bad)
            if self.ended is not None:
                raise ProbeClosed(
                    self.ended,
                    f"the server closed the connection ({self.ended}) after {len(self.frames)} of {count} frame(s)",
                )
            if not self._wait_readable(deadline):
                got = len(self.frames)
                raise ProbeTimeout(f"{got} of {count} frame(s) arrived within {self._wait_text(timeout)}")
            self._read_some()
        out, self.frames = self.frames[:count], self.frames[count:]
        return out

    def recv_until_end(self, timeout: float | None = None) -> str | None:
        """Read until the server closes; "fin", "reset", or None at the wait's end.

        Frames that arrive meanwhile stay in `frames`."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self.ended is None:
            if not self._wait_readable(deadline):
                return None
            self._read_some()
        return self.ended

    def recv_until(self, message_id: int, timeout: float | None = None) -> tuple[list[Message], Message | None]:
        """Frames up to the first one with `message_id`: (the others, that one or None).

        Stops early (None) when the server closes, sends a bad frame, or the wait ends."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        others: list[Message] = []
        while True:
            while self.frames:
                msg = self.frames.pop(0)
                if msg.bhdr.message_id == message_id:
                    return others, msg
                others.append(msg)
            if self.ended is not None or self.bad is not None:
                return others, None
            if not self._wait_readable(deadline):
                return others, None
            self._read_some()

    def _wait_text(self, timeout: float | None) -> str:
        return f"{self.timeout if timeout is None else timeout:g} s"
