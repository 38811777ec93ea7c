"""What a peer may send: the engine's check of every received frame, sans I/O.

A connection runs each frame its peer sends through `Inbound.admit` before the
application sees it. A frame that breaks a rule raises the AmpeError named
below; the engine then closes that channel, and its `channel_closed` Signal
names the status in `~close_reason` (docs/concepts.md, "What a peer may send").
In this order:

1. Only Request, Response, Signal, HelloRequest, HelloResponse, ByeRequest and
   ByeResponse travel on the wire: WelcomeRequest, WelcomeResponse and
   ByeSignal are local commands (InvalidOpCode, `invalid_op_code`).
2. The handshake: on an accepted connection the first frame is a
   HelloRequest; a HelloRequest comes once, from the side that connected; a
   HelloResponse once, from the side that accepted (NotAllowed, `not_allowed`).
3. `more` is only for Request, Response and Signal (InvalidMoreUsage,
   `invalid_more_usage`), as post() requires of the application.
4. Text headers are well formed (InvalidMessage, `invalid_message`), so every
   message the engine delivers can be read with `thdrs.get` and iteration.

A frame that passes is normalised: `origin` is application, `status` 0 and the
two internal bits of `proto` clear, whatever the peer put there (a peer
cannot pose as this engine, and a message reused for a reply carries nothing
of them back onto the wire). The channel number is the engine's business.
"""

from __future__ import annotations

from typing import Final

from .generated import (
    OP_ON_WIRE,
    InvalidMessage,
    InvalidMoreUsage,
    InvalidOpCode,
    NotAllowed,
    OpCode,
    OriginFlag,
)
from .message import Message, text_headers_problem

__all__ = ["Inbound"]

_REGULAR: Final = frozenset((OpCode.Request, OpCode.Response, OpCode.Signal))
_HELLO_REQUEST: Final = OpCode.HelloRequest
_HELLO_RESPONSE: Final = OpCode.HelloResponse
_APPLICATION: Final = OriginFlag.application


class Inbound:
    """The receive-side rules of one connection, with the little state the
    handshake needs. `accepted` is True on the side that accepted the
    connection (the server), False on the side that connected."""

    __slots__ = ("_accepted", "_answered", "_open")

    def __init__(self, accepted: bool) -> None:
        self._accepted = accepted
        self._open = not accepted  # regular traffic may flow (accepted side: after the HelloRequest)
        self._answered = False  # a HelloResponse arrived (connecting side)

    @property
    def hello_received(self) -> bool:
        """On the accepting side: the peer's HelloRequest has arrived."""
        return self._accepted and self._open

    def admit(self, msg: Message) -> None:
        """Check and normalise one received frame; raise the AmpeError of the
        first rule it breaks (see the module's docstring)."""
        bh = msg._bhdr  # a decoded frame: the slots (a posted message never comes here)
        p = bh.proto
        if p.op_code not in _REGULAR or not self._open:
            self._admit_other(msg)
        p.origin = _APPLICATION
        p.internal_a = p.internal_b = 0
        bh.status = 0
        buf = msg._thdrs._buf
        if buf and (problem := text_headers_problem(buf)) is not None:
            raise InvalidMessage(problem)

    def _admit_other(self, msg: Message) -> None:
        """The rare cases: Hello and Bye frames, anything before the handshake."""
        p = msg.bhdr.proto
        op = p.op_code
        if op not in OP_ON_WIRE:
            raise InvalidOpCode(f"the peer sent {getattr(op, 'name', op)}, which never travels on the wire")
        if op is _HELLO_REQUEST:
            if not self._accepted:
                raise NotAllowed("the accepting peer sent a HelloRequest")
            if self._open:
                raise NotAllowed("the peer sent a second HelloRequest")
        elif not self._open:
            raise NotAllowed(f"the peer sent {op.name} before its HelloRequest")
        elif op is _HELLO_RESPONSE:
            if self._accepted:
                raise NotAllowed("the connecting peer sent a HelloResponse")
            if self._answered:
                raise NotAllowed("the peer sent a second HelloResponse")
        if p.more and op not in _REGULAR:
            raise InvalidMoreUsage(f"the peer sent {op.name} with the more flag")
        if op is _HELLO_REQUEST:
            self._open = True
        elif op is _HELLO_RESPONSE:
            self._answered = True
