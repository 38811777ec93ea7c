"""The fast codec against the construct definitions, and the generated enums/errors.

Both codecs are generated from spec/tofu.toml by different templates: one a
precompiled struct plus masks, the other declarative construct. Every frame
shape must come out byte-identical from both, and read back the same.
"""

from __future__ import annotations

import struct

import pytest
import tofu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import FrameSpec, assert_construct_is, assert_message_is, frame_specs, ival
from tofu.generated import codec, structs

FRAME_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_one(data: bytes) -> tofu.Message:
    decoder = tofu.FrameDecoder()
    frames = decoder.feed(data)
    assert len(frames) == 1
    assert decoder.pending == 0
    return frames[0]


# ---------------------------------------------------------------- whole frames


@FRAME_SETTINGS
@given(frame_specs())
def test_fast_encode_then_decode_is_identity(spec: FrameSpec) -> None:
    msg = spec.message()
    data = tofu.encode(msg)
    assert len(data) == spec.size
    assert_message_is(decode_one(data), spec)
    # encode_into appends the same bytes after whatever is already there
    out = bytearray(b"prefix")
    tofu.encode_into(out, msg)
    assert bytes(out) == b"prefix" + data


@FRAME_SETTINGS
@given(frame_specs())
def test_fast_encode_matches_construct_build(spec: FrameSpec) -> None:
    fast = tofu.encode(spec.message())
    assert fast == structs.Frame.build(spec.construct_dict())
    # and the header is the layout of docs/protocol.md, packed by hand
    assert fast[:16] == struct.pack(
        ">HBBQHH", spec.channel_number, spec.proto, spec.status, spec.message_id, len(spec.text_headers), len(spec.body)
    )
    assert fast[16:] == spec.text_headers + spec.body


@FRAME_SETTINGS
@given(frame_specs())
def test_construct_parse_of_fast_bytes_gives_the_same_fields(spec: FrameSpec) -> None:
    data = tofu.encode(spec.message())
    assert_construct_is(structs.Frame.parse(data), spec)


# ---------------------------------------------------------------- the proto byte


def construct_proto_fields(byte: int) -> tuple[int, int, int, int, int]:
    p = structs.Proto.parse(bytes([byte]))
    return ival(p.op_code), ival(p.origin), ival(p.more), p.internal_a, p.internal_b


@pytest.mark.parametrize("byte", range(256))
def test_proto_byte_fast_and_construct_agree(byte: int) -> None:
    fields = codec.unpack_proto(byte)
    assert fields == construct_proto_fields(byte)
    op_code, origin, more, internal_a, internal_b = fields
    # bit layout of docs/protocol.md, bit 0 = least significant
    assert (op_code, origin, more, internal_a, internal_b) == (
        byte & 0x0F,
        byte >> 4 & 1,
        byte >> 5 & 1,
        byte >> 6 & 1,
        byte >> 7 & 1,
    )
    assert codec.pack_proto(*fields) == byte
    built = structs.Proto.build(
        {"op_code": op_code, "origin": origin, "more": more, "internal_a": internal_a, "internal_b": internal_b}
    )
    assert built == bytes([byte])
    # ProtoFields reads and writes the same byte
    pf = tofu.ProtoFields.from_byte(byte)
    assert pf.to_byte() == byte
    assert (int(pf.op_code), int(pf.origin), int(pf.more), pf.internal_a, pf.internal_b) == fields
    assert pf.is_valid() == (op_code <= 9)
    assert isinstance(pf.op_code, tofu.OpCode) == (op_code <= 9)


def test_pack_proto_masks_each_field() -> None:
    # out-of-range inputs never spill into the neighbouring bits
    assert codec.pack_proto(0x1F, 0, 0) == 0x0F
    assert codec.pack_proto(0, 3, 0) == 0x10
    assert codec.pack_proto(0, 0, 2) == 0x00
    assert codec.pack_proto(0, 0, 0, 3, 3) == 0xC0


# ---------------------------------------------------------------- the binary header


def construct_header_tuple(data: bytes) -> tuple[int, ...]:
    h = structs.BinaryHeader.parse(data)
    p = h.proto
    proto = ival(p.op_code) | ival(p.origin) << 4 | ival(p.more) << 5 | p.internal_a << 6 | p.internal_b << 7
    return (h.channel_number, proto, ival(h.status), h.message_id, h.thl, h.bl)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_unpack_header_agrees_with_construct_on_any_16_bytes(data: bytes) -> None:
    fast = codec.unpack_header(data)
    assert fast == construct_header_tuple(data)
    assert codec.pack_header(*fast) == data


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 2**64 - 1),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
)
def test_pack_header_agrees_with_construct_build(ch: int, proto: int, status: int, mid: int, thl: int, bl: int) -> None:
    op_code, origin, more, internal_a, internal_b = codec.unpack_proto(proto)
    built = structs.BinaryHeader.build(
        {
            "channel_number": ch,
            "proto": {
                "op_code": op_code,
                "origin": origin,
                "more": more,
                "internal_a": internal_a,
                "internal_b": internal_b,
            },
            "status": status,
            "message_id": mid,
            "thl": thl,
            "bl": bl,
        }
    )
    assert codec.pack_header(ch, proto, status, mid, thl, bl) == built
    buf = bytearray(20)
    codec.pack_header_into(buf, 3, ch, proto, status, mid, thl, bl)
    assert bytes(buf[3:19]) == built
    assert codec.unpack_header(buf, 3) == (ch, proto, status, mid, thl, bl)


def test_header_constants_follow_the_protocol() -> None:
    assert codec.HEADER_SIZE == tofu.HEADER_SIZE == codec.HEADER.size == 16
    assert (
        codec.CHANNEL_NUMBER_OFFSET,
        codec.PROTO_OFFSET,
        codec.STATUS_OFFSET,
        codec.MESSAGE_ID_OFFSET,
        codec.THL_OFFSET,
        codec.BL_OFFSET,
    ) == (0, 2, 3, 4, 12, 14)
    assert codec.NUM_OP_CODES == 10
    assert tofu.MAX_HEADERS_LEN == tofu.MAX_BODY_LEN == 65535
    assert tofu.MAX_FRAME_SIZE == 16 + 65535 + 65535
    assert structs.BinaryHeader.sizeof() == 16


# ---------------------------------------------------------------- op codes (docs/protocol.md)

# code, name, type, role, on the wire, echo
OP_TABLE = [
    (0, "Request", "regular", "request", True, "Response"),
    (1, "Response", "regular", "response", True, None),
    (2, "Signal", "regular", "signal", True, "Signal"),
    (3, "HelloRequest", "hello", "request", True, "HelloResponse"),
    (4, "HelloResponse", "hello", "response", True, None),
    (5, "ByeRequest", "bye", "request", True, "ByeResponse"),
    (6, "ByeResponse", "bye", "response", True, None),
    (7, "ByeSignal", "bye", "signal", False, None),
    (8, "WelcomeRequest", "welcome", "request", False, "WelcomeResponse"),
    (9, "WelcomeResponse", "welcome", "response", False, None),
]


@pytest.mark.parametrize(("code", "name", "mtype", "role", "on_wire", "echo"), OP_TABLE)
def test_op_code_table(code: int, name: str, mtype: str, role: str, on_wire: bool, echo: str | None) -> None:
    op = tofu.OpCode(code)
    assert op.name == name and op is getattr(tofu.OpCode, name)
    assert op.get_type() is tofu.MessageType[mtype]
    assert op.get_role() is tofu.MessageRole[role]
    assert op.on_wire is on_wire
    assert op.echo() is (None if echo is None else tofu.OpCode[echo])
    # ProtoFields answers the same
    pf = tofu.ProtoFields(op)
    assert pf.get_type() is tofu.MessageType[mtype]
    assert pf.get_role() is tofu.MessageRole[role]
    # construct names it the same
    assert str(structs.Proto.parse(bytes([code])).op_code) == name


def test_op_code_has_exactly_ten_members() -> None:
    assert [int(op) for op in tofu.OpCode] == list(range(10))


@pytest.mark.parametrize("code", range(10, 16))
def test_invalid_op_code_in_proto_fields(code: int) -> None:
    pf = tofu.ProtoFields.from_byte(code)
    assert pf.op_code == code and not pf.is_valid()
    with pytest.raises(tofu.InvalidOpCode, match=str(code)):
        pf.get_type()
    with pytest.raises(tofu.InvalidOpCode, match=str(code)):
        pf.get_role()


def test_flag_enums() -> None:
    assert (tofu.OriginFlag.application, tofu.OriginFlag.engine) == (0, 1)
    assert (tofu.MoreMessagesFlag.last, tofu.MoreMessagesFlag.more) == (0, 1)
    assert [m.name for m in tofu.MessageType] == ["regular", "welcome", "hello", "bye"]
    assert [m.name for m in tofu.MessageRole] == ["request", "response", "signal"]
    assert str(tofu.OpCode.HelloRequest) == "OpCode.HelloRequest"


# ---------------------------------------------------------------- statuses and errors (docs/protocol.md)

STATUS_TABLE = {
    0: ("success", None),
    1: ("not_implemented_yet", "NotImplementedYet"),
    2: ("wrong_address", "WrongAddress"),
    3: ("not_allowed", "NotAllowed"),
    4: ("null_message", "NullMessage"),
    5: ("invalid_message", "InvalidMessage"),
    6: ("invalid_op_code", "InvalidOpCode"),
    7: ("invalid_headers_len", "InvalidHeadersLen"),
    8: ("invalid_body_len", "InvalidBodyLen"),
    9: ("invalid_more_usage", "InvalidMoreUsage"),
    10: ("invalid_channel_number", "InvalidChannelNumber"),
    11: ("invalid_mchn_group", "InvalidMessageChannelGroup"),
    12: ("invalid_message_id", "InvalidMessageId"),
    13: ("invalid_address", "InvalidAddress"),
    14: ("uds_path_not_found", "UDSPathNotFound"),
    15: ("notification_disabled", "NotificationDisabled"),
    16: ("notification_failed", "NotificationFailed"),
    17: ("peer_disconnected", "PeerDisconnected"),
    18: ("communication_failed", "CommunicationFailed"),
    19: ("pool_empty", "PoolEmpty"),
    20: ("allocation_failed", "AllocationFailed"),
    21: ("receiver_update", "ReceiverUpdate"),
    22: ("channel_closed", "ChannelClosed"),
    23: ("shutdown_started", "ShutdownStarted"),
    24: ("connect_failed", "ConnectFailed"),
    25: ("listen_failed", "ListenFailed"),
    26: ("accept_failed", "AcceptFailed"),
    27: ("send_failed", "SendFailed"),
    28: ("recv_failed", "RecvFailed"),
    29: ("setsockopt_failed", "SetsockoptFailed"),
    30: ("processing_failed", "ProcessingFailed"),
    31: ("unknown_error", "UnknownError"),
}


def test_status_names_and_values() -> None:
    assert {int(s): s.name for s in tofu.AmpeStatus} == {v: n for v, (n, _) in STATUS_TABLE.items()}
    for value, (name, _) in STATUS_TABLE.items():
        assert str(structs.Status.parse(bytes([value]))) == name


def test_reference_spelling_is_an_alias() -> None:
    assert tofu.AmpeStatus.invelid_mchn_group is tofu.AmpeStatus.invalid_mchn_group
    assert tofu.AmpeStatus["invelid_mchn_group"] == 11
    assert tofu.AmpeStatus(11).name == "invalid_mchn_group"


@pytest.mark.parametrize("value", range(1, 32))
def test_every_error_status_has_its_class(value: int) -> None:
    name, error = STATUS_TABLE[value]
    cls = getattr(tofu, error)
    assert issubclass(cls, tofu.AmpeError) and cls is not tofu.AmpeError
    assert cls.status is tofu.AmpeStatus[name]
    assert tofu.STATUS_TO_ERROR[tofu.AmpeStatus(value)] is cls
    # an instance carries the status and a readable default message
    err = cls()
    assert err.status == value
    assert name in str(err)
    assert str(cls("custom")) == "custom"


def test_error_classes_are_distinct() -> None:
    classes = [getattr(tofu, e) for _, e in STATUS_TABLE.values() if e]
    assert len(set(classes)) == 31


@pytest.mark.parametrize("raw", range(256))
def test_raw_to_status_and_error(raw: int) -> None:
    status = tofu.raw_to_status(raw)
    expected = min(31, raw)  # 31 and above read as unknown_error
    assert status is tofu.AmpeStatus(expected)
    err = tofu.raw_to_error(raw)
    if raw == 0:
        assert err is None
    else:
        assert type(err) is getattr(tofu, STATUS_TABLE[expected][1])
        assert err.status is status
    assert tofu.status_to_raw(status) == expected
    assert tofu.raw_to_status(tofu.status_to_raw(status)) is status


def test_status_to_error() -> None:
    assert tofu.status_to_error(tofu.AmpeStatus.success) is None
    assert isinstance(tofu.status_to_error(tofu.AmpeStatus.connect_failed), tofu.ConnectFailed)
    for status in tofu.AmpeStatus:
        assert status.meaning  # every status documents its meaning
