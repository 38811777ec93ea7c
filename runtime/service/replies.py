"""What a client gets back: a Reply, made from a received Response (or
Signal), with the status a server's error headers name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Self

from ..generated import STATUS_TO_ERROR, AmpeStatus, OpCode, UnknownError
from ..message import Message
from .errors import ERROR_DETAIL_HEADER, ERROR_HEADER, status_named
from .headers import Headers

__all__ = ["Reply", "error_answer", "error_pairs", "joined", "reply_of"]

_SUCCESS = AmpeStatus.success


class Reply:
    """An answer: `status`, `headers`, `body`.

    `status` is AmpeStatus.success unless the server answered with the
    `tofu-error` header (tofu.ERROR_HEADER): then it is the status named
    there (processing_failed when a tofu.Server handler raised) and `error`
    holds the failure in words (`tofu-error-detail`). `ok` tells the two
    apart; `raise_for_status()` raises the status's exception for an error.

    `headers` is a read-only mapping (tofu.Headers), `body` bytes. A reply
    that came as several frames (a body larger than 65535 bytes) has the
    headers of the first and the bodies joined. In a stream (Client.stream)
    each frame is a Reply of its own, `more` True on all but the last.
    `message_id` is the id of the request it answers; `signal` is True for a
    Signal (e.g. progress a server sends while it works, see Client's
    `on_signal`).
    """

    __slots__ = ("body", "error", "headers", "message_id", "more", "signal", "status")

    def __init__(
        self,
        body: bytes = b"",
        headers: Headers | None = None,
        *,
        message_id: int = 0,
        more: bool = False,
        signal: bool = False,
    ) -> None:
        self.body = body
        self.headers = headers if headers is not None else Headers()
        self.message_id = message_id
        self.more = more
        self.signal = signal
        self.status = _SUCCESS
        self.error: str | None = None
        if headers:
            named = headers.get(ERROR_HEADER)
            if named is not None:
                self.status = status_named(named)
                self.error = headers.get(ERROR_DETAIL_HEADER) or self.status.meaning

    @property
    def ok(self) -> bool:
        """True when `status` is success."""
        return self.status is _SUCCESS

    def raise_for_status(self) -> Self:
        """Raise the exception of `status` (a tofu.AmpeError, e.g.
        tofu.ProcessingFailed) with `error` as its message, unless the reply
        is a success; returns the reply itself when it is."""
        if self.status is _SUCCESS:
            return self
        raise STATUS_TO_ERROR.get(self.status, UnknownError)(self.error)

    def __repr__(self) -> str:
        state = "" if self.ok else f" {self.status.name}: {self.error!r}"
        more = " more" if self.more else ""
        kind = "Signal" if self.signal else "Reply"
        return f"<{kind} {self.message_id}{more}{state} {len(self.headers.pairs)} header(s), {len(self.body)} B>"


_new: Final = object.__new__
_EMPTY: Final = Headers()


def reply_of(msg: Message, signal: bool = False) -> Reply:
    """The Reply of a received message (the message stays the caller's).
    Made without Reply.__init__: it runs for every answer a client gets."""
    thdrs = msg.thdrs
    if thdrs:
        bh = msg.bhdr
        return Reply(bytes(msg.body), Headers(thdrs), message_id=bh.message_id, more=bool(bh.proto.more), signal=signal)
    reply: Reply = _new(Reply)
    bh = msg.bhdr
    reply.body = bytes(msg.body)
    reply.headers = _EMPTY
    reply.message_id = bh.message_id
    reply.more = bool(bh.proto.more)
    reply.signal = signal
    reply.status = _SUCCESS
    reply.error = None
    return reply


def joined(parts: Sequence[Reply]) -> Reply:
    """The frames of one answer as one Reply: the first's headers, every body.
    An error named by any frame is the reply's."""
    first = parts[0]
    reply = Reply(b"".join(p.body for p in parts), first.headers, message_id=first.message_id)
    for p in parts:
        if not p.ok:
            reply.status, reply.error = p.status, p.error
            break
    return reply


def _clean(text: str, limit: int = 1000) -> str:
    """`text` fit for a header value: one line, no NUL, at most `limit` characters."""
    flat = " ".join(text.replace("\0", " ").split())
    return flat[:limit]


def error_pairs(status: AmpeStatus, detail: str) -> list[tuple[str, str | int]]:
    """The headers that report a failure: ERROR_HEADER and, when there are
    words for it, ERROR_DETAIL_HEADER."""
    pairs: list[tuple[str, str | int]] = [(ERROR_HEADER, status.name)]
    text = _clean(detail)
    if text:
        pairs.append((ERROR_DETAIL_HEADER, text))
    return pairs


def error_answer(msg: Message, status: AmpeStatus, detail: str) -> Message:
    """The received Request `msg` made its answer: a Response reporting `status`
    (its headers and body replaced by the error headers)."""
    msg.bhdr.proto.op_code = OpCode.Response
    msg.thdrs.clear()
    msg.body.clear()
    for name, value in error_pairs(status, detail):
        msg.thdrs.append(name, value)
    return msg
