"""The receive-side rules of runtime/inbound.py, frame by frame, without sockets."""

from __future__ import annotations

import pytest
import tofu
from hypothesis import given, settings
from hypothesis import strategies as st
from tofu import AmpeStatus, Message, OpCode
from tofu.generated.codec import pack_header, pack_proto
from tofu.inbound import Inbound


def frame(
    op: int,
    thdrs: bytes = b"",
    body: bytes = b"",
    more: int = 0,
    status: int = 0,
    origin: int = 0,
    a: int = 0,
    b: int = 0,
) -> Message:
    """A Message exactly as the decoder makes it of a peer's bytes."""
    data = pack_header(9, pack_proto(op, origin, more, a, b), status, 1, len(thdrs), len(body)) + thdrs + body
    (msg,) = tofu.FrameDecoder().feed(data)
    return msg


HELLO = (OpCode.HelloRequest, b"~connect_to:tcp|h|1\r\n")


def server() -> Inbound:
    """The accepting side, after a good HelloRequest."""
    inbound = Inbound(accepted=True)
    inbound.admit(frame(*HELLO))
    return inbound


def client() -> Inbound:
    return Inbound(accepted=False)


def refused(inbound: Inbound, msg: Message) -> AmpeStatus:
    with pytest.raises(tofu.AmpeError) as info:
        inbound.admit(msg)
    return info.value.status


# ---------------------------------------------------------------- text headers


@pytest.mark.parametrize(
    "thdrs",
    [
        b"no colon here\r\n",
        b"a:1\r\nnocolon",
        b":value\r\n",
        b" :value\r\n",
        b"name:\r\n",
        b"name:v\x00\r\n",
        b"na\x00me:v\r\n",
        b"\x00",
        b"n:\xff\r\n",
        b"n\xc3:v\r\n",
        b"a:1\nb:2\r\n",
        b"a:1\r",
    ],
)
@pytest.mark.parametrize("side", [server, client])
def test_malformed_text_headers_are_an_invalid_message(side, thdrs: bytes) -> None:
    for op in (OpCode.Request, OpCode.Response, OpCode.Signal, OpCode.ByeRequest):
        assert refused(side(), frame(op, thdrs)) == AmpeStatus.invalid_message
    assert refused(Inbound(accepted=True), frame(OpCode.HelloRequest, thdrs)) == AmpeStatus.invalid_message


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=64)
    | st.lists(st.sampled_from([b"a", b":", b" ", b"\r\n", b"\x00", b"\xff", b"\n"])).map(b"".join)
)
def test_what_is_admitted_can_always_be_read(thdrs: bytes) -> None:
    """The receive check and the accessors agree: an admitted frame's headers
    never raise; a frame whose headers would raise is refused."""
    msg = frame(OpCode.Signal, thdrs)
    try:
        server().admit(msg)
    except tofu.InvalidMessage:
        with pytest.raises(tofu.InvalidMessage):
            list(msg.thdrs)
    else:
        pairs = list(msg.thdrs)
        for name, _ in pairs:
            assert msg.thdrs.get(name) is not None


# ---------------------------------------------------------------- op codes and the handshake


@pytest.mark.parametrize("op", [OpCode.ByeSignal, OpCode.WelcomeRequest, OpCode.WelcomeResponse])
@pytest.mark.parametrize("side", [server, client, lambda: Inbound(accepted=True)])
def test_local_only_op_codes_are_invalid_op_codes(side, op: OpCode) -> None:
    assert refused(side(), frame(op)) == AmpeStatus.invalid_op_code


@pytest.mark.parametrize(
    "op",
    [OpCode.Request, OpCode.Response, OpCode.Signal, OpCode.HelloResponse, OpCode.ByeRequest, OpCode.ByeResponse],
)
def test_an_accepted_connection_admits_nothing_before_its_hello_request(op: OpCode) -> None:
    inbound = Inbound(accepted=True)
    assert not inbound.hello_received
    assert refused(inbound, frame(op)) == AmpeStatus.not_allowed


def test_the_hello_request_opens_an_accepted_connection_once() -> None:
    inbound = Inbound(accepted=True)
    inbound.admit(frame(*HELLO))
    assert inbound.hello_received
    for op in (OpCode.Request, OpCode.Response, OpCode.Signal, OpCode.ByeRequest, OpCode.ByeResponse):
        inbound.admit(frame(op))
    assert refused(inbound, frame(*HELLO)) == AmpeStatus.not_allowed  # a second HelloRequest
    assert refused(server(), frame(OpCode.HelloResponse)) == AmpeStatus.not_allowed  # wrong direction


def test_the_connecting_side_admits_one_hello_response_and_no_hello_request() -> None:
    inbound = client()
    assert not inbound.hello_received
    inbound.admit(frame(OpCode.Signal))  # a server may speak before it answers: no rule against it
    inbound.admit(frame(OpCode.HelloResponse))
    inbound.admit(frame(OpCode.Response))
    assert refused(inbound, frame(OpCode.HelloResponse)) == AmpeStatus.not_allowed
    assert refused(client(), frame(*HELLO)) == AmpeStatus.not_allowed


def test_a_refused_hello_changes_nothing() -> None:
    inbound = Inbound(accepted=True)
    assert refused(inbound, frame(*HELLO, more=1)) == AmpeStatus.invalid_more_usage
    assert not inbound.hello_received


# ---------------------------------------------------------------- the more flag


@pytest.mark.parametrize("op", [OpCode.HelloResponse, OpCode.ByeRequest, OpCode.ByeResponse])
def test_more_on_a_non_regular_type_is_invalid_more_usage(op: OpCode) -> None:
    side = client if op is OpCode.HelloResponse else server
    assert refused(side(), frame(op, more=1)) == AmpeStatus.invalid_more_usage


def test_more_on_a_hello_request_is_invalid_more_usage() -> None:
    assert refused(Inbound(accepted=True), frame(*HELLO, more=1)) == AmpeStatus.invalid_more_usage


@pytest.mark.parametrize("op", [OpCode.Request, OpCode.Response, OpCode.Signal])
def test_more_on_regular_types_is_admitted(op: OpCode) -> None:
    msg = frame(op, more=1)
    server().admit(msg)
    assert msg.has_more()


# ---------------------------------------------------------------- normalising


@pytest.mark.parametrize("op", [OpCode.Request, OpCode.Signal, OpCode.ByeRequest])
def test_status_origin_and_internal_bits_are_cleared(op: OpCode) -> None:
    msg = frame(op, b"n:v\r\n", b"x", status=AmpeStatus.channel_closed, origin=1, a=1, b=1)
    assert msg.is_from_engine() and msg.bhdr.status == 22 and msg.bhdr.proto.internal_a == 1
    server().admit(msg)
    p = msg.bhdr.proto
    assert msg.is_from_application() and msg.bhdr.status == 0
    assert (p.internal_a, p.internal_b) == (0, 0)
    assert p.op_code == op and msg.bhdr.message_id == 1 and bytes(msg.body) == b"x"
    p.op_code = op.echo() if op.echo() is not None else op
    assert tofu.encode(msg)[2] == p.op_code  # what a reply built of it puts on the wire: the op code alone


def test_a_hello_request_is_normalised_too() -> None:
    inbound = Inbound(accepted=True)
    msg = frame(*HELLO, status=200, origin=1, a=1, b=1)
    inbound.admit(msg)
    assert msg.is_from_application() and msg.bhdr.status == 0
    assert (msg.bhdr.proto.internal_a, msg.bhdr.proto.internal_b) == (0, 0)
