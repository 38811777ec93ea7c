"""The connecting side: a posted HelloRequest becomes a connection.

The address is resolved (off the I/O thread when it needs DNS), the socket
connects without blocking, and the HelloRequest goes out first, through TLS
when the address says so. Whatever fails on the way (a bad address, a
refused connect, a TLS context that cannot be used) closes the channel at
once with the reason; while the peer has not answered, the state machine
gives the HelloRequest back with the close's status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .addresses import TCPClientAddress, TLSClientAddress, UDSClientAddress, parse_address
from .channels import QUEUED_FRAME_COST, Channel, Connection
from .generated import AmpeError, AmpeStatus, WrongAddress
from .message import Message, body_buffer, headers_buffer
from .options import Options
from .poller import WRITE
from .resolver import Resolver
from .sockets import Resolved, start_connect
from .transfer import Transfer
from .transport import client_transport, connected_transport

__all__ = ["Connector"]

log = logging.getLogger("tofu")


class Connector:
    """Opens one engine's connections; close(ch, status, detail) is the engine's close."""

    def __init__(
        self,
        options: Options,
        resolver: Resolver,
        transfer: Transfer,
        close: Callable[[Channel, AmpeStatus, str], None],
    ) -> None:
        self._options = options
        self._resolver = resolver
        self._transfer = transfer
        self._close = close

    def open(self, conn: Connection, hello: Message) -> None:
        """Connect for the posted HelloRequest `hello`, which goes out first."""
        conn.sendq.append(hello)
        conn.queued = QUEUED_FRAME_COST + len(headers_buffer(hello)) + len(body_buffer(hello))
        conn.connecting = True
        conn.hello = hello.copy()  # given back if the channel closes before the peer answers
        try:
            address = parse_address(hello)
            if not isinstance(address, (TCPClientAddress, TLSClientAddress, UDSClientAddress)):
                raise WrongAddress("a HelloRequest needs a ~connect_to header")
            conn.transport = client_transport(address, self._options)
        except AmpeError as exc:
            self._close(conn, exc.status, str(exc))
            return
        except Exception as exc:  # e.g. a TLS context that cannot make a client session
            self._close(conn, AmpeStatus.connect_failed, f"{type(exc).__name__}: {exc}")
            return
        self._resolver.resolve_then(
            address,
            lambda resolved: self._connect(conn, resolved),
            lambda status, detail: self._close(conn, status, detail),
        )

    def _connect(self, conn: Connection, resolved: Resolved) -> None:
        """The address is resolved: start connecting (the loop then waits to write)."""
        if conn.closed:
            return
        try:
            conn.sock, at_once = start_connect(resolved)
            conn.transport = connected_transport(conn.transport, conn.sock)
        except AmpeError as exc:
            self._close(conn, exc.status, str(exc))
            return
        if at_once:
            conn.connecting = False
            log.debug("channel %d connected", conn.number)
            self._transfer.flush(conn)
        else:
            self._transfer.set_events(conn, WRITE)
