"""What a server's handler gets: the Request (and the Peer it came from),
and how what the handler returns (or raises) becomes the answer."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final, Protocol

from ..generated import AmpeError, AmpeStatus, MoreMessagesFlag, NotAllowed, OpCode
from ..message import Message
from .frames import Body, Chunks
from .headers import Headers, HeadersLike, pairs_of
from .replies import error_pairs

__all__ = ["Peer", "Request", "Sender", "outcome", "report", "send_chunk"]

log = logging.getLogger("tofu.server")

_BODIES: Final = (bytes, bytearray, memoryview, str)


class Sender(Protocol):
    """How a Request's answers reach the wire (the server's dispatcher)."""

    def make(self, op: OpCode, body: Body, headers: HeadersLike) -> list[Message]:
        """The frames of one message (see frames.frames)."""

    def make_stream(self, op: OpCode, chunks: Chunks, headers: HeadersLike) -> Iterable[Message]:
        """The frames of a stream, made one ahead (see frames.stream_frames)."""

    def send(self, peer: Peer, mid: int, msgs: Iterable[Message]) -> None:
        """Post `msgs` on `peer`'s channel under `mid`, or drop them quietly when the peer is gone."""


class Peer:
    """A client connected to a tofu.Server: its channel and what its hello said.

    `headers` are the HelloRequest's text headers: the client's own, the
    address it dialled (`~connect_to`) and, over TLS or a Unix domain socket,
    its identity as the engine verified it (`~peer_subject`, `~peer_san`;
    `~peer_pid`, `~peer_uid`, `~peer_gid`), which `identity` holds alone.
    `requests` counts its requests so far. Once its channel closed, `closed`
    is True, `close_reason` says why (channel_closed for a Bye from either
    side, shutdown_started when the server closed it at the end of its
    shutdown's grace period, else e.g. peer_disconnected) and `close_detail`
    may say more; `said_bye` tells whether the client asked to close.
    """

    # What the server keeps of the conversation besides (what is in flight,
    # a Bye to answer, ...) is its dispatcher's (dispatch.PeerState).
    __slots__ = ("channel", "close_detail", "close_reason", "closed", "headers", "requests", "said_bye")

    def __init__(self, channel: int, headers: Headers) -> None:
        self.channel = channel
        self.headers = headers
        self.requests = 0
        self.closed = False
        self.close_reason: AmpeStatus | None = None
        self.close_detail: str | None = None
        self.said_bye = False

    @property
    def identity(self) -> Headers:
        """The `~peer_*` headers alone: who the engine says the client is."""
        return Headers((n, v) for n, v in self.headers.pairs if n.startswith("~peer_"))

    def __repr__(self) -> str:
        state = f"closed: {self.close_reason.name}" if self.close_reason is not None else "open"
        return f"<tofu.Peer channel {self.channel} {state}, {self.requests} request(s)>"


class Request:
    """One request to a tofu.Server's handler.

    `body` (bytes) and `headers` (tofu.Headers) are the request's; a request
    that came as a `more` stream has its frames' bodies joined and the first
    frame's headers, and `frames` holds every frame's (headers, body).
    `peer` is the tofu.Peer it came from; `message_id` its id.

    The handler answers by returning (see tofu.Server), or with these:
    `reply()` one answer, `stream()` an answer in frames, `signal()` a Signal
    about the request (e.g. progress) before the answer. `replied` is True
    once the answer went. For a Signal the client sent (a Server's
    on_signal), `is_signal` is True and no answer is expected.
    """

    __slots__ = ("_sender", "_streaming", "body", "frames", "headers", "is_signal", "message_id", "peer", "replied")

    def __init__(
        self, sender: Sender, peer: Peer, message_id: int, parts: list[tuple[Headers, bytes]], is_signal: bool = False
    ) -> None:
        self._sender = sender
        self.peer = peer
        self.message_id = message_id
        self.frames: tuple[tuple[Headers, bytes], ...] = tuple(parts)
        self.headers, self.body = parts[0]
        if len(parts) > 1:
            self.body = b"".join(b for _, b in parts)
        self.is_signal = is_signal
        self.replied = False
        self._streaming = False  # frames with `more` went, the last has not

    def reply(self, body: Body = b"", headers: HeadersLike = None) -> None:
        """Send the answer: a Response with this request's message id (a body
        larger than a frame goes as a `more` stream). Once only."""
        self._claim()
        self.replied = True
        self._sender.send(self.peer, self.message_id, self._sender.make(OpCode.Response, body, headers))

    def stream(self, chunks: Chunks, headers: HeadersLike = None) -> None:
        """Send the answer in frames: one Response per chunk (a body, or a
        (headers, body) pair), `more` set on all but the last, each sent as
        the iterable yields it (a generator may produce them over time).
        `headers` go with the first frame. Once only."""
        self._claim()
        self._streaming = True
        for msg in self._sender.make_stream(OpCode.Response, chunks, headers):
            last = not msg.bhdr.proto.more
            self._sender.send(self.peer, self.message_id, [msg])
            if last:
                self.replied = True
                self._streaming = False

    def signal(self, body: Body = b"", headers: HeadersLike = None) -> None:
        """Send a Signal with this request's message id (progress, a notice):
        the client's on_signal gets it. Any number, before the answer."""
        self._sender.send(self.peer, self.message_id, self._sender.make(OpCode.Signal, body, headers))

    def _claim(self) -> None:
        if self.is_signal:
            raise NotAllowed("a Signal gets no answer: use signal()")
        if self.replied or self._streaming:
            raise NotAllowed(f"request {self.message_id} was answered already")

    def _fail(self, status: AmpeStatus, detail: str) -> None:
        """Answer with an error (ERROR_HEADER), or end a stream begun with one."""
        if self.is_signal or self.replied:
            return
        msgs = self._sender.make(OpCode.Response, b"", error_pairs(status, detail))
        self.replied = True
        self._streaming = False
        self._sender.send(self.peer, self.message_id, msgs)

    def __repr__(self) -> str:
        kind = "Signal" if self.is_signal else "Request"
        return f"<tofu.{kind} {self.message_id} from channel {self.peer.channel}, {len(self.body)} B>"


def send_chunk(request: Request, chunk: Body | tuple[HeadersLike, Body], last: bool) -> None:
    """Send one chunk of `request`'s streamed answer (tofu.aio.Server's async
    iterables, a chunk at a time as they come): its frames, `more` on all
    but the last frame of the `last` chunk."""
    if not request._streaming:
        request._claim()
        request._streaming = True
    headers, body = chunk if isinstance(chunk, tuple) else (None, chunk)
    msgs = request._sender.make(OpCode.Response, body, pairs_of(headers))
    if not last:
        msgs[-1].bhdr.proto.more = MoreMessagesFlag.more
    request._sender.send(request.peer, request.message_id, msgs)
    if last:
        request.replied = True
        request._streaming = False


def outcome(request: Request, result: object = None, error: BaseException | None = None) -> None:
    """Answer `request` with what its handler returned (`result`) or raised
    (`error`): bytes or str is the reply's body, a (headers, body) pair the
    reply, any other iterable a stream of frames, None an empty reply unless
    the handler answered already. An exception becomes an error reply
    (ERROR_HEADER: the tofu.AmpeError's own status, else processing_failed)
    and is logged. Never raises."""
    try:
        if error is None:
            if request.is_signal or (result is None and request.replied):
                return
            if result is None:
                request.reply()
            elif isinstance(result, _BODIES):
                request.reply(result)
            elif isinstance(result, tuple) and len(result) == 2:
                request.reply(result[1], result[0])
            elif isinstance(result, list) and len(result) == 1:  # a stream of one frame: one reply
                item = result[0]
                if isinstance(item, tuple):
                    request.reply(item[1], item[0])
                else:
                    request.reply(item)
            elif isinstance(result, Iterable):
                request.stream(result)
            else:
                what = type(result).__name__
                raise TypeError(f"a handler returns bytes, str, (headers, body), an iterable or None, not {what}")
            return
    except Exception as exc:  # what the handler returned could not be sent (a bad header, a stream that raised)
        error = exc
    report(request, error)


def report(request: Request, error: BaseException) -> None:
    """Log what a handler raised and answer `request` with the error (never raises)."""
    what = f"channel {request.peer.channel}, {'signal' if request.is_signal else 'request'} {request.message_id}"
    if isinstance(error, AmpeError):
        status, detail = error.status, str(error)
        log.info("%s: the handler raised %s: %s", what, type(error).__name__, error)
    else:
        status, detail = AmpeStatus.processing_failed, f"{type(error).__name__}: {error}"
        log.error("%s: the handler raised %s", what, detail, exc_info=error)
    try:
        request._fail(status, detail)
    except Exception:  # the error reply itself could not be made: the peer will time out
        log.exception("%s: could not send the error reply", what)
