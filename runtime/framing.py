"""Frames on the wire, sans I/O: encode a Message, decode a byte stream.

    data = encode(msg)                   # one frame's bytes
    decoder = FrameDecoder()
    for msg in decoder.feed(chunk): ...  # every complete frame, whatever the cuts

Everything here uses the generated fast codec (a precompiled struct), never
construct: this is the per-message hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .generated import MAX_BODY_LEN, MAX_HEADERS_LEN, InvalidBodyLen, InvalidHeadersLen, InvalidOpCode
from .generated.codec import (
    HEADER_SIZE,
    INTERNAL_A_SHIFT,
    INTERNAL_B_SHIFT,
    MORE_SHIFT,
    NUM_OP_CODES,
    OP_CODE_MASK,
    OP_CODE_SHIFT,
    ORIGIN_SHIFT,
    pack_header,
    pack_header_into,
    unpack_header,
)
from .message import Message, body_buffer, from_wire, header_of, headers_buffer, refill

__all__ = ["MAX_FRAME_SIZE", "FrameDecoder", "encode", "encode_into", "frame_size"]

MAX_FRAME_SIZE = HEADER_SIZE + MAX_HEADERS_LEN + MAX_BODY_LEN
"""The longest frame, in bytes: the binary header, the longest text headers and the longest body."""
_VIEW_THRESHOLD: Final = 4096  # decode through a memoryview from this many bytes on
_ZERO_HEADER: Final = bytes(HEADER_SIZE)  # room for a header, packed in place


def _proto_byte(msg: Message) -> int:
    """The proto byte of `msg`'s binary header."""
    p = header_of(msg).proto
    # Plain ints (the members are IntEnums): compiled code then shifts and ors natively.
    op_code: int = p.op_code
    origin: int = p.origin
    more: int = p.more
    internal_a: int = p.internal_a
    internal_b: int = p.internal_b
    return (
        op_code << OP_CODE_SHIFT
        | origin << ORIGIN_SHIFT
        | more << MORE_SHIFT
        | internal_a << INTERNAL_A_SHIFT
        | internal_b << INTERNAL_B_SHIFT
    )


def _check_lengths(thl: int, bl: int) -> None:
    if thl > MAX_HEADERS_LEN:
        raise InvalidHeadersLen(f"text headers are {thl} bytes, at most {MAX_HEADERS_LEN} fit")
    if bl > MAX_BODY_LEN:
        raise InvalidBodyLen(f"body is {bl} bytes, at most {MAX_BODY_LEN} fit")


def encode(msg: Message) -> bytes:
    """The frame of `msg`; `thl` and `bl` come from the parts themselves.

    Raises InvalidHeadersLen / InvalidBodyLen when a part is over 65535 bytes."""
    msg.thdrs  # noqa: B018 - NotAllowed for a posted message
    th = headers_buffer(msg)
    body = body_buffer(msg)
    thl, bl = len(th), len(body)
    _check_lengths(thl, bl)
    bh = header_of(msg)
    return pack_header(bh.channel_number, _proto_byte(msg), bh.status, bh.message_id, thl, bl) + th + body


def encode_into(out: bytearray, msg: Message) -> None:
    """Append the frame of `msg` to `out` (to send many frames in one call)."""
    msg.thdrs  # noqa: B018 - NotAllowed for a posted message
    th = headers_buffer(msg)
    body = body_buffer(msg)
    thl, bl = len(th), len(body)
    if thl > MAX_HEADERS_LEN or bl > MAX_BODY_LEN:
        _check_lengths(thl, bl)
    bh = header_of(msg)
    # The header straight into `out`: no bytes object made and copied per frame.
    start = len(out)
    out += _ZERO_HEADER
    try:
        pack_header_into(out, start, bh.channel_number, _proto_byte(msg), bh.status, bh.message_id, thl, bl)
    except BaseException:
        del out[start:]  # a field out of range: `out` is left as it was
        raise
    if th:
        out += th
    out += body


def frame_size(msg: Message) -> int:
    """How many bytes encode_into appends for `msg`."""
    return HEADER_SIZE + len(headers_buffer(msg)) + len(body_buffer(msg))


class FrameDecoder:
    """Turns a byte stream into Messages, whatever the split points.

    It keeps at most one partial frame between calls and never waits for more
    bytes than the header promised. `recycle`, if given, is called for each
    frame and may return a used Message to fill (the engine passes its pool);
    when it returns None, or without it, a new Message is built. A frame with
    an invalid op code raises InvalidOpCode as soon as its header is in; the
    complete frames before it are on the error's `frames` attribute, and the
    decoder stays broken (every later feed raises again): a stream cannot be
    trusted past a bad frame.
    """

    __slots__ = ("_error", "_pending", "_recycle")

    def __init__(self, recycle: Callable[[], Message | None] | None = None) -> None:
        self._pending = bytearray()
        self._recycle = recycle
        self._error: InvalidOpCode | None = None

    @property
    def pending(self) -> int:
        """Bytes held of a frame not yet complete."""
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Take the next bytes of the stream; return every frame now complete."""
        if self._error is not None:
            raise self._error
        frames: list[Message] = []
        if self._pending:
            # Complete the held frame with just the bytes it still needs, then
            # decode the rest straight from `data`: a large chunk is never
            # copied into the pending buffer.
            data = memoryview(data)
            used = self._complete_pending(data, frames)
            if self._pending:
                return frames  # `data` ended inside the held frame
            data = data[used:]
        pos = self._decode(data, frames)
        if pos < len(data):
            self._pending = bytearray(data[pos:])
        return frames

    def _complete_pending(self, data: memoryview, frames: list[Message]) -> int:
        """Move bytes from `data` into the held frame; decode it once whole.
        Returns how many bytes of `data` were used."""
        pending = self._pending
        used: int = 0
        if len(pending) < HEADER_SIZE:
            used = HEADER_SIZE - len(pending)
            pending += data[:used]
            if len(pending) < HEADER_SIZE:
                return used
        *_, thl, bl = unpack_header(pending)
        # An invalid op code needs no check here: _decode raises as soon as it
        # sees the header, without waiting for the payload.
        missing = HEADER_SIZE + thl + bl - len(pending)
        pending += data[used : used + missing]
        used += missing
        if self._decode(pending, frames):
            self._pending = bytearray()
        return used

    def _decode(self, data: bytes | bytearray | memoryview, frames: list[Message]) -> int:
        """Append each complete frame in `data` to `frames`; return bytes used."""
        end_of_data = len(data)
        if end_of_data < HEADER_SIZE:
            return 0
        recycle = self._recycle
        # Slicing a memoryview copies nothing: worth it once bodies are large
        # (the copy into the Message is then the only one), not for small chunks.
        made: memoryview | None = None
        if end_of_data >= _VIEW_THRESHOLD and not isinstance(data, memoryview):
            made = memoryview(data)
        view = made if made is not None else data
        pos = 0
        try:
            while end_of_data - pos >= HEADER_SIZE:
                header: tuple[int, int, int, int, int, int] = unpack_header(data, pos)
                channel_number, proto, status, message_id, thl, bl = header
                if proto & OP_CODE_MASK >= NUM_OP_CODES:
                    # Fail as soon as the header shows it: never wait for its payload.
                    err = InvalidOpCode(f"invalid op code {proto & OP_CODE_MASK} in frame at stream offset +{pos}")
                    err.frames = frames  # type: ignore[attr-defined]
                    self._error = err
                    self._pending = bytearray()
                    raise err
                start = pos + HEADER_SIZE
                split = start + thl
                end = split + bl
                if end > end_of_data:
                    break
                msg = recycle() if recycle is not None else None
                thdrs = view[start:split] if thl else b""  # most frames have none: no slice
                if msg is None:
                    msg = from_wire(channel_number, proto, status, message_id, thdrs, view[split:end])
                else:  # a recycled message: the pool's have empty parts
                    refill(msg, channel_number, proto, status, message_id, thdrs, view[split:end] if bl else b"")
                frames.append(msg)
                pos = end
        finally:
            if made is not None:  # (no isinstance() per feed: the engine's chunks are small memoryviews)
                made.release()
        return pos
