"""Listen, connect, exchange and close over TCP and Unix sockets (docs/protocol.md)."""

from __future__ import annotations

import os
import socket

import pytest
import tofu
from engine_support import (
    answer_hello,
    assert_closed,
    connect,
    is_closed_signal,
    listen,
    make,
    plain_listener,
    read_frame,
    recv,
    recv_until,
    tcp_listen,
    wait_for_eof,
)
from tofu import AmpeStatus, Message, OpCode, OriginFlag


@pytest.fixture
def groups(rtr):
    ampe = rtr.ampe()
    return ampe.create(), ampe.create()  # server, client


def _tcp(port: int):
    return tofu.TCPClientAddress("127.0.0.1", port)


@pytest.fixture(params=["tcp", "uds"])
def pair(request, groups):
    """A connected pair over TCP or UDS: (server group, client group, server ch, client ch)."""
    server, client = groups
    if request.param == "tcp":
        _, port = tcp_listen(server)
        address = _tcp(port)
    else:
        path = tofu.temp_uds_path()
        listen(server, tofu.UDSServerAddress(path))
        address = tofu.UDSClientAddress(path)
    cch, sch = connect(client, server, address)
    return server, client, sch, cch


# ---------------------------------------------------------------- listen


def test_tcp_listener_reports_its_port(groups):
    server, _ = groups
    port = tofu.find_free_tcp_port()
    _, value = listen(server, tofu.TCPServerAddress("127.0.0.1", port))
    assert value == f"tcp|127.0.0.1|{port}"
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # it accepts


def test_uds_listener_and_its_file(groups, rtr):
    server, _ = groups
    path = tofu.temp_uds_path()
    channel, value = listen(server, tofu.UDSServerAddress(path))
    assert value == f"uds|{path}" and os.path.exists(path)
    server.post(make(OpCode.ByeSignal, channel))
    closed = recv(server)
    assert is_closed_signal(closed) and closed.bhdr.channel_number == channel
    assert not os.path.exists(path)  # the listener removes its socket file


def test_stale_uds_file_is_removed(groups):
    server, client = groups
    path = tofu.temp_uds_path()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # bound, never listening: nothing accepts on it
    stale.close()
    assert os.path.exists(path)
    listen(server, tofu.UDSServerAddress(path))
    connect(client, server, tofu.UDSClientAddress(path))


def test_a_live_uds_path_is_not_taken_over(groups):
    server, _ = groups
    path = tofu.temp_uds_path()
    listen(server, tofu.UDSServerAddress(path))
    server.post(tofu.UDSServerAddress(path).format(Message()))
    resp = recv(server)
    assert resp.bhdr.proto.op_code == OpCode.WelcomeResponse
    assert resp.bhdr.status == AmpeStatus.listen_failed and resp.is_from_engine()
    assert is_closed_signal(recv(server))


def test_two_listeners_on_one_tcp_port(groups):
    server, _ = groups
    _, port = tcp_listen(server)
    server.post(tofu.TCPServerAddress("127.0.0.1", port).format(Message()))
    resp = recv(server)
    assert resp.bhdr.proto.op_code == OpCode.WelcomeResponse
    assert resp.bhdr.status == AmpeStatus.listen_failed


def test_sharing_a_tcp_port_is_an_explicit_opt_in(groups):
    server, _ = groups
    port = tofu.find_free_tcp_port()
    listen(server, tofu.TCPServerAddress("127.0.0.1", port, reuse_port=True))
    listen(server, tofu.TCPServerAddress("127.0.0.1", port, reuse_port=True))


@pytest.mark.parametrize("host", ["192.0.2.1", "8.8.8.8"])
def test_non_local_listen_address(groups, host):
    server, _ = groups
    server.post(tofu.TCPServerAddress(host, tofu.find_free_tcp_port()).format(Message()))
    resp = recv(server)
    assert resp.bhdr.proto.op_code == OpCode.WelcomeResponse
    assert resp.bhdr.status in (AmpeStatus.invalid_address, AmpeStatus.listen_failed)


def test_tcp_and_uds_listeners_in_one_group(groups):
    server, client = groups
    _, port = tcp_listen(server)
    path = tofu.temp_uds_path()
    listen(server, tofu.UDSServerAddress(path))
    c1, s1 = connect(client, server, _tcp(port))
    c2, s2 = connect(client, server, tofu.UDSClientAddress(path))
    assert len({c1, c2}) == 2 and len({s1, s2}) == 2


# ---------------------------------------------------------------- connect failures


def _expect_hello_back(client, header, status):
    back = recv(client)
    assert back.bhdr.proto.op_code == OpCode.HelloRequest
    assert back.is_from_engine()
    assert back.bhdr.status == status, tofu.raw_to_status(back.bhdr.status)
    assert back.bhdr.channel_number == header.channel_number
    closed = recv(client)
    assert is_closed_signal(closed) and closed.bhdr.channel_number == header.channel_number
    assert closed.bhdr.message_id == header.message_id  # the id of the channel's first message


def test_port_nobody_listens_on(groups):
    _, client = groups
    header = client.post(_tcp(tofu.find_free_tcp_port()).format(Message()))
    _expect_hello_back(client, header, AmpeStatus.connect_failed)


def test_unresolvable_host(groups):
    _, client = groups
    header = client.post(tofu.TCPClientAddress("no-such-host.invalid", 7099).format(Message()))
    _expect_hello_back(client, header, AmpeStatus.invalid_address)


def test_uds_path_not_found(groups):
    _, client = groups
    header = client.post(tofu.UDSClientAddress(tofu.temp_uds_path()).format(Message()))
    _expect_hello_back(client, header, AmpeStatus.uds_path_not_found)


def test_hello_with_headers_but_no_address(groups):
    _, client = groups
    header = client.post(make(OpCode.HelloRequest, headers=[("PDL", "PS")]))
    _expect_hello_back(client, header, AmpeStatus.wrong_address)


def test_a_failed_hello_can_be_posted_again(groups):
    server, client = groups
    port = tofu.find_free_tcp_port()
    client.post(_tcp(port).format(Message()))
    back, _ = recv_until(client, lambda m: m.bhdr.proto.op_code == OpCode.HelloRequest)
    recv_until(client, is_closed_signal)
    listen(server, tofu.TCPServerAddress("127.0.0.1", port))
    header = client.post(back)  # the returned request, as it is
    assert recv(server).bhdr.proto.op_code == OpCode.HelloRequest
    assert header.channel_number >= 1


# ---------------------------------------------------------------- data


def test_request_response_signal_both_ways(pair):
    server, client, sch, cch = pair
    req = client.post(make(OpCode.Request, cch, b"ping", [("x-seq", "1")]))
    got = recv(server)
    assert got.bhdr.proto.op_code == OpCode.Request and got.bhdr.channel_number == sch
    assert got.bhdr.message_id == req.message_id and list(got.thdrs) == [("x-seq", "1")]
    assert bytes(got.body) == b"ping" and got.is_from_application()
    got.bhdr.proto.op_code = OpCode.Response
    got.body.clear()
    got.body.append(b"pong")
    server.post(got)
    resp = recv(client)
    assert resp.bhdr.proto.op_code == OpCode.Response and resp.bhdr.message_id == req.message_id
    assert bytes(resp.body) == b"pong" and resp.bhdr.channel_number == cch
    server.post(make(OpCode.Signal, sch, b"from server"))
    sig = recv(client)
    assert sig.bhdr.proto.op_code == OpCode.Signal and bytes(sig.body) == b"from server"


def test_more_streams_keep_their_order(pair):
    server, client, _sch, cch = pair
    mid = 777
    chunks = [bytes([i]) * (i * 997 % 65535) for i in range(1, 40)]
    for i, chunk in enumerate(chunks):
        client.post(make(OpCode.Request, cch, chunk, mid=mid, more=i < len(chunks) - 1))
    for i, chunk in enumerate(chunks):
        got = recv(server)
        assert got.bhdr.message_id == mid and bytes(got.body) == chunk
        assert got.has_more() == (i < len(chunks) - 1)


def test_largest_frame_both_ways(pair):
    server, client, _sch, cch = pair
    headers = [("h", "v" * 65531)]  # "h:" + value + CRLF = 65535 bytes
    body = os.urandom(65535)
    msg = make(OpCode.Signal, cch, body, headers)
    assert len(bytes(msg.thdrs)) == 65535
    client.post(msg)
    got = recv(server)
    assert bytes(got.body) == body and list(got.thdrs) == headers


def test_graceful_close(pair):
    server, client, sch, cch = pair
    for i in range(5):
        client.post(make(OpCode.Signal, cch, b"%d" % i))
    bye = client.post(make(OpCode.ByeRequest, cch))
    for i in range(5):  # the ByeRequest waited behind the pending frames
        assert bytes(recv(server).body) == b"%d" % i
    got = recv(server)
    assert got.bhdr.proto.op_code == OpCode.ByeRequest and got.bhdr.message_id == bye.message_id
    got.bhdr.proto.op_code = OpCode.ByeResponse
    server.post(got)
    closed = recv(server)
    assert is_closed_signal(closed) and closed.bhdr.channel_number == sch
    resp = recv(client)
    assert resp.bhdr.proto.op_code == OpCode.ByeResponse and resp.bhdr.message_id == bye.message_id
    closed = recv(client)
    assert is_closed_signal(closed) and closed.bhdr.channel_number == cch
    with pytest.raises(tofu.InvalidChannelNumber):
        client.post(make(OpCode.Signal, cch))


def test_bye_signal_with_frames_pending(groups):
    _server, client = groups
    # A plain listener that never reads: the client's frames pile up unsent.
    with plain_listener() as (lsock, port):
        header = client.post(_tcp(port).format(Message()))
        peer = answer_hello(lsock, client, header.channel_number)
        big = b"z" * 65535
        for _ in range(200):  # ~13 MB: far more than the socket buffers hold
            client.post(make(OpCode.Request, header.channel_number, big))
        client.post(make(OpCode.ByeSignal, header.channel_number))
        closed, returned = recv_until(client, is_closed_signal)
        assert_closed(closed, None, header.channel_number)  # asked for: a normal close
        assert returned, "pending frames come back to the application"
        for msg in returned:
            assert msg.is_from_engine() and msg.bhdr.status == AmpeStatus.channel_closed
        received = len(wait_for_eof(peer))
        assert received < 200 * (65535 + 16)  # the pending frames were dropped, not sent
        peer.close()


def test_server_rejects_hello_with_bye_signal(groups):
    server, client = groups
    _, port = tcp_listen(server)
    header = client.post(_tcp(port).format(Message()))
    req = recv(server)
    reject = make(OpCode.ByeSignal, req.bhdr.channel_number)
    server.post(reject)
    assert is_closed_signal(recv(server))
    closed, _ = recv_until(client, is_closed_signal)
    assert closed.bhdr.channel_number == header.channel_number


def test_channel_closed_carries_first_message_id(pair):
    server, client, sch, _cch = pair
    server.post(make(OpCode.ByeSignal, sch))
    srv_closed = recv(server)
    cli_closed, _ = recv_until(client, is_closed_signal)
    assert srv_closed.bhdr.message_id == cli_closed.bhdr.message_id != 0


def test_peer_disconnect_returns_queued_messages(groups):
    _, client = groups
    with plain_listener() as (lsock, port):
        header = client.post(_tcp(port).format(Message()))
        peer = answer_hello(lsock, client, header.channel_number)
        for _ in range(200):  # ~13 MB: far more than the socket buffers hold
            client.post(make(OpCode.Request, header.channel_number, b"q" * 65535))
        # The inbox is first in, first out: once this listener is up, the
        # engine has queued every Request above. Then vanish with a reset.
        listen(client, tofu.TCPServerAddress("127.0.0.1", 0))
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()
        closed, returned = recv_until(client, is_closed_signal)
        assert returned
        assert all(m.is_from_engine() for m in returned)
        failures = frozenset((AmpeStatus.peer_disconnected, AmpeStatus.send_failed))
        assert {m.bhdr.status for m in returned} <= failures
        assert_closed(closed, failures, header.channel_number)
        assert closed.bhdr.status == AmpeStatus.channel_closed


# ---------------------------------------------------------------- groups


def test_accepted_channels_belong_to_the_listeners_group(rtr):
    ampe = rtr.ampe()
    listeners, other, clients = ampe.create(), ampe.create(), ampe.create()
    _, port = tcp_listen(listeners)
    clients.post(_tcp(port).format(Message()))
    assert recv(listeners).bhdr.proto.op_code == OpCode.HelloRequest
    assert other.wait_receive(0) is None


def test_destroying_a_group_closes_its_channels(rtr):
    ampe = rtr.ampe()
    server, client = ampe.create(), ampe.create()
    _, port = tcp_listen(server)
    cch, _ = connect(client, server, _tcp(port))
    ampe.destroy(server)
    closed, _before = recv_until(client, is_closed_signal)
    assert closed.bhdr.channel_number == cch
    with pytest.raises(tofu.ShutdownStarted):
        server.wait_receive(0)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # the listener is gone too


def test_origin_of_received_frames_is_always_application(pair):
    server, client, _sch, cch = pair
    msg = make(OpCode.Signal, cch)
    msg.bhdr.proto.origin = OriginFlag.engine  # post() resets it anyway
    client.post(msg)
    assert recv(server).is_from_application()


def test_a_connect_abandoned_with_a_bye_signal_gives_the_hello_request_back(groups):
    """The HelloRequest went out, the peer has not answered: a ByeSignal
    abandons the connect, and the HelloRequest comes back (as any close while
    connecting gives it back), then a normal close's notice."""
    _, client = groups
    with plain_listener() as (lsock, port):
        hello = make(OpCode.HelloRequest, headers=[("~connect_to", f"tcp|127.0.0.1|{port}"), ("x-id", "7")])
        header = client.post(hello)
        peer, _ = lsock.accept()
        with peer:
            assert read_frame(peer).bhdr.proto.op_code == OpCode.HelloRequest  # it was written
            client.post(make(OpCode.ByeSignal, header.channel_number))
            back = recv(client)
            assert back.bhdr.proto.op_code == OpCode.HelloRequest and back.is_from_engine()
            assert back.bhdr.status == AmpeStatus.channel_closed and back.thdrs.get("x-id") == "7"
            assert_closed(recv(client), None, header.channel_number)
            wait_for_eof(peer)
