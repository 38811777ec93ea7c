"""The streaming decoder and the encoder's limits (docs/protocol.md).

TCP delivers a byte stream cut anywhere; the decoder must return exactly the
frames that were sent, in order, as soon as each is complete, and keep no more
than the one partial frame in between.
"""

from __future__ import annotations

import itertools
import random

import pytest
import tofu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import FrameSpec, assert_message_is, frame_specs, small_frame_specs
from tofu.generated.codec import pack_header

STREAM_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def stream_of(specs: list[FrameSpec]) -> tuple[bytes, list[int]]:
    """The concatenated frames and the stream offset where each frame ends."""
    data = b"".join(tofu.encode(s.message()) for s in specs)
    ends = list(itertools.accumulate(s.size for s in specs))
    assert len(data) == (ends[-1] if ends else 0)
    return data, ends


def dirty_message() -> tofu.Message:
    """A recycled message that still carries an old frame's contents."""
    m = tofu.Message(tofu.OpCode.ByeSignal)
    m.bhdr.channel_number = 99
    m.bhdr.status = 7
    m.bhdr.message_id = 12345
    m.bhdr.proto.origin = tofu.OriginFlag.engine
    m.bhdr.proto.more = tofu.MoreMessagesFlag.more
    m.bhdr.proto.internal_a = m.bhdr.proto.internal_b = 1
    m.thdrs.append("stale", "header")
    m.body.append(b"stale body")
    return m


# The decoder builds frames directly with its default factory, and fills what a
# given factory returns otherwise (the engine passes its pool): both must decode alike.
FACTORIES = {
    "default": tofu.Message,
    "custom": lambda: tofu.Message(),
    "recycled": dirty_message,
}


def feed_in_chunks(
    specs: list[FrameSpec], data: bytes, ends: list[int], cuts: list[int], wrap=bytes, factory=tofu.Message
) -> None:
    """Feed `data` cut at `cuts`; check after every feed how many frames are out
    and what is pending, then check the frames themselves."""
    decoder = tofu.FrameDecoder(factory)
    got: list[tofu.Message] = []
    bounds = [0, *sorted(set(cuts)), len(data)]
    for start, stop in itertools.pairwise(bounds):
        got += decoder.feed(wrap(data[start:stop]))
        complete = sum(1 for e in ends if e <= stop)
        assert len(got) == complete  # a frame comes out as soon as its last byte is in
        boundary = ends[complete - 1] if complete else 0
        assert decoder.pending == stop - boundary  # only the frame in progress is kept
        if complete < len(specs):
            assert decoder.pending < specs[complete].size  # never more than one frame
    assert decoder.pending == 0
    assert len(got) == len(specs)
    for msg, spec in zip(got, specs, strict=True):
        assert_message_is(msg, spec)


@STREAM_SETTINGS
@given(st.data())
def test_any_cuts_return_the_frames_in_order(data) -> None:
    specs = data.draw(st.lists(small_frame_specs, min_size=1, max_size=6))
    stream, ends = stream_of(specs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    wrap = data.draw(st.sampled_from([bytes, bytearray, memoryview]))
    factory = FACTORIES[data.draw(st.sampled_from(sorted(FACTORIES)))]
    feed_in_chunks(specs, stream, ends, cuts, wrap, factory)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_any_cuts_with_bodies_up_to_the_limit(data) -> None:
    specs = data.draw(st.lists(frame_specs(), min_size=1, max_size=3))
    stream, ends = stream_of(specs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    factory = FACTORIES[data.draw(st.sampled_from(sorted(FACTORIES)))]
    feed_in_chunks(specs, stream, ends, cuts, data.draw(st.sampled_from([bytes, bytearray, memoryview])), factory)


@settings(max_examples=40, deadline=None)
@given(st.lists(small_frame_specs, min_size=1, max_size=4))
def test_byte_by_byte(specs: list[FrameSpec]) -> None:
    stream, ends = stream_of(specs)
    feed_in_chunks(specs, stream, ends, list(range(len(stream) + 1)))


@settings(max_examples=100, deadline=None)
@given(st.lists(small_frame_specs, min_size=1, max_size=6))
def test_all_at_once(specs: list[FrameSpec]) -> None:
    stream, _ = stream_of(specs)
    decoder = tofu.FrameDecoder()
    got = decoder.feed(stream)
    assert decoder.pending == 0
    assert len(got) == len(specs)
    for msg, spec in zip(got, specs, strict=True):
        assert_message_is(msg, spec)


@pytest.mark.parametrize("factory", sorted(FACTORIES))
@pytest.mark.parametrize("step", [1000, 4093, 70000, 200000])
def test_frames_with_a_full_body_in_pieces(factory: str, step: int) -> None:
    full = FrameSpec(op_code=0, channel_number=7, message_id=9, headers=[("k", "v")], body=bytes(range(256)) * 256)
    full.body = full.body[:65535]
    empty = FrameSpec(op_code=1, channel_number=7, message_id=9)
    specs = [full, empty, full, full, empty]
    stream, ends = stream_of(specs)
    feed_in_chunks(specs, stream, ends, list(range(0, len(stream), step)), factory=FACTORIES[factory])


@settings(max_examples=100, deadline=None)
@given(st.lists(small_frame_specs, min_size=1, max_size=4), st.sampled_from(sorted(FACTORIES)))
def test_recycled_messages_keep_nothing_of_their_past(specs: list[FrameSpec], factory: str) -> None:
    stream, _ = stream_of(specs)
    for msg, spec in zip(tofu.FrameDecoder(FACTORIES[factory]).feed(stream), specs, strict=True):
        assert_message_is(msg, spec)


def test_feed_empty_is_harmless() -> None:
    decoder = tofu.FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.pending == 0
    frame = tofu.encode(tofu.Message())
    assert decoder.feed(frame[:5]) == []
    assert decoder.feed(b"") == []
    assert decoder.pending == 5


def test_decoder_uses_the_factory() -> None:
    made: list[tofu.Message] = []

    def factory() -> tofu.Message:
        m = tofu.Message()
        made.append(m)
        return m

    decoder = tofu.FrameDecoder(factory)
    frames = decoder.feed(tofu.encode(tofu.Message()) * 3)
    assert len(frames) == 3
    assert all(a is b for a, b in zip(frames, made, strict=True))


def test_decoded_parts_do_not_alias_the_input() -> None:
    spec = FrameSpec(headers=[("a", "b")], body=b"payload")
    buf = bytearray(tofu.encode(spec.message()))
    (msg,) = tofu.FrameDecoder().feed(buf)
    buf[:] = b"\x00" * len(buf)
    assert_message_is(msg, spec)


# ---------------------------------------------------------------- truncated and bad input


@settings(max_examples=100, deadline=None)
@given(small_frame_specs, st.data())
def test_truncated_frame_stays_pending(spec: FrameSpec, data) -> None:
    frame = tofu.encode(spec.message())
    cut = data.draw(st.integers(0, len(frame) - 1))
    decoder = tofu.FrameDecoder()
    assert decoder.feed(frame[:cut]) == []
    assert decoder.pending == cut
    # the rest completes it
    (msg,) = decoder.feed(frame[cut:])
    assert_message_is(msg, spec)
    assert decoder.pending == 0


def test_header_promising_more_than_arrives_stays_pending() -> None:
    # a header announcing 65535 + 65535 bytes, followed by only 3 of them
    decoder = tofu.FrameDecoder()
    head = pack_header(1, 0, 0, 1, 65535, 65535)
    assert decoder.feed(head + b"abc") == []
    assert decoder.pending == 19


@pytest.mark.parametrize("code", range(10, 16))
@pytest.mark.parametrize("upper_bits", [0x00, 0x10, 0x30, 0xF0])
def test_invalid_op_code_raises_as_soon_as_the_header_is_in(code: int, upper_bits: int) -> None:
    good = [FrameSpec(op_code=1, message_id=1, headers=[("a", "1")]), FrameSpec(op_code=2, message_id=2, body=b"x")]
    stream, _ = stream_of(good)
    # an invalid frame that promises a payload which never comes
    bad_header = pack_header(0x1234, upper_bits | code, 0, 77, 100, 1000)

    decoder = tofu.FrameDecoder()
    assert decoder.feed(stream[:10]) == []
    assert len(decoder.feed(stream[10:] + bad_header[:15])) == 2  # the good frames; 15 bytes: no error yet
    assert decoder.pending == 15
    with pytest.raises(tofu.InvalidOpCode, match=rf"invalid op code {code}\b"):
        decoder.feed(bad_header[15:])  # the 16th header byte is enough
    assert decoder.pending == 0  # the bad frame's bytes are not kept
    decoder = tofu.FrameDecoder()
    with pytest.raises(tofu.InvalidOpCode, match=rf"\b{code}\b") as info:
        decoder.feed(stream + bad_header)  # payload absent: must not wait for it
    assert decoder.pending == 0
    err = info.value
    assert err.status is tofu.AmpeStatus.invalid_op_code
    assert len(err.frames) == 2
    for msg, spec in zip(err.frames, good, strict=True):
        assert_message_is(msg, spec)
    # broken for good: every later feed raises again
    with pytest.raises(tofu.InvalidOpCode):
        decoder.feed(b"")
    with pytest.raises(tofu.InvalidOpCode):
        decoder.feed(tofu.encode(tofu.Message()))


@pytest.mark.parametrize("code", range(10, 16))
def test_invalid_op_code_split_across_feeds(code: int) -> None:
    bad_header = pack_header(1, code, 0, 1, 0, 0)
    decoder = tofu.FrameDecoder()
    for i in range(15):
        assert decoder.feed(bad_header[i : i + 1]) == []
    with pytest.raises(tofu.InvalidOpCode, match=str(code)) as info:
        decoder.feed(bad_header[15:])
    assert info.value.frames == []
    assert decoder.pending == 0


# random bytes: small chunks, and large ones (made from a seed: cheaper than st.binary)
garbage_chunks = st.one_of(
    st.binary(max_size=64),
    st.tuples(st.integers(4000, 9000), st.integers(0, 2**32)).map(lambda t: random.Random(t[1]).randbytes(t[0])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(garbage_chunks, max_size=8))
def test_garbage_never_crashes(chunks: list[bytes]) -> None:
    """Any bytes: frames or InvalidOpCode, nothing else, and the decoder's
    accounting stays consistent."""
    decoder = tofu.FrameDecoder()
    fed = 0
    used = 0
    try:
        for chunk in chunks:
            fed += len(chunk)
            for msg in decoder.feed(chunk):
                used += tofu.HEADER_SIZE + len(bytes(msg.thdrs)) + len(msg.body)
            assert decoder.pending == fed - used
    except tofu.InvalidOpCode as err:
        assert isinstance(err.frames, list)


# ---------------------------------------------------------------- encoder limits


def test_text_headers_at_the_limit_encode() -> None:
    msg = tofu.Message()
    msg.thdrs.append("a", "v" * (65535 - len("a:\r\n")))
    assert len(bytes(msg.thdrs)) == 65535
    frame = tofu.encode(msg)
    assert frame[12:14] == b"\xff\xff"
    (back,) = tofu.FrameDecoder().feed(frame)
    assert bytes(back.thdrs) == bytes(msg.thdrs)


def test_text_headers_over_the_limit_raise() -> None:
    msg = tofu.Message()
    msg.thdrs._buf += b"a:" + b"v" * (65536 - len("a:\r\n")) + b"\r\n"  # past append's own check
    with pytest.raises(tofu.InvalidHeadersLen, match="65536"):
        tofu.encode(msg)
    out = bytearray(b"keep")
    with pytest.raises(tofu.InvalidHeadersLen):
        tofu.encode_into(out, msg)
    assert out == b"keep"  # nothing half-written


def test_append_refuses_text_headers_past_the_limit() -> None:
    msg = tofu.Message()
    with pytest.raises(tofu.InvalidHeadersLen, match="65536"):
        msg.thdrs.append("a", "v" * (65536 - len("a:\r\n")))
    assert bytes(msg.thdrs) == b""  # left as it was
    msg.thdrs.append("a", "v" * (tofu.MAX_HEADERS_LEN - len("a:\r\n")))
    assert len(bytes(msg.thdrs)) == tofu.MAX_HEADERS_LEN
    with pytest.raises(tofu.InvalidHeadersLen):
        msg.thdrs.append("b", "1")
    assert len(bytes(msg.thdrs)) == tofu.MAX_HEADERS_LEN


def test_many_text_headers_stop_at_the_limit() -> None:
    msg = tofu.Message()
    with pytest.raises(tofu.InvalidHeadersLen):
        for i in range(7000):
            msg.thdrs.append(f"name{i}", "value")
    assert len(bytes(msg.thdrs)) <= tofu.MAX_HEADERS_LEN
    tofu.encode(msg)  # what was appended still fits in a frame


def test_body_at_the_limit_encodes_and_over_it_raises() -> None:
    msg = tofu.Message()
    msg.body.append(b"\x01" * 65535)
    frame = tofu.encode(msg)
    assert frame[14:16] == b"\xff\xff" and len(frame) == 16 + 65535
    msg.body._buf += b"\x02"  # past append's own check
    with pytest.raises(tofu.InvalidBodyLen, match="65536"):
        tofu.encode(msg)
    out = bytearray()
    with pytest.raises(tofu.InvalidBodyLen):
        tofu.encode_into(out, msg)
    assert out == b""


def test_length_fields_are_computed_by_encode() -> None:
    msg = tofu.Message(tofu.OpCode.Signal)
    msg.thdrs.append("x", "yz")
    msg.body.append("héllo")
    frame = tofu.encode(msg)
    assert frame[12:16] == bytes([0, 6, 0, 6])
    assert frame[16:] == b"x:yz\r\nh\xc3\xa9llo"


def test_encode_into_batches_frames() -> None:
    specs = [FrameSpec(op_code=i % 7, message_id=i, body=bytes([i]) * i) for i in range(20)]
    out = bytearray()
    for s in specs:
        tofu.encode_into(out, s.message())
    assert bytes(out) == stream_of(specs)[0]


@pytest.mark.parametrize(
    "data",
    [b"x" * 65536, bytearray(65536), memoryview(b"y" * 65536), "z" * 65536, "é" * 32768],
    ids=["bytes", "bytearray", "memoryview", "str", "str-utf8"],
)
def test_body_append_refuses_a_64_kib_chunk(data) -> None:
    msg = tofu.Message()
    with pytest.raises(tofu.InvalidBodyLen, match="65536 bytes, at most 65535"):
        msg.body.append(data)
    assert len(msg.body) == 0  # left as it was
    msg.body.append(b"a" * 65000)
    with pytest.raises(tofu.InvalidBodyLen):
        msg.body.append(b"b" * 536)
    assert bytes(msg.body) == b"a" * 65000
    msg.body.append(b"b" * 535)
    assert len(msg.body) == tofu.MAX_BODY_LEN


def test_body_append_counts_bytes_of_a_wide_memoryview() -> None:
    msg = tofu.Message()
    wide = memoryview(bytearray(4 * 20000)).cast("I")  # 20000 items, 80000 bytes
    with pytest.raises(tofu.InvalidBodyLen):
        msg.body.append(wide)
    assert len(msg.body) == 0
