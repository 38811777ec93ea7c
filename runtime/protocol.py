"""A channel's protocol, sans I/O: its state, its frame decoder and the checks
on every frame its peer sends, driven by the generated state machine
(generated/machine.py, from the spec's [machine]; docs/protocol.md,
"Channel states", has the tables in words).

One ChannelProtocol per channel, as h11's Connection is one per HTTP
connection: bytes and posted op codes in, events and bytes out, no socket,
thread or clock. The engine drives it:

    proto = ChannelProtocol(ACCEPTED_STATE, number, recycle=..., release=..., lock=...)

    moved = proto.post(op_code)          # an application thread posts: legal now? (raises the
                                         # refusal's AmpeError; True when the state moved)
    for event in proto.receive(data):    # bytes the peer sent, in order:
        Message                          #   a frame to deliver
        Moved                            #   the state moved (the timers follow the state)
        Closing                          #   close now: the status and why (always the last event)
    proto.write(msg, out)                # encode a posted message, unless the last frame went out
    proto.finished                       # the last frame is written and the channel is over
    given_back = proto.close(status, unsent, hello, detail)   # what a close gives the application

Threads. post() runs on application threads, everything else on the
engine's I/O thread. The state is read without a lock; a move (a Hello or a
Bye, rare) is made under `lock`, re-checked there. A frame that keeps the
state needs no lock: the spec's table is built so that what a state keeps,
the state any move of the other side leads to keeps too (codegen checks it).

The checks on a received frame, in order: the table (what the peer may send
in this state); then the frame checks of the spec: `more` only on a Request,
Response or Signal (invalid_more_usage), a message id on every request and
response (invalid_message_id), well-formed text headers (invalid_message). A
frame that passes is normalised: origin application, status 0, both internal
bits clear, the local channel number; a Hello gets the peer's identity
headers, and no frame keeps a `~peer_*` header the peer wrote. A frame that
fails closes the channel: nothing of it, nor anything after it, is delivered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Final

from .framing import FrameDecoder, encode_into
from .generated import (
    CLOSE_DETAIL_HEADER,
    CLOSE_REASON_HEADER,
    OP_ROLE,
    OP_TYPE,
    STATUS_TO_ERROR,
    AmpeError,
    AmpeStatus,
    MessageRole,
    MessageType,
    OpCode,
    OriginFlag,
)
from .generated.machine import (
    RECEIVE,
    SEND,
    STATE_NAME,
    STATE_NOTIFY,
    STATE_PEER_END,
    STATE_RETURNS_HELLO,
    STATE_ROLE,
    STATE_TERMINAL,
    TERMINAL_OF,
    why,
)
from .identity import PEER_HEADER_MARK, stamp_identity
from .message import Message, header_of, headers_buffer, text_headers_problem

__all__ = ["ChannelProtocol", "Closing", "Moved", "notice"]

# Final: compiled code holds these in C variables.
_REQUEST: Final = OpCode.Request
_SIGNAL: Final = OpCode.Signal
_HELLO_REQUEST: Final = OpCode.HelloRequest
_HELLO_RESPONSE: Final = OpCode.HelloResponse
_BYE_REQUEST: Final = OpCode.ByeRequest
_BYE_RESPONSE: Final = OpCode.ByeResponse
_APPLICATION: Final = OriginFlag.application
_ENGINE: Final = OriginFlag.engine
_CHANNEL_CLOSED: Final = AmpeStatus.channel_closed
_PEER_DISCONNECTED: Final = AmpeStatus.peer_disconnected
_COMMUNICATION_FAILED: Final = AmpeStatus.communication_failed
_PEER_MARK: Final = PEER_HEADER_MARK
# Per op code: may it carry `more` (regular), does it need a message id (a request or response).
_MAY_CONTINUE: Final[tuple[bool, ...]] = tuple(OP_TYPE[op] is MessageType.regular for op in OpCode)
_NEEDS_ID: Final[tuple[bool, ...]] = tuple(OP_ROLE[op] is not MessageRole.signal for op in OpCode)


class Moved:
    """Event: a frame the peer sent moved the channel to `state` (a
    generated/machine.py state); the engine's timers follow the state."""

    __slots__ = ("state",)

    def __init__(self, state: int) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"Moved({_state_text(self.state)})"


class Closing:
    """Event: the channel must close now with `status`. channel_closed when a
    Bye exchange has completed (a normal close); otherwise the rule the peer
    broke, and `detail` says how, in words."""

    __slots__ = ("detail", "status")

    def __init__(self, status: AmpeStatus, detail: str = "") -> None:
        self.status = status
        self.detail = detail

    def __repr__(self) -> str:
        return f"Closing({self.status.name}, {self.detail!r})"


def _state_text(state: int) -> str:
    return f"{STATE_ROLE[state].name} {STATE_NAME[state]}"


def _drop(msg: Message) -> None:
    """A release that keeps nothing (no pool)."""


def notice(make: Callable[[], Message], number: int, first_mid: int, status: AmpeStatus, detail: str = "") -> Message:
    """The engine's channel_closed notice for channel `number` closed with
    `status` (made with `make`): a Signal, origin engine, internal bit B
    set, the channel's first message id; `~close_reason` unless the close was
    normal, `~close_detail` when there is more to say."""
    msg = make()
    bh = header_of(msg)
    p = bh.proto
    p.op_code = _SIGNAL
    p.origin = _ENGINE
    p.internal_b = 1
    bh.status = _CHANNEL_CLOSED
    bh.channel_number = number
    bh.message_id = first_mid
    if status is not _CHANNEL_CLOSED:
        msg.thdrs.append(CLOSE_REASON_HEADER, status.name)
    if detail:
        msg.thdrs.append(CLOSE_DETAIL_HEADER, detail)
    return msg


class ChannelProtocol:
    """The protocol of one channel (see the module's docstring).

    state: the channel's state, a generated/machine.py state id.
    number: the local channel number, given to every delivered frame.
    first_mid: the message id of the channel's first message (the
        HelloRequest's): the channel_closed notice carries it.
    decoder: the frame decoder of the peer's byte stream.
    recycle / release: where messages come from and go back to (the engine's
        pool); lock: held for every move of the state (any context manager).
    """

    __slots__ = ("_left", "_lock", "_make", "_release", "_wrote_last", "decoder", "first_mid", "number", "state")

    def __init__(
        self,
        state: int,
        number: int = 0,
        first_mid: int = 0,
        recycle: Callable[[], Message | None] | None = None,
        release: Callable[[Message], None] | None = None,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self.state = state
        self.number = number
        self.first_mid = first_mid
        self.decoder = FrameDecoder(recycle)
        self._make: Callable[[], Message | None] = recycle if recycle is not None else Message
        self._release: Callable[[Message], None] = release if release is not None else _drop
        self._lock: AbstractContextManager[object] = lock if lock is not None else nullcontext()
        self._wrote_last = False  # a ByeRequest or ByeResponse went out: nothing more does
        # The state the channel was in when a move ended it (a ByeSignal, the
        # last Bye frame): what its close gives back is that state's.
        self._left = state

    def __repr__(self) -> str:
        return f"ChannelProtocol(channel {self.number}, {_state_text(self.state)})"

    @property
    def steady(self) -> bool:
        """Requests, Responses and Signals leave the state as it is (an open
        channel, or one answering the peer's ByeRequest)."""
        state = self.state
        return SEND[state][_REQUEST] == state

    @property
    def terminal(self) -> bool:
        """The channel is over."""
        return STATE_TERMINAL[self.state]

    @property
    def finished(self) -> bool:
        """The last frame is written and the channel is over: the engine
        closes it once what it wrote has left."""
        return self._wrote_last and STATE_TERMINAL[self.state]

    # ------------------------------------------------ the application's side

    def post(self, op: int) -> bool:
        """The application posts `op` on this channel: check that the table
        allows it now and move the state as the table says. True when the
        state moved, False when it stays. Raises the refusal's AmpeError (the
        message stays with the caller)."""
        state = self.state
        if SEND[state][op] == state:  # the common case: a Request, Response or Signal on an open channel
            return False
        with self._lock:
            state = self.state
            nxt = SEND[state][op]
            if nxt < 0:
                raise self._refused(nxt, state, op)
            if not STATE_TERMINAL[state]:
                self._left = state
            self.state = nxt
        return nxt != state

    def _refused(self, cell: int, state: int, op: int) -> AmpeError:
        error = STATUS_TO_ERROR[AmpeStatus(-cell)]
        return error(f"{OpCode(op).name} on channel {self.number} ({_state_text(state)}): {why(True, state, op)}")

    # ------------------------------------------------ what the peer sends

    def receive(self, data: bytes | bytearray | memoryview, identity: Sequence[tuple[str, str]] = ()) -> list[object]:
        """Take the next bytes the peer sent; return the events, in order:
        each frame to deliver (a Message), Moved when a frame moved the
        state, and a Closing last when the channel must close. `identity`:
        the peer's identity headers, for the Hello frames."""
        events: list[object] = []
        try:
            frames = self.decoder.feed(data)
            broken: AmpeError | None = None
        except AmpeError as exc:  # an invalid op code: the frames before it count
            frames = exc.frames  # type: ignore[attr-defined]
            broken = exc
        release = self._release
        closing: Closing | None = None
        # Whether the channel is over, looked up again only when a frame moves
        # the state (a post that ends it meanwhile, a ByeSignal, is the I/O
        # thread's to act on next: frames read before that are delivered).
        over = STATE_TERMINAL[self.state]
        for msg in frames:
            if closing is not None or over:
                release(msg)  # nothing after a frame that closes the channel, nor once it is over
                continue
            bh = header_of(msg)
            p = bh.proto
            op = p.op_code
            state = self.state
            nxt = RECEIVE[state][op]
            if nxt < 0:
                closing = Closing(AmpeStatus(-nxt), f"the peer sent {op.name}: {why(False, state, op)}")
                release(msg)
                continue
            buf = headers_buffer(msg)
            if p.more or not bh.message_id or buf:  # the frame checks have work to do
                closing = self._frame_problem(msg, op)
                if closing is not None:
                    release(msg)
                    continue
            p.origin = _APPLICATION
            p.internal_a = p.internal_b = 0
            bh.status = 0
            bh.channel_number = self.number
            if op is _HELLO_REQUEST or op is _HELLO_RESPONSE:
                stamp_identity(msg, identity)
            elif buf and _PEER_MARK in buf:  # only the engine names the peer
                stamp_identity(msg)
            if not self.first_mid:
                self.first_mid = bh.message_id
            if nxt != state:  # a Hello or a Bye: the state moves
                with self._lock:  # re-checked: a post may have moved it meanwhile
                    state = self.state
                    nxt = RECEIVE[state][op]
                    if nxt >= 0:
                        if not STATE_TERMINAL[state]:
                            self._left = state
                        self.state = nxt
                if nxt < 0:
                    closing = Closing(AmpeStatus(-nxt), f"the peer sent {op.name}: {why(False, state, op)}")
                    release(msg)
                    continue
                over = STATE_TERMINAL[nxt]
                if nxt != state:
                    events.append(Moved(nxt))
                elif over:  # a post ended the channel meanwhile
                    release(msg)
                    continue
                events.append(msg)
                if over:  # a Bye exchange completed
                    closing = Closing(_CHANNEL_CLOSED)
                continue
            events.append(msg)
        if broken is not None and closing is None and not STATE_TERMINAL[self.state]:
            closing = Closing(broken.status, f"the peer sent {broken}")
        if closing is not None:
            events.append(closing)
        return events

    def _frame_problem(self, msg: Message, op: OpCode) -> Closing | None:
        """The spec's frame checks (see the module's docstring)."""
        bh = header_of(msg)
        if bh.proto.more and not _MAY_CONTINUE[op]:
            return Closing(AmpeStatus.invalid_more_usage, f"the peer sent {op.name} with the more flag")
        if not bh.message_id and _NEEDS_ID[op]:
            return Closing(AmpeStatus.invalid_message_id, f"the peer sent {op.name} with message id 0")
        buf = headers_buffer(msg)
        if buf:
            problem = text_headers_problem(buf)
            if problem is not None:
                return Closing(AmpeStatus.invalid_message, f"the peer sent {op.name} whose {problem}")
        return None

    # ------------------------------------------------ what this side sends

    def write(self, msg: Message, out: bytearray) -> bool:
        """Append `msg`'s frame to `out`; False (nothing written) once the
        channel's last frame, a ByeRequest or ByeResponse, went out: the
        message then stays unsent (it comes back when the channel closes)."""
        if self._wrote_last:
            return False
        encode_into(out, msg)
        op = header_of(msg).proto.op_code
        if op is _BYE_REQUEST or op is _BYE_RESPONSE:
            self._wrote_last = True
        return True

    # ------------------------------------------------ closing

    def peer_ended(self) -> Closing:
        """How the channel closes when the peer ends the stream now: the
        state's status (a normal close once either side said bye;
        peer_disconnected before, its HelloRequest unanswered while
        connecting), communication_failed for a peer that vanished in the
        middle of a frame; the detail says which."""
        state = self.state
        status = STATE_PEER_END[state]
        if status is not _PEER_DISCONNECTED:
            return Closing(status)
        if self.decoder.pending:
            return Closing(_COMMUNICATION_FAILED, "the peer closed the connection in the middle of a frame")
        if STATE_RETURNS_HELLO[state]:
            return Closing(status, "the peer closed the connection before answering the HelloRequest")
        return Closing(status)

    def close(
        self,
        status: AmpeStatus,
        unsent: Sequence[Message] = (),
        hello: Message | None = None,
        detail: str = "",
        silent: bool = False,
    ) -> list[Message]:
        """The channel closes with `status`: the messages to give the
        application, in order. Each of `unsent` (posted, not written) with
        `status` and origin engine; then, where the state gives the
        HelloRequest back and it is not among them, `hello` (the engine's
        copy of the one that went out) likewise; then the channel_closed
        notice. Nothing at all when the state does not notify (the
        application never saw the channel) or `silent` (its group is gone):
        the messages go back to the pool. The state becomes the role's
        terminal one. (A channel a move has ended already, a ByeSignal or
        its last Bye frame, closes as the state it left: a connect
        abandoned with a ByeSignal gives its HelloRequest back.)"""
        with self._lock:
            state = self.state
            if STATE_TERMINAL[state]:  # a move ended it: the close is the state's it left
                state = self._left
            self.state = TERMINAL_OF[state]
        if silent or not STATE_NOTIFY[state]:
            for msg in unsent:
                self._release(msg)
            if hello is not None:
                self._release(hello)
            return []
        given: list[Message] = []
        for msg in unsent:
            _returned(msg, status)
            given.append(msg)
        if hello is not None:
            if STATE_RETURNS_HELLO[state] and not any(header_of(m).proto.op_code is _HELLO_REQUEST for m in unsent):
                _returned(hello, status)
                given.append(hello)
            else:
                self._release(hello)
        given.append(notice(self._made, self.number, self.first_mid, status, detail))
        return given

    def _made(self) -> Message:
        msg = self._make()
        return msg if msg is not None else Message()


def _returned(msg: Message, status: AmpeStatus) -> None:
    """Mark `msg` as a message the engine gives back unsent, with `status`."""
    bh = header_of(msg)
    bh.proto.origin = _ENGINE
    bh.status = status
