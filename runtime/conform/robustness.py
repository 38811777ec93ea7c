"""Bad input from one peer, and the limits, derived from the spec.

One case per response op code the state machine lets a peer send on an open
channel and that answers nothing there (a Response nobody asked for), one per
engine-only proto bit (origin, the internal bits), bad statuses, broken
streams. The frames the state machine refuses (local-only and invalid op
codes, a second HelloRequest, unasked Hello and Bye responses, anything
before the HelloRequest) are refusals.py's cases, made from the table. The
verdict on the bad connection itself is a "should" (the reference hands such
frames to its application as they are); that the server keeps serving a
second connection afterwards is a "must" (isolation=True).
"""

from __future__ import annotations

import contextlib
import random
import time

from tofu.generated import (
    MAX_BODY_LEN,
    MAX_HEADERS_LEN,
    OP_ON_WIRE,
    OP_ROLE,
    AmpeStatus,
    MessageRole,
    OpCode,
    OriginFlag,
)
from tofu.generated.codec import HEADER_SIZE, INTERNAL_A_SHIFT, INTERNAL_B_SHIFT
from tofu.generated.machine import ACCEPTOR_OPEN, RECEIVE

from .casespec import CaseSpec, Level
from .context import Context, Reaction, check, closed_how, describe
from .probe import ProbeError, fill_headers, frame

__all__ = ["limits", "robustness"]

_H = b"x-conform:bad\r\n"


def _no_answer(reaction: Reaction) -> str:
    """Closed or ignored passes; any answer, a stall or bad bytes fail."""
    verdict = reaction.verdict
    check(not reaction.bad and not reaction.replies, verdict)
    check(reaction.echo is not None or reaction.ended is not None, verdict)
    return verdict


def _keeps_working(reaction: Reaction) -> str:
    """Closed, ignored or answered passes; a stall or bad bytes fail."""
    verdict = reaction.verdict
    check(not reaction.bad, verdict)
    check(reaction.echo is not None or reaction.ended is not None, verdict)
    return verdict


def _unasked(op: OpCode) -> CaseSpec:
    def run(ctx: Context) -> str:
        conn, _ = ctx.hello()
        return _no_answer(ctx.react(conn, frame(op, ctx.mid(), _H, b"unasked")))

    title = f"{op.name} ({int(op)}) that answers nothing: closed or ignored, never answered"
    return CaseSpec(title, Level.should, run, isolation=True)


def _origin(ctx: Context) -> str:
    conn, _ = ctx.hello()
    mid = ctx.mid()
    reaction = ctx.react(conn, frame(OpCode.Request, mid, _H, b"origin", origin=OriginFlag.engine))
    for reply in reaction.replies:
        check(reply.bhdr.proto.origin == OriginFlag.application, f"answered with origin=engine: {describe(reply)}")
    return _keeps_working(reaction)


def _status(status: int) -> CaseSpec:
    def run(ctx: Context) -> str:
        conn, _ = ctx.hello()
        reaction = ctx.react(conn, frame(OpCode.Request, ctx.mid(), _H, b"status", status=status))
        for reply in reaction.replies:
            check(reply.bhdr.status == 0, f"answered with status {reply.bhdr.status}: {describe(reply)}")
        return _keeps_working(reaction)

    known = AmpeStatus(status).name if status in set(AmpeStatus) else "not a known status"
    return CaseSpec(
        f"a Request with status {int(status)} ({known}): any answer has status 0", Level.should, run, isolation=True
    )


def _internal(bit: int, shift: int) -> CaseSpec:
    def run(ctx: Context) -> str:
        conn, _ = ctx.hello()
        reaction = ctx.react(conn, frame(OpCode.Request, ctx.mid(), _H, b"bits", internal=1 << bit))
        verdict = _keeps_working(reaction)
        leaked = [r for r in reaction.replies if r.bhdr.proto.to_byte() >> shift & 1]
        return verdict + ("; the bit came back" if leaked else "")

    return CaseSpec(
        f"a Request with internal proto bit {shift} set: the connection keeps serving or closes",
        Level.should,
        run,
        isolation=True,
    )


def _truncated(ctx: Context) -> str:
    conn, _ = ctx.hello()
    data = frame(OpCode.Request, ctx.mid(), _H, b"z" * 100)
    ctx.send(conn, data[: HEADER_SIZE + 4])
    conn.shutdown_write()
    how = conn.recv_until_end()
    check(how is not None, f"still open {ctx.timeout:g} s after our FIN inside a frame")
    return f"closed ({closed_how(how)})"


def _random(ctx: Context) -> str:
    conn, _ = ctx.hello()
    noise = random.Random(1234).randbytes(512)  # the same bytes every run
    with contextlib.suppress(ProbeError):  # the server may close at once; the verdict below says so
        conn.send(noise)
    conn.shutdown_write()
    how = conn.recv_until_end()
    check(how is not None, f"still open {ctx.timeout:g} s after 512 random bytes and our FIN")
    return f"closed ({closed_how(how)})"


def _lying(ctx: Context) -> str:
    conn, _ = ctx.hello()
    head = frame(OpCode.Request, ctx.mid(), b"h" * MAX_HEADERS_LEN, b"b" * MAX_BODY_LEN)[: HEADER_SIZE + 10]
    ctx.send(conn, head)  # the header promises 131070 more bytes; 10 come, then nothing
    problem = ctx.health()
    check(problem is None, f"while one peer stalls inside a frame, a second connection is not served: {problem}")
    how = conn.recv_until_end(min(ctx.timeout, ctx.idle))
    if how is None:
        return f"second connection served; the stalled one still open after {min(ctx.timeout, ctx.idle):g} s"
    return f"second connection served; the stalled one closed ({closed_how(how)})"


def _unparsable_headers(ctx: Context) -> str:
    conn, _ = ctx.hello()
    reaction = ctx.react(conn, frame(OpCode.Request, ctx.mid(), b"no colon here\r\n:empty-name\r\n", b"headers"))
    return reaction.verdict


def robustness() -> list[CaseSpec]:
    cases: list[CaseSpec] = []
    for op in OpCode:  # the responses the table lets through on an open channel (the others: refusals.py)
        if op in OP_ON_WIRE and OP_ROLE[op] is MessageRole.response and RECEIVE[ACCEPTOR_OPEN][op] >= 0:
            cases.append(_unasked(op))
    cases.append(
        CaseSpec(
            "a Request with origin=engine: any answer has origin=application", Level.should, _origin, isolation=True
        )
    )
    cases.append(_status(AmpeStatus.invalid_message))
    cases.append(_status(255))
    cases.append(_internal(0, INTERNAL_A_SHIFT))
    cases.append(_internal(1, INTERNAL_B_SHIFT))
    cases.append(
        CaseSpec("a truncated frame then our FIN: the server closes", Level.should, _truncated, isolation=True)
    )
    cases.append(CaseSpec("512 random bytes then our FIN: the server closes", Level.should, _random, isolation=True))
    cases.append(
        CaseSpec(
            "a peer stalled inside a frame (lying length fields) does not stop the server serving others",
            Level.must,
            _lying,
            isolation=True,
        )
    )
    cases.append(
        CaseSpec(
            "a Request whose text headers do not parse (no colon, empty name; recorded)",
            Level.info,
            _unparsable_headers,
        )
    )
    return cases


# ================================================================ limits


def _largest(ctx: Context) -> str:
    conn, _ = ctx.hello()
    mid = ctx.mid()
    headers, body = fill_headers(MAX_HEADERS_LEN), b"\xa5" * MAX_BODY_LEN
    ctx.send(conn, frame(OpCode.Request, mid, headers, body))
    ctx.expect_echo(ctx.recv(conn, 1, "the Response to the largest frame")[0], mid, headers, body)
    return f"a {HEADER_SIZE + MAX_HEADERS_LEN + MAX_BODY_LEN}-byte frame echoed"


def _many_largest(ctx: Context) -> str:
    conn, _ = ctx.hello()
    headers, body = fill_headers(MAX_HEADERS_LEN), b"\x5a" * MAX_BODY_LEN
    mids = [ctx.mid() for _ in range(16)]
    ctx.send(conn, b"".join(frame(OpCode.Request, m, headers, body) for m in mids))
    for reply, m in zip(ctx.recv(conn, 16, "16 Responses"), mids, strict=True):
        ctx.expect_echo(reply, m, headers, body)
    return f"16 largest frames ({16 * (HEADER_SIZE + MAX_HEADERS_LEN + MAX_BODY_LEN)} B) in one write, all echoed"


def _silent(after_hello: bool) -> CaseSpec:
    def run(ctx: Context) -> str:
        conn = ctx.hello()[0] if after_hello else ctx.connect()
        start = time.monotonic()
        how = conn.recv_until_end(ctx.idle)
        if how is None:
            return f"still open after {ctx.idle:g} s (no idle timeout within the wait)"
        if conn.frames:
            return f"sent {describe(conn.frames[0])}, then closed ({closed_how(how)}) after {time.monotonic() - start:.1f} s"
        return f"closed ({closed_how(how)}) after {time.monotonic() - start:.1f} s"

    when = "after the handshake" if after_hello else "before any HelloRequest"
    return CaseSpec(f"a silent connection {when}, for --idle seconds (recorded)", Level.info, run)


def limits() -> list[CaseSpec]:
    return [
        CaseSpec(
            f"the largest frame: {MAX_HEADERS_LEN} B of text headers and {MAX_BODY_LEN} B of body"
            " (the u16 length fields cannot promise more)",
            Level.must,
            _largest,
        ),
        CaseSpec("16 largest frames (2 MiB) in one write are all echoed", Level.should, _many_largest),
        _silent(after_hello=False),
        _silent(after_hello=True),
    ]
