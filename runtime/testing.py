"""Test helpers, as the reference ships them: never hard-code ports or paths."""

from __future__ import annotations

import itertools
import os
import socket
import tempfile

__all__ = ["find_free_tcp_port", "temp_uds_path"]

_counter = itertools.count()


def find_free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def temp_uds_path(prefix: str = "tofu") -> str:
    """A unique path for a Unix domain socket that does not exist yet.

    Short enough for sun_path (108 bytes on Linux)."""
    base = tempfile.gettempdir()
    while True:
        path = os.path.join(base, f"{prefix}-{os.getpid()}-{next(_counter)}-{os.urandom(3).hex()}.sock")
        if not os.path.exists(path):
            return path
