"""Certificates for the TLS tests, made with trustme."""

from __future__ import annotations

from pathlib import Path

import trustme


class Pems:
    """A CA and certificates issued by it, as PEM files in a directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = trustme.CA()
        self.ca_pem = self._write("ca.pem", self.ca.cert_pem)
        self.server = self.issue("server", "localhost", "127.0.0.1")
        self.client = self.issue("client", "client.example")

    def _write(self, name: str, blob: trustme.Blob) -> str:
        path = self.dir / name
        blob.write_to_path(str(path))
        return str(path)

    def issue(self, name: str, *identities: str, **kwargs: object) -> str:
        """A PEM file with the key and certificate chain of a new certificate."""
        cert = self.ca.issue_cert(*identities, common_name=name, **kwargs)  # type: ignore[arg-type]
        return self._write(f"{name}.pem", cert.private_key_and_cert_chain_pem)
