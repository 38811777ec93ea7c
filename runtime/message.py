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
from typing import Final

from ._mypyc import mypyc_attr
from .generated import (
    MAX_BODY_LEN,
    MAX_HEADERS_LEN,
    OP_ROLE,
    OP_TYPE,
    AmpeStatus,
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

__all__ = [
    "BinaryHeader",
    "Body",
    "Message",
    "ProtoFields",
    "TextHeaders",
    "body_buffer",
    "from_wire",
    "header_of",
    "headers_buffer",
    "recycle",
    "refill",
    "restore",
    "take",
    "text_headers_problem",
]

log = logging.getLogger(__name__)

# Raw bit values -> enum members, by index: cheaper than calling the enum.
OP_CODES: Final[tuple[OpCode, ...]] = tuple(OpCode)
ORIGINS: Final[tuple[OriginFlag, ...]] = tuple(OriginFlag)
MORES: Final[tuple[MoreMessagesFlag, ...]] = tuple(MoreMessagesFlag)


def _op_field(b: int) -> OpCode:
    """The op code of a proto byte: its member, or a plain int when invalid.

    Typed OpCode, not `OpCode | int`: compiled code holds a value typed with
    int in it as a plain int, and every op code would lose its member."""
    code = b & OP_CODE_MASK
    if code < NUM_OP_CODES:
        return OP_CODES[code]
    return code  # type: ignore[return-value]


def _op_name(op_code: OpCode, prefix: str) -> str:
    """An op code's name, or `prefix` and its number for an invalid one."""
    name = getattr(op_code, "name", None)  # not isinstance(): op_code is typed OpCode, so
    return name if isinstance(name, str) else f"{prefix}{int(op_code)}"  # compiled code would drop the else


# Every proto byte -> (op_code, origin, more, internal_a, internal_b), decoded
# once: the per-frame cost is one tuple lookup. An invalid op code stays an int.
PROTO_FIELDS: Final[tuple[tuple[OpCode, OriginFlag, MoreMessagesFlag, int, int], ...]] = tuple(
    (
        _op_field(b),
        ORIGINS[(b >> ORIGIN_SHIFT) & ORIGIN_MASK],
        MORES[(b >> MORE_SHIFT) & MORE_MASK],
        (b >> INTERNAL_A_SHIFT) & INTERNAL_A_MASK,
        (b >> INTERNAL_B_SHIFT) & INTERNAL_B_MASK,
    )
    for b in range(256)
)

# Pure Python makes an object without running __init__ where that saves a
# Python call per part (the per-message path); a class compiled with mypyc
# cannot be made that way, and its __init__ is cheap: it takes the other branch.
# Final: compiled code holds these in C variables (no dict lookup per use).
_PURE: Final = __file__.endswith(".py")
_new: Final = object.__new__
_REQUEST: Final = OpCode.Request
_APPLICATION: Final = OriginFlag.application
_ENGINE: Final = OriginFlag.engine
_LAST: Final = MoreMessagesFlag.last
_MORE: Final = MoreMessagesFlag.more
_CHANNEL_CLOSED: Final = AmpeStatus.channel_closed

# mypyc_attr(acyclic=True) (mypy >= 1.20): the compiled classes of a message
# are not tracked by the cyclic garbage collector. Their attributes hold ints,
# enum members, bytearrays and the parts below them, never anything that leads
# back (a value outside those types breaks the declared types, and a cycle
# through it would never be collected). Per message sent that is three tracked
# allocations fewer (the engine's Message of post(), the BinaryHeader and
# ProtoFields of the header copy post() returns), five per message made when
# the pool is empty; none of them triggers a collection, and no collection
# visits the pool's messages (up to 4096 of them, 20,000 objects, with every
# default). One-way 22.6k -> 22.0k instructions per message compiled, round
# trip 55.0k -> 54.6k. free_list_len=1 (Message, BinaryHeader, ProtoFields):
# each thread keeps the last freed instance of the class for the next one
# made. Every post() makes a Message (the engine's) and a header copy, while
# the application drops the message it posted (emptied) and the copy of the
# post before: the next post takes those back instead of allocating. One-way
# 22.0k -> 21.3k, round trip 54.6k -> 53.7k. Pure Python has no such
# switches: there mypyc_attr does nothing (runtime/_mypyc.py).


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


@mypyc_attr(acyclic=True, free_list_len=1)
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
        self.op_code, self.origin, self.more, self.internal_a, self.internal_b = fields

    @classmethod
    def from_byte(cls, proto: int) -> ProtoFields:
        """The fields of a proto byte as it comes off the wire (see `set_byte`)."""
        pf = cls()
        pf.set_byte(proto)
        return pf

    def copy(self) -> ProtoFields:
        """An independent copy."""
        if _PURE:
            pf = _new(ProtoFields)
            pf.op_code, pf.origin, pf.more = self.op_code, self.origin, self.more
            pf.internal_a, pf.internal_b = self.internal_a, self.internal_b
            return pf
        return ProtoFields(self.op_code, self.origin, self.more, self.internal_a, self.internal_b)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProtoFields):
            return NotImplemented
        return self.to_byte() == other.to_byte()

    def __repr__(self) -> str:
        op = _op_name(self.op_code, "")
        return f"ProtoFields({op}, {ORIGINS[self.origin & 1].name}, {MORES[self.more & 1].name})"


@mypyc_attr(acyclic=True, free_list_len=1)
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
        status: AmpeStatus | int = 0,
        message_id: int = 0,
    ) -> None:
        self.channel_number = channel_number
        self.proto = proto if proto is not None else ProtoFields()
        # Not plain `int`: a status the engine sets stays its AmpeStatus member.
        self.status: AmpeStatus | int = status
        self.message_id = message_id

    def reset(self) -> None:
        """Back to a fresh Request header: everything zero."""
        self.channel_number = self.status = self.message_id = 0
        p = self.proto
        p.op_code, p.origin, p.more, p.internal_a, p.internal_b = _REQUEST, _APPLICATION, _LAST, 0, 0

    def copy(self) -> BinaryHeader:
        """An independent copy (its proto fields too)."""
        if _PURE:  # the proto fields inline: no call for them
            p = self.proto
            pf = _new(ProtoFields)
            pf.op_code, pf.origin, pf.more, pf.internal_a, pf.internal_b = (
                p.op_code,
                p.origin,
                p.more,
                p.internal_a,
                p.internal_b,
            )
            bh = _new(BinaryHeader)
            bh.channel_number, bh.proto = self.channel_number, pf
            bh.status, bh.message_id = self.status, self.message_id
            return bh
        return BinaryHeader(self.channel_number, self.proto.copy(), self.status, self.message_id)

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
        op = _op_name(p.op_code, "op_code=")
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


@mypyc_attr(acyclic=True)
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


@mypyc_attr(acyclic=True)
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


_POSTED: Final = "this message was posted: it belongs to the engine now"
# What a posted Message's private slots hold: never a live message's parts.
_NO_BHDR: Final = BinaryHeader()
_NO_THDRS: Final = TextHeaders()
_NO_BODY: Final = Body()


@mypyc_attr(acyclic=True, free_list_len=1)
class Message:
    """A tofu message: `bhdr` (BinaryHeader), `thdrs` (TextHeaders), `body` (Body)."""

    # The parts live in private slots behind properties: after post() (take())
    # the slots hold the _NO_* placeholders and reading a part raises
    # NotAllowed. Plain slots and properties, no __getattr__: the same code
    # compiles with mypyc, and attribute reads stay on CPython's fast path.
    # The engine's per-message code (framing) reads the slots directly.
    __slots__ = ("_bhdr", "_body", "_thdrs")

    def __init__(
        self,
        op_code: OpCode = OpCode.Request,
        *,
        _bhdr: BinaryHeader | None = None,
        _thdrs: TextHeaders | None = None,
        _body: Body | None = None,
    ) -> None:
        # `_bhdr`, `_thdrs` and `_body` are private: take(), copy() and
        # _from_wire() hand over the three parts they built, instead of making
        # defaults to throw away (three arguments, not a tuple of them: no
        # tuple made per message).
        self._bhdr: BinaryHeader
        self._thdrs: TextHeaders
        self._body: Body
        if _bhdr is not None and _thdrs is not None and _body is not None:
            self._bhdr = _bhdr
            self._thdrs = _thdrs
            self._body = _body
        elif _PURE:  # slot by slot: a Message is made for every message the pool lacks
            pf = _new(ProtoFields)
            pf.op_code, pf.origin, pf.more, pf.internal_a, pf.internal_b = op_code, _APPLICATION, _LAST, 0, 0
            bh = _new(BinaryHeader)
            bh.channel_number, bh.proto, bh.status, bh.message_id = 0, pf, 0, 0
            th = _new(TextHeaders)
            th._buf = bytearray()
            bd = _new(Body)
            bd._buf = bytearray()
            self._bhdr, self._thdrs, self._body = bh, th, bd
        else:
            self._bhdr = BinaryHeader(0, ProtoFields(op_code, _APPLICATION, _LAST, 0, 0), 0, 0)
            self._thdrs = TextHeaders()
            self._body = Body()

    @property
    def bhdr(self) -> BinaryHeader:
        """The binary header; NotAllowed once posted."""
        bh = self._bhdr
        if bh is _NO_BHDR:
            raise NotAllowed(_POSTED)
        return bh

    @bhdr.setter
    def bhdr(self, value: BinaryHeader) -> None:
        self.bhdr  # noqa: B018 - NotAllowed once posted
        self._bhdr = value

    @property
    def thdrs(self) -> TextHeaders:
        """The text headers; NotAllowed once posted."""
        th = self._thdrs
        if th is _NO_THDRS:
            raise NotAllowed(_POSTED)
        return th

    @thdrs.setter
    def thdrs(self, value: TextHeaders) -> None:
        self.bhdr  # noqa: B018 - NotAllowed once posted
        self._thdrs = value

    @property
    def body(self) -> Body:
        """The body; NotAllowed once posted."""
        bd = self._body
        if bd is _NO_BODY:
            raise NotAllowed(_POSTED)
        return bd

    @body.setter
    def body(self, value: Body) -> None:
        self.bhdr  # noqa: B018 - NotAllowed once posted
        self._body = value

    def is_from_engine(self) -> bool:
        """True for the engine's notifications and messages it gives back."""
        return self.bhdr.proto.origin == _ENGINE

    def is_from_application(self) -> bool:
        """True for messages an application (this one or the peer) sent."""
        return self.bhdr.proto.origin == _APPLICATION

    def has_more(self) -> bool:
        """True when more frames with this message id follow."""
        return self.bhdr.proto.more == _MORE

    def is_close_notice(self) -> bool:
        """True for the engine's channel_closed notice: the last message a
        channel gives its group. A message the application posted that comes
        back unsent, even a Signal with status channel_closed, is not one: the
        engine marks its own notices with internal bit B, which post() clears."""
        p = self.bhdr.proto
        return p.origin == _ENGINE and p.internal_b == 1 and self._bhdr.status == _CHANNEL_CLOSED

    @property
    def is_posted(self) -> bool:
        """True once post() took this object's contents."""
        return self._bhdr is _NO_BHDR

    def reset(self) -> None:
        """Back to a fresh Request with no headers and no body."""
        self.bhdr  # noqa: B018 - NotAllowed when posted
        self._reset()

    def _reset(self) -> None:
        """reset() of a message known not to be posted (the pool's)."""
        self._bhdr.reset()
        # A fresh empty buffer for a part that has bytes: cheaper than clear()
        # (a method call and a shrinking realloc, then a growing one on reuse).
        if self._thdrs._buf:  # most messages have no text headers: nothing to do for those
            self._thdrs._buf = bytearray()
        if self._body._buf:
            self._body._buf = bytearray()

    def copy(self) -> Message:
        """A deep copy."""
        bh = self.bhdr  # NotAllowed when posted
        return Message(_bhdr=bh.copy(), _thdrs=TextHeaders(self._thdrs._buf), _body=Body(self._body._buf))

    def _take(self) -> Message:
        """Move the contents into a new Message and leave this one empty."""
        bh = self._bhdr
        if bh is _NO_BHDR:
            raise NotAllowed(_POSTED)
        if _PURE:
            m = _new(Message)
            m._bhdr, m._thdrs, m._body = bh, self._thdrs, self._body
        else:
            m = Message(_bhdr=bh, _thdrs=self._thdrs, _body=self._body)
        self._bhdr, self._thdrs, self._body = _NO_BHDR, _NO_THDRS, _NO_BODY
        return m

    def __repr__(self) -> str:
        if self.is_posted:
            return "Message(<posted>)"
        return f"Message({self.bhdr!r}, thdrs={len(self.thdrs._buf)}B, body={len(self.body._buf)}B)"


def from_wire(
    channel_number: int,
    proto: int,
    status: int,
    message_id: int,
    thdrs: bytes | bytearray | memoryview,
    body: bytes | bytearray | memoryview,
) -> Message:
    """A Message of one decoded frame's fields and parts (copied): the
    decoder's path when the pool has no message to recycle."""
    op_code, origin, more, internal_a, internal_b = PROTO_FIELDS[proto & 0xFF]
    if _PURE:  # the parts slot by slot, no __init__ calls
        pf = _new(ProtoFields)
        pf.op_code, pf.origin, pf.more, pf.internal_a, pf.internal_b = op_code, origin, more, internal_a, internal_b
        bh = _new(BinaryHeader)
        bh.channel_number, bh.proto, bh.status, bh.message_id = channel_number, pf, status, message_id
        th = _new(TextHeaders)
        th._buf = bytearray(thdrs)
        bd = _new(Body)
        bd._buf = bytearray(body)
        m = _new(Message)
        m._bhdr, m._thdrs, m._body = bh, th, bd
        return m
    pf = ProtoFields(op_code, origin, more, internal_a, internal_b)
    bh = BinaryHeader(channel_number, pf, status, message_id)
    return Message(_bhdr=bh, _thdrs=TextHeaders(thdrs), _body=Body(body))


# ---- The package's own access to a message's parts: the frame codec, the
# pool and the engine read and fill the slots through these functions, never
# the private slots themselves. Module functions, not methods, so a user sees
# none of them on a Message; `tofu` exports none. None of them checks for a
# posted message: the callers hold messages that are not.


def header_of(msg: Message) -> BinaryHeader:
    """The binary header, unguarded."""
    return msg._bhdr


def headers_buffer(msg: Message) -> bytearray:
    """The text headers' bytes, unguarded."""
    return msg._thdrs._buf


def body_buffer(msg: Message) -> bytearray:
    """The body's bytes, unguarded."""
    return msg._body._buf


def take(msg: Message) -> Message:
    """post()'s hand-over: a new Message with `msg`'s parts; `msg` is left
    empty (NotAllowed on any use). NotAllowed if it was posted already."""
    return msg._take()


def restore(msg: Message, taken: Message) -> None:
    """Undo take(): `msg` (emptied by it) gets back the parts of `taken`,
    the message take() made."""
    msg._bhdr, msg._thdrs, msg._body = taken._bhdr, taken._thdrs, taken._body
    taken._bhdr, taken._thdrs, taken._body = _NO_BHDR, _NO_THDRS, _NO_BODY


def recycle(msg: Message) -> None:
    """Reset a pooled message (not a posted one) to a fresh Request."""
    msg._reset()


def refill(
    msg: Message,
    channel_number: int,
    proto: int,
    status: int,
    message_id: int,
    thdrs: bytes | bytearray | memoryview,
    body: bytes | bytearray | memoryview,
) -> None:
    """Fill a recycled message with one decoded frame's fields and parts: it
    keeps nothing of its past (the pool's have empty parts already)."""
    bh = msg._bhdr
    bh.channel_number = channel_number
    bh.status = status
    bh.message_id = message_id
    bh.proto.set_byte(proto)
    # `+=` of a slice is cheaper than assigning one.
    th = msg._thdrs._buf
    if th:
        th.clear()
    if thdrs:
        th += thdrs
    bd = msg._body._buf
    if bd:
        bd.clear()
    if body:
        bd += body
