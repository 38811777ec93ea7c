"""The peer's identity as engine headers, sans I/O.

The engine tells the application who is on the other end with `~peer_*`
headers (`~peer_subject`, `~peer_san` for TLS; `~peer_pid`, `~peer_uid`,
`~peer_gid` for Unix domain sockets) on the HelloRequest a listener receives
and the HelloResponse a client receives. A peer can write any header into its
frames, so `stamp_identity` first removes every `~peer_*` header the peer
sent: what the application reads under those names comes from the engine.
"""

from __future__ import annotations

from collections.abc import Sequence

from .generated import (
    PEER_GID_HEADER,
    PEER_PID_HEADER,
    PEER_SAN_HEADER,
    PEER_SUBJECT_HEADER,
    PEER_UID_HEADER,
    OpCode,
)
from .message import Message, headers_buffer

__all__ = [
    "HELLO_OPS",
    "PEER_HEADER_MARK",
    "PEER_HEADER_PREFIX",
    "Identity",
    "credentials_identity",
    "stamp_identity",
    "tls_identity",
]

PEER_HEADER_PREFIX = b"~peer_"  # every engine identity header starts so
# A frame whose headers lack this byte has no ~peer_ header: a memchr, the
# cheap test the engine makes on every frame before calling stamp_identity.
PEER_HEADER_MARK = ord("~")
HELLO_OPS = frozenset((OpCode.HelloRequest, OpCode.HelloResponse))  # the frames that get the identity

Identity = tuple[tuple[str, str], ...]  # (header name, value) pairs


def _is_peer_line(line: bytes) -> bool:
    return line.partition(b":")[0].strip(b" \t").lower().startswith(PEER_HEADER_PREFIX)


def stamp_identity(msg: Message, identity: Sequence[tuple[str, str]] = ()) -> None:
    """Remove every `~peer_*` header from `msg` (whatever its case or the
    spaces around its name), then append `identity`'s headers."""
    buf = headers_buffer(msg)
    if PEER_HEADER_PREFIX in buf.lower():
        kept = [line for line in bytes(buf).split(b"\r\n") if line and not _is_peer_line(line)]
        buf[:] = b"".join(line + b"\r\n" for line in kept)
    for name, value in identity:
        msg.thdrs.append(name, value)


def tls_identity(subject: str, san: str) -> Identity:
    """The headers naming a verified certificate (nothing for an empty part)."""
    return tuple((name, value) for name, value in ((PEER_SUBJECT_HEADER, subject), (PEER_SAN_HEADER, san)) if value)


def credentials_identity(pid: int, uid: int, gid: int) -> Identity:
    """The headers naming a local peer process."""
    return ((PEER_PID_HEADER, str(pid)), (PEER_UID_HEADER, str(uid)), (PEER_GID_HEADER, str(gid)))
