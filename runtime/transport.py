"""How a connection's bytes cross its socket: plain, or through TLS.

The engine reads and writes every connection through its transport:

    n = conn.transport.recv_into(buf)   # plaintext in; 0 = end of stream
    n = conn.transport.send(data)       # plaintext out; how much was taken

For plain TCP and Unix domain sockets these are the socket's own methods. For
TLS they run the sans-IO TLSSession (runtime/tls.py): a read feeds it
ciphertext and gives back plaintext, a send encrypts and writes; the handshake
advances inside reads and never blocks the I/O thread. Besides:

ready: the transport carries data (False while a TLS handshake runs).
wants_write: ciphertext waits for the socket to become writable.
flush_after_read: the last read has made something to send (the handshake
    has just completed, or a handshake reply is waiting).
held: how many bytes of what send() took the peer cannot have read yet
    (TLS: those of records whose ciphertext has not wholly left; a close
    gives their messages back).
identity: the peer's identity headers (runtime/identity.py).

A handshake failure raises HandshakeFailed, which says the side and why.
This module also builds transports from addresses and Options, and refuses
Unix domain socket peers outside a listener's allow-list.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._mypyc import mypyc_attr
from .addresses import Address, TLSClientAddress, TLSServerAddress, UDSServerAddress
from .generated import ConnectFailed, ListenFailed
from .identity import Identity, credentials_identity, tls_identity
from .options import Options

if TYPE_CHECKING:
    from .tls import TLSSession  # imported when a TLS address is used: plain TCP never loads OpenSSL

__all__ = [
    "NOT_CONNECTED",
    "HandshakeFailed",
    "PlainTransport",
    "TLSFailed",
    "TLSTransport",
    "Transport",
    "Unconnected",
    "accept_wrapper",
    "check_listen",
    "client_transport",
    "connected_transport",
    "peer_credentials",
]

log = logging.getLogger("tofu")

_CHUNK = 64 * 1024  # plaintext encrypted per TLS send(), then written in one go
_RECORD = 16 * 1024  # plaintext per TLS record, the protocol's largest: one SSLObject.write each
_SLACK = 32 * 1024  # a read's ciphertext stays this far below the buffer: plaintext always fits
_SO_PEERCRED: int | None = getattr(socket, "SO_PEERCRED", None)  # Linux
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid


# mypyc cannot compile a subclass of OSError: these two stay Python classes
# in the compiled build.
@mypyc_attr(native_class=False)
class HandshakeFailed(OSError):
    """The secure channel could not be set up; str() says why.

    server_side: it happened on a listener's accepted connection."""

    def __init__(self, reason: str, server_side: bool) -> None:
        super().__init__(reason)
        self.server_side = server_side

    def __str__(self) -> str:
        return str(self.args[0])


@mypyc_attr(native_class=False)
class TLSFailed(OSError):
    """A TLS error after the channel was set up (a corrupt record...)."""


def _looks_like_client_hello(data: bytes | bytearray | memoryview) -> bool:
    """True for the start of a TLS ClientHello record: a handshake record
    (0x16, version 3.x) whose first message is a ClientHello (1) exactly as
    long as the record says. A tofu frame matches this by chance only if its
    channel number is 5635 and four more bytes line up."""
    if len(data) < 9 or data[0] != 0x16 or data[1] != 3 or data[2] > 4 or data[5] != 1:
        return False
    record = int.from_bytes(data[3:5], "big")
    return record == int.from_bytes(data[6:9], "big") + 4


# Compiled with the engine (runtime/_build.py): the I/O thread reads a
# connection's transport on every read (recv_into, identity,
# flush_after_read) and a post on every direct write (send). A compiled
# class's attribute is a field of its struct; a Python class's was a lookup
# in the class's dict, then its slot. Round trip 53.7k -> 52.4k instructions.
class PlainTransport:
    """The socket's own recv_into and send, called with no layer between."""

    __slots__ = ("_sock", "identity", "recv_into", "send")

    ready = True
    wants_write = False
    flush_after_read = False
    held = 0

    def __init__(self, sock: socket.socket, identity: Identity = (), sniff: bool = False) -> None:
        self._sock = sock
        self.identity = identity
        self.send: Callable[[bytes | bytearray | memoryview], int] = sock.send
        self.recv_into: Callable[[bytearray], int] = self._sniff if sniff else sock.recv_into

    def _sniff(self, buf: bytearray) -> int:
        """The first read of an accepted TCP connection: a TLS client that
        dialled a plaintext listener is turned away with a clear reason
        instead of being parsed as a frame whose length never arrives."""
        self.recv_into = self._sock.recv_into
        n = self._sock.recv_into(buf)
        if n >= 9 and _looks_like_client_hello(buf[:9]):
            raise HandshakeFailed("a TLS client connected to this plaintext listener", server_side=True)
        return n


class TLSTransport:
    """A connection's TLS: ciphertext on the socket, plaintext to the engine."""

    __slots__ = (
        "_out",
        "_plaintext_seen",
        "_queued",
        "_records",
        "_sent",
        "_session",
        "_sock",
        "flush_after_read",
        "identity",
    )

    def __init__(self, session: TLSSession) -> None:
        self._session = session
        self._sock: socket.socket | None = None
        self._out = bytearray(session.outgoing())  # ciphertext not yet sent
        self._queued = len(self._out)  # ciphertext bytes queued in _out, ever
        self._sent = 0  # ... and written to the socket, ever
        self._records: list[tuple[int, int]] = []  # the data records in _out: (where they end in _queued, plaintext)
        self._plaintext_seen = False
        self.flush_after_read = False
        self.identity: Identity = ()

    def attach(self, sock: socket.socket) -> None:
        """Use `sock` (a client's socket once it exists)."""
        self._sock = sock

    @property
    def ready(self) -> bool:
        return self._session.handshake_done

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    @property
    def held(self) -> int:
        """The plaintext send() took whose TLS record has not wholly left:
        the peer cannot have read it (a record is decrypted whole or not at all)."""
        sent = self._sent
        return sum(size for end, size in self._records if end > sent)

    def _queue(self, ciphertext: bytes) -> None:
        self._out += ciphertext
        self._queued += len(ciphertext)

    @property
    def _establishing(self) -> bool:
        """Failures now are the handshake's. A client counts the time until
        the first reply too: with TLS 1.3 a server rejects a client
        certificate after the client has finished its handshake."""
        session = self._session
        return not session.handshake_done or not (session.server_side or self._plaintext_seen)

    def _failed(self, reason: str) -> HandshakeFailed:
        server_side = self._session.server_side
        what = "TLS handshake" if server_side or not self._session.handshake_done else "TLS channel setup"
        return HandshakeFailed(f"{what} failed: {reason}", server_side)

    def _drain(self) -> None:
        """Write the ciphertext waiting, as far as the socket takes it; a
        socket error while the channel is being set up is the handshake's."""
        out = self._out
        try:
            while out:
                try:
                    n = self._sock.send(out)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    return
                del out[:n]
                self._sent += n
            self._records.clear()
        except OSError as exc:
            if self._establishing:
                raise self._failed(f"connection lost ({exc.strerror or exc})") from None
            raise

    def recv_into(self, buf: bytearray) -> int:
        """Read ciphertext, advance the handshake, put the plaintext in `buf`.
        0 at the end of the stream; BlockingIOError when no plaintext came."""
        session = self._session
        was_ready = session.handshake_done
        try:
            data = self._sock.recv(max(len(buf) - _SLACK, 4096))  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            raise
        except OSError as exc:
            if self._establishing:
                raise self._failed(f"connection lost ({exc.strerror or exc})") from None
            raise
        if not data:
            if not session.handshake_done:
                raise self._failed("the peer closed the connection (is it a TLS peer?)")
            return 0  # after the handshake, an end like any other (peer_disconnected...)
        plaintext = session.receive(data)
        self._queue(session.outgoing())
        self._drain()
        if session.error is not None:
            if self._establishing:
                raise self._failed(session.error)
            raise TLSFailed(f"TLS: {session.error}")
        just_ready = session.handshake_done and not was_ready
        if just_ready:
            from .tls import describe_certificate

            cert = session.peer_certificate()
            self.identity = tls_identity(*describe_certificate(cert)) if cert else ()
        self.flush_after_read = just_ready or bool(self._out)
        if not plaintext:
            if session.closed:
                return 0
            raise BlockingIOError
        self._plaintext_seen = True
        n = len(plaintext)
        buf[:n] = plaintext
        return n

    def close_notify(self) -> None:
        """Tell the peer the TLS stream ends here (a close_notify alert),
        as far as the socket takes it now: the engine is closing the
        connection. Never raises."""
        if self._sock is None or not self._session.handshake_done:
            return
        try:
            self._session.close_notify()
            self._queue(self._session.outgoing())
            self._drain()
        except OSError:
            pass  # the connection is going anyway

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt and write what the socket takes; return how much of
        `data` was taken (0 during the handshake). A failure while the
        channel is being set up raises HandshakeFailed, as a read's does."""
        if self._out:
            self._drain()
        session = self._session
        if self._out or not session.handshake_done:
            return 0
        total = 0
        records = self._records
        with memoryview(data) as view:
            while total < len(view) and not self._out:
                end = min(total + _CHUNK, len(view))
                while total < end:  # a record at a time, to know which ones leave whole
                    with view[total : min(total + _RECORD, end)] as record:
                        session.send(record)
                        taken = len(record)
                    if session.error is not None:
                        if self._establishing:
                            raise self._failed(session.error)
                        raise TLSFailed(f"TLS: {session.error}")
                    self._queue(session.outgoing())
                    records.append((self._queued, taken))
                    total += taken
                self._drain()
        return total


class Unconnected:
    """The transport of a connection whose socket does not exist yet."""

    __slots__ = ()

    ready = False
    wants_write = False
    flush_after_read = False
    held = 0
    identity: Identity = ()

    def recv_into(self, buf: bytearray) -> int:
        raise BlockingIOError

    def send(self, data: bytes | bytearray | memoryview) -> int:
        return 0


NOT_CONNECTED = Unconnected()

Transport = PlainTransport | TLSTransport | Unconnected


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of a Unix domain
    socket, as the kernel recorded it at connect (or listen) time; None where
    the system cannot tell (SO_PEERCRED is Linux's)."""
    if _SO_PEERCRED is None:
        return None
    try:
        pid, uid, gid = _CREDS.unpack(sock.getsockopt(socket.SOL_SOCKET, _SO_PEERCRED, _CREDS.size))
    except OSError:
        return None
    return pid, uid, gid


def _uds_identity(sock: socket.socket) -> Identity:
    creds = peer_credentials(sock)
    return credentials_identity(*creds) if creds else ()


def check_listen(address: Address, options: Options) -> None:
    """ListenFailed when a TLS listener has no context to use."""
    if isinstance(address, TLSServerAddress) and options.tls_server_context is None:
        raise ListenFailed(f"{address.value}: a TLS listener needs Options.tls_server_context")


def client_transport(address: Address, options: Options) -> Transport:
    """The transport for a connect to `address` (for plain ones, NOT_CONNECTED
    until the socket exists). ConnectFailed when TLS has no context to use,
    or one that cannot start a client's handshake (a server's context, say)."""
    if not isinstance(address, TLSClientAddress):
        return NOT_CONNECTED
    context = options.tls_client_context
    if context is None:
        raise ConnectFailed(f"{address.value}: a TLS connect needs Options.tls_client_context")
    from .tls import TLSSession

    try:
        session = TLSSession(context, server_side=False, server_hostname=address.server_hostname or address.host)
    except (ssl.SSLError, ValueError) as exc:
        raise ConnectFailed(f"{address.value}: Options.tls_client_context cannot start a TLS client: {exc}") from None
    if session.error is not None:
        raise ConnectFailed(f"{address.value}: Options.tls_client_context cannot start a TLS client: {session.error}")
    return TLSTransport(session)


def connected_transport(transport: Transport, sock: socket.socket) -> Transport:
    """The transport of a client's socket, once it exists."""
    if isinstance(transport, TLSTransport):
        transport.attach(sock)
        return transport
    return PlainTransport(sock, _uds_identity(sock) if sock.family == socket.AF_UNIX else ())


def accept_wrapper(address: Address, options: Options) -> Callable[[socket.socket], Transport | None]:
    """What a listener on `address` does with each accepted socket: its
    transport, or None when the peer is refused (logged here)."""
    if isinstance(address, TLSServerAddress):
        from .tls import TLSSession

        context = options.tls_server_context
        assert context is not None  # check_listen has said so

        def tls(sock: socket.socket) -> Transport:
            transport = TLSTransport(TLSSession(context, server_side=True))
            transport.attach(sock)
            return transport

        return tls
    if isinstance(address, UDSServerAddress):
        allowed = None if address.allow_uids is None else frozenset(address.allow_uids)

        def uds(sock: socket.socket) -> Transport | None:
            creds = peer_credentials(sock)
            if allowed is not None and (creds is None or creds[1] not in allowed):
                who = f"uid {creds[1]} (pid {creds[0]})" if creds else "a process whose uid is unknown"
                log.warning("%s: refused %s: not in allow_uids", address.value, who)
                return None
            return PlainTransport(sock, credentials_identity(*creds) if creds else ())

        return uds
    return lambda sock: PlainTransport(sock, sniff=True)
