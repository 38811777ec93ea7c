"""Message, its parts, and text header parsing (docs/protocol.md, docs/concepts.md)."""

from __future__ import annotations

import pytest
import tofu
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import FrameSpec, assert_message_is, frame_specs, header_names, header_values, headers
from tofu.message import text_headers_problem

# ---------------------------------------------------------------- a fresh message


def test_fresh_message() -> None:
    m = tofu.Message()
    b = m.bhdr
    assert (b.channel_number, b.status, b.message_id) == (0, 0, 0)
    assert b.proto.op_code is tofu.OpCode.Request
    assert b.proto.origin is tofu.OriginFlag.application
    assert b.proto.more is tofu.MoreMessagesFlag.last
    assert (b.proto.internal_a, b.proto.internal_b) == (0, 0)
    assert list(m.thdrs) == [] and not m.thdrs
    assert bytes(m.body) == b"" and len(m.body) == 0
    assert not m.is_posted
    assert tofu.Message(tofu.OpCode.HelloRequest).bhdr.proto.op_code is tofu.OpCode.HelloRequest


def test_flags() -> None:
    m = tofu.Message()
    assert m.is_from_application() and not m.is_from_engine() and not m.has_more()
    m.bhdr.proto.origin = tofu.OriginFlag.engine
    assert m.is_from_engine() and not m.is_from_application()
    m.bhdr.proto.more = tofu.MoreMessagesFlag.more
    assert m.has_more()
    m.bhdr.proto.more = tofu.MoreMessagesFlag.last
    assert not m.has_more()


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 255))
def test_flags_of_a_decoded_frame(proto: int) -> None:
    if proto & 0x0F > 9:
        proto &= 0xF0
    spec = FrameSpec(
        op_code=proto & 0x0F,
        origin=proto >> 4 & 1,
        more=proto >> 5 & 1,
        internal_a=proto >> 6 & 1,
        internal_b=proto >> 7 & 1,
    )
    (m,) = tofu.FrameDecoder().feed(tofu.encode(spec.message()))
    assert m.is_from_engine() == bool(spec.origin)
    assert m.is_from_application() == (not spec.origin)
    assert m.has_more() == bool(spec.more)
    assert m.bhdr.proto.to_byte() == proto


# ---------------------------------------------------------------- take / reset / copy


def full_message() -> tofu.Message:
    spec = FrameSpec(
        op_code=1, origin=1, more=1, internal_a=1, internal_b=1, status=22, channel_number=513, message_id=2**64 - 1
    )
    spec.headers = [("a", "1"), ("b", "two")]
    spec.body = b"body bytes"
    return spec.message()


def test_take_moves_the_contents_and_empties_the_original() -> None:
    m = full_message()
    bhdr, thdrs, body = m.bhdr, m.thdrs, m.body
    moved = m._take()
    assert moved.bhdr is bhdr and moved.thdrs is thdrs and moved.body is body
    assert not moved.is_posted
    assert m.is_posted
    for part in ("bhdr", "thdrs", "body"):
        with pytest.raises(tofu.NotAllowed):
            getattr(m, part)
    with pytest.raises(tofu.NotAllowed):
        m.has_more()
    with pytest.raises(tofu.NotAllowed):
        m._take()
    with pytest.raises(tofu.NotAllowed):
        m.copy()
    assert "posted" in repr(m)
    with pytest.raises(AttributeError):
        m.no_such_attribute  # noqa: B018  (other names are ordinary attribute errors)


def test_reset_clears_everything() -> None:
    m = full_message()
    m.reset()
    fresh = tofu.Message()
    assert m.bhdr == fresh.bhdr
    assert m.bhdr.proto.to_byte() == 0
    assert (m.bhdr.channel_number, m.bhdr.status, m.bhdr.message_id) == (0, 0, 0)
    assert bytes(m.thdrs) == b"" and list(m.thdrs) == []
    assert bytes(m.body) == b""
    assert tofu.encode(m) == tofu.encode(fresh) == bytes(16)


def test_copy_is_deep() -> None:
    m = full_message()
    original = tofu.encode(m)
    c = m.copy()
    assert tofu.encode(c) == original
    assert c.bhdr is not m.bhdr and c.bhdr.proto is not m.bhdr.proto
    assert c.thdrs is not m.thdrs and c.body is not m.body
    c.bhdr.channel_number = 1
    c.bhdr.message_id = 1
    c.bhdr.status = 0
    c.bhdr.proto.op_code = tofu.OpCode.Signal
    c.bhdr.proto.origin = tofu.OriginFlag.application
    c.thdrs.append("c", "3")
    c.body.append(b"more")
    assert tofu.encode(m) == original
    c.thdrs.clear()
    c.body.clear()
    assert tofu.encode(m) == original
    # and the other way round
    m.body.append(b"!")
    assert bytes(c.body) == b""


@settings(max_examples=100, deadline=None)
@given(frame_specs())
def test_copy_and_take_preserve_any_frame(spec: FrameSpec) -> None:
    m = spec.message()
    assert_message_is(m.copy(), spec)
    assert_message_is(m._take(), spec)


def test_binary_header_copy_and_equality() -> None:
    m = full_message()
    h = m.bhdr.copy()
    assert h == m.bhdr and h is not m.bhdr
    h.proto.internal_b = 0
    assert h != m.bhdr
    assert m.bhdr.proto.internal_b == 1
    assert "channel_closed" in repr(m.bhdr)


def test_proto_fields_defaults() -> None:
    p = tofu.ProtoFields()
    assert p.op_code is tofu.OpCode.Request
    assert p.origin is tofu.OriginFlag.application
    assert p.more is tofu.MoreMessagesFlag.last
    assert (p.internal_a, p.internal_b) == (0, 0)
    assert p.to_byte() == 0
    given_fields = tofu.ProtoFields(tofu.OpCode.Signal, tofu.OriginFlag.engine, tofu.MoreMessagesFlag.more, 1, 1)
    assert given_fields.origin is tofu.OriginFlag.engine and given_fields.more is tofu.MoreMessagesFlag.more
    assert given_fields == tofu.ProtoFields.from_byte(given_fields.to_byte())


def test_reprs_name_the_fields() -> None:
    p = tofu.ProtoFields(tofu.OpCode.Signal, tofu.OriginFlag.engine, tofu.MoreMessagesFlag.more)
    assert repr(p) == "ProtoFields(Signal, engine, more)"
    assert repr(tofu.ProtoFields.from_byte(12)) == "ProtoFields(12, application, last)"  # an invalid op code
    msg = tofu.Message(tofu.OpCode.Signal)
    msg.body.append(b"abc")
    assert repr(msg).startswith("Message(BinaryHeader(channel_number=0, proto=ProtoFields(Signal, application, last)")
    assert repr(msg).endswith(", thdrs=0B, body=3B)")
    msg._take()
    assert repr(msg) == "Message(<posted>)"
    assert repr(tofu.TextHeaders(b"a:1\r\n")) == "TextHeaders(b'a:1\\r\\n')"
    assert repr(tofu.Body(b"abc")) == "Body(3 bytes)"


def test_binary_header_keeps_the_proto_fields_it_is_given() -> None:
    p = tofu.ProtoFields(tofu.OpCode.Signal)
    bh = tofu.BinaryHeader(7, p, 3, 9)
    assert bh.proto is p
    assert (bh.channel_number, bh.status, bh.message_id) == (7, 3, 9)


def test_a_posted_message_says_why_its_parts_are_gone() -> None:
    msg = tofu.Message()
    msg._take()
    with pytest.raises(tofu.NotAllowed) as info:
        msg.body  # noqa: B018
    assert str(info.value) == "this message was posted: it belongs to the engine now"
    with pytest.raises(AttributeError) as missing:
        msg.no_such_part  # noqa: B018
    assert "no_such_part" in str(missing.value)  # an ordinary attribute error, naming the attribute


def test_text_headers_truth_and_equality() -> None:
    empty, one, same, other = tofu.TextHeaders(), tofu.TextHeaders(), tofu.TextHeaders(), tofu.TextHeaders()
    assert not empty
    for h, value in ((one, "1"), (same, "1"), (other, "2")):
        h.append("a", value)
    assert one and bool(one) is True
    assert one == same
    assert one != other and one != empty
    assert tofu.TextHeaders(b"a:1\r\n") == one  # equal by their bytes
    assert one.__eq__(b"a:1\r\n") is NotImplemented  # only another TextHeaders compares
    assert one != b"a:1\r\n"


def test_body_equality() -> None:
    body = tofu.Body(b"x")
    assert body == tofu.Body(b"x")
    assert body != tofu.Body(b"y") and body != tofu.Body()
    assert body == b"x" and body == bytearray(b"x") and body != b"y"
    assert body.__eq__("x") is NotImplemented


def test_proto_fields_are_assignable_enums() -> None:
    p = tofu.ProtoFields()
    p.op_code = tofu.OpCode.ByeRequest
    p.origin = tofu.OriginFlag.engine
    p.more = tofu.MoreMessagesFlag.more
    assert p.to_byte() == 0x35
    assert tofu.ProtoFields.from_byte(0x35) == p


def test_body_append_kinds() -> None:
    b = tofu.Body()
    b.append(b"ab")
    b.append(bytearray(b"cd"))
    b.append(memoryview(b"ef"))
    b.append("é")
    assert bytes(b) == b"abcdef\xc3\xa9" and len(b) == 8
    assert b == b"abcdef\xc3\xa9"
    b.clear()
    assert bytes(b) == b""


# ---------------------------------------------------------------- text headers: building


def test_append_and_iterate_in_order() -> None:
    t = tofu.TextHeaders()
    t.append("~connect_to", "tcp|127.0.0.1|47413")
    t.append("x-seq", 3)  # an int value is written as its decimal text
    t.append("url", "http://h:80/p")
    assert bytes(t) == b"~connect_to:tcp|127.0.0.1|47413\r\nx-seq:3\r\nurl:http://h:80/p\r\n"
    assert list(t) == [("~connect_to", "tcp|127.0.0.1|47413"), ("x-seq", "3"), ("url", "http://h:80/p")]
    assert t.get("x-seq") == "3"
    assert t.get("missing") is None and t.get("missing", "d") == "d"


def test_duplicate_names_are_kept_and_get_returns_the_first() -> None:
    t = tofu.TextHeaders()
    t.append("k", "1")
    t.append("k", "2")
    assert list(t) == [("k", "1"), ("k", "2")]
    assert t.get("k") == "1"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("", "v", "^text header name is empty$"),
        (" \t", "v", "^text header name is empty$"),
        ("n", "", "^text header 'n' has an empty value$"),
        ("n", " \t ", "^text header 'n' has an empty value$"),  # nothing left once a reader trims it
        ("a:b", "v", "^text header name 'a:b' contains ':', CR, LF or NUL$"),
        (":", "v", "^text header name ':' contains ':', CR, LF or NUL$"),
        ("a\rb", "v", "^text header name 'a\\\\rb' contains ':', CR, LF or NUL$"),
        ("a\nb", "v", "^text header name 'a\\\\nb' contains ':', CR, LF or NUL$"),
        ("n", "a\rb", "^text header 'n' value contains CR, LF or NUL$"),
        ("n", "a\nb", "^text header 'n' value contains CR, LF or NUL$"),
        ("n", "v\r\n", "^text header 'n' value contains CR, LF or NUL$"),
        ("n", "v\r\nother:header", "^text header 'n' value contains CR, LF or NUL$"),
    ],
)
def test_append_rejects_what_would_break_the_line_format(name: str, value: str, says: str) -> None:
    t = tofu.TextHeaders()
    t.append("keep", "me")
    with pytest.raises(tofu.InvalidMessage, match=says):
        t.append(name, value)
    assert list(t) == [("keep", "me")]  # nothing half-appended


@settings(max_examples=200, deadline=None)
@given(headers)
def test_appended_headers_read_back(hdrs: list[tuple[str, str]]) -> None:
    t = tofu.TextHeaders()
    for n, v in hdrs:
        t.append(n, v)
    assert list(t) == hdrs
    assert bytes(t) == b"".join(f"{n}:{v}\r\n".encode() for n, v in hdrs)


# ---------------------------------------------------------------- text headers: parsing received bytes


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", []),
        (b"a:1\r\n", [("a", "1")]),
        (b"a:1", [("a", "1")]),  # the last header needs no CRLF
        (b"a:1\r\nb:2", [("a", "1"), ("b", "2")]),
        (b"\r\n\r\na:1\r\n\r\nb:2\r\n\r\n", [("a", "1"), ("b", "2")]),  # empty lines skipped
        (b"a: 1 \r\n", [("a", "1")]),  # spaces around the value trimmed
        (b" a\t:1\r\n", [("a", "1")]),  # and around the name
        (b"a:\t \t1\t \r\n", [("a", "1")]),  # and tabs
        (b"a: x y \r\n", [("a", "x y")]),  # inner spaces kept
        (b"url:http://h:80/p\r\n", [("url", "http://h:80/p")]),  # the value may contain ':'
        (b"a::\r\n", [("a", ":")]),
        (b"~connect_to:tcp|127.0.0.1|47413\r\n", [("~connect_to", "tcp|127.0.0.1|47413")]),
        ("ключ:значение\r\n".encode(), [("ключ", "значение")]),
    ],
)
def test_parsing_received_headers(raw: bytes, expected: list[tuple[str, str]]) -> None:
    assert list(tofu.TextHeaders(raw)) == expected


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"nocolon\r\n", "line b'nocolon' has no colon"),
        (b"a:1\r\nnocolon", "line b'nocolon' has no colon"),
        (b":value\r\n", "line b':value' has an empty name"),
        (b"name:\r\n", "line b'name:' has an empty value"),
        (b"name: \t \r\n", "line b'name: \\t ' has an empty value"),  # empty once trimmed
        (b"a:1\r\n \r\n", "line b' ' has no colon"),  # a blank-looking line is not empty: no colon
    ],
)
def test_malformed_received_headers_raise_on_iteration(raw: bytes, says: str) -> None:
    t = tofu.TextHeaders(raw)  # taking the bytes never fails: a peer's bytes are kept as received
    assert bytes(t) == raw
    with pytest.raises(tofu.InvalidMessage) as info:
        list(t)
    assert str(info.value) == "text header " + says


def test_malformed_received_headers_in_a_frame() -> None:
    # a peer's frame with a bad header line still decodes; reading the headers
    # raises, before any pair: the part is valid or not as a whole
    raw = b"good:1\r\nbad line\r\n"
    frame = tofu.generated.codec.pack_header(1, 1, 0, 5, len(raw), 0) + raw
    (m,) = tofu.FrameDecoder().feed(frame)
    assert bytes(m.thdrs) == raw
    with pytest.raises(tofu.InvalidMessage, match="bad line"):
        next(iter(m.thdrs))
    with pytest.raises(tofu.InvalidMessage, match="bad line"):
        m.thdrs.get("good")
    with pytest.raises(tofu.InvalidMessage, match="has no colon"):
        m.thdrs.check()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_parsing_tolerates_what_a_peer_may_write(data) -> None:
    """Any valid headers, written with blanks around the value, empty lines in
    between and with or without a final CRLF, read back as the same pairs."""
    hdrs = data.draw(st.lists(st.tuples(header_names, header_values), min_size=1, max_size=6))
    blanks = st.text(st.sampled_from(" \t"), max_size=3)
    lines = []
    for n, v in hdrs:
        lines.append(f"{n}:{data.draw(blanks)}{v}{data.draw(blanks)}".encode())
        lines.extend([b""] * data.draw(st.integers(0, 2)))
    raw = b"\r\n".join(lines)
    if data.draw(st.booleans()):
        raw += b"\r\n"
    assert list(tofu.TextHeaders(raw)) == hdrs


# Each malformed part, with the words of the problem the check names.
MALFORMED = {
    "no colon": (b"a:1\r\nno colon here\r\n", "has no colon"),
    "no colon, last line": (b"a:1\r\nnocolon", "has no colon"),
    "empty name": (b":value\r\n", "has an empty name"),
    "blank name": (b" \t:value\r\n", "has an empty name"),
    "empty value": (b"name:\r\n", "has an empty value"),
    "blank value": (b"name: \t \r\n", "has an empty value"),
    "blank line": (b"a:1\r\n \r\n", "has no colon"),
    "NUL in a name": (b"na\x00me:v\r\n", "NUL"),
    "NUL in a value": (b"name:v\x00\r\n", "NUL"),
    "NUL alone": (b"\x00", "has no colon"),
    "lone CR": (b"name:v\rw\r\n", "CR or LF"),
    "lone LF": (b"a:1\nb:2\r\n", "CR or LF"),
    "CR at the end": (b"a:1\r", "CR or LF"),
    "non-UTF-8 name": (b"n\xff:v\r\n", "not UTF-8"),
    "non-UTF-8 value": (b"a:1\r\nn:v\xfe\r\n", "not UTF-8"),
    "truncated UTF-8": (b"n:\xc3\r\n", "not UTF-8"),
    "surrogate as UTF-8": (b"n:\xed\xa0\x80\r\n", "not UTF-8"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_every_reader_refuses_a_malformed_part_alike(name: str) -> None:
    raw, words = MALFORMED[name]
    problem = text_headers_problem(raw)
    assert problem is not None and words in problem
    t = tofu.TextHeaders(raw)
    assert bytes(t) == raw  # taking the bytes never fails
    for read in (list, lambda t: t.get("a"), lambda t: t.check()):
        with pytest.raises(tofu.InvalidMessage, match=words):
            read(t)


def _oracle_problem(raw: bytes) -> bool:
    """The rules of docs/protocol.md, line by line, written independently."""
    for line in raw.split(b"\r\n"):
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name.strip(b" \t") or not value.strip(b" \t"):
            return True
        if any(c in line for c in (b"\x00", b"\r", b"\n")):
            return True
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return True
    return False


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"a", b"\xc3\xa9", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b"\xc3"]),
        max_size=24,
    )
)
def test_the_check_and_the_accessors_agree_on_any_bytes(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)
    bad = _oracle_problem(raw)
    assert (text_headers_problem(raw) is not None) == bad
    t = tofu.TextHeaders(raw)
    if bad:
        with pytest.raises(tofu.InvalidMessage):
            list(t)
    else:
        t.check()
        pairs = list(t)  # never raises
        u = tofu.TextHeaders()
        for n, v in pairs:
            u.append(n, v)  # what a reader gets can be written again
        assert list(u) == pairs and u.check() is None


def test_append_refuses_nul_and_non_utf8():
    t = tofu.TextHeaders()
    for name, value in (("na\0me", "v"), ("n", "v\0"), ("n", "\udcff")):
        with pytest.raises(tofu.InvalidMessage):
            t.append(name, value)
    assert bytes(t) == b""


def test_append_of_an_unencodable_value_is_an_invalid_message():
    msg = tofu.Message()
    with pytest.raises(tofu.InvalidMessage, match="^text header 'name' cannot be encoded: surrogates not allowed$"):
        msg.thdrs.append("name", "\ud800")
    assert bytes(msg.thdrs) == b""
