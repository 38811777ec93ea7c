"""The transport seam over a socket pair: TLSTransport's contract with the
engine (nothing taken before the handshake, ciphertext it holds shows as
wants_write, every byte arrives), and the plaintext listener's ClientHello check."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import tofu
from tls_support import Pems
from tofu.tls import TLSSession
from tofu.transport import HandshakeFailed, PlainTransport, TLSTransport


@pytest.fixture
def pems(tmp_path: Path) -> Pems:
    return Pems(tmp_path)


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def recv_or_none(transport: TLSTransport | PlainTransport, buf: bytearray) -> int | None:
    try:
        return transport.recv_into(buf)
    except BlockingIOError:
        return None


def test_tls_transport_contract(pems: Pems) -> None:
    a, b = pair()
    with a, b:
        client = TLSTransport(
            TLSSession(tofu.client_tls_context(ca=pems.ca_pem), server_side=False, server_hostname="localhost")
        )
        client.attach(a)
        server = TLSTransport(TLSSession(tofu.server_tls_context(pems.server), server_side=True))
        server.attach(b)
        buf = bytearray(256 * 1024)
        assert client.wants_write and not client.ready  # the ClientHello waits
        assert client.send(b"early") == 0  # nothing is taken before the handshake
        for _ in range(10):
            recv_or_none(server, buf)
            recv_or_none(client, buf)
            client.send(b"")
            if client.ready and server.ready:
                break
        assert client.ready and server.ready
        assert client.identity and client.identity[0][0] == tofu.PEER_SUBJECT_HEADER

        data = bytes(range(256)) * 40000  # 10 MB: far more than the socket pair holds
        taken = 0
        held = False  # the transport held ciphertext the socket did not take
        received = bytearray()
        while taken < len(data) or client.wants_write:
            taken += client.send(memoryview(data)[taken:])
            held = held or client.wants_write
            n = recv_or_none(server, buf)
            if n:
                received += buf[:n]
        while len(received) < len(data):
            n = recv_or_none(server, buf)
            assert n != 0
            if n:
                received += buf[:n]
        assert received == data
        assert held


def test_plain_transport_turns_away_a_client_hello(pems: Pems) -> None:
    a, b = pair()
    with a, b:
        session = TLSSession(tofu.client_tls_context(ca=pems.ca_pem), server_side=False, server_hostname="localhost")
        a.sendall(session.outgoing())
        listener_side = PlainTransport(b, sniff=True)
        with pytest.raises(HandshakeFailed) as failed:
            listener_side.recv_into(bytearray(65536))
        assert failed.value.server_side and "TLS client" in str(failed.value)


def test_plain_transport_checks_only_the_first_read() -> None:
    a, b = pair()
    with a, b:
        listener_side = PlainTransport(b, sniff=True)
        frame = tofu.encode(tofu.TCPClientAddress("h", 1).format(tofu.Message()))
        a.sendall(frame)
        buf = bytearray(65536)
        assert listener_side.recv_into(buf) == len(frame)
        assert listener_side.recv_into == b.recv_into  # the socket's own method from now on
