"""TLS as a record layer, sans I/O: ciphertext in, plaintext out, and back.

    session = TLSSession(context, server_side=False, server_hostname="example.org")
    wire.send(session.outgoing())           # the ClientHello
    plaintext = session.receive(from_wire)  # drives the handshake, then decrypts
    if session.error: ...                   # a failure is a value, never an exception
    session.send(plaintext); wire.send(session.outgoing())

Nothing here touches a socket: the engine moves the bytes (runtime/transport.py).
Also here: the peer's verified certificate as text.
"""

from __future__ import annotations

import ssl
from typing import Any

__all__ = ["TLSSession", "describe_certificate"]

_READ_SIZE = 64 * 1024


def _escape(value: str) -> str:
    """A value as RFC 4514 writes it inside a list: backslash, comma and plus escaped."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("+", "\\+")


def _rdn_text(rdns: Any) -> str:
    return ",".join("+".join(f"{_SHORT.get(k, k)}={_escape(v)}" for k, v in rdn) for rdn in rdns)


_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "emailAddress": "emailAddress",
}
_SAN_KIND = {"IP Address": "IP"}


def describe_certificate(cert: dict[str, Any]) -> tuple[str, str]:
    """(subject, subject alternative names) of a verified peer certificate as
    `SSLObject.getpeercert()` gives it: ``CN=name,O=org`` and
    ``DNS:name,IP:127.0.0.1`` ("" when absent). A comma or plus sign inside
    a value is escaped with a backslash (RFC 4514); CR and LF are dropped so
    the text fits one header."""
    subject = _rdn_text(cert.get("subject", ()))
    san = ",".join(f"{_SAN_KIND.get(kind, kind)}:{_escape(value)}" for kind, value in cert.get("subjectAltName", ()))
    return _clean(subject), _clean(san)


def _clean(text: str) -> str:
    return text.replace("\r", "").replace("\n", "").strip()


class TLSSession:
    """One side of a TLS connection, with no socket: the caller feeds it what
    came from the peer and sends what it produces.

    handshake_done: the handshake has completed (the peer is verified).
    error: why the connection failed (a string), or None; once set, the
        session does nothing more: send whatever `outgoing()` still holds (an
        alert telling the peer why) and close.
    closed: the peer ended the TLS stream (close_notify).
    """

    def __init__(self, context: ssl.SSLContext, server_side: bool, server_hostname: str | None = None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self.server_side = server_side
        self.handshake_done = False
        self.error: str | None = None
        self.closed = False
        self._advance()  # a client's ClientHello is now in outgoing()

    def _fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason

    def _advance(self) -> None:
        try:
            self._obj.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except ssl.SSLCertVerificationError as exc:
            self._fail(f"certificate verify failed: {exc.verify_message}")
            return
        except ssl.SSLError as exc:
            self._fail(_reason(exc))
            return
        self.handshake_done = True

    def receive(self, data: bytes | bytearray | memoryview) -> bytes:
        """Take bytes from the peer; return the plaintext they complete (b""
        while the handshake runs). Check `error` and `outgoing()` after."""
        if self.error is not None:
            return b""
        if data:
            self._incoming.write(data)
        if not self.handshake_done:
            self._advance()
            if not self.handshake_done:
                return b""
        chunks = []
        while True:
            try:
                chunk = self._obj.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed = True
                break
            except ssl.SSLError as exc:
                self._fail(_reason(exc))
                break
            if not chunk:
                self.closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt `data` (after the handshake); the records are in outgoing()."""
        if self.error is not None or not self.handshake_done:
            raise ValueError("TLSSession.send before the handshake completed")
        try:
            self._obj.write(data)
        except ssl.SSLError as exc:
            self._fail(_reason(exc))

    def close_notify(self) -> None:
        """End this side's TLS stream: a close_notify alert goes to
        outgoing() (the peer's own close_notify is not waited for)."""
        if self.error is not None or not self.handshake_done:
            return
        try:
            self._obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass  # the alert is written; the peer's has not come: nothing to wait for
        except ssl.SSLError as exc:
            self._fail(_reason(exc))

    def outgoing(self) -> bytes:
        """The bytes to send to the peer now (may be empty)."""
        return self._outgoing.read()

    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's verified certificate, or None (none asked for or given)."""
        cert = self._obj.getpeercert() if self.handshake_done else None
        return cert or None

    def version(self) -> str | None:
        """The negotiated protocol ("TLSv1.3"...), None before the handshake."""
        return self._obj.version()


def _reason(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason).replace("_", " ").lower() if reason else str(exc)
