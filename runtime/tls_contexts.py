"""SSLContexts for the engine's TLS listeners and connects, made from PEM files.

`ssl` is imported when one is made: an application without TLS never loads
OpenSSL (several MB of memory).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

__all__ = ["client_tls_context", "server_tls_context"]


def server_tls_context(cert: str, key: str | None = None, ca: str | None = None) -> ssl.SSLContext:
    """An SSLContext for TLS listeners (`Options.tls_server_context`).

    cert: PEM file with the listener's certificate (and its chain); key: its
    private key (None: it is in `cert`). ca: PEM file of the CAs whose client
    certificates are accepted; given, every client MUST present a certificate
    signed by one of them (mutual TLS). TLS 1.2 or newer."""
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca is not None:
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_tls_context(ca: str | None = None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """An SSLContext for TLS connects (`Options.tls_client_context`).

    The server's certificate is always verified, and its name checked against
    the address's host (or its `server_hostname`). ca: PEM file of the CAs to
    trust (None: the system's). cert/key: the client's own certificate and
    key, for servers that require one (mutual TLS). TLS 1.2 or newer."""
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx
