"""Channels: the engine's table of channel numbers, and what each channel holds.

A channel is a listener (a listening socket) or a connection (a connected or
accepted socket). Each has its protocol (runtime/protocol.py: its state and,
for a connection, its frame decoder) and the mailbox of the group it belongs
to. Numbers 1..65534 are handed out round-robin, so a number that was just
closed is the last to come back: a late message for an old channel is far
less likely to meet a new connection that reuses its number.

post() makes the channel it opens (a listener for a WelcomeRequest, a
connection for a HelloRequest) on the application's thread, so the channel
and its state exist from the moment post() returns its number; the I/O
thread makes the connections its listeners accept.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Final, TypeVar

from .generated import CHANNEL_MAX, CHANNEL_MIN, HEADER_SIZE, NotAllowed, OpCode
from .generated.machine import ACCEPTED_STATE, INITIAL_STATE
from .mailbox import Mailbox
from .message import Message
from .protocol import ChannelProtocol
from .timers import Timer
from .transport import NOT_CONNECTED, PlainTransport, Transport
from .window import SendWindow

__all__ = [
    "APP",
    "HANDED_BACK",
    "IO",
    "QUEUED_FRAME_COST",
    "QUEUED_MESSAGE_COST",
    "Channel",
    "ChannelTable",
    "Connection",
    "Listener",
]

# What a message waiting in a send queue counts for Options.max_unsent_bytes
# beyond its encoded size: its Python objects (a small message's dominate).
QUEUED_MESSAGE_COST: Final = 256
# What a queued message counts beyond its parts: its frame's header and the cost above.
QUEUED_FRAME_COST: Final = HEADER_SIZE + QUEUED_MESSAGE_COST

_WELCOME_REQUEST: Final = OpCode.WelcomeRequest

# Connection.reader: who reads the socket (runtime/direct_receive.py).
IO: Final = 0  # the I/O thread
APP: Final = 1  # lent to the thread that receives on its group (reading it while `polling`)
HANDED_BACK: Final = 2  # nobody until the I/O thread has acted on what that thread handed back


class Channel:
    """What every channel has: its number, its group's mailbox, its protocol
    and its socket.

    events: the poller events registered now (0: not registered).
    closed: the engine closed it (its number may already name another channel).
    direct_ok: a post may write to the socket itself (runtime/direct.py); only
        ever True for a Connection, here so post() clears it without a type test.
    """

    __slots__ = ("closed", "direct_ok", "events", "mailbox", "number", "protocol", "sock")

    def __init__(self, number: int, mailbox: Mailbox, protocol: ChannelProtocol) -> None:
        self.number = number
        self.mailbox = mailbox
        self.protocol = protocol
        self.sock: socket.socket | None = None
        self.events = 0
        self.closed = False
        self.direct_ok = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.protocol!r})"


class Listener(Channel):
    """A listening socket; the connections it accepts join its group.

    welcome: the WelcomeRequest, until the WelcomeResponse answers it.
    wrap: what to do with an accepted socket: its transport, or None to refuse it.
    open_connections, refusing: Options.max_connections (refusals are logged once per episode).
    """

    __slots__ = ("open_connections", "refusing", "uds_inode", "uds_path", "welcome", "wrap")

    def __init__(self, number: int, mailbox: Mailbox, protocol: ChannelProtocol) -> None:
        super().__init__(number, mailbox, protocol)
        self.welcome: Message | None = None
        self.uds_path: str | None = None
        self.uds_inode = 0
        self.wrap: Callable[[socket.socket], Transport | None] = PlainTransport
        self.open_connections = 0
        self.refusing = False

    def full(self, limit: int | None) -> bool:
        """Whether an accepted connection must be refused (Options.max_connections)."""
        return limit is not None and self.open_connections >= limit


class Connection(Channel):
    """A connected socket: what is queued to send, and how bytes cross it.

    sendq: messages posted and not yet encoded.
    outbuf: encoded bytes the kernel has not taken; inflight: the messages
        those bytes came from (given back if the channel dies first).
    queued: what the messages in sendq will cost, in bytes (encoded size plus
        QUEUED_MESSAGE_COST each): with outbuf, what Options.max_unsent_bytes bounds.
    transport: plain or TLS (runtime/transport.py); NOT_CONNECTED until a
        connecting socket exists. connecting: the socket is still connecting.
    listener: the listener that accepted it (None on the connecting side).
    hello: a copy of the HelloRequest this side sent, given back if the
        channel closes before the peer answers (the state says when).
    timers, timed_state: the running timers (runtime/deadlines.py) and the
        state they were set for; last_active: the last bytes either way.
    send_lock, direct_credit: who writes to the socket, the I/O thread or a
        posting thread (runtime/direct.py).
    recv_lock, reader, io_reading, polling, reclaim, gate, parcels, released,
        leased, receives, lease_seen: who reads the socket, the I/O thread or a
        receiving thread (runtime/direct_receive.py).
    throttled: reading stopped: too much unsent (Options.max_unsent_bytes).
    """

    __slots__ = (
        "connecting",
        "direct_credit",
        "gate",
        "hello",
        "inflight",
        "io_reading",
        "last_active",
        "lease_seen",
        "leased",
        "listener",
        "outbuf",
        "parcels",
        "polling",
        "queued",
        "reader",
        "receives",
        "reclaim",
        "recv_lock",
        "released",
        "send_lock",
        "sendq",
        "throttled",
        "timed_state",
        "timers",
        "transport",
    )

    def __init__(self, number: int, mailbox: Mailbox, protocol: ChannelProtocol) -> None:
        super().__init__(number, mailbox, protocol)
        self.sendq: deque[Message] = deque()
        self.outbuf = bytearray()
        self.inflight: list[Message] = []
        self.queued = 0
        self.connecting = False
        self.transport: Transport = NOT_CONNECTED
        self.listener: Listener | None = None
        self.hello: Message | None = None
        self.timers: dict[int, Timer] | None = None
        self.timed_state = -1
        self.last_active = 0.0
        # Held by the I/O thread while it writes, and by a post that writes
        # directly (reentrant: a flush may close the channel).
        self.send_lock = threading.RLock()
        self.direct_credit = False
        self.throttled = False
        # Who reads the socket (runtime/direct_receive.py): reader is IO (the
        # I/O thread), APP (lent to the thread receiving on its group, which
        # reads it while `polling`) or HANDED_BACK (the I/O thread must act
        # on what that thread read before anyone reads again).
        self.recv_lock = threading.Lock()
        self.reader = IO
        self.io_reading = False  # the I/O thread is reading it now
        self.polling = False  # the receiving thread is in a receive on it (it may use its descriptor)
        self.reclaim = False  # the lease takes it back from the receiving thread
        # The gate's token: taken (popped) by the receiving thread while it
        # reads, decodes and queues, and by a close; nobody waits for it.
        self.gate = [True]
        self.parcels: list[Callable[[], None]] = []  # a close's deliveries, left to the gate's holder
        self.released = False  # closed, and the I/O thread is done with the socket: the last user closes it
        self.leased = False  # lent, and the lease watches it
        self.receives = 0  # direct receives so far; lease_seen: as many at the lease's last look
        self.lease_seen = 0

    def over_unsent(self, limit: int | None) -> bool:
        """Whether to stop reading this connection (Options.max_unsent_bytes):
        from when its unsent bytes pass `limit` until they are down to half.
        Only accepted connections are throttled, and none that may not send
        more (it must still read the answer to its Bye)."""
        if limit is None or self.listener is None or not self.protocol.steady:
            self.throttled = False
            return False
        unsent = len(self.outbuf) + self.queued
        self.throttled = unsent > (limit // 2 if self.throttled else limit)
        return self.throttled


ChannelT = TypeVar("ChannelT", bound=Channel)


class ChannelTable:
    """The engine's channels by number and by group, with their send
    windows, and how a new channel is made.

    `open` (an application thread's post) and `accept` (the I/O thread) take
    the lock, as `remove` does (all rare: a connect, an accept, a close);
    `get` and `window` do not: a dict read is atomic, and post() calls them
    for every message. `recycle` and `release` are the engine's pool, for
    the protocols' decoders; `window_size` is Options.max_unsent_msgs.
    """

    def __init__(
        self,
        recycle: Callable[[], Message | None],
        release: Callable[[Message], None],
        window_size: int = 0,
        first: int = CHANNEL_MIN,
        last: int = CHANNEL_MAX,
    ) -> None:
        self._recycle = recycle
        self._release = release
        self._window_size = window_size
        self._first = first
        self._last = last
        self._next = first
        self._channels: dict[int, Channel] = {}
        self._windows: dict[int, SendWindow] = {}
        self._groups: dict[Mailbox, set[Channel]] = {}  # each group's channels
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._channels)

    def get(self, number: int) -> Channel | None:
        """The channel with this number, or None."""
        return self._channels.get(number)

    @property
    def windowed(self) -> bool:
        """Connections have send windows (Options.max_unsent_msgs)."""
        return self._window_size > 0

    def window(self, number: int) -> SendWindow | None:
        """The send window of this connection (None without Options.max_unsent_msgs)."""
        return self._windows.get(number)

    def snapshot(self) -> list[Channel]:
        """Every channel, now (a copy: channels come and go meanwhile)."""
        with self._lock:
            return list(self._channels.values())

    def of_group(self, mailbox: Mailbox) -> list[Channel]:
        """The channels of the group whose mailbox this is, now."""
        with self._lock:
            return list(self._groups.get(mailbox, ()))

    def open(self, mailbox: Mailbox, op: OpCode, first_mid: int) -> Channel:
        """The channel a WelcomeRequest or a HelloRequest posted to `mailbox`
        opens, in its initial state. NotAllowed when every number is in use."""
        if op is _WELCOME_REQUEST:
            ch: Channel | None = self._add(lambda n: Listener(n, mailbox, self._protocol(op, n, first_mid)), False)
        else:
            ch = self._add(lambda n: Connection(n, mailbox, self._protocol(op, n, first_mid)), True)
        if ch is None:
            raise NotAllowed("every channel number is in use")
        return ch

    def accept(self, mailbox: Mailbox) -> Connection | None:
        """A connection a listener of `mailbox`'s group accepted, awaiting its
        hello; None when every number is in use."""

        def make(number: int) -> Connection:
            lock = threading.Lock()
            protocol = ChannelProtocol(ACCEPTED_STATE, number, 0, self._recycle, self._release, lock)
            return Connection(number, mailbox, protocol)

        return self._add(make, True)

    def _protocol(self, op: OpCode, number: int, first_mid: int) -> ChannelProtocol:
        return ChannelProtocol(INITIAL_STATE[op], number, first_mid, self._recycle, self._release, threading.Lock())

    def _add(self, make: Callable[[int], ChannelT], windowed: bool) -> ChannelT | None:
        with self._lock:
            span = self._last - self._first + 1
            if len(self._channels) >= span:
                return None
            number = self._next
            while number in self._channels:
                number = number + 1 if number < self._last else self._first
            self._next = number + 1 if number < self._last else self._first
            ch = make(number)
            self._channels[number] = ch
            group = self._groups.setdefault(ch.mailbox, set())
            group.add(ch)
            _find_sole(ch.mailbox, group)
            if windowed and self._window_size:
                self._windows[number] = SendWindow(self._window_size)
            return ch

    def remove(self, ch: Channel) -> None:
        """Forget a closed channel: its number is free again, and every post
        waiting on its send window goes on."""
        with self._lock:
            if self._channels.get(ch.number) is not ch:
                return
            del self._channels[ch.number]
            group = self._groups[ch.mailbox]
            group.discard(ch)
            if not group:
                del self._groups[ch.mailbox]
            _find_sole(ch.mailbox, group)
            window = self._windows.pop(ch.number, None)
        if window is not None:
            window.close()


def _find_sole(mailbox: Mailbox, group: set[Channel]) -> None:
    """Keep `mailbox.sole`: the group's one connection, or None when it has
    none or several (its listeners do not count). Under the table's lock."""
    sole: Connection | None = None
    for ch in group:
        if type(ch) is Connection:
            if sole is not None:
                sole = None
                break
            sole = ch
    mailbox.sole = sole
