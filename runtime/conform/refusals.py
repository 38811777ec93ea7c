"""What the channel state machine refuses: cases made from the table.

The cases are generated from generated/machine.py (the spec's [machine]),
not written by hand. The suite is a raw peer in the connector's role; the
server under test is the acceptor. For each acceptor state the suite can put
the server in deterministically (COVERED), one case per op code 0..15 that
RECEIVE refuses in that state, in that order (refused_cells()).

A case brings the server into the state, then writes the refused frame with
healthy frames behind it in one write (a HelloRequest and a Request before
the handshake, a Request after it), and checks the reaction the table names
for a refusal: the server closes the connection (FIN or reset) and sends
nothing more: no answer to the refused frame, nor to the frames behind it
("nothing of the frame, nor anything after it, is delivered"). The status the
server's channel closes with is not visible on the wire.

The states and how the suite reaches them, against a server that answers
every HelloRequest, Request and ByeRequest at once (`tofu serve`):

- awaiting_hello: a new connection; the refused frame is its first. The
  server's application never saw the channel, so the close is silent there.
- open: after the server's HelloResponse (the server's side moved to open
  when its application posted it, before the bytes left).

The other states are not covered. greeted and hello_and_bye last from the
HelloRequest (and a ByeRequest) until the server's application answers it,
bye_received from a ByeRequest until the ByeResponse: a frame sent behind
them lands in that state or in the next one depending on how the server's
reads cut the stream and how soon its application answers, and the two
react differently. bye_sent needs the server to post a ByeRequest of its
own, which an echo server never does. closed refuses nothing.

The verdict on the bad connection is a should (the reference delivers
every frame as it is: the table's `differs`); that a second connection is
served afterwards is a must (isolation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from tofu.generated import OpCode
from tofu.generated.codec import NUM_OP_CODES
from tofu.generated.machine import (
    ACCEPTOR_AWAITING_HELLO,
    ACCEPTOR_OPEN,
    RECEIVE,
    STATE_NAME,
    STATE_NOTIFY,
    refusal,
    why,
)

from .casespec import CaseSpec, Level
from .context import Context, check, closed_how
from .probe import Conn, frame

__all__ = ["COVERED", "op_text", "refusals", "refused_cells", "title"]

COVERED: Final = (ACCEPTOR_AWAITING_HELLO, ACCEPTOR_OPEN)
"""The acceptor states a raw peer puts a server in deterministically, in catalogue order."""

_H = b"x-conform:refused\r\n"


def refused_cells() -> list[tuple[int, int]]:
    """(state, op code) of each case, in catalogue order: per COVERED state,
    every op code 0..15 that RECEIVE refuses there."""
    return [(state, op) for state in COVERED for op, cell in enumerate(RECEIVE[state]) if cell < 0]


def op_text(op: int) -> str:
    """ "Request (0)", or "op code 10" past the last valid one."""
    return f"{OpCode(op).name} ({op})" if op < NUM_OP_CODES else f"op code {op}"


def title(state: int, op: int) -> str:
    """A case's title, from the table: the op code, the state, the refusal's
    status and the move's meaning."""
    status = refusal(RECEIVE[state][op]).name
    return f"{op_text(op)} in {STATE_NAME[state]}, refused ({status}): {why(False, state, op)}"


def _before_hello(ctx: Context) -> tuple[Conn, bytes]:
    """awaiting_hello: a new connection. Behind the refused frame, a
    HelloRequest: a server that took the refused frame would answer it."""
    return ctx.connect(), ctx.hello_bytes(ctx.mid())


def _after_hello(ctx: Context) -> tuple[Conn, bytes]:
    """open: the handshake is done."""
    return ctx.hello()[0], b""


_REACH: Final[dict[int, Callable[[Context], tuple[Conn, bytes]]]] = {
    ACCEPTOR_AWAITING_HELLO: _before_hello,
    ACCEPTOR_OPEN: _after_hello,
}


def _refused_frame(ctx: Context, op: int) -> bytes:
    if op == OpCode.HelloRequest:
        return ctx.hello_bytes(ctx.mid())  # a well-formed one: only the state makes it wrong
    return frame(op, ctx.mid(), _H, b"refused")


def _case(state: int, op: int) -> CaseSpec:
    status = refusal(RECEIVE[state][op]).name
    unseen = "" if STATE_NOTIFY[state] else "; the server's application never saw the channel"

    def run(ctx: Context) -> str:
        conn, behind = _REACH[state](ctx)
        reaction = ctx.react(conn, _refused_frame(ctx, op) + behind)
        check(
            not reaction.bad and not reaction.replies and reaction.echo is None and reaction.ended is not None,
            f"{reaction.verdict}; the table refuses it: the server closes, answering nothing",
        )
        return f"closed ({closed_how(reaction.ended)}), nothing answered ({status} is not visible on the wire{unseen})"

    return CaseSpec(title(state, op), Level.should, run, isolation=True)


def refusals() -> list[CaseSpec]:
    """One case per refused cell of the covered states (refused_cells())."""
    return [_case(state, op) for state, op in refused_cells()]
