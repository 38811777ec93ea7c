"""Listening sockets: bind for a WelcomeRequest, accept connections.

A posted WelcomeRequest is answered with a WelcomeResponse: the address
bound (the real port when port 0 was asked for), or why not. A listener
accepts connections into its own group, each in the state the state machine
gives accepted connections (awaiting its hello, with its handshake
deadline), up to Options.max_connections. One connection that fails to be
set up (a transport that raises, a socket option refused) is dropped alone:
its listener keeps listening. Out of descriptors, a listener stops watching
its socket until a channel closes and gives one back.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import Final

from .addresses import Address, TCPServerAddress, TLSServerAddress, UDSServerAddress, parse_address
from .channels import Channel, ChannelTable, Connection, Listener
from .generated import LISTEN_ON_HEADER, AmpeError, AmpeStatus, OpCode, WrongAddress
from .message import Message, header_of
from .options import Options
from .poller import READ
from .pool import Pool
from .resolver import Resolver
from .sockets import Resolved, listen, tune, unlink_uds
from .transfer import Transfer
from .transport import accept_wrapper, check_listen

__all__ = ["ACCEPTS_PER_EVENT", "Listeners"]

log = logging.getLogger("tofu")

ACCEPTS_PER_EVENT: Final = 64
_OUT_OF_RESOURCES: Final = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
_WELCOME_RESPONSE: Final = OpCode.WelcomeResponse


class Listeners:
    """One engine's listeners. adopt(conn): the engine takes an accepted
    connection in (its group, its timers, its registration); close(ch,
    status, detail): the engine's close."""

    def __init__(
        self,
        options: Options,
        pool: Pool,
        table: ChannelTable,
        transfer: Transfer,
        resolver: Resolver,
        adopt: Callable[[Connection], None],
        close: Callable[[Channel, AmpeStatus, str], None],
    ) -> None:
        self._options = options
        self._pool = pool
        self._table = table
        self._transfer = transfer
        self._resolver = resolver
        self._adopt = adopt
        self._close = close
        self._starved: set[Listener] = set()  # paused for lack of descriptors

    # ------------------------------------------------ opening

    def open(self, lst: Listener, welcome: Message) -> None:
        """Bind and listen for the posted WelcomeRequest `welcome`, then answer it."""
        lst.welcome = welcome
        try:
            address = parse_address(welcome)
            if not isinstance(address, (TCPServerAddress, TLSServerAddress, UDSServerAddress)):
                raise WrongAddress(f"a WelcomeRequest needs a {LISTEN_ON_HEADER} header")
            check_listen(address, self._options)
        except AmpeError as exc:
            self._failed(lst, exc.status, str(exc))
            return
        self._resolver.resolve_then(
            address,
            lambda resolved: self._bind(lst, address, resolved),
            lambda status, detail: self._failed(lst, status, detail),
        )

    def _failed(self, lst: Listener, status: AmpeStatus, detail: str) -> None:
        """The WelcomeRequest comes back as a WelcomeResponse with `status`; the listener closes."""
        welcome, lst.welcome = lst.welcome, None
        if welcome is not None:
            header_of(welcome).proto.op_code = _WELCOME_RESPONSE
            lst.mailbox.give_back(welcome, status)
        self._close(lst, status, detail)

    def _bind(self, lst: Listener, address: Address, resolved: Resolved) -> None:
        if lst.closed:
            return
        try:
            sock = listen(address, resolved)  # type: ignore[arg-type]
        except AmpeError as exc:
            self._failed(lst, exc.status, str(exc))
            return
        lst.sock = sock
        lst.wrap = accept_wrapper(address, self._options)
        if sock.family == socket.AF_UNIX:
            lst.uds_path = address.path  # type: ignore[union-attr]
            lst.uds_inode = os.stat(lst.uds_path).st_ino
            value = address.value
        else:
            # Tell the actual port: a listener may ask for port 0.
            value = type(address)(address.host, sock.getsockname()[1]).value  # type: ignore[call-arg,union-attr]
        log.debug("channel %d listening on %s", lst.number, value)
        welcome, lst.welcome = lst.welcome, None
        assert welcome is not None
        header_of(welcome).proto.op_code = _WELCOME_RESPONSE
        welcome.thdrs.clear()
        welcome.thdrs.append(LISTEN_ON_HEADER, value)
        lst.mailbox.give_back(welcome, AmpeStatus.success)
        self._transfer.set_events(lst, READ)

    # ------------------------------------------------ accepting

    def on_event(self, lst: Listener) -> None:
        """The listening socket is readable: accept what is waiting (unless
        the listener closed earlier in the same round: a stale event)."""
        if lst.closed:
            return
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
                    self._transfer.set_events(lst, 0)
                    self._starved.add(lst)
                else:
                    log.warning("channel %d: accept failed: %s", lst.number, exc)
                return
            self._accepted(lst, sock)

    def _accepted(self, lst: Listener, sock: socket.socket) -> None:
        """Set up one accepted socket; a failure drops it, never the listener."""
        conn: Connection | None = None
        try:
            if lst.full(self._options.max_connections):
                if not lst.refusing:  # once per episode, not once per connection
                    lst.refusing = True
                    log.warning("channel %d: %d connections open: refusing more", lst.number, lst.open_connections)
                sock.close()
                return
            transport = lst.wrap(sock)
            if transport is None:  # refused (logged)
                sock.close()
                return
            conn = self._table.accept(lst.mailbox)
            if conn is None:
                log.warning("channel %d: every channel number is in use; refusing a connection", lst.number)
                sock.close()
                return
            conn.sock, conn.transport = sock, transport
            conn.listener = lst
            lst.open_connections += 1
            tune(sock)
            self._adopt(conn)
            log.debug("channel %d accepted on listener %d", conn.number, lst.number)
        except Exception as exc:  # one bad connection: dropped alone, the listener goes on
            log.warning("channel %d: dropped an incoming connection: %s: %s", lst.number, type(exc).__name__, exc)
            if conn is not None:
                self._close(conn, AmpeStatus.accept_failed, f"{type(exc).__name__}: {exc}")
            else:
                sock.close()

    # ------------------------------------------------ closing

    def closed(self, lst: Listener) -> None:
        """`lst` closed: its socket file goes, and a WelcomeRequest not yet
        answered goes back to the pool."""
        self._starved.discard(lst)
        if lst.uds_path:
            unlink_uds(lst.uds_path, lst.uds_inode)
        if lst.welcome is not None:
            self._pool.put(lst.welcome)
            lst.welcome = None

    def connection_closed(self, lst: Listener) -> None:
        """A connection `lst` accepted closed (Options.max_connections)."""
        lst.open_connections -= 1
        if lst.refusing and not lst.full(self._options.max_connections):
            lst.refusing = False
            log.info("channel %d: accepting connections again", lst.number)

    def descriptor_freed(self) -> None:
        """A socket closed: listeners out of descriptors accept again."""
        if self._starved:
            for lst in self._starved:
                self._transfer.set_events(lst, READ)
            self._starved.clear()
