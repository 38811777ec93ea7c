"""Messages made from a body and headers: one frame, or a `more` stream of
frames when the body is larger than a frame holds (MAX_BODY_LEN bytes)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Final, TypeAlias

from ..ampe import Ampe
from ..generated import MAX_BODY_LEN, MoreMessagesFlag, OpCode
from ..groups import ChannelGroup
from ..message import Message
from .headers import HeadersLike, pairs_of

__all__ = ["Body", "Chunks", "frames", "next_id", "post_frames", "stream_frames"]

# The message ids of everything the service layer posts: unique in the
# process, so a client enters a request's id among those it waits for before
# the request goes, and no answer can come first.
next_id: Final = itertools.count(1).__next__

Body: TypeAlias = bytes | bytearray | memoryview | str
"""A message body as the service layer takes it (a str is sent as UTF-8)."""

Chunks: TypeAlias = Iterable[Body] | Iterable[tuple[HeadersLike, Body]]
"""The frames of a stream: bodies, or (headers, body) pairs."""

Pair: TypeAlias = tuple[str, str | int]
Data: TypeAlias = bytes | bytearray | memoryview

_MORE = MoreMessagesFlag.more
_LAST = MoreMessagesFlag.last


def _as_bytes(body: Body) -> Data:
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, (bytes, bytearray, memoryview)):
        return body
    raise TypeError(f"a body is bytes, bytearray, memoryview or str, not {type(body).__name__}")


def _pieces(data: Data) -> list[Data]:
    """`data` cut into frame-sized pieces (one piece, maybe empty, when it fits)."""
    size = memoryview(data).nbytes if isinstance(data, memoryview) else len(data)
    if size <= MAX_BODY_LEN:
        return [data]
    view = memoryview(data).cast("B")
    return [view[i : i + MAX_BODY_LEN] for i in range(0, size, MAX_BODY_LEN)]


def _message(ampe: Ampe, op: OpCode, headers: list[Pair], data: Data) -> Message:
    msg = ampe.get()
    bh = msg.bhdr
    bh.proto.op_code = op
    thdrs = msg.thdrs
    for name, value in headers:
        thdrs.append(name, value)  # raises InvalidMessage / InvalidHeadersLen for bad or too many headers
    if data:
        msg.body.append(data)
    return msg


def frames(ampe: Ampe, op: OpCode, body: Body = b"", headers: HeadersLike = None) -> list[Message]:
    """The messages that carry `body` and `headers` as one message of op code
    `op`: one frame, or, for a body larger than a frame, frames with `more`
    set on all but the last (the headers go with the first). Channel and
    message id are left for the caller."""
    if not headers and type(body) is bytes and len(body) <= MAX_BODY_LEN:  # the common case, in short
        msg = ampe.get()
        msg.bhdr.proto.op_code = op
        if body:
            msg.body.append(body)
        return [msg]
    pieces = _pieces(_as_bytes(body))
    first = pairs_of(headers)
    out = []
    for i, piece in enumerate(pieces):
        msg = _message(ampe, op, first if i == 0 else [], piece)
        if i < len(pieces) - 1:
            msg.bhdr.proto.more = _MORE
        out.append(msg)
    return out


def _items(chunks: Chunks, headers: HeadersLike) -> Iterator[tuple[list[Pair], Data]]:
    """(headers, bytes) of each chunk, frame-sized; `headers` go with the first."""
    extra = pairs_of(headers)
    for chunk in chunks:
        if isinstance(chunk, tuple):
            own, data = chunk
            pairs = pairs_of(own)
        else:
            pairs, data = [], chunk
        for i, piece in enumerate(_pieces(_as_bytes(data))):
            yield (extra + pairs if i == 0 else []), piece
            extra = []
    if extra:  # no chunk at all: the headers still go, in one empty frame
        yield extra, b""


def stream_frames(ampe: Ampe, op: OpCode, chunks: Chunks, headers: HeadersLike = None) -> Iterator[Message]:
    """One message of op code `op` per chunk (a chunk larger than a frame
    takes several), `more` set on every one but the last; an empty `chunks`
    gives one empty frame. Made one ahead of the one yielded, so the last
    one's flag is known: a caller can post each as it comes."""
    previous: Message | None = None
    for pairs, data in _items(chunks, headers):
        msg = _message(ampe, op, pairs, data)
        if previous is not None:
            previous.bhdr.proto.more = _MORE
            yield previous
        previous = msg
    if previous is None:
        previous = _message(ampe, op, [], b"")
    previous.bhdr.proto.more = _LAST
    yield previous


def post_frames(ampe: Ampe, group: ChannelGroup, msgs: list[Message], channel: int, mid: int) -> None:
    """Post the frames of one message on `channel` under `mid` (any thread).
    Raises the post's error; the frames not posted go back to the pool."""
    post = group.post
    for i, msg in enumerate(msgs):
        bh = msg.bhdr
        bh.channel_number = channel
        bh.message_id = mid
        try:
            post(msg)
        except BaseException:
            for rest in msgs[i:]:
                ampe.put(rest)
            raise
