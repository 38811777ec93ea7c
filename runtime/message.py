"""The message: a binary header, text headers and a body.

A Message is what applications and the engine pass around. Its three parts
map one to one onto the three parts of a frame on the wire (docs/protocol.md).
After `ChannelGroup.post(msg)` the object is emptied: the engine owns the
contents, and touching `msg.bhdr`, `msg.thdrs` or `msg.body` raises NotAllowed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from .generated import (
    MAX_BODY_LEN,
    MAX_HEADERS_LEN,
    OP_ROLE,
    OP_TYPE,
    InvalidBodyLen,
    InvalidHeadersLen,
    InvalidMessage,
    InvalidOpCode,
    MessageRole,
    MessageType,
    MoreMessagesFlag,
    NotAllowed,
    OpCode,
    OriginFlag,
    raw_to_status,
)
from .generated.codec import (
    INTERNAL_A_MASK,
    INTERNAL_A_SHIFT,
    INTERNAL_B_MASK,
    INTERNAL_B_SHIFT,
    MORE_MASK,
    MORE_SHIFT,
    NUM_OP_CODES,
    OP_CODE_MASK,
    ORIGIN_MASK,
    ORIGIN_SHIFT,
    pack_proto,
)

__all__ = ["BinaryHeader", "Body", "Message", "ProtoFields", "TextHeaders", "text_headers_problem"]

log = logging.getLogger(__name__)

# Raw bit values -> enum members, by index: cheaper than calling the enum.
OP_CODES: tuple[OpCode, ...] = tuple(OpCode)
ORIGINS: tuple[OriginFlag, ...] = tuple(OriginFlag)
MORES: tuple[MoreMessagesFlag, ...] = tuple(MoreMessagesFlag)
# Every proto byte -> (op_code, origin, more, internal_a, internal_b), decoded
# once: the per-frame cost is one tuple lookup. An invalid op code stays an int.
PROTO_FIELDS: tuple[tuple[OpCode | int, OriginFlag, MoreMessagesFlag, int, int], ...] = tuple(
    (
        OP_CODES[b & OP_CODE_MASK] if b & OP_CODE_MASK < NUM_OP_CODES else b & OP_CODE_MASK,
        ORIGINS[(b >> ORIGIN_SHIFT) & ORIGIN_MASK],
        MORES[(b >> MORE_SHIFT) & MORE_MASK],
        (b >> INTERNAL_A_SHIFT) & INTERNAL_A_MASK,
        (b >> INTERNAL_B_SHIFT) & INTERNAL_B_MASK,
    )
    for b in range(256)
)

_new = object.__new__  # an instance without running __init__ (slots set right after)
_REQUEST, _APPLICATION, _LAST = OpCode.Request, OriginFlag.application, MoreMessagesFlag.last

# Text headers, well formed (docs/concepts.md, "Messages"): lines separated by CRLF; an
# empty line is skipped; a last line needs no CRLF; every other line is
# NAME ":" VALUE, NAME without ':', NAME and VALUE each not empty once the
# spaces and tabs around it are trimmed (a reader trims them); no NUL anywhere, no CR or LF but in
# the CRLF separators; the whole part is UTF-8. One rule for every reader:
# iterating (and get) raises exactly when text_headers_problem() finds a fault,
# and the engine closes a channel whose peer sends such headers.
# Possessive quantifiers: no character class overlaps what follows it, so
# nothing is ever given back, and a check costs one pass even on hostile input.
_LINE = rb"[ \t]*+[^\x00\r\n: \t][^\x00\r\n:]*+:[ \t]*+[^\x00\r\n \t][^\x00\r\n]*+"
_WELL_FORMED = re.compile(rb"(?:(?:%s)?\r\n)*+(?:%s)?" % (_LINE, _LINE)).fullmatch
_GOOD_LINES = re.compile(rb"(?:(?:%s)?\r\n)*+" % _LINE).match
_ENCODING = "utf-8"


def text_headers_problem(data: bytes | bytearray) -> str | None:
    """None when `data` is a well-formed text headers part; otherwise what is
    wrong with its first bad line (a pure function: the engine's check on
    every received frame, and TextHeaders' on every read)."""
    if _WELL_FORMED(data) is not None:
        if data.isascii():
            return None
        try:
            data.decode(_ENCODING)
            return None
        except UnicodeDecodeError as exc:
            crlf = data.rfind(b"\r\n", 0, exc.start)
            start = 0 if crlf < 0 else crlf + 2
    else:
        good = _GOOD_LINES(data)  # complete good lines, up to the first bad one (always matches)
        start = good.end() if good is not None else 0
    end = data.find(b"\r\n", start)
    raw = bytes(data[start : end if end >= 0 else len(data)])
    shown = f"{raw[:80]!r}{'...' if len(raw) > 80 else ''}"
    return f"text header line {shown} {_line_problem(raw) or 'is malformed'}"


def _line_problem(raw: bytes) -> str | None:
    name, colon, value = raw.partition(b":")
    if not colon:
        return "has no colon"
    if not name.strip(b" \t"):
        return "has an empty name"
    if not value.strip(b" \t"):
        return "has an empty value"
    if b"\x00" in raw:
        return "contains a NUL byte"
    if b"\r" in raw or b"\n" in raw:
        return "contains a CR or LF that is not a line end"
    try:
        raw.decode(_ENCODING)
    except UnicodeDecodeError:
        return "is not UTF-8"
    return None


class ProtoFields:
    """The `proto` byte: op code, origin, more flag and two internal triggers."""

    __slots__ = ("internal_a", "internal_b", "more", "op_code", "origin")

    def __init__(
        self,
        op_code: OpCode = OpCode.Request,
        origin: OriginFlag = OriginFlag.application,
        more: MoreMessagesFlag = MoreMessagesFlag.last,
        internal_a: int = 0,
        internal_b: int = 0,
    ) -> None:
        self.op_code = op_code
        self.origin = origin
        self.more = more
        self.internal_a = internal_a
        self.internal_b = internal_b

    def get_type(self) -> MessageType:
        """The op code's family; InvalidOpCode for an invalid op code."""
        try:
            return OP_TYPE[self.op_code]
        except KeyError:
            raise InvalidOpCode(f"invalid op code {self.op_code!r}") from None

    def get_role(self) -> MessageRole:
        """The op code's role; InvalidOpCode for an invalid op code."""
        try:
            return OP_ROLE[self.op_code]
        except KeyError:
            raise InvalidOpCode(f"invalid op code {self.op_code!r}") from None

    def is_valid(self) -> bool:
        """True when the op code is one of the protocol's (0..9)."""
        return 0 <= self.op_code < NUM_OP_CODES

    def to_byte(self) -> int:
        """The proto byte as it goes on the wire."""
        return pack_proto(self.op_code, self.origin, self.more, self.internal_a, self.internal_b)

    def set_byte(self, proto: int) -> None:
        """Set every field from a proto byte; an invalid op code stays a plain int."""
        fields = PROTO_FIELDS[proto & 0xFF]
        self.op_code, self.origin, self.more, self.internal_a, self.internal_b = fields  # type: ignore[assignment]

    @classmethod
    def from_byte(cls, proto: int) -> ProtoFields:
        """The fields of a proto byte as it comes off the wire (see `set_byte`)."""
        pf = cls.__new__(cls)
        pf.set_byte(proto)
        return pf

    def copy(self) -> ProtoFields:
        """An independent copy."""
        pf = _new(ProtoFields)
        pf.op_code, pf.origin, pf.more = self.op_code, self.origin, self.more
        pf.internal_a, pf.internal_b = self.internal_a, self.internal_b
        return pf

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProtoFields):
            return NotImplemented
        return self.to_byte() == other.to_byte()

    def __repr__(self) -> str:
        op = self.op_code.name if isinstance(self.op_code, OpCode) else self.op_code
        return f"ProtoFields({op}, {ORIGINS[self.origin & 1].name}, {MORES[self.more & 1].name})"


class BinaryHeader:
    """The fixed header: channel number, proto fields, status and message id.

    The lengths of the text headers and the body are not stored here: they are
    computed from the parts whenever the message is encoded.
    """

    __slots__ = ("channel_number", "message_id", "proto", "status")

    def __init__(
        self,
        channel_number: int = 0,
        proto: ProtoFields | None = None,
        status: int = 0,
        message_id: int = 0,
    ) -> None:
        self.channel_number = channel_number
        self.proto = proto if proto is not None else ProtoFields()
        self.status = status
        self.message_id = message_id

    def reset(self) -> None:
        """Back to a fresh Request header: everything zero."""
        self.channel_number = self.status = self.message_id = 0
        p = self.proto
        p.op_code, p.origin, p.more, p.internal_a, p.internal_b = _REQUEST, _APPLICATION, _LAST, 0, 0

    def copy(self) -> BinaryHeader:
        """An independent copy (its proto fields too)."""
        bh = _new(BinaryHeader)
        bh.channel_number = self.channel_number
        bh.proto = self.proto.copy()
        bh.status = self.status
        bh.message_id = self.message_id
        return bh

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BinaryHeader):
            return NotImplemented
        return (self.channel_number, self.proto, self.status, self.message_id) == (
            other.channel_number,
            other.proto,
            other.status,
            other.message_id,
        )

    def dump(self, label: str = "") -> str:
        """One readable line: op code, channel, message id, origin, more,
        status. It is logged at DEBUG on the `tofu.message` logger and returned.

        `label` leads the line, e.g. `bhdr.dump("received")`."""
        p = self.proto
        op = p.op_code.name if isinstance(p.op_code, OpCode) else f"op_code={p.op_code}"
        line = (
            f"{label + ' ' if label else ''}{op} chn {self.channel_number} mid {self.message_id} "
            f"{ORIGINS[p.origin & 1].name} {MORES[p.more & 1].name} {raw_to_status(self.status).name}"
        )
        log.debug("%s", line)
        return line

    def __repr__(self) -> str:
        return (
            f"BinaryHeader(channel_number={self.channel_number}, proto={self.proto!r}, "
            f"status={raw_to_status(self.status).name}, message_id={self.message_id})"
        )


class TextHeaders:
    """Text headers: `name:value\\r\\n` lines, kept as the bytes that go on the wire.

    At most MAX_HEADERS_LEN (65535) bytes fit in a frame."""

    __slots__ = ("_buf",)

    def __init__(self, data: bytes | bytearray | memoryview = b"") -> None:
        self._buf = bytearray(data)

    def append(self, name: str, value: str | int) -> None:
        """Add a header. Raises InvalidMessage for an empty name or value, for
        characters that would break the line format (':' in a name, CR, LF or
        NUL) or that are not UTF-8 text, and InvalidHeadersLen when the text
        headers would grow past MAX_HEADERS_LEN bytes; the headers are then
        left as they were."""
        name = name.strip(" \t")
        value = str(value)
        if not name:
            raise InvalidMessage("text header name is empty")
        if not value.strip(" \t"):  # a reader trims spaces and tabs: nothing would be left
            raise InvalidMessage(f"text header {name!r} has an empty value")
        if ":" in name or "\r" in name or "\n" in name or "\0" in name:
            raise InvalidMessage(f"text header name {name!r} contains ':', CR, LF or NUL")
        if "\r" in value or "\n" in value or "\0" in value:
            raise InvalidMessage(f"text header {name!r} value contains CR, LF or NUL")
        try:
            line = f"{name}:{value}\r\n".encode(_ENCODING)
        except UnicodeEncodeError as exc:
            raise InvalidMessage(f"text header {name!r} cannot be encoded: {exc.reason}") from None
        buf = self._buf
        if len(buf) + len(line) > MAX_HEADERS_LEN:
            raise InvalidHeadersLen(
                f"text header {name!r} would make the text headers {len(buf) + len(line)} bytes, "
                f"at most {MAX_HEADERS_LEN} fit"
            )
        buf += line

    def check(self) -> None:
        """Raise InvalidMessage, naming the first bad line, unless the headers
        are well formed (docs/protocol.md). The engine checks every received
        frame this way, so a message it delivers never raises here."""
        if self._buf:
            problem = text_headers_problem(self._buf)
            if problem is not None:
                raise InvalidMessage(problem)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """Yield (name, value) pairs in order, parsed as docs/concepts.md says.

        Empty lines are skipped; a last line without CRLF still counts; spaces
        and tabs around a name and a value are trimmed. Headers that are not
        well formed (see check()) raise InvalidMessage, naming the first bad
        line, before any pair is yielded: a part is valid or not as a whole."""
        return iter(self._pairs())

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first header called `name`, or `default`.
        Raises InvalidMessage as iterating does."""
        for n, v in self._pairs():
            if n == name:
                return v
        return default

    def _pairs(self) -> list[tuple[str, str]]:
        buf = self._buf
        if not buf:
            return []
        try:
            text = buf.decode(_ENCODING)  # checks UTF-8 on the way
        except UnicodeDecodeError:
            text = ""
        if not text or _WELL_FORMED(buf) is None:
            raise InvalidMessage(text_headers_problem(buf) or "text headers are malformed")
        pairs = []
        for line in text.split("\r\n"):
            if line:
                name, _, value = line.partition(":")
                pairs.append((name.strip(" \t"), value.strip(" \t")))
        return pairs

    def clear(self) -> None:
        """Remove everything."""
        self._buf.clear()

    def __bytes__(self) -> bytes:
        return bytes(self._buf)

    def __bool__(self) -> bool:
        return bool(self._buf)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TextHeaders):
            return NotImplemented
        return self._buf == other._buf

    def __repr__(self) -> str:
        return f"TextHeaders({bytes(self._buf)!r})"


class Body:
    """The body: opaque application bytes, at most MAX_BODY_LEN (65535) per frame."""

    __slots__ = ("_buf",)

    def __init__(self, data: bytes | bytearray | memoryview = b"") -> None:
        self._buf = bytearray(data)

    def append(self, data: bytes | bytearray | memoryview | str) -> None:
        """Append bytes (a str is encoded as UTF-8). Raises InvalidBodyLen, and
        leaves the body as it was, when it would grow past MAX_BODY_LEN bytes:
        a larger payload goes in several messages (see docs/concepts.md)."""
        buf = self._buf
        buf += data.encode() if isinstance(data, str) else data
        if len(buf) > MAX_BODY_LEN:  # rare: undo (one len() is all the common case pays)
            grown = len(buf)
            del buf[grown - memoryview(data.encode() if isinstance(data, str) else data).nbytes :]
            raise InvalidBodyLen(f"the body would be {grown} bytes, at most {MAX_BODY_LEN} fit in a message")

    def clear(self) -> None:
        """Remove everything."""
        self._buf.clear()

    def __bytes__(self) -> bytes:
        return bytes(self._buf)

    def __len__(self) -> int:
        return len(self._buf)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Body):
            return self._buf == other._buf
        if isinstance(other, (bytes, bytearray)):
            return self._buf == other
        return NotImplemented

    def __repr__(self) -> str:
        return f"Body({len(self._buf)} bytes)"


_PARTS = frozenset(("bhdr", "thdrs", "body"))


class Message:
    """A tofu message: `bhdr` (BinaryHeader), `thdrs` (TextHeaders), `body` (Body)."""

    __slots__ = ("bhdr", "body", "thdrs")

    def __init__(self, op_code: OpCode = OpCode.Request) -> None:
        # Built slot by slot: a Message is made for every message the pool lacks.
        pf = _new(ProtoFields)
        pf.op_code, pf.origin, pf.more, pf.internal_a, pf.internal_b = op_code, _APPLICATION, _LAST, 0, 0
        bh = _new(BinaryHeader)
        bh.channel_number, bh.proto, bh.status, bh.message_id = 0, pf, 0, 0
        th = _new(TextHeaders)
        th._buf = bytearray()
        body = _new(Body)
        body._buf = bytearray()
        self.bhdr, self.thdrs, self.body = bh, th, body

    def __getattr__(self, name: str) -> object:
        # Only reached when a part is missing, i.e. after post() moved it out.
        if name in _PARTS:
            raise NotAllowed("this message was posted: it belongs to the engine now")
        raise AttributeError(name)

    def is_from_engine(self) -> bool:
        """True for the engine's notifications and messages it gives back."""
        return self.bhdr.proto.origin == OriginFlag.engine

    def is_from_application(self) -> bool:
        """True for messages an application (this one or the peer) sent."""
        return self.bhdr.proto.origin == OriginFlag.application

    def has_more(self) -> bool:
        """True when more frames with this message id follow."""
        return self.bhdr.proto.more == MoreMessagesFlag.more

    @property
    def is_posted(self) -> bool:
        """True once post() took this object's contents."""
        try:
            self.bhdr  # noqa: B018
        except NotAllowed:
            return True
        return False

    def reset(self) -> None:
        """Back to a fresh Request with no headers and no body."""
        self.bhdr.reset()
        self.thdrs._buf.clear()
        self.body._buf.clear()

    def copy(self) -> Message:
        """A deep copy."""
        m = Message.__new__(Message)
        m.bhdr = self.bhdr.copy()
        m.thdrs = TextHeaders(self.thdrs._buf)
        m.body = Body(self.body._buf)
        return m

    @classmethod
    def _from_wire(
        cls,
        channel_number: int,
        proto: int,
        status: int,
        message_id: int,
        thdrs: bytes | bytearray | memoryview,
        body: bytes | bytearray | memoryview,
    ) -> Message:
        """A Message of one decoded frame's fields and parts (copied).

        The decoder's hot path: it builds the parts directly instead of setting
        defaults in __init__ and overwriting them."""
        pf = _new(ProtoFields)
        fields = PROTO_FIELDS[proto & 0xFF]
        pf.op_code, pf.origin, pf.more, pf.internal_a, pf.internal_b = fields  # type: ignore[assignment]
        bh = _new(BinaryHeader)
        bh.channel_number = channel_number
        bh.proto = pf
        bh.status = status
        bh.message_id = message_id
        th = _new(TextHeaders)
        th._buf = bytearray(thdrs)
        bd = _new(Body)
        bd._buf = bytearray(body)
        m = _new(cls)
        m.bhdr = bh
        m.thdrs = th
        m.body = bd
        return m

    def _take(self) -> Message:
        """Move the contents into a new Message and leave this one empty."""
        m = Message.__new__(Message)
        m.bhdr, m.thdrs, m.body = self.bhdr, self.thdrs, self.body
        del self.bhdr, self.thdrs, self.body
        return m

    def __repr__(self) -> str:
        if self.is_posted:
            return "Message(<posted>)"
        return f"Message({self.bhdr!r}, thdrs={len(self.thdrs._buf)}B, body={len(self.body._buf)}B)"
