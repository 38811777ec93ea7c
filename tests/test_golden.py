"""Golden vectors: frames written out byte by byte from docs/protocol.md, and the
byte streams of a real session between two Zig tofu peers (docs/protocol.md).

Each vector is checked both ways: encoding the Message gives the bytes, and
decoding the bytes gives the fields.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tofu
from strategies import FrameSpec, assert_construct_is, assert_message_is
from tofu.generated import structs

# The repository and shared/ sit side by side (here /work/main and /work/shared; in CI the same).
GOLDEN = Path(__file__).resolve().parent / "data" / "golden"


def hexbytes(*groups: str) -> bytes:
    return bytes.fromhex("".join(groups))


def check_both_ways(spec: FrameSpec, wire: bytes) -> None:
    assert tofu.encode(spec.message()) == wire
    assert structs.Frame.build(spec.construct_dict()) == wire
    decoder = tofu.FrameDecoder()
    (msg,) = decoder.feed(wire)
    assert decoder.pending == 0
    assert_message_is(msg, spec)
    assert_construct_is(structs.Frame.parse(wire), spec)


# ---------------------------------------------------------------- hand-written vectors


def test_hello_request_with_connect_to() -> None:
    wire = hexbytes(
        "4edd",  # channel_number 0x4edd = 20189
        "03",  # proto: op_code 3 HelloRequest | origin 0 << 4 | more 0 << 5 = 0x03
        "00",  # status success
        "0000000000000001",  # message_id 1
        "0021",  # thl 33
        "0000",  # bl 0
        # "~connect_to:"
        "7e636f6e6e6563745f746f3a",
        # "tcp|127.0.0.1|47413"
        "7463707c3132372e302e302e317c3437343133",
        "0d0a",  # CRLF
    )
    spec = FrameSpec(op_code=3, channel_number=0x4EDD, message_id=1, headers=[("~connect_to", "tcp|127.0.0.1|47413")])
    check_both_ways(spec, wire)
    # the same message, made the way an application makes it
    m = tofu.TCPClientAddress("127.0.0.1", 47413).format(tofu.Message())
    m.bhdr.channel_number = 0x4EDD
    m.bhdr.message_id = 1
    assert tofu.encode(m) == wire


def test_response_with_headers_and_body() -> None:
    wire = hexbytes(
        "0102",  # channel_number 258
        "21",  # proto: op_code 1 Response | origin 0 << 4 | more 1 << 5 = 0x21
        "00",  # status success
        "0102030405060708",  # message_id 0x0102030405060708
        "000f",  # thl 15 = len("k:v\r\n") 5 + len("x-seq:42\r\n") 10
        "0005",  # bl 5
        "6b3a760d0a",  # "k:v\r\n"
        "782d7365713a34320d0a",  # "x-seq:42\r\n"
        "68656c6c6f",  # body "hello"
    )
    spec = FrameSpec(
        op_code=1,
        more=1,
        channel_number=0x0102,
        message_id=0x0102030405060708,
        headers=[("k", "v"), ("x-seq", "42")],
        body=b"hello",
    )
    check_both_ways(spec, wire)


def test_engine_signal_with_a_status() -> None:
    wire = hexbytes(
        "fffe",  # channel_number 65534
        "12",  # proto: op_code 2 Signal | origin 1 (engine) << 4 = 0x12
        "16",  # status 22 channel_closed
        "ffffffffffffffff",  # message_id 2**64 - 1
        "0000",  # thl 0
        "0000",  # bl 0
    )
    spec = FrameSpec(op_code=2, origin=1, status=22, channel_number=0xFFFE, message_id=2**64 - 1)
    check_both_ways(spec, wire)
    (msg,) = tofu.FrameDecoder().feed(wire)
    assert msg.is_from_engine()
    assert tofu.raw_to_status(msg.bhdr.status) is tofu.AmpeStatus.channel_closed


def test_bye_signal_with_internal_trigger() -> None:
    wire = hexbytes(
        "0005",  # channel_number 5
        "47",  # proto: op_code 7 ByeSignal | internal_a 1 << 6 = 0x47 (the engine-internal trigger)
        "00",  # status success
        "0000000000000009",  # message_id 9
        "0000",  # thl 0
        "0000",  # bl 0
    )
    spec = FrameSpec(op_code=7, internal_a=1, channel_number=5, message_id=9)
    check_both_ways(spec, wire)
    m = tofu.Message(tofu.OpCode.ByeSignal)
    m.bhdr.proto.internal_a = 1
    m.bhdr.channel_number = 5
    m.bhdr.message_id = 9
    assert tofu.encode(m) == wire
    # without the trigger the proto byte is just the op code
    m.bhdr.proto.internal_a = 0
    assert tofu.encode(m)[2] == 0x07


def test_every_proto_bit_set() -> None:
    wire = hexbytes(
        "8000",  # channel_number 32768
        "f9",  # proto 0xf9: op 9 | origin 0x10 | more 0x20 | internal_a 0x40 | internal_b 0x80
        "ff",  # status 255
        "8000000000000001",  # message_id 2**63 + 1
        "0006",  # thl 6
        "0001",  # bl 1
        "613ac3a90d0a",  # "a:é\r\n", é = c3 a9 in UTF-8
        "00",  # body: one zero byte
    )
    spec = FrameSpec(
        op_code=9,
        origin=1,
        more=1,
        internal_a=1,
        internal_b=1,
        status=255,
        channel_number=0x8000,
        message_id=2**63 + 1,
        headers=[("a", "é")],
        body=b"\x00",
    )
    check_both_ways(spec, wire)
    (msg,) = tofu.FrameDecoder().feed(wire)
    assert tofu.raw_to_status(msg.bhdr.status) is tofu.AmpeStatus.unknown_error


def test_empty_request_is_sixteen_zero_bytes() -> None:
    check_both_ways(FrameSpec(), bytes(16))


# ---------------------------------------------------------------- the Zig session

CONNECT_TO = [("~connect_to", "tcp|127.0.0.1|47413")]
# The bodies the Zig test client sent with its three Requests (0, 5 and 10 bytes), as captured.
BODIES = [b"", bytes(range(0x0E, 0x13)), bytes(range(0x15, 0x1F))]


def session(channel_number: int, hello: int, data: int, bye: int) -> list[FrameSpec]:
    """The frames of one side: Hello, three data frames mids 101..103, Bye mid 2."""
    frames = [FrameSpec(op_code=hello, channel_number=channel_number, message_id=1, headers=CONNECT_TO)]
    for i, body in enumerate(BODIES, start=1):
        frames.append(
            FrameSpec(
                op_code=data, channel_number=channel_number, message_id=100 + i, headers=[("x-seq", str(i))], body=body
            )
        )
    frames.append(FrameSpec(op_code=bye, channel_number=channel_number, message_id=2))
    return frames


ZIG_STREAMS = {
    # client -> server: HelloRequest, Requests, ByeRequest; the client's channel is 0x4edd = 20189
    "zig-client-to-server.bin": session(0x4EDD, hello=3, data=0, bye=5),
    # server -> client: HelloResponse (echoing the header), Responses, ByeResponse; channel 0x5019 = 20505
    "zig-server-to-client.bin": session(0x5019, hello=4, data=1, bye=6),
}


def read_golden(name: str) -> bytes:
    path = GOLDEN / name
    assert path.is_file(), f"golden file {path} is missing: it belongs in tests/data/golden/"
    return path.read_bytes()


@pytest.mark.parametrize("name", sorted(ZIG_STREAMS))
def test_zig_stream_decodes_to_the_session(name: str) -> None:
    data = read_golden(name)
    expected = ZIG_STREAMS[name]
    decoder = tofu.FrameDecoder()
    frames = decoder.feed(data)
    assert decoder.pending == 0
    assert len(frames) == len(expected) == 5
    for msg, spec in zip(frames, expected, strict=True):
        assert_message_is(msg, spec)
        assert msg.is_from_application() and not msg.has_more()
        assert msg.bhdr.proto.op_code.on_wire
    types = [m.bhdr.proto.get_type() for m in frames]
    assert types == [tofu.MessageType.hello, *[tofu.MessageType.regular] * 3, tofu.MessageType.bye]
    assert tofu.parse_address(frames[0]) == tofu.TCPClientAddress("127.0.0.1", 47413)


@pytest.mark.parametrize("name", sorted(ZIG_STREAMS))
def test_zig_stream_byte_by_byte(name: str) -> None:
    data = read_golden(name)
    decoder = tofu.FrameDecoder()
    frames = []
    for i in range(len(data)):
        frames += decoder.feed(data[i : i + 1])
    assert decoder.pending == 0
    for msg, spec in zip(frames, ZIG_STREAMS[name], strict=True):
        assert_message_is(msg, spec)


@pytest.mark.parametrize("name", sorted(ZIG_STREAMS))
def test_reencoding_reproduces_the_zig_stream(name: str) -> None:
    data = read_golden(name)
    # re-encode what was decoded
    out = bytearray()
    for msg in tofu.FrameDecoder().feed(data):
        tofu.encode_into(out, msg)
    assert bytes(out) == data
    # and encode the session built from scratch
    assert b"".join(tofu.encode(s.message()) for s in ZIG_STREAMS[name]) == data
    # construct agrees frame by frame
    pos = 0
    for spec in ZIG_STREAMS[name]:
        parsed = structs.Frame.parse(data[pos:])
        assert_construct_is(parsed, spec)
        assert structs.Frame.build(spec.construct_dict()) == data[pos : pos + spec.size]
        pos += spec.size
    assert pos == len(data)


def test_zig_streams_answer_each_other() -> None:
    """Every server frame is the echo of the client frame with the same message id."""
    client = tofu.FrameDecoder().feed(read_golden("zig-client-to-server.bin"))
    server = tofu.FrameDecoder().feed(read_golden("zig-server-to-client.bin"))
    for req, resp in zip(client, server, strict=True):
        assert resp.bhdr.message_id == req.bhdr.message_id
        assert resp.bhdr.proto.op_code is req.bhdr.proto.op_code.echo()
        assert resp.bhdr.proto.get_role() is tofu.MessageRole.response
        assert list(resp.thdrs) == list(req.thdrs) and bytes(resp.body) == bytes(req.body)
