"""Making the engine's sockets from addresses, and naming their failures.

Everything here runs on the engine's I/O thread except `resolve`, which may
block on DNS and so runs on the Reactor's resolver thread. Failures raise the
AmpeError whose status the application will see.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from typing import Any

from .addresses import (
    Address,
    TCPClientAddress,
    TCPServerAddress,
    TLSClientAddress,
    TLSServerAddress,
    UDSClientAddress,
    UDSServerAddress,
)
from .generated import ConnectFailed, InvalidAddress, ListenFailed, UDSPathNotFound

__all__ = [
    "ack_now",
    "can_ack_now",
    "finish_connect",
    "listen",
    "needs_resolving",
    "resolve",
    "start_connect",
    "tune",
    "unlink_uds",
]

log = logging.getLogger("tofu")

LISTEN_BACKLOG = 1024

# An address already resolved: (family, sockaddr)
Resolved = tuple[int, Any]


def needs_resolving(address: Address) -> bool:
    """True when a TCP host is a name (not an IP literal): resolving may block."""
    if not isinstance(address, (TCPClientAddress, TCPServerAddress, TLSClientAddress, TLSServerAddress)):
        return False
    if not address.host:
        return False
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, address.host)
            return False
        except OSError:
            pass
    return True


def resolve(address: Address) -> Resolved:
    """The family and socket address to use; InvalidAddress if there is none."""
    if isinstance(address, (UDSClientAddress, UDSServerAddress)):
        return socket.AF_UNIX, address.path
    host = address.host or None  # "" on a listener: every interface
    flags = socket.AI_PASSIVE if isinstance(address, (TCPServerAddress, TLSServerAddress)) else 0
    try:
        infos = socket.getaddrinfo(host, address.port, 0, socket.SOCK_STREAM, 0, flags)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidAddress(f"cannot resolve {address.host!r}: {exc}") from None
    # Prefer IPv4 when both exist: it is what the reference dials.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def tune(sock: socket.socket) -> None:
    """Non-blocking, and no Nagle delay on TCP (docs/protocol.md)."""
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def can_ack_now(sock: socket.socket) -> bool:
    """True when ack_now() does something for this socket (TCP on Linux)."""
    return _TCP_QUICKACK is not None and sock.family in (socket.AF_INET, socket.AF_INET6)


def ack_now(sock: socket.socket) -> None:
    """Acknowledge what the peer sent at once instead of delaying the ACK.

    The reference writes a frame in two or three pieces without TCP_NODELAY,
    so it holds each piece until the one before is acknowledged (Nagle), and
    a receiver's delayed ACK adds ~40 ms per frame (docs/protocol.md). The
    engine calls this when a read ended inside a frame."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)  # type: ignore[arg-type]
    except OSError:
        pass  # the connection is going away: the next read says so


def _uds_is_live(path: str) -> bool:
    """True when something accepts connections on the socket file at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
        return True
    except BlockingIOError:
        return True  # its backlog is full: certainly alive
    except OSError:
        return False
    finally:
        probe.close()


def listen(address: TCPServerAddress | TLSServerAddress | UDSServerAddress, resolved: Resolved) -> socket.socket:
    """A listening, non-blocking socket. ListenFailed when the address is taken.

    A Unix domain socket's file gets the address's mode between bind() and
    listen(): nobody can connect before listen(), so there is no moment when
    the umask's looser mode lets a stranger in (and the process-wide umask is
    never touched)."""
    family, sockaddr = resolved
    if family == socket.AF_UNIX:
        _clear_stale_uds(address.path)  # type: ignore[union-attr]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if address.reuse_port:  # type: ignore[union-attr]
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        if family == socket.AF_UNIX:
            os.chmod(address.path, address.mode)  # type: ignore[union-attr]
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            raise InvalidAddress(f"{address.value}: not an address of this machine") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise InvalidAddress(f"{address.value}: no such directory") from None
        raise ListenFailed(f"{address.value}: {exc.strerror}") from None
    return sock


def _clear_stale_uds(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ListenFailed(f"{path} exists and is not a socket")
    if _uds_is_live(path):
        raise ListenFailed(f"{path}: another listener is accepting on it")
    log.debug("removing stale socket file %s", path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def unlink_uds(path: str, inode: int) -> None:
    """Remove a listener's socket file, unless someone else has replaced it."""
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


def start_connect(resolved: Resolved) -> tuple[socket.socket, bool]:
    """A non-blocking socket connecting to `resolved`; True if already connected."""
    family, sockaddr = resolved
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        tune(sock)
        err = sock.connect_ex(sockaddr)
    except OSError as exc:
        sock.close()
        raise _connect_error(family, sockaddr, exc.errno) from None
    if err == 0:
        return sock, True
    if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
        if family == socket.AF_UNIX and err != errno.EINPROGRESS:
            sock.close()  # a UDS listener with a full backlog
            raise ConnectFailed(f"{sockaddr}: listener backlog is full")
        return sock, False
    sock.close()
    raise _connect_error(family, sockaddr, err)


def finish_connect(sock: socket.socket) -> None:
    """Check a connect that has become writable; raise its failure."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise _connect_error(sock.family, "peer", err)


def _connect_error(family: int, sockaddr: object, err: int | None) -> Exception:
    reason = os.strerror(err) if err else "unknown error"
    if family == socket.AF_UNIX and err in (errno.ENOENT, errno.ENOTDIR):
        return UDSPathNotFound(f"{sockaddr}: {reason}")
    if err in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EINVAL):
        return InvalidAddress(f"{sockaddr}: {reason}")
    return ConnectFailed(f"{sockaddr}: {reason}")
