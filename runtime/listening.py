"""The listening side of a Reactor: open a listener, accept connections.

Reactor's methods of that job: they run on the I/O thread, Reactor binds
them as its private methods (`_open_listener`, `_on_listener_event`), and
`rtr` is the Reactor. Opening a listener (WelcomeRequest -> WelcomeResponse),
and accepting connections into the listener's group, within
Options.max_connections, each with its handshake deadline.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import TYPE_CHECKING

from .addresses import Address, TCPServerAddress, TLSServerAddress, UDSServerAddress, parse_address
from .channels import Connection, Listener
from .framing import FrameDecoder
from .generated import LISTEN_ON_HEADER, AmpeError, AmpeStatus, OpCode, WrongAddress
from .message import Message
from .poller import READ
from .sockets import Resolved, listen, tune
from .transport import accept_wrapper, check_listen

if TYPE_CHECKING:
    from .groups import ChannelGroup
    from .reactor import Reactor

__all__ = ["on_listener_event", "open_listener", "start_listening"]

log = logging.getLogger("tofu")

ACCEPTS_PER_EVENT = 64
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def open_listener(rtr: Reactor, group: ChannelGroup, msg: Message) -> None:
    lst = Listener(msg.bhdr.channel_number, group, msg.bhdr.message_id)
    rtr._channels[lst.number] = lst
    group._channels.add(lst)

    def fail(status: AmpeStatus, detail: str = "") -> None:
        msg.bhdr.proto.op_code = OpCode.WelcomeResponse
        rtr._return(group, msg, status)
        rtr._close(lst, status, detail=detail)

    try:
        address = parse_address(msg)
        if not isinstance(address, (TCPServerAddress, TLSServerAddress, UDSServerAddress)):
            raise WrongAddress(f"a WelcomeRequest needs a {LISTEN_ON_HEADER} header")
        check_listen(address, rtr._options)
    except AmpeError as exc:
        fail(exc.status, str(exc))
        return
    rtr._resolve_then(address, lambda resolved: start_listening(rtr, lst, msg, address, resolved), fail)


def start_listening(rtr: Reactor, lst: Listener, msg: Message, address: Address, resolved: Resolved) -> None:
    if lst.closed:
        rtr._pool.put(msg)
        return
    try:
        sock = listen(address, resolved)  # type: ignore[arg-type]
    except AmpeError as exc:
        msg.bhdr.proto.op_code = OpCode.WelcomeResponse
        rtr._return(lst.group, msg, exc.status)
        rtr._close(lst, exc.status)
        return
    lst.sock = sock
    lst.wrap = accept_wrapper(address, rtr._options)
    if sock.family == socket.AF_UNIX:
        lst.uds_path = address.path  # type: ignore[union-attr]
        lst.uds_inode = os.stat(lst.uds_path).st_ino
        value = address.value
    else:
        # Tell the actual port: a listener may ask for port 0.
        value = type(address)(address.host, sock.getsockname()[1]).value  # type: ignore[call-arg,union-attr]
    log.debug("channel %d listening on %s", lst.number, value)
    msg.bhdr.proto.op_code = OpCode.WelcomeResponse
    msg.thdrs.clear()
    msg.thdrs.append(LISTEN_ON_HEADER, value)
    rtr._return(lst.group, msg, AmpeStatus.success)
    rtr._set_events(lst, READ)


def on_listener_event(rtr: Reactor, lst: Listener, mask: int) -> None:
    group = lst.group
    for _ in range(ACCEPTS_PER_EVENT):
        try:
            sock, _ = lst.sock.accept()  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in _OUT_OF_RESOURCES:
                # The pending connection stays in the backlog, so the
                # listener would be ready again at once: stop watching it
                # until a channel closes and gives a descriptor back.
                log.warning("channel %d: cannot accept (%s): waiting for a channel to close", lst.number, exc)
                rtr._set_events(lst, 0)
                rtr._starved.add(lst)
            else:
                log.warning("channel %d: accept failed: %s", lst.number, exc)
            return
        if lst.full(rtr._options.max_connections):
            if not lst.refusing:  # once per episode, not once per connection
                lst.refusing = True
                log.warning("channel %d: %d connections open: refusing more", lst.number, lst.open_connections)
            sock.close()
            continue
        transport = lst.wrap(sock)
        if transport is None:  # refused (logged)
            sock.close()
            continue
        number = rtr._numbers.allocate(group)
        if number is None:
            log.warning("channel %d: every channel number is in use; refusing a connection", lst.number)
            sock.close()
            continue
        try:
            tune(sock)
        except OSError:
            rtr._numbers.release(number)
            sock.close()
            continue
        conn = Connection(number, group, 0, FrameDecoder(rtr._recycled), accepted=True)
        conn.sock, conn.transport = sock, transport
        conn.listener = lst
        lst.open_connections += 1
        rtr._open_window(number)
        rtr._channels[number] = conn
        group._channels.add(conn)
        rtr._set_deadline(conn, rtr._options.handshake_timeout, AmpeStatus.accept_failed)
        rtr._watch_idle(conn)
        rtr._update_events(conn)
        log.debug("channel %d accepted on listener %d", number, lst.number)
