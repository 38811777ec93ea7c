"""ChannelGroup: where an application posts messages and receives them.

Each group has its own receive queue. Messages of a channel go to the group
that opened it; connections accepted by a listener belong to the listener's
group. post() and update_receiver() may be called from any thread;
wait_receive() from one thread at a time per group.
"""

from __future__ import annotations

import itertools
import queue
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Self

from .generated import (
    CHANNEL_ENGINE,
    FIRST_MESSAGE_ID,
    MAX_BODY_LEN,
    MAX_HEADERS_LEN,
    OP_ROLE,
    OP_TYPE,
    AmpeStatus,
    InvalidBodyLen,
    InvalidChannelNumber,
    InvalidHeadersLen,
    InvalidMessageChannelGroup,
    InvalidMessageId,
    InvalidMoreUsage,
    InvalidOpCode,
    MessageRole,
    MessageType,
    MoreMessagesFlag,
    NotAllowed,
    NullMessage,
    OpCode,
    OriginFlag,
    SendFailed,
    ShutdownStarted,
    WrongAddress,
)
from .message import BinaryHeader, Message

if TYPE_CHECKING:
    from .channels import Channel
    from .reactor import Reactor

__all__ = ["WAIT_RECEIVE_INFINITE_TIMEOUT", "WAIT_RECEIVE_SEC_TIMEOUT", "ChannelGroup", "PostTimeout"]


class PostTimeout(SendFailed):
    """post(msg, timeout=...) waited `timeout` seconds for room in the
    channel's send window (Options.max_unsent_msgs) and got none: the message
    was not posted and still belongs to the caller, who may post it again.
    A SendFailed (status send_failed): the protocol's statuses are fixed."""


# wait_receive() timeouts by the reference's names (waitReceive_INFINITE_TIMEOUT,
# waitReceive_SEC_TIMEOUT), in seconds as Python counts them.
WAIT_RECEIVE_INFINITE_TIMEOUT: None = None
"""`wait_receive(WAIT_RECEIVE_INFINITE_TIMEOUT)` waits as long as it takes (the reference's
waitReceive_INFINITE_TIMEOUT; it is None)."""
WAIT_RECEIVE_SEC_TIMEOUT: float = 1.0
"""One second, as a `wait_receive()` timeout (the reference's waitReceive_SEC_TIMEOUT)."""

# Message ids are unique across the process, as in the reference (the bound
# __next__ of one counter: atomic, and compiled code calls it without looking up next()).
_next_message_id: Final = itertools.count(FIRST_MESSAGE_ID).__next__

# Final: compiled code holds these in C variables instead of looking them up per message.
_BYE_SIGNAL: Final = OpCode.ByeSignal
_HELLO_REQUEST: Final = OpCode.HelloRequest
_APPLICATION: Final = OriginFlag.application

# What post() checks of each op code, looked up once per message:
# op code -> (member, is a response, is regular, opens a channel).
_OP_CHECKS: Final[dict[int, tuple[OpCode, bool, bool, bool]]] = {
    op: (
        op,
        OP_ROLE[op] is MessageRole.response,
        OP_TYPE[op] is MessageType.regular,
        op in (OpCode.WelcomeRequest, OpCode.HelloRequest),
    )
    for op in OpCode
}


class _Shutdown:
    """Queued last when the engine stops: wait_receive then raises ShutdownStarted."""


SHUTDOWN: Final = _Shutdown()


class ChannelGroup:
    """A set of channels with one receive queue. Made by `Ampe.create()`.

    Also a context manager: leaving `with ampe.create() as chnls:` destroys
    the group (closing its channels), like the reference's
    `defer tofu.DestroyChannels(ampe, chnls)`."""

    def __init__(self, reactor: Reactor) -> None:
        self._reactor = reactor
        self._set_queue(queue.SimpleQueue())
        self._max_queued = reactor._options.max_queued_msgs
        self._destroyed = False
        self._stopped = False  # wait_receive() met the engine's stop: it raises from now on
        # Backpressure, shared with the I/O thread (see Options.max_queued_msgs).
        self._paused = False
        self._resume_requested = False
        self._resume_at = max(reactor._options.max_queued_msgs // 2, 1)
        # Called on the I/O thread after messages were queued (used by tofu.aio).
        self._on_delivery: Callable[[], None] | None = None
        # The engine's own bookkeeping, touched only on its I/O thread.
        self._channels: set[Channel] = set()

    def _set_queue(self, q: queue.SimpleQueue[Message | _Shutdown]) -> None:
        """Receive through `q` (a test may hand in a queue of its own)."""
        self._queue = q
        # Its bound methods, looked up once: each is called for every message.
        self._get = q.get
        self._put = q.put
        self._qsize = q.qsize

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._reactor._retire_group(self)

    def post(self, msg: Message | None, timeout: float | None = None) -> BinaryHeader:
        """Hand `msg` to the engine and return a copy of its binary header with
        the assigned channel_number and message_id.

        With Options.max_unsent_msgs set, post() waits while the channel's send
        window is full: at most `timeout` seconds (None: until there is room),
        then it raises PostTimeout and `msg` stays with the caller.

        Checks, in this order (docs/protocol.md), raising and leaving `msg` with
        the caller: InvalidOpCode, InvalidMessageId, InvalidMoreUsage,
        InvalidChannelNumber, InvalidHeadersLen, WrongAddress, InvalidBodyLen;
        then InvalidChannelNumber / InvalidMessageChannelGroup when the channel
        is unknown or belongs to another group. On success `msg` is emptied:
        any later use of it raises NotAllowed."""
        reactor = self._reactor
        if reactor._closing:
            raise ShutdownStarted("the engine is shutting down")
        if self._destroyed:
            raise NotAllowed("this channel group was destroyed")
        if msg is None:
            raise NullMessage("post() needs a message")
        bh = msg.bhdr  # raises NotAllowed if msg was already posted; the slots from here on
        proto = bh.proto
        checks = _OP_CHECKS.get(proto.op_code)
        if checks is None:
            raise InvalidOpCode(f"invalid op code {proto.op_code!r}")
        op, is_response, is_regular, opens = checks
        message_id = bh.message_id
        if is_response and message_id == 0:
            raise InvalidMessageId(f"a {op.name} needs the message id of its request")
        if proto.more and not is_regular:
            raise InvalidMoreUsage(f"the more flag is only for Request, Response and Signal, not {op.name}")
        number = bh.channel_number
        if number == 0 and not opens:
            raise InvalidChannelNumber(f"{op.name} needs the channel number of an open channel")
        thdrs = msg._thdrs._buf
        if len(thdrs) > MAX_HEADERS_LEN:
            raise InvalidHeadersLen(f"text headers are {len(thdrs)} bytes, at most {MAX_HEADERS_LEN} fit")
        if opens and not thdrs:
            raise WrongAddress(f"a {op.name} needs an address header")
        body_len = len(msg._body._buf)
        if body_len > MAX_BODY_LEN:
            raise InvalidBodyLen(f"body is {body_len} bytes, at most {MAX_BODY_LEN} fit")
        if not opens:
            owner = reactor._numbers.owner(number)
            if owner is None or number == CHANNEL_ENGINE:
                raise InvalidChannelNumber(f"channel {number} is not open")
            if owner is not self:
                raise InvalidMessageChannelGroup(f"channel {number} belongs to another channel group")

        proto.op_code = op
        proto.origin = _APPLICATION
        bh.status = 0
        if op is _BYE_SIGNAL:
            proto.internal_a = 1  # the engine's trigger for an abort, as in the reference
        if message_id == 0:
            bh.message_id = _next_message_id()
        if opens:
            # Welcome/HelloRequest always open a new channel, so a returned
            # request can be posted again as it is to retry.
            bh.channel_number = reactor._open_channel_number(self, connection=op is _HELLO_REQUEST)
        elif op is not _BYE_SIGNAL and (window := reactor._windows.get(number)) is not None:
            # Options.max_unsent_msgs: wait until the channel has room.
            if not window.acquire(timeout):
                raise PostTimeout(f"channel {number}: no room in the send window within {timeout} s")
            if reactor._closing:
                raise ShutdownStarted("the engine is shutting down")
        return reactor._post(self, msg, bh, is_regular)

    def wait_receive(self, timeout: float | None = None) -> Message | None:
        """The next message for this group, or None after `timeout` seconds.

        None waits forever, 0 does not wait. Raises ShutdownStarted once the
        engine has stopped and every message it queued has been received,
        and on every call after that."""
        if self._stopped:
            raise ShutdownStarted("the engine has stopped")
        try:
            if timeout is None:
                msg = self._get()
            elif timeout <= 0:
                msg = self._get(False)
            else:
                msg = self._get(True, timeout)
        except queue.Empty:
            return None
        if msg is SHUTDOWN:
            self._stopped = True  # every later call raises too
            raise ShutdownStarted("the engine has stopped")
        if self._paused and not self._resume_requested and self._qsize() <= self._resume_at:
            self._resume_requested = True
            self._reactor._resume_reading(self)
        return msg  # type: ignore[return-value]

    def update_receiver(self, msg: Message | None = None) -> None:
        """Wake this group's receiver with `msg` (or an empty Signal), its
        status set to receiver_update. Any thread may call it; `msg` is
        handed over as with post()."""
        if msg is None:
            update = Message(OpCode.Signal)
        else:
            update = msg._take()
        update.bhdr.status = AmpeStatus.receiver_update
        update.bhdr.proto.origin = OriginFlag.engine
        update.bhdr.proto.more = MoreMessagesFlag.last
        self._put(update)
        if self._on_delivery is not None:
            self._on_delivery()

    def pending(self) -> int:
        """Messages queued for this group and not yet received."""
        return self._qsize()

    # ---- called on the engine's I/O thread

    def _deliver(self, msg: Message | _Shutdown) -> None:
        """Queue `msg` for the receiver (the engine's side of wait_receive)."""
        self._put(msg)
        if self._on_delivery is not None:
            self._on_delivery()

    def _over_limit(self) -> bool:
        """True when the receiver is Options.max_queued_msgs behind."""
        return self._qsize() >= self._max_queued
