"""Every example in examples/ runs by itself, exits 0 in bounded time, and
prints what it promises. Each runs as `python examples/NAME.py`, as a user
would run it."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import tofu

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT = 30.0


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=EXAMPLES.parent,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def test_every_example_is_tested() -> None:
    pairs = {"echo_server.py", "echo_client.py", "service_echo_server.py", "service_echo_client.py"}
    tested = pairs | {name for name, _ in SELF_CONTAINED}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_echo_server_and_echo_client_as_two_processes() -> None:
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "echo_server.py"), "--clients", "1", "--idle", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in server.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        first = lines.get(timeout=TIMEOUT)
        match = re.fullmatch(r"listening on (tcp\|127\.0\.0\.1\|\d+)\n", first)
        assert match, first
        out = run_example("echo_client.py", match.group(1), "-n", "4")
        assert "echo ok: 4/4" in out
        assert "echo 3: hello #3 (x-seq 3)" in out
        assert server.wait(TIMEOUT) == 0  # it served its one client and stopped by itself
        rest = []
        while (line := lines.get(timeout=TIMEOUT)) is not None:
            rest.append(line)
        assert rest[-1] == "echo server done: 4 request(s) answered\n"
        assert any(x.endswith(" connected\n") for x in rest) and any(x.endswith(" closed\n") for x in rest)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(TIMEOUT)
        server.stdout.close()  # type: ignore[union-attr]
        server.stderr.close()  # type: ignore[union-attr]


def test_echo_server_alone_stops_when_idle() -> None:
    out = run_example("echo_server.py", "--idle", "0.2")
    assert out.startswith("listening on tcp|127.0.0.1|")
    assert "nobody connected for 0.2 s: stopping" in out


def test_service_echo_server_and_client_as_two_processes() -> None:
    path = tofu.temp_uds_path()
    # The server must get SIGINT's usual action (a test run in the background ignores SIGINT,
    # and a child inherits an ignored signal).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "service_echo_server.py"), "tcp://127.0.0.1:0", f"uds://{path}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert server.stdout is not None
        tcp = server.stdout.readline().removeprefix("listening on ").strip()
        uds = server.stdout.readline().removeprefix("listening on ").strip()
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", tcp) and uds == f"uds://{path}", (tcp, uds)
        out = run_example("service_echo_client.py", tcp, "-n", "4")
        assert "echo ok: 4/4" in out and "echo 3: hello #3 (x-seq 3)" in out
        assert "echo ok: 2/2" in run_example("service_echo_client.py", uds, "-n", "2")
        server.send_signal(signal.SIGINT)  # a graceful stop
        rest, err = server.communicate(timeout=TIMEOUT)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(TIMEOUT)
    assert server.returncode == 0, err
    lines = rest.splitlines()
    assert lines[-1] == "echo server done: 6 request(s) answered"
    assert sum(line.endswith(" connected") for line in lines) == 2
    assert sorted(re.findall(r"closed after (\d+) request", rest)) == ["2", "4"]


def test_service_echo_client_rejects_a_bad_address() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "service_echo_client.py"), "nowhere"],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 2 and "is not tcp://HOST:PORT" in proc.stderr


def test_echo_client_rejects_a_bad_address() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "echo_client.py"), "nowhere"],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 2 and "is not tcp://HOST:PORT" in proc.stderr


SELF_CONTAINED = [
    ("echo_both.py", ["echo ok: 3/3", "echo server done: 3 request(s) answered"]),
    (
        "request_response.py",
        ["out of order: yes, all 8 matched by message id", "arrival order: [4, 3, 2, 1, 8, 7, 6, 5]"],
    ),
    (
        "streaming.py",
        [
            "client: uploaded 300000 bytes",
            "server: received 300000 bytes in 10 frames",
            "client: downloaded 300000 bytes in 10 frames; digest and data match",
        ],
    ),
    ("progress.py", ["progress [#.........] 1/10", "progress [##########] 10/10", "(10 progress signals)"]),
    (
        "heartbeat.py",
        [
            "client: heartbeat 5",
            "client: hanging",
            "silent for",
            "closing it",
            "client: the server closed the channel",
        ],
    ),
    (
        "multi_client.py",
        [
            "+ alice joined",
            "- bob left",
            "- carol left",
            "- dave left",
            "all 4 clients came and went; none left online",
        ],
    ),
    ("multi_listener.py", ["client heard: you are on tcp (tcp|127.0.0.1|", "client heard: you are on uds (uds|"]),
    (
        "graceful_shutdown.py",
        [
            "operator: 3 clients connected; sending SIGTERM",
            "server: woken by update_receiver()",
            "server: shutting down with 3 clients connected",
            "answering ByeResponse",
            "server: 3 of 3 clients said goodbye; destroying the engine",
        ],
    ),
    ("asyncio_echo.py", ["client: 100/100 echoes; server answered 100"]),
    # the same programs on tofu.connect / tofu.Server
    (
        "service_request_response.py",
        ["out of order: yes, all 8 matched by message id", "arrival order: [4, 3, 2, 1, 8, 7, 6, 5]"],
    ),
    (
        "service_streaming.py",
        [
            "client: uploaded 300000 bytes",
            "server: received 300000 bytes in 10 frames",
            "client: downloaded 300000 bytes in 10 frames; digest and data match",
        ],
    ),
    ("service_progress.py", ["progress [#.........] 1/10", "progress [##########] 10/10", "(10 progress signals)"]),
    ("service_asyncio.py", ["client: 100/100 echoes; server answered 100"]),
    (
        "service_shutdown.py",
        [
            "operator: 3 clients connected; sending SIGTERM",
            "client 0: b'finished'",
            "client 2: the server closed the channel",
            "3 of 3 clients were told goodbye",
        ],
    ),
    (
        "service_reconnect.py",
        ["client: disconnected (the server closed the channel)", "client: connected again", "client: while away"],
    ),
    (
        "service_multi_client.py",
        ["+ alice joined", "online: alice, bob, carol, dave", "- dave left", "all 4 clients came and went; none left"],
    ),
]


@pytest.mark.parametrize(("name", "expected"), SELF_CONTAINED, ids=[name for name, _ in SELF_CONTAINED])
def test_example_runs_and_says_what_it_promises(name: str, expected: list[str]) -> None:
    out = run_example(name)
    for text in expected:
        assert text in out, f"{text!r} missing from {name}'s output:\n{out}"


def test_graceful_shutdown_every_client_said_goodbye() -> None:
    out = run_example("graceful_shutdown.py")
    assert len(re.findall(r"client \d: server says 'server shutting down', answering ByeResponse", out)) == 3


def test_multi_client_tracks_each_channel_until_closed() -> None:
    out = run_example("multi_client.py")
    joined = dict(re.findall(r"\+ (\w+) joined on channel (\d+)", out))
    left = dict(re.findall(r"- (\w+) left \(channel (\d+)\)", out))
    assert sorted(joined) == ["alice", "bob", "carol", "dave"]
    assert left == joined  # every client left through the channel it joined on
