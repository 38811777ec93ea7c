"""The TLS record layer without sockets: two TLSSessions pump bytes into each
other; failures come back as values. Also the contexts made from PEM files,
certificate descriptions and the identity headers."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
import tofu
import trustme
from tls_support import Pems
from tofu import Message, OpCode
from tofu.identity import stamp_identity
from tofu.tls import TLSSession, describe_certificate


@pytest.fixture
def pems(tmp_path: Path) -> Pems:
    return Pems(tmp_path)


def pump(a: TLSSession, b: TLSSession, rounds: int = 10) -> tuple[bytes, bytes]:
    """Move bytes both ways until neither side has any; return the plaintext each received."""
    got_a, got_b = b"", b""
    for _ in range(rounds):
        to_b, to_a = a.outgoing(), b.outgoing()
        if not to_a and not to_b:
            break
        if to_b:
            got_b += b.receive(to_b)
        if to_a:
            got_a += a.receive(to_a)
    return got_a, got_b


def sessions(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str = "localhost"
) -> tuple[TLSSession, TLSSession]:
    server = TLSSession(server_ctx, server_side=True)
    client = TLSSession(client_ctx, server_side=False, server_hostname=hostname)
    return server, client


def test_handshake_then_data_both_ways(pems: Pems) -> None:
    server, client = sessions(tofu.server_tls_context(pems.server), tofu.client_tls_context(ca=pems.ca_pem))
    assert not client.handshake_done and client.version() is None
    pump(client, server)
    assert client.handshake_done and server.handshake_done
    assert client.error is None and server.error is None
    client.send(b"hello " * 10000)
    server.send(b"world")
    got_client, got_server = pump(client, server)
    assert got_server == b"hello " * 10000
    assert got_client == b"world"
    assert client.version() in ("TLSv1.2", "TLSv1.3")


def test_client_sees_server_identity(pems: Pems) -> None:
    server, client = sessions(tofu.server_tls_context(pems.server), tofu.client_tls_context(ca=pems.ca_pem))
    pump(client, server)
    cert = client.peer_certificate()
    assert cert is not None
    subject, san = describe_certificate(cert)
    assert subject.endswith("CN=server")
    assert san == "DNS:localhost,IP:127.0.0.1"
    assert server.peer_certificate() is None  # no client certificate asked for


def test_mutual_tls_server_sees_client_identity(pems: Pems) -> None:
    server, client = sessions(
        tofu.server_tls_context(pems.server, ca=pems.ca_pem),
        tofu.client_tls_context(ca=pems.ca_pem, cert=pems.client),
    )
    pump(client, server)
    assert server.handshake_done and server.error is None
    cert = server.peer_certificate()
    assert cert is not None
    subject, san = describe_certificate(cert)
    assert subject.endswith("CN=client")
    assert san == "DNS:client.example"


def test_unknown_ca_is_an_error_value(pems: Pems, tmp_path: Path) -> None:
    other = trustme.CA()
    other_pem = tmp_path / "other-ca.pem"
    other.cert_pem.write_to_path(str(other_pem))
    server, client = sessions(tofu.server_tls_context(pems.server), tofu.client_tls_context(ca=str(other_pem)))
    pump(client, server)
    assert not client.handshake_done
    assert client.error is not None and "certificate verify failed" in client.error
    assert "issuer" in client.error
    assert server.error is not None  # the client's alert told the server
    assert client.receive(b"more") == b""  # a failed session does nothing more


def test_hostname_mismatch_is_an_error_value(pems: Pems) -> None:
    server, client = sessions(
        tofu.server_tls_context(pems.server), tofu.client_tls_context(ca=pems.ca_pem), hostname="other.example"
    )
    pump(client, server)
    assert client.error is not None and "other.example" in client.error


def test_expired_certificate_is_an_error_value(pems: Pems) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = pems.issue(
        "expired", "localhost", not_before=now - datetime.timedelta(days=2), not_after=now - datetime.timedelta(days=1)
    )
    server, client = sessions(tofu.server_tls_context(expired), tofu.client_tls_context(ca=pems.ca_pem))
    pump(client, server)
    assert client.error is not None and "expired" in client.error


def test_missing_client_certificate_fails_on_the_server(pems: Pems) -> None:
    server, client = sessions(
        tofu.server_tls_context(pems.server, ca=pems.ca_pem), tofu.client_tls_context(ca=pems.ca_pem)
    )
    pump(client, server)
    assert not server.handshake_done
    assert server.error is not None and "certificate" in server.error


def test_garbage_instead_of_a_client_hello(pems: Pems) -> None:
    server = TLSSession(tofu.server_tls_context(pems.server), server_side=True)
    assert server.receive(b"\x00" * 16 + b"not TLS at all") == b""
    assert server.error is not None and not server.handshake_done


def test_send_before_the_handshake_is_refused(pems: Pems) -> None:
    client = TLSSession(tofu.client_tls_context(ca=pems.ca_pem), server_side=False, server_hostname="localhost")
    assert client.outgoing()  # the ClientHello
    with pytest.raises(ValueError):
        client.send(b"too early")


def test_contexts_from_files(pems: Pems) -> None:
    assert tofu.server_tls_context(pems.server).verify_mode == ssl.CERT_NONE
    assert tofu.server_tls_context(pems.server, ca=pems.ca_pem).verify_mode == ssl.CERT_REQUIRED
    client = tofu.client_tls_context(ca=pems.ca_pem)
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert client.minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(OSError):
        tofu.client_tls_context(ca=str(pems.dir / "missing.pem"))


def test_describe_certificate_escapes_and_fits_one_header() -> None:
    cert = {
        "subject": ((("commonName", "a,b+c"),), (("organizationName", "O\r\nrg"),)),
        "subjectAltName": (("DNS", "x.example"), ("IP Address", "::1")),
    }
    subject, san = describe_certificate(cert)
    assert subject == "CN=a\\,b\\+c,O=Org"
    assert san == "DNS:x.example,IP:::1"
    assert describe_certificate({}) == ("", "")


def test_stamp_identity_removes_what_the_peer_wrote() -> None:
    msg = Message(OpCode.HelloRequest)
    msg.thdrs.append("~connect_to", "tls|h|1")
    msg.thdrs.append("~peer_subject", "CN=admin")
    msg.thdrs.append("~PEER_uid", "0")
    msg.thdrs._buf += b" ~peer_san :DNS:evil\r\nlast:line"  # odd spacing, no final CRLF
    stamp_identity(msg, ((tofu.PEER_SUBJECT_HEADER, "CN=real"),))
    assert list(msg.thdrs) == [("~connect_to", "tls|h|1"), ("last", "line"), ("~peer_subject", "CN=real")]


def test_stamp_identity_leaves_other_headers_alone() -> None:
    msg = Message()
    msg.thdrs.append("x", "~peer_subject:inside a value")
    before = bytes(msg.thdrs)
    stamp_identity(msg)
    assert bytes(msg.thdrs) == before
