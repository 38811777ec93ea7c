"""Channels: the engine's table of channel numbers and the state of each channel.

A channel is a listener (a listening socket) or a connection (a connected or
accepted socket). Numbers 1..65534 are handed out round-robin, so a number
that was just closed is the last to come back: a late message for an old
channel is far less likely to land on a new connection that reuses its number.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .framing import FrameDecoder
from .generated import CHANNEL_MAX, CHANNEL_MIN, HEADER_SIZE, AmpeStatus
from .inbound import Inbound
from .message import Message
from .transport import NOT_CONNECTED, PlainTransport, Transport

if TYPE_CHECKING:
    from .groups import ChannelGroup
    from .timers import Timer

__all__ = ["QUEUED_FRAME_COST", "QUEUED_MESSAGE_COST", "Channel", "ChannelNumbers", "Connection", "Listener"]

# What a message waiting in a send queue counts for Options.max_unsent_bytes
# beyond its encoded size: its Python objects (a small message's dominate).
QUEUED_MESSAGE_COST = 256
# What a queued message counts beyond its parts: its frame's header and the cost above.
QUEUED_FRAME_COST = HEADER_SIZE + QUEUED_MESSAGE_COST


class ChannelNumbers:
    """Which channel numbers are in use, and by which channel group.

    `allocate` and `release` take a lock (they are rare: a connect, an accept,
    a close); `owner` does not: a dict read is atomic, and post() calls it for
    every message.
    """

    def __init__(self, first: int = CHANNEL_MIN, last: int = CHANNEL_MAX) -> None:
        self._first = first
        self._last = last
        self._next = first
        self._owners: dict[int, ChannelGroup] = {}
        self._lock = threading.Lock()

    def allocate(self, owner: ChannelGroup) -> int | None:
        """A free number for `owner`, or None when every number is in use."""
        with self._lock:
            span = self._last - self._first + 1
            if len(self._owners) >= span:
                return None
            number = self._next
            while number in self._owners:
                number = number + 1 if number < self._last else self._first
            self._owners[number] = owner
            self._next = number + 1 if number < self._last else self._first
            return number

    def release(self, number: int) -> None:
        with self._lock:
            self._owners.pop(number, None)

    def owner(self, number: int) -> ChannelGroup | None:
        return self._owners.get(number)

    def __len__(self) -> int:
        return len(self._owners)


class SendWindow:
    """How many more messages may be posted on one connection before post()
    waits (Options.max_unsent_msgs). post() takes a permit per message on an
    application thread; the I/O thread gives permits back once messages are
    written, and closes the window when the channel closes, which lets every
    waiting post go on (the engine then returns its message as undeliverable).

    One lock and no Condition: an idle connection costs a few dozen bytes; a
    waiting post blocks on a lock of its own, handed a permit by release().
    """

    __slots__ = ("_free", "_lock", "_open", "_waiters")

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._free = size
        self._open = True
        self._waiters: list[threading.Lock] = []  # few: the posting threads of one channel

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a permit, waiting at most `timeout` seconds (None: no limit).
        False when the time ran out first (no permit was taken)."""
        with self._lock:
            if self._free > 0 or not self._open:
                self._free -= 1
                return True
            if timeout is not None and timeout <= 0:
                return False
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        # Until release() hands this post a permit, or close(), or the time is up.
        if waiter.acquire(timeout=-1 if timeout is None else timeout):
            return True
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return False
        return True  # a permit was handed over just as the time ran out

    def release(self, n: int = 1) -> None:
        with self._lock:
            self._free += n
            while self._waiters and self._free > 0:
                self._free -= 1
                self._waiters.pop(0).release()

    def close(self) -> None:
        with self._lock:
            self._open = False
            while self._waiters:
                self._waiters.pop(0).release()


class Channel:
    """What every channel has: its number, its group and its socket."""

    __slots__ = ("closed", "direct_ok", "events", "first_mid", "group", "number", "sock")

    def __init__(self, number: int, group: ChannelGroup, first_mid: int) -> None:
        self.number = number
        self.group = group
        self.sock: socket.socket | None = None
        # The message id of the channel's first message: the channel_closed
        # Signal carries it, as the reference's does.
        self.first_mid = first_mid
        self.events = 0  # selector events registered now; 0 = not registered
        self.closed = False
        # A post may write to the socket itself (runtime/direct.py). Only
        # ever True for a Connection; here so post() clears it without a type test.
        self.direct_ok = False


class Listener(Channel):
    """A listening socket; accepted connections join the listener's group."""

    __slots__ = ("open_connections", "refusing", "uds_inode", "uds_path", "wrap")

    def __init__(self, number: int, group: ChannelGroup, first_mid: int) -> None:
        super().__init__(number, group, first_mid)
        self.uds_path: str | None = None
        self.uds_inode = 0
        # What to do with an accepted socket: its transport, or None to refuse it.
        self.wrap: Callable[[socket.socket], Transport | None] = PlainTransport
        self.open_connections = 0  # accepted and not yet closed (Options.max_connections)
        self.refusing = False  # over max_connections now: refusals were logged once

    def full(self, limit: int | None) -> bool:
        """Whether an accepted connection must be refused (Options.max_connections)."""
        return limit is not None and self.open_connections >= limit


class Connection(Channel):
    """A connected socket with its send queue, its frame decoder and the
    rules its peer's frames must follow (`inbound`; `accepted` is True for a
    connection a listener accepted).

    sendq: messages posted and not yet encoded.
    outbuf: encoded bytes not yet accepted by the kernel; inflight: the
        messages those bytes came from (returned to the application if the
        channel dies before they are written).
    queued: what the messages in sendq will cost, in bytes (their encoded
        size plus QUEUED_MESSAGE_COST each): with outbuf, the unsent data
        Options.max_unsent_bytes bounds.
    transport: how bytes cross the socket (plain or TLS, runtime/transport.py);
        NOT_CONNECTED until a connecting socket exists.
    send_lock, direct_ok, direct_credit: who may write to the socket, the
        I/O thread or a posting thread (runtime/direct.py).
    """

    __slots__ = (
        "bye_done",
        "bye_received",
        "bye_sent",
        "connecting",
        "deadline",
        "decoder",
        "direct_credit",
        "hello",
        "idle_timer",
        "inbound",
        "inflight",
        "last_active",
        "listener",
        "outbuf",
        "queued",
        "send_lock",
        "sendq",
        "throttled",
        "transport",
    )

    def __init__(
        self, number: int, group: ChannelGroup, first_mid: int, decoder: FrameDecoder, accepted: bool = False
    ) -> None:
        super().__init__(number, group, first_mid)
        self.decoder = decoder
        self.inbound = Inbound(accepted)
        self.sendq: deque[Message] = deque()
        self.outbuf = bytearray()
        self.inflight: list[Message] = []
        self.connecting = False
        self.transport: Transport = NOT_CONNECTED
        self.bye_sent = False  # a ByeRequest or ByeResponse went out: send nothing more
        self.bye_received = False  # the peer sent ByeRequest
        self.bye_done = False  # the Bye exchange is complete: a reset now is a normal close
        self.queued = 0
        self.throttled = False  # reading stopped: too much unsent (Options.max_unsent_bytes)
        self.listener: Listener | None = None  # the listener that accepted it
        # Timeouts (runtime/timers.py): `deadline` closes the channel unless
        # the handshake completes first; `hello` is a copy of the HelloRequest
        # this engine sent, returned to the application if the connect fails.
        self.deadline: Timer | None = None
        self.hello: Message | None = None
        self.idle_timer: Timer | None = None
        self.last_active = 0.0  # monotonic time of the last bytes read or written
        # Held by the I/O thread while it writes or closes, and by a post
        # that writes directly (reentrant: _flush may close the channel).
        self.send_lock = threading.RLock()
        self.direct_credit = False  # bytes were read since the last direct write

    def over_unsent(self, limit: int | None) -> bool:
        """Whether to stop reading this connection (Options.max_unsent_bytes):
        from when its unsent bytes pass `limit` until they are down to half.
        Only accepted connections are throttled, and none that said bye (it
        must still read the answer)."""
        if limit is None or self.listener is None or self.bye_sent:
            self.throttled = False
            return False
        unsent = len(self.outbuf) + self.queued
        self.throttled = unsent > (limit // 2 if self.throttled else limit)
        return self.throttled

    def stop_timers(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.hello = None

    def ended_status(self) -> AmpeStatus:
        """What the peer's end of the stream means now. Once either side has
        said bye it is the expected close (the reference even resets the
        connection right after a Bye exchange); before, the peer vanished."""
        if self.bye_sent or self.bye_received:
            return AmpeStatus.channel_closed
        return AmpeStatus.peer_disconnected
