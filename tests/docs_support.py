"""Running the docs' server programs with their clients (test_docs.py and
test_readme.py).

A ```python block with a title that names a server file (```python
title="echo_server.py") is a server: it runs until SIGINT or SIGTERM, and it
prints a line once it listens and stops on them (serve_forever's `ready`).
The ```python block after it is its client.
Both say `127.0.0.1:7099`; the test gives them a free port instead, starts the
server, waits for its first line, runs the client, then stops the server with
SIGINT: every one of them must exit 0 without a traceback."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import tofu

TIMEOUT = 60.0  # seconds: bounds a hung program, never paces a working one
DOCS_ADDRESS = "127.0.0.1:7099"  # what the docs' servers and clients say
SERVER_TITLE = re.compile(r'title="[^"]*server[^"]*\.py"')


@dataclass
class Served:
    """What a server and its client printed."""

    server_out: str
    server_err: str
    client_out: str
    client_err: str


def is_server(fence_line: str) -> bool:
    """Whether a fence line opens a server block (see the module's docstring)."""
    return bool(SERVER_TITLE.search(fence_line))


def run_served(server: str, client: str, cwd: Path) -> Served:
    """Run `server`, then `client` against it, then stop the server (SIGINT)."""
    port = tofu.find_free_tcp_port()
    address = f"127.0.0.1:{port}"
    (cwd / "server.py").write_text(server.replace(DOCS_ADDRESS, address), encoding="utf-8")
    (cwd / "client.py").write_text(client.replace(DOCS_ADDRESS, address), encoding="utf-8")
    # The server must get SIGINT's usual action: a test run started in the background
    # (by a shell without job control) ignores SIGINT, and a child inherits an ignored signal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "server.py"], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # it listens
        assert first, f"the server ended before it printed a line: {proc.communicate(timeout=TIMEOUT)}"
        ran = subprocess.run(
            [sys.executable, "client.py"], cwd=cwd, check=False, capture_output=True, text=True, timeout=TIMEOUT
        )
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    assert ran.returncode == 0, f"the client exited {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
    assert proc.returncode == 0, f"the server exited {proc.returncode} on SIGINT\n{first}{rest}\n{err}"
    for text in (ran.stderr, err):
        assert "Traceback" not in text, text
    return Served(first + rest, err, ran.stdout, ran.stderr)
