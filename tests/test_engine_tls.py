"""TLS channels over real sockets: data, mutual TLS, the peer's identity, and
every failure ending with a clear status and reason (connecting side) or a
single log line and no channel (listening side)."""

from __future__ import annotations

import datetime
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import tofu
import trustme
from engine_support import (
    TIMEOUT,
    assert_closed,
    connect,
    is_closed_signal,
    listen,
    make,
    read_frame,
    recv,
    recv_until,
)
from tls_support import Pems
from tofu import AmpeStatus, Message, OpCode
from tofu.channels import Connection
from tofu.groups import mailbox_of

DROPPED = "dropped an incoming connection"


@pytest.fixture
def pems(tmp_path: Path) -> Pems:
    return Pems(tmp_path)


@pytest.fixture
def engine(pems: Pems) -> Iterator[tofu.Reactor]:
    """One engine that listens with the server certificate and connects trusting the CA."""
    options = tofu.Options(
        tls_server_context=tofu.server_tls_context(pems.server),
        tls_client_context=tofu.client_tls_context(ca=pems.ca_pem),
    )
    with tofu.Reactor(options) as rtr:
        yield rtr


def tls_listen(group: tofu.ChannelGroup) -> tuple[int, int]:
    channel, value = listen(group, tofu.TLSServerAddress("127.0.0.1", 0))
    scheme, host, port = value.split("|")
    assert (scheme, host) == ("tls", "127.0.0.1")
    return channel, int(port)


def connect_fails(group: tofu.ChannelGroup, address: tofu.Address) -> tuple[Message, Message]:
    """Post a HelloRequest that must fail: (the HelloRequest back, the channel_closed Signal)."""
    hello = group.post(address.format(Message()))
    back = recv(group)
    assert back.bhdr.proto.op_code == OpCode.HelloRequest, back
    assert back.bhdr.status == AmpeStatus.connect_failed, tofu.raw_to_status(back.bhdr.status)
    assert back.bhdr.channel_number == hello.channel_number
    closed = recv(group)
    assert is_closed_signal(closed), closed
    assert closed.thdrs.get(tofu.CLOSE_REASON_HEADER) == "connect_failed"
    return back, closed


def assert_listener_dropped_it(
    engine: tofu.Reactor, server: tofu.ChannelGroup, port: int, caplog: pytest.LogCaptureFixture | None
) -> None:
    """The listening side logged the failure once (checked when `caplog` is
    given), kept no channel and told the application nothing: the next
    message it gets is a good client's Hello."""
    good = tofu.Reactor(tofu.Options(tls_client_context=engine._options.tls_client_context))
    with good:
        _, server_channel = connect(good.ampe().create(), server, tofu.TLSClientAddress("127.0.0.1", port))
        connections = [ch.number for ch in engine._table.of_group(mailbox_of(server)) if isinstance(ch, Connection)]
        assert connections == [server_channel]  # nothing left of the failed one
    if caplog is not None:
        dropped = [r for r in caplog.records if DROPPED in r.getMessage()]
        assert len(dropped) == 1, [r.getMessage() for r in caplog.records]
    closed, _ = recv_until(server, is_closed_signal)
    assert closed.bhdr.channel_number == server_channel


def test_tls_channel_carries_frames_both_ways(engine: tofu.Reactor) -> None:
    ampe = engine.ampe()
    with ampe.create() as server, ampe.create() as client:
        _, port = tls_listen(server)
        cch, sch = connect(client, server, tofu.TLSClientAddress("127.0.0.1", port))
        bodies = [bytes([i]) * 60000 for i in range(40)]  # ~2.4 MB: many TLS records, partial writes
        for i, body in enumerate(bodies):
            client.post(make(OpCode.Request, cch, body, mid=i + 1))
        for i, body in enumerate(bodies):
            msg = recv(server)
            assert (msg.bhdr.message_id, bytes(msg.body)) == (i + 1, body)
            msg.bhdr.proto.op_code = OpCode.Response
            server.post(msg)
        for i, body in enumerate(bodies):
            msg = recv(client)
            assert (msg.bhdr.proto.op_code, msg.bhdr.message_id, bytes(msg.body)) == (OpCode.Response, i + 1, body)
        client.post(make(OpCode.ByeRequest, cch, mid=99))
        bye = recv(server)
        assert bye.bhdr.proto.op_code == OpCode.ByeRequest and bye.bhdr.channel_number == sch


def test_the_client_learns_the_servers_identity(engine: tofu.Reactor) -> None:
    ampe = engine.ampe()
    with ampe.create() as server, ampe.create() as client:
        _, port = tls_listen(server)
        client.post(tofu.TLSClientAddress("127.0.0.1", port).format(Message()))
        req = recv(server)
        assert req.thdrs.get(tofu.PEER_SUBJECT_HEADER) is None  # no client certificate asked for
        req.bhdr.proto.op_code = OpCode.HelloResponse
        server.post(req)
        resp = recv(client)
        assert resp.bhdr.proto.op_code == OpCode.HelloResponse
        assert (resp.thdrs.get(tofu.PEER_SUBJECT_HEADER) or "").endswith("CN=server")
        assert resp.thdrs.get(tofu.PEER_SAN_HEADER) == "DNS:localhost,IP:127.0.0.1"


def test_mutual_tls_identity_and_forged_peer_headers(pems: Pems) -> None:
    server_options = tofu.Options(tls_server_context=tofu.server_tls_context(pems.server, ca=pems.ca_pem))
    client_options = tofu.Options(tls_client_context=tofu.client_tls_context(ca=pems.ca_pem, cert=pems.client))
    with (
        tofu.Reactor(server_options) as srv,
        tofu.Reactor(client_options) as cli,
        srv.ampe().create() as server,
        cli.ampe().create() as client,
    ):
        _, port = tls_listen(server)
        hello = tofu.TLSClientAddress("localhost", port).format(Message())
        hello.thdrs.append(tofu.PEER_SUBJECT_HEADER, "CN=root")  # a forgery
        hello.thdrs.append(tofu.PEER_UID_HEADER, "0")
        client.post(hello)
        req = recv(server)
        names = [name for name, _ in req.thdrs]
        assert names.count(tofu.PEER_SUBJECT_HEADER) == 1 and tofu.PEER_UID_HEADER not in names
        assert (req.thdrs.get(tofu.PEER_SUBJECT_HEADER) or "").endswith("CN=client")
        assert req.thdrs.get(tofu.PEER_SAN_HEADER) == "DNS:client.example"
        req.bhdr.proto.op_code = OpCode.HelloResponse
        server.post(req)  # echoes the client's identity headers back: the client's engine replaces them
        resp = recv(client)
        assert (resp.thdrs.get(tofu.PEER_SUBJECT_HEADER) or "").endswith("CN=server")
        assert [name for name, _ in resp.thdrs].count(tofu.PEER_SAN_HEADER) == 1
        # Later frames carry no identity, forged or not.
        client.post(make(OpCode.Signal, resp.bhdr.channel_number, headers=[(tofu.PEER_SAN_HEADER, "DNS:x")]))
        sig = recv(server)
        assert sig.bhdr.proto.op_code == OpCode.Signal and sig.thdrs.get(tofu.PEER_SAN_HEADER) is None


def test_a_tls_address_without_a_context_fails_clearly() -> None:
    with tofu.Reactor() as rtr, rtr.ampe().create() as group:
        header = group.post(tofu.TLSServerAddress("127.0.0.1", 0).format(Message()))
        resp = recv(group)
        assert resp.bhdr.proto.op_code == OpCode.WelcomeResponse
        assert resp.bhdr.status == AmpeStatus.listen_failed
        closed = recv(group)
        assert is_closed_signal(closed) and closed.bhdr.channel_number == header.channel_number
        assert "tls_server_context" in (closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER) or "")

        _, closed = connect_fails(group, tofu.TLSClientAddress("127.0.0.1", tofu.find_free_tcp_port()))
        assert "tls_client_context" in (closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER) or "")


def test_unknown_ca(engine: tofu.Reactor, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tofu")
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    ampe = engine.ampe()
    with (
        ampe.create() as server,
        tofu.Reactor(tofu.Options(tls_client_context=tofu.client_tls_context(ca=str(other)))) as cli,
    ):
        _, port = tls_listen(server)
        with cli.ampe().create() as client:
            back, closed = connect_fails(client, tofu.TLSClientAddress("127.0.0.1", port))
            detail = closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER) or ""
            assert "certificate verify failed" in detail and "issuer" in detail, detail
            assert back.thdrs.get(tofu.CONNECT_TO_HEADER) == f"tls|127.0.0.1|{port}"
        assert_listener_dropped_it(engine, server, port, caplog)


def test_hostname_mismatch(engine: tofu.Reactor) -> None:
    ampe = engine.ampe()
    with ampe.create() as server, ampe.create() as client:
        _, port = tls_listen(server)
        _, closed = connect_fails(client, tofu.TLSClientAddress("127.0.0.1", port, server_hostname="wrong.example"))
        detail = closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER) or ""
        assert "certificate verify failed" in detail and "wrong.example" in detail, detail


def test_expired_certificate(pems: Pems) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = pems.issue(
        "old", "localhost", not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1)
    )
    options = tofu.Options(
        tls_server_context=tofu.server_tls_context(expired),
        tls_client_context=tofu.client_tls_context(ca=pems.ca_pem),
    )
    with tofu.Reactor(options) as rtr, rtr.ampe().create() as server, rtr.ampe().create() as client:
        _, port = tls_listen(server)
        _, closed = connect_fails(client, tofu.TLSClientAddress("localhost", port))
        assert "expired" in (closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER) or "")


def test_missing_client_certificate_when_required(pems: Pems, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tofu")
    options = tofu.Options(
        tls_server_context=tofu.server_tls_context(pems.server, ca=pems.ca_pem),
        tls_client_context=tofu.client_tls_context(ca=pems.ca_pem, cert=pems.client),
    )
    without_cert = tofu.Options(tls_client_context=tofu.client_tls_context(ca=pems.ca_pem))
    with (
        tofu.Reactor(options) as srv,
        tofu.Reactor(without_cert) as cli,
        srv.ampe().create() as server,
        cli.ampe().create() as client,
    ):
        _, port = tls_listen(server)
        # With TLS 1.3 the client has finished its handshake and sent its
        # HelloRequest when the server refuses: it still comes back.
        back, closed = connect_fails(client, tofu.TLSClientAddress("127.0.0.1", port))
        assert "certificate" in (closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER) or "")
        assert back.thdrs.get(tofu.CONNECT_TO_HEADER) == f"tls|127.0.0.1|{port}"
        assert_listener_dropped_it(srv, server, port, caplog)


def test_plaintext_client_to_a_tls_listener(engine: tofu.Reactor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tofu")
    ampe = engine.ampe()
    with ampe.create() as server, ampe.create() as client:
        _, port = tls_listen(server)
        hello = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
        closed, _ = recv_until(client, is_closed_signal)
        assert closed.bhdr.channel_number == hello.channel_number
        assert closed.thdrs.get(tofu.CLOSE_REASON_HEADER) not in (None, "channel_closed")
        assert_listener_dropped_it(engine, server, port, caplog)


def test_tls_client_to_a_plaintext_listener(engine: tofu.Reactor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tofu")
    ampe = engine.ampe()
    with ampe.create() as server, ampe.create() as client:
        _, value = listen(server, tofu.TCPServerAddress("127.0.0.1", 0))
        port = int(value.rsplit("|", 1)[1])
        _, closed = connect_fails(client, tofu.TLSClientAddress("127.0.0.1", port))
        assert "TLS" in (closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER) or "")
        # The plaintext listener turned it away unseen, and still serves plain clients.
        with tofu.Reactor() as plain, plain.ampe().create() as good:
            connect(good, server, tofu.TCPClientAddress("127.0.0.1", port))
        assert len([r for r in caplog.records if DROPPED in r.getMessage()]) == 1


def test_a_client_hello_lookalike_frame_is_still_a_frame() -> None:
    """The plaintext listener's TLS check needs a whole ClientHello record
    header: an ordinary first frame, even from channel 0x1603, passes."""
    with tofu.Reactor() as rtr, rtr.ampe().create() as server:
        _, value = listen(server, tofu.TCPServerAddress("127.0.0.1", 0))
        port = int(value.rsplit("|", 1)[1])
        hello = make(OpCode.HelloRequest, channel=0x1603, mid=7, headers=[(tofu.CONNECT_TO_HEADER, value)])
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(tofu.encode(hello))
            req = recv(server)
            assert req.bhdr.proto.op_code == OpCode.HelloRequest and req.bhdr.message_id == 7
            req.bhdr.proto.op_code = OpCode.HelloResponse
            server.post(req)
            assert read_frame(sock).bhdr.proto.op_code == OpCode.HelloResponse


def test_a_client_that_stops_mid_handshake_is_dropped(pems: Pems) -> None:
    options = tofu.Options(
        tls_server_context=tofu.server_tls_context(pems.server),
        tls_client_context=tofu.client_tls_context(ca=pems.ca_pem),
        handshake_timeout=0.5,
    )
    with tofu.Reactor(options) as rtr, rtr.ampe().create() as server:
        _, port = tls_listen(server)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as stalled:
            ctx = ssl.create_default_context(cafile=pems.ca_pem)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            half = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
            with pytest.raises(ssl.SSLWantReadError):
                half.do_handshake()
            stalled.sendall(outgoing.read())  # a ClientHello, and then nothing more
            stalled.settimeout(TIMEOUT)
            while stalled.recv(65536):  # the server answers, then gives up and closes
                pass
            assert_listener_dropped_it(rtr, server, port, None)  # logged by the timeout, in its own words


def test_a_server_that_stops_mid_handshake_fails_the_connect(pems: Pems) -> None:
    options = tofu.Options(
        tls_client_context=tofu.client_tls_context(ca=pems.ca_pem), connect_timeout=0.5
    )
    with socket.socket() as silent:  # accepts (the kernel does), never answers the ClientHello
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with tofu.Reactor(options) as rtr, rtr.ampe().create() as client:
            _, closed = connect_fails(client, tofu.TLSClientAddress("127.0.0.1", port))
            assert closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER)


def test_everything_before_a_bye_response_reaches_a_slow_reader(pems: Pems) -> None:
    """The engine closes after a ByeResponse only once TLS has written every
    record: a peer that reads late still gets all of it."""
    options = tofu.Options(tls_server_context=tofu.server_tls_context(pems.server))
    bodies = 200  # 12 MB: more than the socket buffers hold
    with tofu.Reactor(options) as rtr, rtr.ampe().create() as server:
        _, port = tls_listen(server)
        ctx = ssl.create_default_context(cafile=pems.ca_pem)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            hello = make(OpCode.HelloRequest, channel=1, mid=1, headers=[(tofu.CONNECT_TO_HEADER, "tls|x|1")])
            tls.sendall(tofu.encode(hello) + tofu.encode(make(OpCode.ByeRequest, channel=1, mid=2)))
            req = recv(server)
            assert req.bhdr.proto.op_code == OpCode.HelloRequest
            channel = req.bhdr.channel_number
            bye = recv(server)
            assert bye.bhdr.proto.op_code == OpCode.ByeRequest
            for i in range(bodies):  # the reader is not reading: the socket fills up
                server.post(make(OpCode.Signal, channel, bytes([i]) * 60000, mid=100 + i))
            bye.bhdr.proto.op_code = OpCode.ByeResponse
            server.post(bye)
            stream = bytearray()
            while chunk := tls.recv(65536):
                stream += chunk
        frames = tofu.FrameDecoder().feed(stream)
        assert [f.bhdr.proto.op_code for f in frames] == [OpCode.Signal] * bodies + [OpCode.ByeResponse]
        assert all(bytes(f.body) == bytes([i]) * 60000 for i, f in enumerate(frames[:-1]))
        closed, _ = recv_until(server, is_closed_signal)
        assert closed.bhdr.channel_number == channel and closed.thdrs.get(tofu.CLOSE_REASON_HEADER) is None


def test_a_listener_that_rejects_the_hello_is_no_tls_failure(engine: tofu.Reactor) -> None:
    """Once the handshake is done, closing the channel is the application's
    ordinary answer: the client sees what it would see over plain TCP."""
    ampe = engine.ampe()
    with ampe.create() as server, ampe.create() as client:
        _, port = tls_listen(server)
        hello = client.post(tofu.TLSClientAddress("127.0.0.1", port).format(Message()))
        req = recv(server)
        server.post(make(OpCode.ByeSignal, req.bhdr.channel_number))
        closed, before = recv_until(client, is_closed_signal)
        # What a refused hello gives over plain TCP: the HelloRequest back, then the notice.
        assert [(m.bhdr.proto.op_code, m.bhdr.status) for m in before] == [
            (OpCode.HelloRequest, AmpeStatus.peer_disconnected)
        ]
        assert_closed(closed, AmpeStatus.peer_disconnected, hello.channel_number)
        detail = closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER)
        assert detail == "the peer closed the connection before answering the HelloRequest"
