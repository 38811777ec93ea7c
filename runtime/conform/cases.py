"""The service every tofu peer owes: handshake, framing, streams, close.

Each function returns the group's cases in order; a case body takes a
Context, raises CaseFailed (or a probe error) when the server misbehaves and
returns a short description of what it saw."""

from __future__ import annotations

from tofu.generated import (
    CHANNEL_MAX,
    CHANNEL_MIN,
    MAX_BODY_LEN,
    MAX_HEADERS_LEN,
    OP_ECHO,
    OP_ON_WIRE,
    OP_ROLE,
    MessageRole,
    OpCode,
)
from tofu.generated.codec import MAX_MESSAGE_ID

from .casespec import CaseSpec, Level
from .context import Context, check, closed_how, describe
from .probe import fill_headers, frame

__all__ = ["close", "framing", "handshake", "streams"]

_H = b"x-conform:yes\r\n"


def _echo_one(ctx: Context, headers: bytes, body: bytes, mid: int | None = None) -> str:
    conn, _ = ctx.hello()
    mid = ctx.mid() if mid is None else mid
    ctx.send(conn, ctx.request(mid, headers, body))
    ctx.expect_echo(ctx.recv(conn, 1, f"the Response to mid {mid}")[0], mid, headers, body)
    return f"echoed {len(headers)} B of text headers, {len(body)} B of body"


# ================================================================ handshake


def _hello_answered(ctx: Context) -> str:
    _conn, reply = ctx.hello()
    bh = reply.bhdr
    check(bh.status == 0, f"HelloResponse has status {bh.status}")
    check(bh.proto.origin == 0, "HelloResponse has origin=engine")
    check(not bh.proto.more, "HelloResponse has the more flag")
    return describe(reply)


def _channel_numbers(ctx: Context) -> str:
    conn, hello = ctx.hello()
    numbers = [hello.bhdr.channel_number]
    mids = [ctx.mid() for _ in range(3)]
    ctx.send(conn, b"".join(ctx.request(m, _H, b"n") for m in mids))
    numbers += [m.bhdr.channel_number for m in ctx.recv(conn, 3, "3 Responses")]
    ctx.send(conn, frame(OpCode.ByeRequest, ctx.mid()))
    numbers += [m.bhdr.channel_number for m in ctx.recv(conn, 1, "the ByeResponse")]
    check(all(CHANNEL_MIN <= n <= CHANNEL_MAX for n in numbers), f"channel numbers {numbers}")
    check(len(set(numbers)) == 1, f"channel numbers differ on one connection: {numbers}")
    return f"channel {numbers[0]} on all {len(numbers)} replies"


def handshake() -> list[CaseSpec]:
    # A frame other than a HelloRequest first, and a second HelloRequest: the
    # state machine refuses them (refusals.py has a case for each).
    return [
        CaseSpec(
            "HelloRequest gets a HelloResponse with its message id, status 0, origin application",
            Level.must,
            _hello_answered,
        ),
        CaseSpec(
            f"every reply on one connection carries one channel number in {CHANNEL_MIN}..{CHANNEL_MAX}",
            Level.must,
            _channel_numbers,
        ),
    ]


# ================================================================ framing


def _mixed(ctx: Context) -> str:
    conn, _ = ctx.hello()
    shapes = [(b"", b""), (_H, b""), (b"", b"body"), (_H, b"body"), (b"a:1\r\nb:2\r\n", b"\x00" * 300)] * 4
    mids = [ctx.mid() for _ in shapes]
    ctx.send(conn, b"".join(ctx.request(m, h, b) for m, (h, b) in zip(mids, shapes, strict=True)))
    replies = ctx.recv(conn, len(shapes), f"{len(shapes)} Responses")
    for reply, m, (h, b) in zip(replies, mids, shapes, strict=True):
        ctx.expect_echo(reply, m, h, b)
    return f"{len(shapes)} frames, with and without text headers and bodies"


def _hundred(ctx: Context) -> str:
    conn, _ = ctx.hello()
    mids = [ctx.mid() for _ in range(100)]
    ctx.send(conn, b"".join(ctx.request(m, _H, m.to_bytes(8, "big")) for m in mids))
    for reply, m in zip(ctx.recv(conn, 100, "100 Responses"), mids, strict=True):
        ctx.expect_echo(reply, m, _H, m.to_bytes(8, "big"))
    return "100 frames in one write, 100 Responses in order"


def _split(ctx: Context) -> str:
    """Frame i is cut after byte i+1: its tail goes in one write with the head
    of the next frame, and the next write waits for frame i's Response, so the
    server's read most likely ends exactly at the cut."""
    conn, _ = ctx.hello()
    body = b"0123456789"
    size = len(ctx.request(0, _H, body))
    mids = [ctx.mid() for _ in range(size - 1)]
    frames = [ctx.request(m, _H, body) for m in mids]
    ctx.send(conn, frames[0][:1])
    for i, f in enumerate(frames):
        chunk = f[i + 1 :]
        if i + 1 < len(frames):
            chunk += frames[i + 1][: i + 2]
        ctx.send(conn, chunk)
        reply = ctx.recv(conn, 1, f"the Response to the frame cut after byte {i + 1}")[0]
        ctx.expect_echo(reply, mids[i], _H, body)
    mid = ctx.mid()
    for byte in ctx.request(mid, _H, body):  # and one frame a byte per write
        ctx.send(conn, bytes([byte]))
    ctx.expect_echo(ctx.recv(conn, 1, "the Response to the frame sent a byte at a time")[0], mid, _H, body)
    return f"a {size}-byte frame cut at each of its {size - 1} boundaries, and sent a byte per write"


def _message_ids(ctx: Context) -> str:
    conn, _ = ctx.hello()
    mids = [1, 2**32, MAX_MESSAGE_ID]
    ctx.send(conn, b"".join(ctx.request(m, _H, b"id") for m in mids))
    for reply, m in zip(ctx.recv(conn, 3, "3 Responses"), mids, strict=True):
        ctx.expect_echo(reply, m, _H, b"id")
    return "message ids 1, 2**32 and 2**64-1 came back intact"


def _header_forms(ctx: Context) -> str:
    headers = b"x-a:1\r\nx-b: spaced value \r\n\r\nx-c:\tlast-without-crlf"
    return _echo_one(ctx, headers, b"forms")


def _signal(ctx: Context) -> str:
    conn, _ = ctx.hello()
    mid = ctx.mid()
    reaction = ctx.react(conn, frame(OpCode.Signal, mid, _H, b"signal"))
    echoed = [m for m in reaction.replies if m.bhdr.message_id == mid]
    if echoed and echoed[0].bhdr.proto.op_code == OP_ECHO[OpCode.Signal]:
        return "echoed as a Signal"
    return reaction.verdict


def framing() -> list[CaseSpec]:
    cases = [
        CaseSpec("a Request with a 0-byte body is echoed", Level.must, lambda ctx: _echo_one(ctx, _H, b"")),
        CaseSpec("a Request with a 1-byte body is echoed", Level.must, lambda ctx: _echo_one(ctx, _H, b"\xff")),
        CaseSpec(
            f"a Request with a {MAX_BODY_LEN}-byte body (the limit) is echoed",
            Level.must,
            lambda ctx: _echo_one(ctx, _H, bytes(range(256)) * (MAX_BODY_LEN // 256) + b"!" * (MAX_BODY_LEN % 256)),
        ),
        CaseSpec(
            f"a Request with {MAX_HEADERS_LEN} bytes of text headers (the limit) is echoed",
            Level.must,
            lambda ctx: _echo_one(ctx, fill_headers(MAX_HEADERS_LEN), b"h"),
        ),
        CaseSpec("text headers as written: spaces, an empty line, a last line without CRLF", Level.must, _header_forms),
        CaseSpec("frames with and without text headers and bodies, in one write", Level.must, _mixed),
        CaseSpec("100 frames in one write come back, in order", Level.must, _hundred),
        CaseSpec("one frame cut at every byte boundary (TCP_NODELAY writes)", Level.must, _split),
        CaseSpec("message ids are opaque 64-bit values (1, 2**32, 2**64-1)", Level.must, _message_ids),
    ]
    # Other op codes whose spec has an echo and that a peer may send: recorded.
    for op in OpCode:
        if op in OP_ON_WIRE and op in OP_ECHO and OP_ROLE[op] is MessageRole.signal:
            cases.append(CaseSpec(f"a {op.name} (the spec's echo: {OP_ECHO[op].name}; recorded)", Level.info, _signal))
    return cases


# ================================================================ streams


def _stream(ctx: Context) -> str:
    conn, _ = ctx.hello()
    mid = ctx.mid()
    parts = [f"part {i}".encode() for i in range(10)]
    ctx.send(conn, b"".join(ctx.request(mid, _H, p, more=i < 9) for i, p in enumerate(parts)))
    for i, reply in enumerate(ctx.recv(conn, 10, "10 frames of one stream")):
        ctx.expect_echo(reply, mid, _H, parts[i], more=i < 9)
    return "10 frames with more=1..1,0 came back complete and in order"


def _interleaved(ctx: Context) -> str:
    conn, _ = ctx.hello()
    a, b = ctx.mid(), ctx.mid()
    sent = [(mid, i) for i in range(8) for mid in (a, b)]
    ctx.send(conn, b"".join(ctx.request(mid, _H, f"{mid}:{i}".encode(), more=i < 7) for mid, i in sent))
    replies = ctx.recv(conn, len(sent), f"{len(sent)} frames of two streams")
    for mid in (a, b):
        mine = [r for r in replies if r.bhdr.message_id == mid]
        check(len(mine) == 8, f"stream {mid}: {len(mine)} of 8 frames came back")
        for i, reply in enumerate(mine):
            ctx.expect_echo(reply, mid, _H, f"{mid}:{i}".encode(), more=i < 7)
    return "two interleaved streams of 8 frames each came back complete, each in order"


def _long_stream(ctx: Context) -> str:
    conn, _ = ctx.hello()
    mid = ctx.mid()
    count = 200

    def body(i: int) -> bytes:
        return i.to_bytes(4, "big") * 256

    ctx.send(conn, b"".join(ctx.request(mid, b"", body(i), more=i < count - 1) for i in range(count)))
    for i, reply in enumerate(ctx.recv(conn, count, f"{count} frames of one stream")):
        ctx.expect_echo(reply, mid, b"", body(i), more=i < count - 1)
    return f"{count} frames of 1 KiB in one write came back in order"


def _mid_zero(ctx: Context) -> str:
    conn, _ = ctx.hello()
    reaction = ctx.react(conn, ctx.request(0, _H, b"zero"))
    return reaction.verdict


def streams() -> list[CaseSpec]:
    return [
        CaseSpec("a 10-frame stream (more flag) comes back complete and in order", Level.must, _stream),
        CaseSpec("two interleaved streams come back complete, each in order", Level.must, _interleaved),
        CaseSpec("a 200-frame stream in one write comes back in order", Level.must, _long_stream),
        CaseSpec("a Request with message id 0 (a response needs a non-zero id; recorded)", Level.info, _mid_zero),
    ]


# ================================================================ close


def _bye(ctx: Context) -> str:
    conn, _ = ctx.hello()
    mid = ctx.mid()
    ctx.send(conn, frame(OpCode.ByeRequest, mid))
    reply = ctx.recv(conn, 1, "the ByeResponse")[0]
    check(
        reply.bhdr.proto.op_code == OP_ECHO[OpCode.ByeRequest] and reply.bhdr.message_id == mid,
        f"ByeRequest mid {mid} got {describe(reply)}",
    )
    return describe(reply)


def _bye_closes(ctx: Context) -> str:
    conn, _ = ctx.hello()
    ctx.send(conn, frame(OpCode.ByeRequest, ctx.mid()))
    ctx.recv(conn, 1, "the ByeResponse")
    how = conn.recv_until_end()
    check(how is not None, f"the connection is still open {ctx.timeout:g} s after the ByeResponse")
    check(not conn.frames, f"frames after the ByeResponse: {describe(conn.frames[0])}" if conn.frames else "")
    return f"closed ({closed_how(how)})"


def _bye_after_requests(ctx: Context) -> str:
    conn, _ = ctx.hello()
    mids = [ctx.mid() for _ in range(5)]
    bye = ctx.mid()
    ctx.send(conn, b"".join(ctx.request(m, _H, b"before bye") for m in mids) + frame(OpCode.ByeRequest, bye))
    replies = ctx.recv(conn, 6, "5 Responses and the ByeResponse")
    for reply, m in zip(replies, mids, strict=False):
        ctx.expect_echo(reply, m, _H, b"before bye")
    check(replies[5].bhdr.proto.op_code == OpCode.ByeResponse, f"last reply is {describe(replies[5])}")
    return "5 Responses, then the ByeResponse"


def _abort_mid_frame(ctx: Context) -> str:
    conn, _ = ctx.hello()
    data = ctx.request(ctx.mid(), _H, b"x" * 1000)
    ctx.send(conn, data[: len(data) // 2])
    conn.abort()
    return "reset our side in the middle of a frame"


def _fin_mid_frame(ctx: Context) -> str:
    conn, _ = ctx.hello()
    data = ctx.request(ctx.mid(), _H, b"x" * 1000)
    ctx.send(conn, data[:20])
    conn.close()
    return "closed our side (FIN) in the middle of a frame"


def _vanish(ctx: Context) -> str:
    conn, _ = ctx.hello()
    ctx.send(conn, b"".join(ctx.request(ctx.mid(), _H, b"y" * 4000) for _ in range(50)))
    conn.abort()
    return "reset our side with 50 Responses unread"


def close() -> list[CaseSpec]:
    return [
        CaseSpec("ByeRequest gets a ByeResponse with its message id", Level.must, _bye),
        CaseSpec("after the ByeResponse the server closes (FIN or reset)", Level.must, _bye_closes),
        CaseSpec(
            "Requests written before a ByeRequest are answered before the ByeResponse", Level.must, _bye_after_requests
        ),
        CaseSpec(
            "a peer resetting in the middle of a frame; others are still served",
            Level.must,
            _abort_mid_frame,
            isolation=True,
        ),
        CaseSpec(
            "a peer closing (FIN) in the middle of a frame; others are still served",
            Level.must,
            _fin_mid_frame,
            isolation=True,
        ),
        CaseSpec(
            "a peer vanishing with Responses unread; others are still served", Level.must, _vanish, isolation=True
        ),
    ]
