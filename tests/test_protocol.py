"""The channel protocol (runtime/protocol.py) without sockets: bytes and posted
op codes in, events and bytes out, every rule read from the generated state
machine (generated/machine.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import tofu
from hypothesis import given, settings
from hypothesis import strategies as st
from tofu import AmpeStatus, Message, OpCode
from tofu.generated.codec import pack_header, pack_proto
from tofu.generated.machine import (
    ACCEPTED_STATE,
    CONNECTOR_CONNECTING,
    OPENS,
    RECEIVE,
    SEND,
    STATE_NOTIFY,
    STATE_PEER_END,
    STATE_RETURNS_HELLO,
    STATE_ROLE,
    STATE_TERMINAL,
    TERMINAL_OF,
    ChannelRole,
    ChannelState,
    why,
)
from tofu.protocol import ChannelProtocol, Closing, Moved, notice

S = ChannelState
HELLO_HEADERS = b"~connect_to:tcp|h|1\r\n"
CONNECTIONS = [s for s in S if STATE_ROLE[s] is not ChannelRole.listener]


def data(
    op: int,
    thdrs: bytes = b"",
    body: bytes = b"",
    mid: int = 1,
    more: int = 0,
    status: int = 0,
    origin: int = 0,
    a: int = 0,
    b: int = 0,
) -> bytes:
    """One frame's bytes, exactly as given, whatever post() would allow."""
    return pack_header(0x4242, pack_proto(op, origin, more, a, b), status, mid, len(thdrs), len(body)) + thdrs + body


def hello(mid: int = 1, **kw: object) -> bytes:
    return data(OpCode.HelloRequest, HELLO_HEADERS, mid=mid, **kw)  # type: ignore[arg-type]


def delivered(events: list[object]) -> list[Message]:
    return [e for e in events if isinstance(e, Message)]


def closing(events: list[object]) -> Closing | None:
    found = [e for e in events if isinstance(e, Closing)]
    assert len(found) <= 1 and (not found or events[-1] is found[0]), events  # at most one, always last
    return found[0] if found else None


def refused(proto: ChannelProtocol, frame: bytes) -> AmpeStatus | None:
    c = closing(proto.receive(frame))
    return None if c is None else c.status


def greeted() -> ChannelProtocol:
    proto = ChannelProtocol(ACCEPTED_STATE, 7)
    proto.receive(hello())
    assert proto.state == S.acceptor_greeted
    return proto


def open_connector() -> ChannelProtocol:
    proto = ChannelProtocol(CONNECTOR_CONNECTING, 3, first_mid=1)
    proto.receive(data(OpCode.HelloResponse))
    assert proto.state == S.connector_open
    return proto


# ---------------------------------------------------------------- the table, cell by cell


def _frame_for(op: int) -> bytes:
    """A well-formed frame of `op` (a HelloRequest with its address)."""
    return hello(mid=5) if op == OpCode.HelloRequest else data(op, mid=5)


@pytest.mark.parametrize("state", CONNECTIONS, ids=lambda s: s.name)
@pytest.mark.parametrize("op", range(16))
def test_what_a_received_frame_does_is_the_table(state: S, op: int) -> None:
    proto = ChannelProtocol(state, 9)
    events = proto.receive(_frame_for(op))
    cell = RECEIVE[state][op]
    if cell < 0:
        c = closing(events)
        assert c is not None and c.status == -cell
        assert delivered(events) == [] and proto.state == state  # nothing of a refused frame
        if op < 10:
            assert why(False, state, op) in c.detail
    elif STATE_TERMINAL[state]:
        assert events == [] and proto.state == state  # the channel is over: dropped
    else:
        (msg,) = delivered(events)
        assert msg.bhdr.proto.op_code == op and msg.bhdr.channel_number == 9
        assert proto.state == cell
        assert [e.state for e in events if isinstance(e, Moved)] == ([cell] if cell != state else [])
        c = closing(events)
        assert (c is not None) == STATE_TERMINAL[cell]  # a completed Bye closes at once
        if c is not None:
            assert c.status == AmpeStatus.channel_closed


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.name)
@pytest.mark.parametrize("op", [op for op in OpCode if SEND[0][op] != OPENS], ids=lambda op: op.name)
def test_what_post_may_send_is_the_table(state: S, op: OpCode) -> None:
    proto = ChannelProtocol(state, 9)
    cell = SEND[state][op]
    if cell < 0:
        error = tofu.raw_to_error(-cell)
        with pytest.raises(type(error), match=f"^{op.name} on channel 9 "):
            proto.post(op)
        assert proto.state == state
    else:
        assert proto.post(op) is (cell != state)
        assert proto.state == cell


def test_post_and_receive_take_the_lock_only_to_move_the_state() -> None:
    entered = []

    class CountingLock:
        def __enter__(self) -> None:
            entered.append(1)

        def __exit__(self, *exc: object) -> None:
            pass

    proto = ChannelProtocol(S.acceptor_open, 1, lock=CountingLock())  # type: ignore[arg-type]
    proto.post(OpCode.Request)
    proto.receive(data(OpCode.Signal) + data(OpCode.Response))
    assert entered == []  # the common case: no lock
    proto.receive(data(OpCode.ByeRequest))
    proto.post(OpCode.ByeResponse)
    assert len(entered) == 2 and proto.state == S.acceptor_closed


# ---------------------------------------------------------------- flows


def test_the_accepting_side_greets_then_opens_when_it_answers() -> None:
    proto = ChannelProtocol(ACCEPTED_STATE, 7)
    events = proto.receive(hello(mid=41), identity=(("~peer_uid", "1000"),))
    assert isinstance(events[0], Moved) and events[0].state == S.acceptor_greeted
    (msg,) = delivered(events)
    assert list(msg.thdrs) == [("~connect_to", "tcp|h|1"), ("~peer_uid", "1000")]  # the engine names the peer
    assert proto.first_mid == 41  # the channel_closed notice will carry it
    assert proto.post(OpCode.HelloResponse) is True and proto.state == S.acceptor_open


def test_a_server_may_accept_by_sending_without_a_hello_response() -> None:
    """The reference's print server: Requests straight after the HelloRequest."""
    server = greeted()
    assert server.post(OpCode.Request) is True and server.state == S.acceptor_open
    client = ChannelProtocol(CONNECTOR_CONNECTING, 3, first_mid=1)
    events = client.receive(data(OpCode.Request, mid=1001, more=1))
    assert [type(e) for e in events] == [Moved, Message] and client.state == S.connector_open


def test_a_client_that_writes_its_whole_session_at_once() -> None:
    """The golden Zig client: HelloRequest, Requests and ByeRequest in one
    read. The server still answers the hello, then the Requests, then the Bye."""
    proto = ChannelProtocol(ACCEPTED_STATE, 7)
    events = proto.receive(hello() + data(OpCode.Request, mid=101) + data(OpCode.ByeRequest, mid=2))
    assert [m.bhdr.proto.op_code for m in delivered(events)] == [OpCode.HelloRequest, OpCode.Request, OpCode.ByeRequest]
    assert proto.state == S.acceptor_hello_and_bye and closing(events) is None
    assert proto.post(OpCode.HelloResponse) and proto.state == S.acceptor_bye_received
    assert not proto.post(OpCode.Response)
    assert proto.post(OpCode.ByeResponse) and proto.state == S.acceptor_closed


def test_the_connecting_side_sends_nothing_before_it_is_accepted() -> None:
    proto = ChannelProtocol(CONNECTOR_CONNECTING, 3)
    for op in (OpCode.Request, OpCode.Signal, OpCode.HelloResponse, OpCode.ByeRequest):
        with pytest.raises(tofu.NotAllowed):
            proto.post(op)
    assert proto.state == CONNECTOR_CONNECTING


def test_a_graceful_close_from_either_side() -> None:
    ours = open_connector()
    assert ours.post(OpCode.ByeRequest) and ours.state == S.connector_bye_sent
    with pytest.raises(tofu.NotAllowed, match="after its ByeRequest this side sends nothing more"):
        ours.post(OpCode.Request)
    # what the peer sent before it read our ByeRequest still arrives, then its answer
    events = ours.receive(data(OpCode.Response, mid=9) + data(OpCode.ByeResponse, mid=2) + data(OpCode.Signal))
    assert [m.bhdr.proto.op_code for m in delivered(events)] == [OpCode.Response, OpCode.ByeResponse]
    c = closing(events)
    assert c is not None and c.status == AmpeStatus.channel_closed and ours.state == S.connector_closed

    theirs = greeted()
    theirs.post(OpCode.HelloResponse)
    events = theirs.receive(data(OpCode.ByeRequest, mid=2))
    assert theirs.state == S.acceptor_bye_received and closing(events) is None
    assert not theirs.post(OpCode.Response)  # answers still go out
    assert theirs.post(OpCode.ByeResponse) and theirs.state == S.acceptor_closed
    assert refused(theirs, data(OpCode.Request)) is None  # the channel is over: dropped, no second close


def test_crossing_bye_requests_complete_the_exchange() -> None:
    a, b = open_connector(), greeted()
    b.post(OpCode.HelloResponse)
    a.post(OpCode.ByeRequest)
    b.post(OpCode.ByeRequest)
    events = a.receive(data(OpCode.ByeRequest, mid=5))
    c = closing(events)
    assert c is not None and c.status == AmpeStatus.channel_closed and a.state == S.connector_closed
    assert [m.bhdr.proto.op_code for m in delivered(events)] == [OpCode.ByeRequest]
    # The other order: this side learns of the peer's ByeRequest first, then says bye itself.
    c2 = greeted()
    c2.post(OpCode.HelloResponse)
    c2.receive(data(OpCode.ByeRequest, mid=6))
    assert c2.post(OpCode.ByeRequest) and c2.state == S.acceptor_closed


def test_nothing_after_a_refused_frame_is_delivered() -> None:
    proto = greeted()
    events = proto.receive(data(OpCode.Signal, b"n:1\r\n") + data(OpCode.Signal, b"bad\r\n") + data(OpCode.Signal))
    assert [bytes(m.thdrs) for m in delivered(events)] == [b"n:1\r\n"]
    c = closing(events)
    assert c is not None and c.status == AmpeStatus.invalid_message and "no colon" in c.detail


def test_every_frame_not_delivered_goes_back_to_the_pool() -> None:
    """A refused frame, a frame that fails a check, every frame after either
    in the same read, and a frame on a channel that is over are released
    (to the engine's pool), each once; delivered frames are not."""
    made: list[Message] = []
    released: list[Message] = []

    def recycle() -> Message:
        made.append(Message())
        return made[-1]

    proto = ChannelProtocol(S.acceptor_greeted, 7, recycle=recycle, release=released.append)
    events = proto.receive(data(OpCode.Signal) + data(OpCode.Response) + data(OpCode.Signal) + data(OpCode.Request))
    assert delivered(events) == made[:1] and released == made[1:]  # the refused Response and the two after it
    made.clear()
    released.clear()
    checked = ChannelProtocol(S.acceptor_open, 7, recycle=recycle, release=released.append)
    events = checked.receive(data(OpCode.Signal, b"bad\r\n") + data(OpCode.Signal))
    assert delivered(events) == [] and released == made and len(made) == 2  # the bad one, and the one after it
    made.clear()
    released.clear()
    over = ChannelProtocol(S.acceptor_closed, 7, recycle=recycle, release=released.append)
    assert over.receive(data(OpCode.Signal) + data(OpCode.ByeRequest)) == []
    assert released == made and len(made) == 2


def test_the_reprs_name_the_channel_and_its_state() -> None:
    assert repr(ChannelProtocol(S.acceptor_greeted, 7)) == "ChannelProtocol(channel 7, acceptor greeted)"
    assert repr(ChannelProtocol(S.listener_listening)) == "ChannelProtocol(channel 0, listener listening)"
    assert repr(Moved(S.connector_bye_sent)) == "Moved(connector bye_sent)"
    assert repr(Closing(AmpeStatus.not_allowed, "why")) == "Closing(not_allowed, 'why')"
    assert Closing(AmpeStatus.channel_closed).detail == ""


class _MovedMeanwhile:
    """A lock under which the state is found moved to `state`: what a post on
    another thread did between receive()'s look at the state and its lock."""

    def __init__(self, state: int) -> None:
        self.state = state
        self.proto: ChannelProtocol | None = None

    def __enter__(self) -> None:
        assert self.proto is not None
        self.proto.state = self.state

    def __exit__(self, *exc: object) -> None:
        pass


def _racing(state: int, meanwhile: int, made: list[Message], released: list[Message]) -> ChannelProtocol:
    """A protocol in `state` whose lock finds it in `meanwhile`; the frames it
    decodes are recorded in `made`, the ones it lets go in `released`."""

    def recycle() -> Message:
        made.append(Message())
        return made[-1]

    lock = _MovedMeanwhile(meanwhile)
    proto = ChannelProtocol(state, 4, 1, recycle, released.append, lock)  # type: ignore[arg-type]
    lock.proto = proto
    return proto


def test_a_frame_that_moves_the_state_is_judged_again_under_the_lock() -> None:
    """receive() looks at the state without the lock; a frame that moves it
    is judged again under the lock, in the state a post may have moved it
    to meanwhile: a move, a channel over, a refusal."""
    made: list[Message] = []
    released: list[Message] = []
    # Crossing ByeRequests: this side's ByeRequest was posted meanwhile.
    proto = _racing(S.acceptor_open, S.acceptor_bye_sent, made, released)
    events = proto.receive(data(OpCode.ByeRequest, mid=5))
    assert [type(e) for e in events] == [Moved, Message, Closing] and proto.state == S.acceptor_closed
    assert events[0].state == S.acceptor_closed and events[1] is made[0] and released == []  # type: ignore[attr-defined]
    assert events[2].status == AmpeStatus.channel_closed and events[2].detail == ""  # type: ignore[attr-defined]
    # A ByeSignal was posted meanwhile: the channel is over, the frame dropped.
    made.clear()
    over = _racing(S.connector_connecting, S.connector_closed, made, released)
    frames = data(OpCode.HelloResponse) + data(OpCode.Signal)
    assert over.receive(frames) == [] and released == made and len(made) == 2  # each frame let go
    assert over.state == S.connector_closed
    # The close is still the close of the state the ByeSignal left: the
    # HelloRequest comes back (the dropped frames moved nothing).
    hello = Message(OpCode.HelloRequest)
    assert over.close(AmpeStatus.channel_closed, [], hello)[0] is hello
    # Whatever the state became, the table judges: here it refuses the frame,
    # and nothing after it is delivered either.
    made.clear()
    released.clear()
    refusing = _racing(S.acceptor_open, S.acceptor_bye_received, made, released)
    events = refusing.receive(data(OpCode.ByeRequest, mid=5) + data(OpCode.Signal))
    (c,) = events
    assert isinstance(c, Closing) and c.status == AmpeStatus.not_allowed
    assert c.detail == f"the peer sent ByeRequest: {why(False, S.acceptor_bye_received, OpCode.ByeRequest)}"
    assert refusing.state == S.acceptor_bye_received and released == made and len(made) == 2


def test_an_invalid_op_code_closes_even_before_its_payload_arrives() -> None:
    proto = greeted()
    head = data(12, body=b"x" * 1000)[:16]
    events = proto.receive(data(OpCode.Signal) + head)
    assert len(delivered(events)) == 1
    c = closing(events)
    assert c is not None and c.status == AmpeStatus.invalid_op_code and "12" in c.detail


# ---------------------------------------------------------------- frame checks


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
def test_malformed_text_headers_are_an_invalid_message(thdrs: bytes) -> None:
    for op in (OpCode.Request, OpCode.Signal, OpCode.ByeRequest):
        assert refused(greeted(), data(op, thdrs)) == AmpeStatus.invalid_message
    assert refused(open_connector(), data(OpCode.Response, thdrs)) == AmpeStatus.invalid_message
    assert refused(ChannelProtocol(ACCEPTED_STATE), data(OpCode.HelloRequest, thdrs)) == AmpeStatus.invalid_message


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=64)
    | st.lists(st.sampled_from([b"a", b":", b" ", b"\r\n", b"\x00", b"\xff", b"\n"])).map(b"".join)
)
def test_what_is_delivered_can_always_be_read(thdrs: bytes) -> None:
    """The receive check and the accessors agree: a delivered frame's headers
    never raise; a frame whose headers would raise is refused."""
    events = greeted().receive(data(OpCode.Signal, thdrs))
    if delivered(events):
        (msg,) = delivered(events)
        for name, _ in list(msg.thdrs):
            assert msg.thdrs.get(name) is not None
    else:
        c = closing(events)
        assert c is not None and c.status == AmpeStatus.invalid_message
        with pytest.raises(tofu.InvalidMessage):
            list(tofu.TextHeaders(thdrs))


@pytest.mark.parametrize("op", [OpCode.HelloResponse, OpCode.ByeRequest, OpCode.ByeResponse])
def test_more_on_a_non_regular_type_is_invalid_more_usage(op: OpCode) -> None:
    proto = ChannelProtocol(CONNECTOR_CONNECTING) if op is OpCode.HelloResponse else greeted()
    if op is OpCode.ByeResponse:
        proto = ChannelProtocol(S.acceptor_bye_sent)
    c = closing(proto.receive(data(op, more=1)))
    assert c is not None and c.status == AmpeStatus.invalid_more_usage
    assert c.detail == f"the peer sent {op.name} with the more flag"


def test_more_on_a_hello_request_is_invalid_more_usage_and_moves_nothing() -> None:
    proto = ChannelProtocol(ACCEPTED_STATE)
    assert refused(proto, hello(more=1)) == AmpeStatus.invalid_more_usage
    assert proto.state == ACCEPTED_STATE


@pytest.mark.parametrize("op", [OpCode.Request, OpCode.Signal])
def test_more_on_regular_types_is_delivered(op: OpCode) -> None:
    (msg,) = delivered(greeted().receive(data(op, more=1)))
    assert msg.has_more()


@pytest.mark.parametrize(
    ("op", "state"),
    [
        (OpCode.Request, S.acceptor_greeted),
        (OpCode.Response, S.acceptor_open),
        (OpCode.HelloRequest, S.acceptor_awaiting_hello),
        (OpCode.HelloResponse, S.connector_connecting),
        (OpCode.ByeRequest, S.connector_open),
        (OpCode.ByeResponse, S.connector_bye_sent),
    ],
)
def test_a_request_or_response_needs_a_message_id(op: OpCode, state: S) -> None:
    """Message id 0: no engine sends it (post() numbers requests and refuses
    responses without one), and nobody could answer it."""
    frame = hello(mid=0) if op is OpCode.HelloRequest else data(op, mid=0)
    c = closing(ChannelProtocol(state).receive(frame))
    assert c is not None and c.status == AmpeStatus.invalid_message_id
    assert c.detail == f"the peer sent {op.name} with message id 0"


def test_a_signal_may_have_message_id_0() -> None:
    (msg,) = delivered(greeted().receive(data(OpCode.Signal, mid=0)))
    assert msg.bhdr.message_id == 0


# ---------------------------------------------------------------- normalising


@pytest.mark.parametrize("op", [OpCode.Request, OpCode.Signal, OpCode.ByeRequest])
def test_status_origin_and_internal_bits_are_cleared(op: OpCode) -> None:
    frame = data(op, b"n:v\r\n", b"x", status=AmpeStatus.channel_closed, origin=1, a=1, b=1)
    (msg,) = delivered(greeted().receive(frame))
    p = msg.bhdr.proto
    assert msg.is_from_application() and msg.bhdr.status == 0 and not msg.is_close_notice()
    assert (p.internal_a, p.internal_b) == (0, 0)
    assert p.op_code == op and msg.bhdr.message_id == 1 and bytes(msg.body) == b"x"
    p.op_code = op.echo() if op.echo() is not None else op
    assert tofu.encode(msg)[2] == p.op_code  # what a reply built of it puts on the wire: the op code alone


def test_a_peer_cannot_write_the_engines_identity_headers() -> None:
    proto = ChannelProtocol(ACCEPTED_STATE, 7)
    forged = data(OpCode.HelloRequest, HELLO_HEADERS + b"~peer_uid:0\r\n~PEER_pid: 1\r\n")
    (msg,) = delivered(proto.receive(forged, identity=(("~peer_uid", "1000"),)))
    assert list(msg.thdrs) == [("~connect_to", "tcp|h|1"), ("~peer_uid", "1000")]
    (sig,) = delivered(proto.receive(data(OpCode.Signal, b"~peer_gid:0\r\nx:1\r\n")))
    assert list(sig.thdrs) == [("x", "1")]  # no identity on other frames, and no forged one either


# ---------------------------------------------------------------- writing


def test_nothing_is_written_after_the_last_frame() -> None:
    proto = open_connector()
    out = bytearray()
    assert proto.write(Message(OpCode.Request), out)
    proto.post(OpCode.ByeRequest)
    assert proto.write(Message(OpCode.ByeRequest), out)
    assert not proto.finished  # a ByeRequest waits for its answer
    size = len(out)
    assert not proto.write(Message(OpCode.Signal), out) and len(out) == size
    proto.receive(data(OpCode.ByeResponse, mid=2))
    assert proto.finished


def test_the_side_that_answers_a_bye_is_finished_once_its_answer_is_written() -> None:
    proto = greeted()
    proto.post(OpCode.HelloResponse)
    proto.receive(data(OpCode.ByeRequest, mid=2))
    proto.post(OpCode.ByeResponse)
    assert not proto.finished  # not written yet
    assert proto.write(Message(OpCode.ByeResponse), bytearray())
    assert proto.finished


# ---------------------------------------------------------------- closing


@pytest.mark.parametrize("state", CONNECTIONS, ids=lambda s: s.name)
def test_what_the_peer_ending_the_stream_means_is_the_states(state: S) -> None:
    assert ChannelProtocol(state).peer_ended().status == STATE_PEER_END[state]


def test_a_peer_that_vanishes_inside_a_frame_is_a_communication_failure() -> None:
    proto = open_connector()
    proto.receive(data(OpCode.Request, body=b"x" * 100)[:30])
    ended = proto.peer_ended()
    assert (ended.status, ended.detail) == (
        AmpeStatus.communication_failed,
        "the peer closed the connection in the middle of a frame",
    )
    proto.post(OpCode.ByeRequest)
    assert proto.peer_ended().status == AmpeStatus.channel_closed  # after a Bye: a normal close all the same


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.name)
def test_what_a_close_gives_back_is_the_states(state: S) -> None:
    proto = ChannelProtocol(state, 5, first_mid=42)
    unsent = [Message(OpCode.Request), Message(OpCode.Signal)]
    copy = Message(OpCode.HelloRequest)
    given = proto.close(AmpeStatus.peer_disconnected, unsent, copy, detail="gone")
    assert proto.state == TERMINAL_OF[state]
    if not STATE_NOTIFY[state]:
        assert given == []
        return
    *returned, notice = given
    expected = [OpCode.Request, OpCode.Signal] + ([OpCode.HelloRequest] if STATE_RETURNS_HELLO[state] else [])
    assert [m.bhdr.proto.op_code for m in returned] == expected
    assert all(m.is_from_engine() and m.bhdr.status == AmpeStatus.peer_disconnected for m in returned)
    assert not any(m.is_close_notice() for m in returned)
    assert notice.is_close_notice() and notice.is_from_engine()
    assert (notice.bhdr.proto.op_code, notice.bhdr.status) == (OpCode.Signal, AmpeStatus.channel_closed)
    assert (notice.bhdr.channel_number, notice.bhdr.message_id) == (5, 42)
    assert list(notice.thdrs) == [(tofu.CLOSE_REASON_HEADER, "peer_disconnected"), (tofu.CLOSE_DETAIL_HEADER, "gone")]


def test_a_normal_close_names_no_reason_and_a_silent_one_gives_nothing() -> None:
    released: list[Message] = []
    proto = ChannelProtocol(S.connector_open, 5, first_mid=1, release=released.append)
    (notice,) = proto.close(AmpeStatus.channel_closed)
    assert notice.is_close_notice() and list(notice.thdrs) == []
    quiet = ChannelProtocol(S.connector_connecting, 6, release=released.append)
    unsent, copy = [Message(OpCode.Request)], Message(OpCode.HelloRequest)
    assert quiet.close(AmpeStatus.channel_closed, unsent, copy, silent=True) == []
    assert released == [*unsent, copy]  # back to the pool, the HelloRequest's copy too


def test_the_notice_is_made_of_a_pooled_message() -> None:
    pooled = Message()
    proto = ChannelProtocol(S.connector_open, 5, first_mid=1, recycle=lambda: pooled)
    (notice,) = proto.close(AmpeStatus.peer_disconnected)
    assert notice is pooled and notice.is_close_notice()
    empty_pool = ChannelProtocol(S.connector_open, 5, first_mid=1, recycle=lambda: None)
    (fresh,) = empty_pool.close(AmpeStatus.peer_disconnected)
    assert fresh.is_close_notice() and fresh is not pooled


def test_the_hello_request_comes_back_once_even_if_it_was_not_written() -> None:
    proto = ChannelProtocol(CONNECTOR_CONNECTING, 5, first_mid=1)
    original, copy = Message(OpCode.HelloRequest), Message(OpCode.HelloRequest)
    *returned, _ = proto.close(AmpeStatus.connect_failed, [original], copy)
    assert returned == [original]  # the unsent one itself; the copy goes back to the pool


def test_a_bye_signal_while_connecting_gives_the_hello_request_back() -> None:
    """post() moves the state to closed at once; the close that follows is
    the close of `connecting`, the state the ByeSignal left: it gives the
    HelloRequest back (the engine's copy, when the original went out)."""
    proto = ChannelProtocol(CONNECTOR_CONNECTING, 5, first_mid=1)
    assert proto.post(OpCode.ByeSignal) is True and proto.state == S.connector_closed
    copy = Message(OpCode.HelloRequest)
    back, notice = proto.close(AmpeStatus.channel_closed, [], copy)
    assert back is copy and back.is_from_engine() and back.bhdr.status == AmpeStatus.channel_closed
    assert notice.is_close_notice() and list(notice.thdrs) == []


def test_a_completed_bye_exchange_closes_as_the_state_it_left() -> None:
    """A connector that was once connecting, then said bye and got its answer:
    its close is the close of `bye_sent`, which gives no HelloRequest back."""
    released: list[Message] = []
    proto = ChannelProtocol(CONNECTOR_CONNECTING, 5, first_mid=1, release=released.append)
    proto.receive(data(OpCode.HelloResponse))
    proto.post(OpCode.ByeRequest)
    proto.receive(data(OpCode.ByeResponse, mid=2))
    assert proto.state == S.connector_closed
    copy = Message(OpCode.HelloRequest)
    (notice,) = proto.close(AmpeStatus.channel_closed, [], copy)
    assert notice.is_close_notice() and released == [copy]


def test_a_returned_signal_is_no_close_notice() -> None:
    """The open question of the last round, settled: an application Signal
    that comes back after a normal close has the notice's op code, origin and
    status; only the notice carries the engine's mark."""
    proto = ChannelProtocol(S.connector_open, 5, first_mid=1)
    sig = Message(OpCode.Signal)
    back, notice = proto.close(AmpeStatus.channel_closed, [sig])
    assert (back.bhdr.proto.op_code, back.bhdr.proto.origin, back.bhdr.status) == (
        notice.bhdr.proto.op_code,
        notice.bhdr.proto.origin,
        notice.bhdr.status,
    )
    assert notice.is_close_notice() and not back.is_close_notice()


# ---------------------------------------------------------------- threads


def test_moves_from_two_threads_are_never_lost() -> None:
    """An application thread posts the ByeRequest while the I/O thread reads
    the peer's: whichever comes first, the channel ends closed (the crossing
    Byes), never stuck in bye_sent or bye_received."""
    for _ in range(200):
        proto = ChannelProtocol(S.acceptor_open, 1, lock=threading.Lock())
        start = threading.Barrier(2)
        results: list[object] = []

        def post(proto: ChannelProtocol = proto, start: threading.Barrier = start) -> None:
            start.wait()
            results.append(proto.post(OpCode.ByeRequest))

        poster = threading.Thread(target=post)
        poster.start()
        start.wait()
        events = proto.receive(data(OpCode.ByeRequest, mid=3))
        poster.join()
        assert proto.state == S.acceptor_closed
        assert results == [True]
        assert [m.bhdr.proto.op_code for m in delivered(events)] == [OpCode.ByeRequest]


def test_a_connect_abandoned_with_a_bye_signal_gives_its_hello_request_back() -> None:
    """post() moves the state to closed at once; the close (on the I/O
    thread, later) still gives back what the state it left gives back."""
    proto = ChannelProtocol(CONNECTOR_CONNECTING, 5, first_mid=1)
    assert proto.post(OpCode.ByeSignal) and proto.state == S.connector_closed
    copy = Message(OpCode.HelloRequest)  # the HelloRequest went out: its copy comes back
    returned, notice = proto.close(AmpeStatus.channel_closed, [], copy)
    assert returned is copy and returned.bhdr.status == AmpeStatus.channel_closed and returned.is_from_engine()
    assert notice.is_close_notice() and list(notice.thdrs) == []


def test_a_channel_its_last_bye_frame_ended_closes_as_the_state_it_left() -> None:
    proto = open_connector()
    proto.receive(data(OpCode.ByeRequest, mid=2))
    proto.post(OpCode.ByeResponse)
    (notice,) = proto.close(AmpeStatus.channel_closed, [], Message(OpCode.HelloRequest))
    assert notice.is_close_notice()  # bye_received gives no HelloRequest back


def test_a_peer_that_closes_before_answering_the_hello_is_told_apart() -> None:
    """While connecting, the peer ending the stream is peer_disconnected (it
    connected, then closed: a refused hello), with a detail that says so; a
    connect that could not be made at all is connect_failed, elsewhere."""
    ended = ChannelProtocol(CONNECTOR_CONNECTING).peer_ended()
    assert ended.status == AmpeStatus.peer_disconnected
    assert ended.detail == "the peer closed the connection before answering the HelloRequest"
    assert open_connector().peer_ended().detail == ""


def test_a_notice_without_a_detail_names_only_its_reason() -> None:
    made = notice(Message, 9, 3, AmpeStatus.peer_disconnected)
    assert made.is_close_notice() and (made.bhdr.channel_number, made.bhdr.message_id) == (9, 3)
    assert list(made.thdrs) == [(tofu.CLOSE_REASON_HEADER, "peer_disconnected")]
