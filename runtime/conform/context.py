"""What a case works with: connections to the target, and the checks every
case shares (the handshake, an echo, a second healthy connection)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tofu import Message, TextHeaders
from tofu.generated import CHANNEL_MAX, CHANNEL_MIN, AmpeError, OpCode, OriginFlag
from tofu.generated.codec import NUM_OP_CODES

from .probe import Conn, ProbeError, Target, frame, hello_headers

__all__ = ["CaseFailed", "Context", "Reaction", "check", "closed_how", "describe"]


class CaseFailed(Exception):
    """A case's check did not hold; the message says what was seen."""


def check(condition: bool, message: str) -> None:
    """CaseFailed(message) unless `condition`."""
    if not condition:
        raise CaseFailed(message)


def closed_how(ended: str | None) -> str:
    """ "FIN" or "reset" for a Conn.ended value."""
    return "FIN" if ended == "fin" else str(ended)


def _difference(sent: bytes, got: bytes) -> str:
    """Where two byte strings part, with a few bytes of each from there."""
    at = next((i for i, (x, y) in enumerate(zip(sent, got, strict=False)) if x != y), min(len(sent), len(got)))
    return f"{len(sent)} B sent, {len(got)} B back, first difference at byte {at}: sent {sent[at : at + 16]!r}, got {got[at : at + 16]!r}"


def _op_name(op: int) -> str:
    return OpCode(op).name if 0 <= op < NUM_OP_CODES else f"op {op}"


def describe(msg: Message) -> str:
    """A short description of a received frame."""
    bh = msg.bhdr
    p = bh.proto
    parts = [_op_name(p.op_code), f"mid {bh.message_id}"]
    if p.more:
        parts.append("more")
    if p.origin:
        parts.append("origin=engine")
    if bh.status:
        parts.append(f"status {bh.status}")
    if p.internal_a or p.internal_b:
        parts.append(f"internal bits {p.internal_b}{p.internal_a}")
    parts.append(f"{len(bytes(msg.thdrs))}+{len(msg.body)} B")
    return " ".join(parts)


@dataclass
class Reaction:
    """What the server did after a questionable frame and a healthy Request
    behind it on the same connection."""

    replies: list[Message]  # frames other than the healthy Request's echo
    echo: Message | None  # the healthy Request's Response, if it came
    ended: str | None  # "fin" / "reset" if the server closed
    bad: str | None  # the server's own bytes were not valid frames

    @property
    def verdict(self) -> str:
        """closed, ignored, answered or stalled."""
        if self.bad:
            return "sent an invalid frame"
        if self.replies:
            return "answered: " + ", ".join(describe(m) for m in self.replies[:3])
        if self.echo is not None:
            return "ignored (connection still serves)"
        if self.ended:
            return f"closed ({closed_how(self.ended)})"
        return "stalled (no echo of the next Request, connection open)"


@dataclass
class Context:
    """One case's view of the target. Connections opened here are closed
    when the case ends; their bytes go into the report."""

    target: Target
    timeout: float
    idle: float
    conns: list[Conn] = field(default_factory=list)
    _next_mid: int = 0x7F00

    def mid(self) -> int:
        """A fresh message id for this case."""
        self._next_mid += 1
        return self._next_mid

    def connect(self) -> Conn:
        """A new raw connection (nothing sent)."""
        conn = Conn(self.target, self.timeout)
        self.conns.append(conn)
        return conn

    def close_all(self) -> None:
        for conn in self.conns:
            conn.close()

    # ------------------------------------------------------------ handshake
    def hello_bytes(self, mid: int) -> bytes:
        return frame(OpCode.HelloRequest, mid, hello_headers(self.target))

    def hello(self, conn: Conn | None = None) -> tuple[Conn, Message]:
        """Connect (unless given a connection) and do the handshake; the HelloResponse."""
        conn = conn or self.connect()
        mid = self.mid()
        conn.send(self.hello_bytes(mid))
        reply = self.recv(conn, 1, "the HelloResponse")[0]
        check(
            reply.bhdr.proto.op_code == OpCode.HelloResponse and reply.bhdr.message_id == mid,
            f"HelloRequest mid {mid} got {describe(reply)}, not a HelloResponse with mid {mid}",
        )
        return conn, reply

    def recv(self, conn: Conn, count: int, what: str, timeout: float | None = None) -> list[Message]:
        """`count` frames, or CaseFailed naming `what` was awaited."""
        try:
            return conn.recv_frames(count, timeout)
        except ProbeError as exc:
            raise CaseFailed(f"waiting for {what}: {exc}") from None

    def send(self, conn: Conn, data: bytes) -> None:
        try:
            conn.send(data)
        except ProbeError as exc:
            raise CaseFailed(f"sending: {exc}") from None

    # ------------------------------------------------------------ echo
    def request(
        self, mid: int, headers: bytes = b"", body: bytes = b"", *, more: bool = False, op: int = OpCode.Request
    ) -> bytes:
        return frame(op, mid, headers, body, more=more)

    def expect_echo(
        self,
        reply: Message,
        mid: int,
        headers: bytes,
        body: bytes,
        *,
        more: bool = False,
        op: OpCode = OpCode.Response,
    ) -> None:
        """CaseFailed unless `reply` is the echo of a frame with these parts."""
        bh = reply.bhdr
        p = bh.proto
        what = f"the {op.name} to mid {mid}"
        check(p.op_code == op, f"{what}: got {describe(reply)}")
        check(bh.message_id == mid, f"{what}: message id {bh.message_id}")
        check(bool(p.more) == more, f"{what}: more flag {p.more}, expected {int(more)}")
        check(p.origin == OriginFlag.application, f"{what}: origin=engine")
        check(bh.status == 0, f"{what}: status {bh.status}")
        check(CHANNEL_MIN <= bh.channel_number <= CHANNEL_MAX, f"{what}: channel number {bh.channel_number}")
        got_body = bytes(reply.body)
        check(got_body == body, f"{what}: body differs: {_difference(body, got_body)}")
        got_headers = bytes(reply.thdrs)
        if got_headers != headers:
            try:
                same = list(TextHeaders(headers)) == list(TextHeaders(got_headers))
            except AmpeError:
                same = False
            check(same, f"{what}: text headers differ: {_difference(headers, got_headers)}")

    def react(self, conn: Conn, questionable: bytes) -> Reaction:
        """Send `questionable` and a healthy Request in one write; see what comes back."""
        mid = self.mid()
        healthy = self.request(mid, b"x-probe:after\r\n", b"still there?")
        try:
            conn.send(questionable + healthy)
        except ProbeError:
            pass  # the server closed on the bad bytes: the reaction says so
        others, echo = conn.recv_until(mid)
        if echo is not None:
            self.expect_echo(echo, mid, b"x-probe:after\r\n", b"still there?")
        return Reaction(others, echo, conn.ended, conn.bad)

    # ------------------------------------------------------------ others
    def health(self) -> str | None:
        """None if a new connection gets the full service (hello, echo, bye);
        else what went wrong."""
        try:
            with self.fresh() as ctx:
                conn, _ = ctx.hello()
                mid = ctx.mid()
                ctx.send(conn, ctx.request(mid, b"x-health:1\r\n", b"ping"))
                ctx.expect_echo(ctx.recv(conn, 1, "the Response")[0], mid, b"x-health:1\r\n", b"ping")
                bye = ctx.mid()
                ctx.send(conn, frame(OpCode.ByeRequest, bye))
                reply = ctx.recv(conn, 1, "the ByeResponse")[0]
                check(reply.bhdr.proto.op_code == OpCode.ByeResponse, f"ByeRequest got {describe(reply)}")
        except (CaseFailed, ProbeError, OSError) as exc:
            return str(exc) or type(exc).__name__
        return None

    @contextmanager
    def fresh(self) -> Iterator[Context]:
        """A separate context (its connections are not the case's transcript)."""
        ctx = Context(self.target, self.timeout, self.idle, _next_mid=0x7E00)
        try:
            yield ctx
        finally:
            ctx.close_all()
