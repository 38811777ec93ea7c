"""ChannelGroup: where an application posts messages and receives them.

Each group has its own receive queue (its mailbox, runtime/mailbox.py).
Messages of a channel go to the group that opened it; connections accepted
by a listener belong to the listener's group. post() and update_receiver()
may be called from any thread; wait_receive() from one thread at a time per
group.

post() checks the message (the protocol's order, docs/protocol.md), then
asks the channel's protocol whether this side may send it in the channel's
state now (runtime/protocol.py, the state machine's table): a refusal raises
its error and the caller keeps the message. Then the message goes to the
I/O thread through the engine's inbox, or straight to the socket when the
connection is idle (runtime/direct.py).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from time import monotonic
from typing import Final, Self, cast

from .channels import APP, ChannelTable, Connection
from .direct import DirectWriter
from .direct_receive import DirectReceiver
from .generated import (
    CHANNEL_ENGINE,
    FIRST_MESSAGE_ID,
    MAX_BODY_LEN,
    MAX_HEADERS_LEN,
    OP_ROLE,
    OP_TYPE,
    AmpeError,
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
from .inbox import Inbox
from .mailbox import SHUTDOWN, Mailbox
from .message import BinaryHeader, Message, body_buffer, headers_buffer, restore, take

__all__ = [
    "WAIT_RECEIVE_INFINITE_TIMEOUT",
    "WAIT_RECEIVE_SEC_TIMEOUT",
    "ChannelGroup",
    "PostTimeout",
    "mailbox_of",
]


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


class ChannelGroup:
    """A set of channels with one receive queue. Made by `Ampe.create()`.

    Also a context manager: leaving `with ampe.create() as chnls:` destroys
    the group (closing its channels), like the reference's
    `defer tofu.DestroyChannels(ampe, chnls)`."""

    def __init__(
        self,
        mailbox: Mailbox,
        inbox: Inbox,
        table: ChannelTable,
        writer: DirectWriter,
        receiver: DirectReceiver,
        resume: Callable[[Mailbox], None],
        retire: Callable[[Mailbox], None],
    ) -> None:
        # The engine's parts this group works with (runtime/reactor.py makes them).
        self._mailbox = mailbox
        self._inbox = inbox
        self._table = table
        self._writer = writer
        self._receiver = receiver
        self._direct = receiver.enabled  # Options.direct_receive
        self._resume = resume
        self._retire = retire
        self._windowed = table.windowed  # Options.max_unsent_msgs: channels have send windows
        self._stopped = False  # wait_receive() met the engine's stop: it raises from now on

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._retire(self._mailbox)

    def post(self, msg: Message | None, timeout: float | None = None) -> BinaryHeader:
        """Hand `msg` to the engine and return a copy of its binary header with
        the assigned channel_number and message_id.

        With Options.max_unsent_msgs set, post() waits while the channel's send
        window is full: at most `timeout` seconds (None: until there is room),
        then it raises PostTimeout and `msg` stays with the caller. It never
        waits on the engine's own thread (a post from a delivery hook): there
        a full window raises PostTimeout at once.

        Checks, in this order (docs/protocol.md), raising and leaving `msg` with
        the caller: InvalidOpCode, InvalidMessageId, InvalidMoreUsage,
        InvalidChannelNumber, InvalidHeadersLen, WrongAddress, InvalidBodyLen;
        then InvalidChannelNumber / InvalidMessageChannelGroup when the channel
        is unknown or belongs to another group; then the state machine's
        refusal: NotAllowed when this side may not send that op code in the
        channel's state (docs/protocol.md, "Channel states"), ChannelClosed
        when the channel is closing. On success `msg` is emptied: any later
        use of it raises NotAllowed."""
        inbox = self._inbox
        if inbox.closing:
            raise ShutdownStarted("the engine is shutting down")
        mailbox = self._mailbox
        if mailbox.destroyed:
            raise NotAllowed("this channel group was destroyed")
        if msg is None:
            raise NullMessage("post() needs a message")
        bh = msg.bhdr  # raises NotAllowed if msg was already posted
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
        thdrs = headers_buffer(msg)
        if len(thdrs) > MAX_HEADERS_LEN:
            raise InvalidHeadersLen(f"text headers are {len(thdrs)} bytes, at most {MAX_HEADERS_LEN} fit")
        if opens and not thdrs:
            raise WrongAddress(f"a {op.name} needs an address header")
        body_len = len(body_buffer(msg))
        if body_len > MAX_BODY_LEN:
            raise InvalidBodyLen(f"body is {body_len} bytes, at most {MAX_BODY_LEN} fit")
        if message_id == 0:
            message_id = _next_message_id()
        if opens:
            # Welcome/HelloRequest always open a new channel, so a returned
            # request can be posted again as it is to retry.
            ch = self._table.open(mailbox, op, message_id)
            moved = True
        else:
            found = self._table.get(number)
            if found is None or number == CHANNEL_ENGINE:
                raise InvalidChannelNumber(f"channel {number} is not open")
            if found.mailbox is not mailbox:
                raise InvalidMessageChannelGroup(f"channel {number} belongs to another channel group")
            ch = found
            window = self._table.window(number) if self._windowed and op is not _BYE_SIGNAL else None
            if window is not None:
                # Options.max_unsent_msgs: wait until the channel has room (never on the I/O thread).
                on_io_thread = threading.current_thread() is inbox.io_thread
                if not window.acquire(0 if on_io_thread else timeout):
                    if on_io_thread:  # only that thread could free a permit
                        raise PostTimeout(
                            f"channel {number}: no room in the send window, and the engine's thread does not wait"
                        )
                    raise PostTimeout(f"channel {number}: no room in the send window within {timeout} s")
                if inbox.closing:
                    raise ShutdownStarted("the engine is shutting down")
            try:
                moved = ch.protocol.post(op)  # the state machine: may this side send `op` now?
            except AmpeError:
                if window is not None:
                    window.release(1)
                raise
        proto.op_code = op
        proto.origin = _APPLICATION
        proto.internal_a = 1 if op is _BYE_SIGNAL else 0  # the engine's trigger for an abort, as in the reference
        proto.internal_b = 0  # the mark of the engine's own notices (Message.is_close_notice)
        bh.status = 0
        bh.message_id = message_id
        bh.channel_number = ch.number
        header = bh.copy()
        taken = take(msg)
        if is_regular and not moved and ch.direct_ok and isinstance(ch, Connection) and self._writer.write(ch, taken):
            return header
        if not inbox.submit(ch, taken):
            restore(msg, taken)
            raise ShutdownStarted("the engine is shutting down")
        # After the append: no later post writes directly until the I/O thread
        # has written this message (see runtime/direct.py).
        ch.direct_ok = False
        return header

    def wait_receive(self, timeout: float | None = None) -> Message | None:
        """The next message for this group, or None after `timeout` seconds.

        None waits forever, 0 does not wait. Raises ShutdownStarted once the
        engine has stopped and every message it queued has been received,
        and on every call after that."""
        if self._stopped:
            raise ShutdownStarted("the engine has stopped")
        mailbox = self._mailbox
        try:
            # Read the group's one connection here rather than wait for the
            # I/O thread to (runtime/direct_receive.py). What it reads is
            # queued before anything may raise; the message is taken from the
            # queue, as always.
            sole = cast(Connection | None, mailbox.sole)  # (kept by the channel table)
            conn = sole if self._direct and not mailbox.qsize() else None
            if sole is None and mailbox.reading is not None:
                self._receiver.give_back(mailbox)  # a second connection came: the first is the I/O thread's again
            if timeout is None:
                if conn is not None:
                    self._receiver.receive(mailbox, conn, 0.0)
                msg = mailbox.get()
            elif timeout <= 0:
                if conn is not None and conn.reader == APP:  # lent to this thread: read what is there
                    self._receiver.receive(mailbox, conn, -1.0)
                msg = mailbox.get(False)
            else:
                if conn is not None:
                    deadline = monotonic() + timeout
                    if self._receiver.receive(mailbox, conn, deadline):
                        timeout = 0.0  # queued: take it
                    else:
                        timeout = deadline - monotonic()
                msg = mailbox.get(True, timeout) if timeout > 0 else mailbox.get(False)
        except queue.Empty:
            return None
        if msg is SHUTDOWN:
            self._stopped = True  # every later call raises too
            raise ShutdownStarted("the engine has stopped")
        if mailbox.paused and not mailbox.resume_requested and mailbox.qsize() <= mailbox.resume_at:
            mailbox.resume_requested = True
            self._resume(mailbox)
        return msg  # type: ignore[return-value]

    def update_receiver(self, msg: Message | None = None) -> None:
        """Wake this group's receiver with `msg` (or an empty Signal), its
        status set to receiver_update. Any thread may call it; `msg` is
        handed over as with post()."""
        update = Message(OpCode.Signal) if msg is None else take(msg)
        update.bhdr.status = AmpeStatus.receiver_update
        update.bhdr.proto.origin = OriginFlag.engine
        update.bhdr.proto.more = MoreMessagesFlag.last
        self._mailbox.deliver(update)

    def pending(self) -> int:
        """Messages queued for this group and not yet received."""
        return self._mailbox.qsize()


def mailbox_of(group: ChannelGroup) -> Mailbox:
    """The engine's side of `group` (for tofu.aio, which installs its
    delivery hook there, and the engine's own tests)."""
    return group._mailbox
