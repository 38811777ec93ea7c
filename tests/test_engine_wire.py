"""The engine against plain sockets: exact bytes both ways, a real Zig peer's
bytes, bad input from a peer, and backpressure."""

from __future__ import annotations

import collections
import logging
import os
import queue
import socket
import threading
from pathlib import Path

import pytest
import tofu
from tofu.groups import mailbox_of
from engine_support import (
    TIMEOUT,
    answer_hello,
    assert_closed,
    connect,
    io_thread_parked,
    is_closed_signal,
    make,
    plain_listener,
    read_exactly,
    read_frame,
    recv,
    recv_until,
    tcp_listen,
    wait_for,
    wait_for_eof,
)
from tofu import AmpeStatus, Message, OpCode
from tofu.generated.codec import pack_header, pack_proto

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"


@pytest.fixture
def server(rtr):
    """A tofu server group listening on TCP: (group, port)."""
    group = rtr.ampe().create()
    _, port = tcp_listen(group)
    return group, port


def _raw_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# What a plain-socket peer sends first: the engine admits nothing else before it.
_HELLO = tofu.encode(make(OpCode.HelloRequest, 1, headers=[("~connect_to", "x")], mid=1))


def _raw_frame(
    op: int, thdrs: bytes = b"", body: bytes = b"", mid: int = 9, more: int = 0, status: int = 0, origin: int = 0
) -> bytes:
    """A frame with exactly these bytes, whatever post() or append() would allow."""
    proto = pack_proto(op, origin, more)
    return pack_header(0x77, proto, status, mid, len(thdrs), len(body)) + thdrs + body


def _frames(data: bytes) -> list[Message]:
    decoder = tofu.FrameDecoder()
    frames = decoder.feed(data)
    assert decoder.pending == 0
    return frames


# ---------------------------------------------------------------- exact bytes


def test_plain_socket_client_against_tofu_server(server):
    group, port = server
    with _raw_connect(port) as sock:
        hello = (
            bytes.fromhex(
                "1234"  # the client's channel number, 0x1234
                "03"  # proto: HelloRequest, application, last
                "00"  # status
                "0000000000000009"  # message id 9
                "0015"  # thl = 21
                "0003"  # bl = 3
            )
            + b"~connect_to:tcp|x|1\r\n"
            + b"abc"
        )
        sock.sendall(hello)
        got = recv(group)
        assert got.bhdr.proto.op_code == OpCode.HelloRequest and got.bhdr.message_id == 9
        assert got.bhdr.channel_number != 0x1234  # relabelled with the server's own number
        assert list(got.thdrs) == [("~connect_to", "tcp|x|1")] and bytes(got.body) == b"abc"
        server_channel = got.bhdr.channel_number

        got.bhdr.proto.op_code = OpCode.HelloResponse
        got.body.clear()
        group.post(got)
        reply = read_exactly(sock, 16 + 21)
        assert reply == (
            server_channel.to_bytes(2, "big")  # the server's channel number
            + bytes.fromhex("0400000000000000000900150000")
            + b"~connect_to:tcp|x|1\r\n"
        )


def test_tofu_client_against_plain_socket_server(rtr):
    client = rtr.ampe().create()
    with plain_listener() as (lsock, port):
        hello = tofu.TCPClientAddress("127.0.0.1", port).format(Message())
        hello.bhdr.message_id = 1
        header = client.post(hello)
        peer, _ = lsock.accept()
        with peer:
            value = f"tcp|127.0.0.1|{port}".encode()
            expected = (
                header.channel_number.to_bytes(2, "big")
                + bytes.fromhex("03000000000000000001")
                + (len(value) + 14).to_bytes(2, "big")
                + b"\x00\x00"
                + b"~connect_to:"
                + value
                + b"\r\n"
            )
            assert read_exactly(peer, len(expected)) == expected
            # The server answers; the client sees it on its own channel number.
            answer = make(OpCode.HelloResponse, 0x4321, b"hi", [("a", "b")], mid=1)
            peer.sendall(tofu.encode(answer))
            got = recv(client)
            assert got.bhdr.proto.op_code == OpCode.HelloResponse
            assert got.bhdr.channel_number == header.channel_number
            assert list(got.thdrs) == [("a", "b")] and bytes(got.body) == b"hi"
            assert peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) in (0, 1)


def test_tofu_server_answers_a_zig_client_as_a_zig_server_does(server):
    """Replay a real Zig client's bytes; a tofu server app that echoes each
    request must produce the Zig server's byte stream, channel numbers aside."""
    group, port = server
    from_client = (GOLDEN / "zig-client-to-server.bin").read_bytes()
    from_server = (GOLDEN / "zig-server-to-client.bin").read_bytes()
    expected = _frames(from_server)
    with _raw_connect(port) as sock:
        sock.sendall(from_client)
        for _ in expected:
            msg = recv(group)
            channel = msg.bhdr.channel_number
            msg.bhdr.proto.op_code = msg.bhdr.proto.op_code.echo()
            group.post(msg)
        received = b""
        frames: list[Message] = []
        decoder = tofu.FrameDecoder()
        sock.settimeout(TIMEOUT)
        while len(frames) < len(expected):
            chunk = sock.recv(65536)
            assert chunk
            received += chunk
            frames += decoder.feed(chunk)
    assert len(received) == len(from_server)
    for ours, zigs in zip(frames, expected):
        assert ours.bhdr.proto == zigs.bhdr.proto
        assert (ours.bhdr.status, ours.bhdr.message_id) == (zigs.bhdr.status, zigs.bhdr.message_id)
        assert bytes(ours.thdrs) == bytes(zigs.thdrs) and bytes(ours.body) == bytes(zigs.body)
        assert tofu.encode(ours)[2:] == tofu.encode(zigs)[2:]  # every byte but the channel number
    assert_closed(recv(group), None, channel)  # after the Bye exchange: a normal close


def test_tofu_client_speaks_like_a_zig_client(rtr):
    """A tofu client sending the golden session's messages writes the Zig
    client's bytes, channel numbers aside, and reads the Zig server's bytes.
    It sends its Requests once the HelloResponse is in: before it, post()
    refuses them (the state machine: nothing goes out before the peer accepts)."""
    client = rtr.ampe().create()
    from_client = (GOLDEN / "zig-client-to-server.bin").read_bytes()
    from_server = (GOLDEN / "zig-server-to-client.bin").read_bytes()
    zig_frames = _frames(from_client)
    server_frames = _frames(from_server)
    with plain_listener() as (lsock, port):
        # The Zig client dialled port 47413; ours dials our listener instead.
        hello = zig_frames[0]
        assert list(hello.thdrs) == [("~connect_to", "tcp|127.0.0.1|47413")]
        hello.thdrs.clear()
        hello.thdrs.append("~connect_to", f"tcp|127.0.0.1|{port}")
        expected = [tofu.encode(f)[2:] for f in zig_frames]
        hello_channel = client.post(hello).channel_number
        early = make(OpCode.Request, hello_channel, body=b"too early")
        with pytest.raises(tofu.NotAllowed, match="before the peer accepts the channel"):
            client.post(early)
        assert not early.is_posted  # refused: the caller keeps it
        peer, _ = lsock.accept()
        with peer:
            first = read_frame(peer)
            assert tofu.encode(first)[2:] == expected[0] and first.bhdr.channel_number == hello_channel
            peer.sendall(tofu.encode(server_frames[0]))  # the Zig server's HelloResponse
            answer = recv(client)
            assert answer.bhdr.proto.op_code == OpCode.HelloResponse and answer.bhdr.message_id == 1
            for frame in zig_frames[1:]:
                frame.bhdr.channel_number = hello_channel
                client.post(frame)
            rest = [read_frame(peer) for _ in zig_frames[1:]]
            assert [tofu.encode(f)[2:] for f in rest] == expected[1:]
            assert all(f.bhdr.channel_number == hello_channel for f in rest)
            peer.sendall(b"".join(tofu.encode(f) for f in server_frames[1:]))
            replies, _ = recv_until(client, lambda m: m.bhdr.proto.op_code == OpCode.ByeResponse)
            assert replies.bhdr.message_id == 2
            assert_closed(recv(client), None)  # the Bye exchange: a normal close


# ---------------------------------------------------------------- bad input


BAD_INPUTS = {
    "invalid op code": (bytes.fromhex("00010c00000000000000000100000000"), AmpeStatus.invalid_op_code),
    "WelcomeRequest from a peer": (
        tofu.encode(make(OpCode.WelcomeRequest, 1, headers=[("~listen_on", "tcp||1")])),
        AmpeStatus.invalid_op_code,
    ),
    "ByeSignal from a peer": (tofu.encode(make(OpCode.ByeSignal, 1)), AmpeStatus.invalid_op_code),
    "garbage": (bytes(range(0xFA, 0x100)) * 40, AmpeStatus.invalid_op_code),
    "frame cut off by a disconnect": (
        bytes.fromhex("0001020000000000000000010000ffff") + b"only part of the body",
        AmpeStatus.communication_failed,
    ),
    # text headers that are not well formed (docs/protocol.md)
    "header line without a colon": (_raw_frame(OpCode.Signal, b"a:1\r\nno colon here\r\n"), AmpeStatus.invalid_message),
    "header with an empty name": (_raw_frame(OpCode.Request, b":v\r\n"), AmpeStatus.invalid_message),
    "header with an empty value": (_raw_frame(OpCode.Request, b"n: \r\n"), AmpeStatus.invalid_message),
    "NUL in a header": (_raw_frame(OpCode.Response, b"n:v\x00w\r\n", mid=3), AmpeStatus.invalid_message),
    "non-UTF-8 header": (_raw_frame(OpCode.Signal, b"n:\xff\xfe\r\n"), AmpeStatus.invalid_message),
    "lone LF in a header": (_raw_frame(OpCode.Signal, b"a:1\nb:2\r\n"), AmpeStatus.invalid_message),
    # the handshake
    "a second HelloRequest": (
        _raw_frame(OpCode.HelloRequest, b"~connect_to:tcp|x|1\r\n", mid=6),
        AmpeStatus.not_allowed,
    ),
    "a HelloResponse from the connecting side": (_raw_frame(OpCode.HelloResponse, mid=5), AmpeStatus.not_allowed),
    # more on a type that cannot carry it
    "ByeRequest with more": (_raw_frame(OpCode.ByeRequest, more=1), AmpeStatus.invalid_more_usage),
    "a Request with message id 0": (_raw_frame(OpCode.Request, mid=0), AmpeStatus.invalid_message_id),
    "a Response with message id 0": (_raw_frame(OpCode.Response, mid=0), AmpeStatus.invalid_message_id),
    "a ByeResponse nothing asked for": (_raw_frame(OpCode.ByeResponse, mid=5), AmpeStatus.not_allowed),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_closes_only_that_channel(rtr, server, name):
    group, port = server
    data, status = BAD_INPUTS[name]
    # A healthy tofu client on the same server, before and after.
    good = rtr.ampe().create()
    gch, _sch = connect(good, group, tofu.TCPClientAddress("127.0.0.1", port))

    with _raw_connect(port) as bad:
        bad.sendall(tofu.encode(make(OpCode.HelloRequest, 1, headers=[("~connect_to", "x")], mid=5)))
        hello = recv(group)
        bad_channel = hello.bhdr.channel_number
        hello.bhdr.proto.op_code = OpCode.HelloResponse
        group.post(hello)  # the channel is open
        assert read_frame(bad).bhdr.proto.op_code == OpCode.HelloResponse
        bad.sendall(data)
        if status == AmpeStatus.communication_failed:
            bad.shutdown(socket.SHUT_WR)
        closed = assert_closed(recv(group), status, bad_channel)
        assert closed.bhdr.message_id == 5
        wait_for_eof(bad)  # the engine closed the socket

    # The other channel and the listener still work.
    good.post(make(OpCode.Signal, gch, b"still here"))
    assert bytes(recv(group).body) == b"still here"
    connect(good, group, tofu.TCPClientAddress("127.0.0.1", port))


def test_a_good_frame_after_a_bad_one_in_the_same_read_is_not_delivered(server):
    group, port = server
    with _raw_connect(port) as sock:
        sock.sendall(
            _HELLO
            + _raw_frame(OpCode.Signal, b"n:1\r\n", b"first")
            + _raw_frame(OpCode.Signal, b"bad\r\n", b"bad")
            + _raw_frame(OpCode.Signal, b"n:3\r\n", b"after")
        )
        assert recv(group).bhdr.proto.op_code == OpCode.HelloRequest
        first = recv(group)
        assert bytes(first.body) == b"first" and first.thdrs.get("n") == "1"
        assert_closed(recv(group), AmpeStatus.invalid_message, first.bhdr.channel_number)
        wait_for_eof(sock)


FIRST_FRAMES = {
    # the reported denial of service: a HelloRequest that tofu serve could not read
    "HelloRequest with a header line without a colon": (
        _raw_frame(OpCode.HelloRequest, b"~connect_to:tcp|x|1\r\nno colon here\r\n", mid=7),
        AmpeStatus.invalid_message,
    ),
    "HelloRequest with a NUL in a header": (
        _raw_frame(OpCode.HelloRequest, b"~connect_to:tcp|x|1\x00\r\n", mid=7),
        AmpeStatus.invalid_message,
    ),
    "HelloRequest with non-UTF-8 headers": (
        _raw_frame(OpCode.HelloRequest, b"x:\xc3(\r\n", mid=7),
        AmpeStatus.invalid_message,
    ),
    "HelloRequest with an empty header name": (
        _raw_frame(OpCode.HelloRequest, b":x\r\n", mid=7),
        AmpeStatus.invalid_message,
    ),
    "HelloRequest with more": (
        _raw_frame(OpCode.HelloRequest, b"~connect_to:tcp|x|1\r\n", mid=7, more=1),
        AmpeStatus.invalid_more_usage,
    ),
    "HelloRequest with message id 0": (
        _raw_frame(OpCode.HelloRequest, b"~connect_to:tcp|x|1\r\n", mid=0),
        AmpeStatus.invalid_message_id,
    ),
    "a Request first": (_raw_frame(OpCode.Request, b"n:1\r\n", b"x", mid=7), AmpeStatus.not_allowed),
    "a Signal first": (_raw_frame(OpCode.Signal, mid=7), AmpeStatus.not_allowed),
    "a ByeRequest first": (_raw_frame(OpCode.ByeRequest, mid=7), AmpeStatus.not_allowed),
    "a HelloResponse first": (_raw_frame(OpCode.HelloResponse, mid=7), AmpeStatus.not_allowed),
}


@pytest.mark.parametrize("name", list(FIRST_FRAMES))
def test_an_accepted_connection_starts_with_a_well_formed_hello_request(rtr, server, name, caplog):
    """Nothing reaches the application before a good HelloRequest, not even a
    channel_closed notice (the application never saw the channel): the
    connection closes with the status, logged, and the server's other
    channels go on."""
    group, port = server
    data, status = FIRST_FRAMES[name]
    good = rtr.ampe().create()
    gch, _ = connect(good, group, tofu.TCPClientAddress("127.0.0.1", port))
    with caplog.at_level(logging.DEBUG, logger="tofu"), _raw_connect(port) as bad:
        bad.sendall(data + _raw_frame(OpCode.Signal, b"n:1\r\n", b"never seen"))
        wait_for_eof(bad)  # the engine closed it
        # The close is one step of the I/O thread: what it gave the group is
        # queued before the Signal the good client sends now. (The receiver
        # may read that Signal itself, runtime/direct_receive.py, before the
        # I/O thread has logged the close: the log is waited for.)
        good.post(make(OpCode.Signal, gch, b"still here"))
        assert bytes(recv(group).body) == b"still here"

        def closes() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.getMessage().endswith(f"closed: {status.name}")]

        wait_for(lambda: bool(closes()), "the close to be logged")
        assert group.wait_receive(0) is None  # the bad peer's frames never arrived, nor a notice
        assert len(closes()) == 1, [r.getMessage() for r in caplog.records]


def test_status_origin_and_internal_bits_from_a_peer_are_cleared(server):
    """A peer cannot pose as this engine (origin), put a status on ordinary
    traffic, or set the engine's internal bits: the application gets them
    clear, and a reply made of the received message carries none of them back."""
    group, port = server
    with _raw_connect(port) as sock:
        sock.sendall(_HELLO)
        recv(group)
        proto = pack_proto(OpCode.Request, 1, 0, 1, 1)  # origin engine, both internal bits
        assert proto == 0xD0
        sock.sendall(pack_header(3, proto, AmpeStatus.channel_closed, 42, 5, 1) + b"n:v\r\n" + b"x")
        got = recv(group)
        assert got.bhdr.proto.op_code == OpCode.Request and got.bhdr.message_id == 42
        assert got.is_from_application() and got.bhdr.status == 0
        assert (got.bhdr.proto.internal_a, got.bhdr.proto.internal_b) == (0, 0)
        assert not is_closed_signal(got)

        got.bhdr.proto.op_code = OpCode.Response  # the usual reply: reuse the message
        group.post(got)
        reply = read_frame(sock)
        raw = tofu.encode(reply)
        assert raw[2] == pack_proto(OpCode.Response, 0, 0) == 0x01  # proto: no bit but the op code
        assert raw[3] == 0  # status
        assert reply.bhdr.message_id == 42 and list(reply.thdrs) == [("n", "v")] and bytes(reply.body) == b"x"


def test_peer_that_disconnects(server):
    group, port = server
    sock = _raw_connect(port)
    sock.sendall(tofu.encode(make(OpCode.HelloRequest, 1, headers=[("~connect_to", "x")], mid=8)))
    channel = recv(group).bhdr.channel_number
    sock.close()
    assert_closed(recv(group), AmpeStatus.peer_disconnected, channel)  # greeted: the peer vanished


def test_reset_after_bye_exchange_is_a_normal_close(rtr):
    """The reference closes with SO_LINGER 0 right after ByeResponse."""
    client = rtr.ampe().create()
    with plain_listener() as (lsock, port):
        header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
        peer, _ = lsock.accept()
        hello = read_frame(peer)
        hello.bhdr.proto.op_code = OpCode.HelloResponse
        peer.sendall(tofu.encode(hello))
        assert recv(client).bhdr.proto.op_code == OpCode.HelloResponse
        client.post(make(OpCode.ByeRequest, header.channel_number))
        bye = read_frame(peer)
        assert bye.bhdr.proto.op_code == OpCode.ByeRequest
        bye.bhdr.proto.op_code = OpCode.ByeResponse
        peer.sendall(tofu.encode(bye))
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()
        resp = recv(client)
        assert resp.bhdr.proto.op_code == OpCode.ByeResponse
        assert_closed(recv(client), None, header.channel_number)  # normal: no ~close_reason


def _end_stream(sock: socket.socket, how: str) -> None:
    """End the stream as a peer may: a FIN, or a reset (SO_LINGER 0, as the reference does)."""
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


@pytest.mark.parametrize("how", ["fin", "reset"])
@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("open", AmpeStatus.peer_disconnected),  # nobody said bye: the peer vanished
        ("bye_sent", None),  # we said bye: the peer ends the stream instead of answering
        ("bye_received", None),  # the peer said bye, then ended the stream
    ],
)
def test_a_peer_that_ends_the_stream_closes_the_connector_as_its_state_says(rtr, state, reason, how):
    """STATE_PEER_END of the connector's states: once either side said bye,
    the peer ending the stream (the reference resets right after a Bye) is a
    normal close; before, the peer vanished. Nothing comes back: all went out."""
    client = rtr.ampe().create()
    with plain_listener() as (lsock, port):
        header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
        channel = header.channel_number
        peer = answer_hello(lsock, client, channel)
        if state == "bye_sent":
            bye = client.post(make(OpCode.ByeRequest, channel))
            assert read_frame(peer).bhdr.message_id == bye.message_id
        elif state == "bye_received":
            peer.sendall(tofu.encode(make(OpCode.ByeRequest, 0x4321, mid=77)))
            got = recv(client)
            assert (got.bhdr.proto.op_code, got.bhdr.message_id) == (OpCode.ByeRequest, 77)
        _end_stream(peer, how)
        assert_closed(recv(client), reason, channel)
        assert client.wait_receive(0) is None


def test_a_peer_that_resets_after_its_bye_is_answered_closes_normally(rtr):
    """The connector's `closed` state (its ByeResponse posted, not yet
    written) ends normally too when the peer resets: the I/O thread is held
    while the ByeResponse is posted and the peer resets, so the engine meets
    the reset in `closed`, reading or writing. The ByeResponse comes back
    unsent with the normal close's status: before the notice when the write
    failed, after it when the read came first (the post crossed the close)."""
    client = rtr.ampe().create()
    with plain_listener() as (lsock, port):
        header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
        channel = header.channel_number
        peer = answer_hello(lsock, client, channel)
        peer.sendall(tofu.encode(make(OpCode.ByeRequest, 0x4321, mid=78)))
        bye = recv(client)
        assert bye.bhdr.proto.op_code == OpCode.ByeRequest
        release = threading.Event()
        rtr._inbox.call_soon(lambda: release.wait(TIMEOUT))  # the I/O thread does nothing meanwhile
        bye.bhdr.proto.op_code = OpCode.ByeResponse
        client.post(bye)
        _end_stream(peer, "reset")
        release.set()
        got = [recv(client), recv(client)]
        (closed,) = [m for m in got if m.is_close_notice()]
        (back,) = [m for m in got if m is not closed]
        assert_closed(closed, None, channel)
        assert (back.bhdr.proto.op_code, back.bhdr.message_id) == (OpCode.ByeResponse, 78)
        assert back.is_from_engine() and back.bhdr.status == AmpeStatus.channel_closed
        assert client.wait_receive(0) is None


@pytest.mark.parametrize("how", ["fin", "reset"])
@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("greeted", AmpeStatus.peer_disconnected),  # the peer said hello and vanished
        ("greeted, a Request behind the hello", AmpeStatus.peer_disconnected),
        ("hello_and_bye", None),  # the whole session at once: HelloRequest, Request, ByeRequest
        ("open", AmpeStatus.peer_disconnected),  # nobody said bye
        ("bye_sent", None),  # we said bye: the peer ends the stream instead of answering
        ("bye_received", None),  # the peer said bye, then ended the stream
    ],
)
def test_a_peer_that_ends_the_stream_closes_the_acceptor_as_its_state_says(server, state, reason, how):
    """STATE_PEER_END of the acceptor's states: once either side said bye
    (a client that writes its whole session and resets, as the reference
    does), the peer ending the stream is a normal close; before, the peer
    vanished."""
    group, port = server
    sock = _raw_connect(port)
    frames = {
        "greeted, a Request behind the hello": [OpCode.Request],
        "hello_and_bye": [OpCode.Request, OpCode.ByeRequest],
    }
    sent = frames.get(state, [])
    sock.sendall(_HELLO + b"".join(_raw_frame(op, mid=20 + i) for i, op in enumerate(sent)))
    hello = recv(group)
    assert hello.bhdr.proto.op_code == OpCode.HelloRequest
    channel = hello.bhdr.channel_number
    for op in sent:
        got = recv(group)
        assert got.bhdr.proto.op_code == op and got.bhdr.channel_number == channel
    if state in ("open", "bye_sent", "bye_received"):
        hello.bhdr.proto.op_code = OpCode.HelloResponse
        group.post(hello)
        assert read_frame(sock).bhdr.proto.op_code == OpCode.HelloResponse
    if state == "bye_sent":
        bye = group.post(make(OpCode.ByeRequest, channel))
        assert read_frame(sock).bhdr.message_id == bye.message_id
    elif state == "bye_received":
        sock.sendall(_raw_frame(OpCode.ByeRequest, mid=30))
        assert recv(group).bhdr.proto.op_code == OpCode.ByeRequest
    _end_stream(sock, how)
    assert_closed(recv(group), reason, channel)
    assert group.wait_receive(0) is None


def _on_the_io_thread(rtr: tofu.Reactor, fn) -> list[BaseException]:
    """Run `fn` on the engine's I/O thread; what it raised."""
    raised: list[BaseException] = []
    done = threading.Event()

    def call() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - the test's to judge
            raised.append(exc)
        finally:
            done.set()

    rtr._inbox.call_soon(call)
    assert done.wait(TIMEOUT)
    return raised


def test_an_event_for_a_connection_closed_earlier_in_the_round_is_ignored(caplog):
    """The poller reports a batch of ready sockets; handling one of them (the
    inbox with a ByeSignal) may close a channel whose socket comes later in
    the same batch. Its event is stale: the engine ignores it, where it used
    to use the closed socket (an internal error, logged, for a connect that
    was being abandoned)."""
    from tofu.poller import READ, WRITE

    caplog.set_level(logging.INFO, logger="tofu")  # what a stale event logged: recv failed, accept failed
    # A listener that never accepts, its backlog full: the connect stays pending.
    with tofu.Reactor(tofu.Options(connect_timeout=None)) as rtr, socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        port = lsock.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            client = rtr.ampe().create()
            header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
            conn = rtr._table.get(header.channel_number)
            wait_for(lambda: conn.sock is not None, "the connect to start")
            client.post(make(OpCode.ByeSignal, header.channel_number))
            assert recv(client).bhdr.proto.op_code == OpCode.HelloRequest  # abandoned: it comes back
            assert_closed(recv(client), None, header.channel_number)
            assert conn.closed and conn.connecting
            caplog.clear()
            assert _on_the_io_thread(rtr, lambda: rtr._transfer.on_event(conn, READ | WRITE)) == []
            assert caplog.records == []
            assert client.wait_receive(0) is None
        finally:
            for filler in fillers:
                filler.close()


def test_an_event_for_a_listener_closed_earlier_in_the_round_is_ignored(rtr, caplog):
    caplog.set_level(logging.INFO, logger="tofu")
    group = rtr.ampe().create()
    channel, _ = tcp_listen(group)
    listener = rtr._table.get(channel)
    group.post(make(OpCode.ByeSignal, channel))
    assert_closed(recv(group), None, channel)
    caplog.clear()
    assert _on_the_io_thread(rtr, lambda: rtr._listeners.on_event(listener)) == []
    assert caplog.records == []


def test_a_frame_written_in_pieces_is_acknowledged_at_once(server, monkeypatch):
    """The reference writes header, text headers and body in separate sends
    with Nagle on: each piece waits for the ACK of the one before. The engine
    acknowledges a read that ends inside a frame at once (docs/protocol.md),
    where the system can (TCP_QUICKACK, Linux); elsewhere it never tries."""
    import tofu.transfer

    acked: list[int] = []
    real_ack_now = tofu.transfer.ack_now
    monkeypatch.setattr(tofu.transfer, "ack_now", lambda sock: (acked.append(sock.fileno()), real_ack_now(sock)))
    group, port = server
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as peer:  # Nagle on, as the reference
        hello = tofu.encode(make(OpCode.HelloRequest, 1, headers=[("~connect_to", "x")], mid=1))
        peer.sendall(hello)
        recv(group)
        assert acked == []  # whole frames need nothing
        request = tofu.encode(make(OpCode.Request, 1, b"body", headers=[("x-seq", "1")], mid=2))
        pieces = [request[:16], request[16:-4], request[-4:]]  # header, text headers, body
        quickack = hasattr(socket, "TCP_QUICKACK")
        for n, piece in enumerate(pieces[:-1], start=1):
            peer.sendall(piece)
            if quickack:
                wait_for(lambda n=n: len(acked) >= n, f"the ACK of piece {n}")
        peer.sendall(pieces[-1])
        got = recv(group)
        assert bytes(got.body) == b"body" and list(got.thdrs) == [("x-seq", "1")]
        assert len(acked) == (2 if quickack else 0)


def test_no_ack_tuning_on_unix_sockets(rtr, monkeypatch):
    import tofu.transfer

    acked: list[object] = []
    monkeypatch.setattr(tofu.transfer, "ack_now", acked.append)
    group = rtr.ampe().create()
    path = tofu.temp_uds_path()
    group.post(tofu.UDSServerAddress(path).format(Message()))
    assert recv(group).bhdr.status == 0
    with socket.socket(socket.AF_UNIX) as peer:
        peer.connect(path)
        hello = tofu.encode(make(OpCode.HelloRequest, 1, headers=[("~connect_to", "x")], mid=1))
        peer.sendall(hello[:10])
        wait_for(
            lambda: any(c.protocol.decoder.pending for c in rtr._table.snapshot()),
            "the engine to hold the partial frame",
        )
        peer.sendall(hello[10:])
        assert recv(group).bhdr.proto.op_code == OpCode.HelloRequest
    assert acked == []


# ---------------------------------------------------------------- backpressure


def test_slow_consumer_keeps_memory_bounded():
    limit = 64
    with tofu.Reactor(tofu.Options(max_queued_msgs=limit)) as rtr:
        group = rtr.ampe().create()
        _, port = tcp_listen(group)
        with _raw_connect(port) as sock:
            sock.sendall(tofu.encode(make(OpCode.HelloRequest, 1, headers=[("~connect_to", "x")], mid=1)))
            recv(group)
            frame = tofu.encode(make(OpCode.Signal, 1, b"s" * 1000))
            # Write until TCP itself pushes back: the engine stopped reading.
            sock.setblocking(False)
            sent = 0
            stalled = False
            for _ in range(200_000):
                try:
                    sent += sock.send(frame)
                except BlockingIOError:
                    stalled = True
                    break
            assert stalled, "the sender was never slowed down"
            # What the engine took is bounded by the limit plus one read.
            read_size = 256 * 1024
            assert group.pending() <= limit + read_size // len(frame) + 1
            assert sent > group.pending() * len(frame)  # the rest waits in the kernel
            # Draining the queue lets the engine read again, to the last frame.
            sock.setblocking(True)
            total = sent // len(frame)
            received = 0
            while received < total:
                msg = recv(group)
                if msg.bhdr.proto.op_code == OpCode.Signal and msg.is_from_application():
                    received += 1
                    rtr.ampe().put(msg)
            assert received == total


def _is_data(msg: Message) -> bool:
    """One of the test's Signals (not the HelloRequest, not an engine notice)."""
    return msg.bhdr.proto.op_code == OpCode.Signal and msg.is_from_application()


def test_pause_does_not_stick_when_the_receiver_drains_first():
    """The receiver empties the queue between the engine's _over_limit() check
    and its pause: reading must go on (it would stall forever otherwise).

    The interleaving is forced, not hoped for: the I/O thread is held after
    its first over-limit check until the receiver (this thread) has drained
    the queue, so the race is played on every run."""
    frames_total = 40
    with tofu.Reactor(tofu.Options(max_queued_msgs=8)) as rtr:
        group = rtr.ampe().create()
        _, port = tcp_listen(group)
        checked = threading.Event()  # the I/O thread found the group over its limit
        drained = threading.Event()  # the receiver emptied the queue since

        class HoldingQueue(queue.SimpleQueue):  # type: ignore[type-arg]
            """The engine's over-limit check reads qsize(): the first time it
            sees the limit, it is held there until the receiver has drained
            (a queue, not a patched method: compiled classes take no patches)."""

            def qsize(self) -> int:
                size = super().qsize()
                if size >= 8 and not checked.is_set():  # once: between the check and the pause
                    checked.set()
                    drained.wait(TIMEOUT)
                return size

        mailbox_of(group).use(HoldingQueue())  # empty, as the group's own queue is here
        with _raw_connect(port) as sock:
            frames = [tofu.encode(make(OpCode.Signal, 1, b"%d" % i + b"." * 60000)) for i in range(frames_total)]
            # Sent from a thread: the kernel need not take 2.4 MB while the engine is held.
            sender = threading.Thread(target=sock.sendall, args=(_HELLO + b"".join(frames),))
            sender.start()
            try:
                assert checked.wait(TIMEOUT), "the engine never went over its limit"
                got: list[Message] = []
                while (msg := group.wait_receive(0)) is not None:
                    got.append(msg)
                assert got, "nothing to drain"
                drained.set()
                while sum(_is_data(m) for m in got) < frames_total:
                    msg = group.wait_receive(TIMEOUT)
                    assert msg is not None, "reading stalled after the receiver drained first"
                    got.append(msg)
            finally:
                drained.set()
                sender.join(TIMEOUT)
        numbers = sorted(int(bytes(m.body).split(b".")[0]) for m in got if _is_data(m))
        assert numbers == list(range(frames_total))


@pytest.mark.parametrize(("limit", "resume_at"), [(8, 4), (3, 1), (2, 1)])
def test_the_receiver_asks_to_resume_once_at_half_the_limit(limit: int, resume_at: int):
    """While reading is paused, the receive that brings the queue down to
    max_queued_msgs // 2 (at least 1) asks the engine to resume, once; a
    receiver that was never paused asks nothing (a request costs the I/O
    thread a wake-up)."""
    with tofu.Reactor(tofu.Options(max_queued_msgs=limit)) as rtr:
        group = rtr.ampe().create()
        asked: list[int] = []

        class RecordingQueue(collections.deque):  # type: ignore[type-arg]
            """The engine's inbox queue, recording the group's queue length at
            each request it is handed (a resume request is the only one in this
            test; a deque, not a stand-in engine: compiled code checks the types)."""

            def append(self, item: object) -> None:
                asked.append(group.pending())
                super().append(item)

        rtr._inbox.items = RecordingQueue()
        for _ in range(limit):
            group.update_receiver(None)
        for _ in range(limit):  # not paused: no request
            assert group.wait_receive(0) is not None
        assert asked == []
        for _ in range(limit):
            group.update_receiver(None)
        mailbox_of(group).paused = True  # as the I/O thread leaves it when over the limit
        while group.wait_receive(0) is not None:
            pass
        assert asked == [resume_at]  # not before, nor again


def test_a_listener_out_of_descriptors_waits_instead_of_spinning(caplog):
    """accept() failing with EMFILE leaves the connection in the backlog: the
    engine must stop watching the listener (not retry in a tight loop) and
    accept again once a channel closes."""
    import resource

    clients = 6
    with tofu.Reactor() as rtr:
        group = rtr.ampe().create()
        _, port = tcp_listen(group)
        release = threading.Event()
        socks = []
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            rtr._inbox.call_soon(lambda: release.wait(TIMEOUT))  # nothing is accepted yet
            for i in range(clients):
                sock = _raw_connect(port)
                sock.sendall(tofu.encode(make(OpCode.HelloRequest, 1, headers=[("~connect_to", "x")], mid=100 + i)))
                socks.append(sock)
            in_use = len(os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 2, hard))  # room for 2 accepts, about
            with caplog.at_level(logging.WARNING, logger="tofu"):
                release.set()
                first = recv(group)  # accepted before the descriptors ran out
                assert first.bhdr.proto.op_code == OpCode.HelloRequest
                wait_for(lambda: any("cannot accept" in r.getMessage() for r in caplog.records), "EMFILE")
                for _ in range(20):  # 20 turns of the engine's loop, still out of descriptors
                    turned = threading.Event()
                    rtr._inbox.call_soon(turned.set)
                    assert turned.wait(TIMEOUT)
                starved = [r for r in caplog.records if "cannot accept" in r.getMessage()]
                assert len(starved) == 1, f"{len(starved)} failed accepts: the listener was retried in a loop"
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                group.post(make(OpCode.ByeSignal, first.bhdr.channel_number))  # frees a descriptor
                hellos = {first.bhdr.message_id}
                while len(hellos) < clients:
                    msg = recv(group)
                    if msg.bhdr.proto.op_code == OpCode.HelloRequest:
                        hellos.add(msg.bhdr.message_id)
                assert hellos == {100 + i for i in range(clients)}
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            release.set()
            for sock in socks:
                sock.close()


def test_a_pause_or_resume_passes_over_a_channel_whose_connect_has_not_begun(caplog):
    """post() puts a HelloRequest's channel in the table at once; the I/O
    thread makes its socket later. A resume (or pause) of its group in between
    passes over it: it used to register the missing socket, and the error
    boundary closed the group's healthy channel with processing_failed (found
    by test_engine_stateful). Forced: the I/O thread is held while the
    receiver asks to resume and the HelloRequest is posted, in that order."""
    caplog.set_level(logging.ERROR, logger="tofu")
    with tofu.Reactor(tofu.Options(max_queued_msgs=2, direct_send=False)) as rtr:
        server, client = rtr.ampe().create(), rtr.ampe().create()
        _, port = tcp_listen(server)
        address = tofu.TCPClientAddress("127.0.0.1", port)
        cch, sch = connect(client, server, address)
        for i in range(3):
            server.post(make(OpCode.Signal, sch, b"%d" % i))
        wait_for(lambda: mailbox_of(client).paused, "the client's group to pause")
        with io_thread_parked(rtr):
            got = [recv(client) for _ in range(3)]  # the last receives ask to resume
            hello = client.post(address.format(Message()))  # its channel has no socket yet
        assert [bytes(m.body) for m in got] == [b"0", b"1", b"2"]
        req = recv(server)
        assert req.bhdr.proto.op_code == OpCode.HelloRequest and req.bhdr.channel_number != sch
        server.post(make(OpCode.Signal, sch, b"after"))  # the first channel is still open
        after = recv(client)
        assert (after.bhdr.channel_number, bytes(after.body)) == (cch, b"after")
        assert hello.channel_number != cch
        assert [r.getMessage() for r in caplog.records] == []
