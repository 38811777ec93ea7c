"""Throw-away certificates for the bench's `tls` transport.

The parent makes a CA and a server certificate for 127.0.0.1 with trustme (in
the `bench` extra, and the `test` one) into a temporary directory; both child
processes get the paths in their spec: the server loads its certificate, the
client trusts the CA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def make_certificates(directory: str) -> dict[str, str]:
    """{"ca": PEM path, "server": PEM path with key and chain}. ImportError without trustme."""
    import trustme

    ca = trustme.CA()
    paths = {"ca": str(Path(directory, "ca.pem")), "server": str(Path(directory, "server.pem"))}
    ca.cert_pem.write_to_path(paths["ca"])
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(paths["server"])
    return paths


def tls_options(spec: dict[str, Any]) -> dict[str, Any]:
    """The tofu.Options keyword arguments of a child on the tls transport ({} on
    others): both contexts, so a server and a client process need no role."""
    files = spec.get("tls")
    if spec["address"][0] != "tls" or not files:
        return {}
    import tofu

    return {
        "tls_server_context": tofu.server_tls_context(files["server"]),
        "tls_client_context": tofu.client_tls_context(ca=files["ca"]),
    }
