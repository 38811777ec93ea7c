"""The connecting side of a Reactor: open a connection for a HelloRequest.

Reactor's methods of that job: they run on the I/O thread, Reactor binds
them as its private methods (`_open_connection`, `_connected`,
`_handshake_failed`), and `rtr` is the Reactor. A posted HelloRequest opens
a channel that sends it first; the address is resolved (off the I/O thread
when it needs DNS), the socket connects without blocking, and a TLS
handshake that fails closes the channel with the reason.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .addresses import TCPClientAddress, TLSClientAddress, UDSClientAddress, parse_address
from .channels import QUEUED_FRAME_COST, Connection
from .framing import FrameDecoder
from .generated import AmpeError, AmpeStatus, OpCode, WrongAddress
from .message import Message
from .poller import WRITE
from .sockets import Resolved, start_connect
from .transport import HandshakeFailed, client_transport, connected_transport

if TYPE_CHECKING:
    from .groups import ChannelGroup
    from .reactor import Reactor

__all__ = ["connected", "handshake_failed", "open_connection"]

log = logging.getLogger("tofu")


def open_connection(rtr: Reactor, group: ChannelGroup, msg: Message) -> None:
    """A posted HelloRequest: a new connection channel that sends it first,
    within Options.connect_timeout (DNS, connect and the HelloResponse)."""
    conn = Connection(msg.bhdr.channel_number, group, msg.bhdr.message_id, FrameDecoder(rtr._recycled))
    conn.sendq.append(msg)  # the HelloRequest goes out first
    conn.queued = QUEUED_FRAME_COST + len(msg.thdrs._buf) + len(msg.body._buf)
    conn.connecting = True
    if rtr._set_deadline(conn, rtr._options.connect_timeout, AmpeStatus.connect_failed):
        conn.hello = msg.copy()  # returned if the deadline passes after it was sent
    rtr._channels[conn.number] = conn
    group._channels.add(conn)
    try:
        address = parse_address(msg)
        if not isinstance(address, (TCPClientAddress, TLSClientAddress, UDSClientAddress)):
            raise WrongAddress("a HelloRequest needs a ~connect_to header")
        conn.transport = client_transport(address, rtr._options, msg)
    except AmpeError as exc:
        rtr._close(conn, exc.status, detail=str(exc))
        return
    rtr._resolve_then(
        address,
        lambda resolved: _connect(rtr, conn, resolved),
        lambda status: rtr._close(conn, status),
    )


def _connect(rtr: Reactor, conn: Connection, resolved: Resolved) -> None:
    """The address is resolved: start connecting (the loop then waits to write)."""
    if conn.closed:
        return
    try:
        conn.sock, at_once = start_connect(resolved)
    except AmpeError as exc:
        rtr._close(conn, exc.status)
        return
    conn.transport = connected_transport(conn.transport, conn.sock)
    if at_once:
        connected(rtr, conn)
    else:
        rtr._set_events(conn, WRITE)


def connected(rtr: Reactor, conn: Connection) -> None:
    """The socket is connected: watch its idle time and send what is queued."""
    conn.connecting = False
    log.debug("channel %d connected", conn.number)
    rtr._watch_idle(conn)
    rtr._flush(conn)


def handshake_failed(rtr: Reactor, conn: Connection, exc: HandshakeFailed) -> None:
    """A listener drops the connection, logged, unseen by the application;
    a client's channel closes with connect_failed and the reason, and its
    HelloRequest comes back even if it had already gone out."""
    if exc.server_side:
        log.warning("channel %d: dropped an incoming connection: %s", conn.number, exc)
        rtr._close(conn, AmpeStatus.connect_failed, notify=False)
        return
    log.info("channel %d: connect failed: %s", conn.number, exc)
    if exc.hello is not None and not any(m.bhdr.proto.op_code is OpCode.HelloRequest for m in conn.inflight):
        rtr._return(conn.group, exc.hello, AmpeStatus.connect_failed)
    rtr._close(conn, AmpeStatus.connect_failed, detail=str(exc))
