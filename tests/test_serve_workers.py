"""`tofu serve --workers N`: N engine processes sharing one TCP port (SO_REUSEPORT).

Every server runs as a real subprocess; the tests wait on its output lines
and on process ends, never on the clock.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import tofu
from engine_support import assert_closed
from tofu.addresses import parse_url
from tofu.cli import main

TIMEOUT = 30.0  # bounds a failure only
ROOT = Path(__file__).resolve().parents[1]
SERVED = re.compile(r"worker (\d+): served (\d+) request\(s\) on (\d+) connection\(s\)")


class Output:
    """A subprocess's stdout, line by line, read on a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def expect(self, pattern: str) -> re.Match[str]:
        """The next line that fully matches `pattern` (earlier lines are kept in `seen`)."""
        while True:
            line = self.queue.get(timeout=TIMEOUT)
            if line is None:
                raise AssertionError(f"output ended before {pattern!r}; saw {self.seen}")
            self.seen.append(line)
            if m := re.fullmatch(pattern, line):
                return m

    def rest(self) -> list[str]:
        """Every line until the output ends."""
        while (line := self.queue.get(timeout=TIMEOUT)) is not None:
            self.seen.append(line)
        return self.seen


@contextmanager
def serve_workers(*argv: str) -> Iterator[tuple[subprocess.Popen[str], Output, str, list[int]]]:
    """`tofu serve ARGV...` with workers: (process, its output, the URL, the worker pids)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tofu", "serve", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = Output(proc)
        url = out.expect(r"listening on (tcp://\S+) \(\d+ workers\)").group(1)
        pids = [int(p) for p in out.expect(r"workers: ([\d, ]+)").group(1).split(", ")]
        yield proc, out, url, pids
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def wait_exit(proc: subprocess.Popen[str]) -> str:
    """Wait for the server and its workers to end (they share its stderr); that stderr."""
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(TIMEOUT)
    assert not reader.is_alive(), "the server or a worker did not end"
    proc.wait(TIMEOUT)
    return err[0]


def receive(group: tofu.ChannelGroup) -> tofu.Message:
    msg = group.wait_receive(TIMEOUT)
    assert msg is not None, "nothing received in time"
    return msg


def test_workers_share_one_port_echo_40_connections_and_stop_on_sigint() -> None:
    with serve_workers("tcp://127.0.0.1:0", "--workers", "2") as (proc, out, url, pids):
        port = int(url.rsplit(":", 1)[1])
        assert port != 0 and len(pids) == 2 and proc.pid not in pids
        with tofu.Reactor() as rtr:
            ampe = rtr.ampe()
            group = ampe.create()
            address = parse_url(url, server=False)
            channels = [group.post(address.format(tofu.Message())).channel_number for _ in range(40)]
            for _ in channels:  # each channel is a TCP connection of its own
                hello = receive(group)
                assert hello.bhdr.proto.op_code == tofu.OpCode.HelloResponse, hello
                assert hello.bhdr.status == 0
            sent = {}
            for number in channels:
                req = tofu.Message(tofu.OpCode.Request)
                req.bhdr.channel_number = number
                req.thdrs.append("x-channel", str(number))
                req.body.append(f"payload {number}".encode())
                sent[number] = group.post(req).message_id
            for _ in channels:
                resp = receive(group)
                number = resp.bhdr.channel_number
                assert resp.bhdr.proto.op_code == tofu.OpCode.Response
                assert resp.bhdr.message_id == sent.pop(number)
                assert list(resp.thdrs) == [("x-channel", str(number))]  # a pure echo: nothing added
                assert bytes(resp.body) == f"payload {number}".encode()
            assert not sent
        proc.send_signal(signal.SIGINT)
        err = wait_exit(proc)
        assert proc.returncode == 0, err
        lines = out.rest()
    served = {int(m.group(1)): (int(m.group(2)), int(m.group(3))) for ln in lines if (m := SERVED.fullmatch(ln))}
    assert set(served) == set(pids), lines
    assert sum(r for r, _ in served.values()) == 40 and sum(c for _, c in served.values()) == 40
    assert all(c > 0 for _, c in served.values()), f"every connection went to one worker: {served}"
    assert "served 40 request(s) on 40 connection(s) in 2 worker(s)" in lines
    assert lines[-1] == "stopped"
    assert err == ""


def test_sigterm_says_bye_to_connected_clients_of_every_worker() -> None:
    with serve_workers("tcp://127.0.0.1:0", "--workers", "2", "--grace", "10") as (proc, out, url, pids):
        with tofu.Reactor() as rtr:
            group = rtr.ampe().create()
            address = parse_url(url, server=False)
            channels = {group.post(address.format(tofu.Message())).channel_number for _ in range(40)}
            for _ in channels:
                assert receive(group).bhdr.proto.op_code == tofu.OpCode.HelloResponse
            proc.send_signal(signal.SIGTERM)
            byes = set()
            while byes != channels:
                msg = receive(group)
                if msg.is_close_notice():  # a channel closed after our ByeResponse: a normal close
                    assert msg.bhdr.channel_number in byes, msg
                    assert_closed(msg, None)
                    continue
                if msg.is_from_engine():  # the pool grew
                    assert msg.bhdr.status == tofu.AmpeStatus.pool_empty, msg
                    continue
                assert msg.bhdr.proto.op_code == tofu.OpCode.ByeRequest, msg
                assert msg.thdrs.get("reason") == "server shutting down"
                byes.add(msg.bhdr.channel_number)
                msg.bhdr.proto.op_code = tofu.OpCode.ByeResponse
                group.post(msg)
            err = wait_exit(proc)
        assert proc.returncode == 0, err
        lines = out.rest()
    for pid in pids:
        said_bye = rf"worker {pid}: stopping: saying bye to [1-9]\d* client\(s\), .*"  # each has clients
        assert any(re.fullmatch(said_bye, ln) for ln in lines), lines
    assert lines[-1] == "stopped"


def test_a_worker_that_dies_stops_the_others_and_the_exit_status_is_1() -> None:
    with serve_workers("tcp://127.0.0.1:0", "--workers", "3") as (proc, out, _url, pids):
        os.kill(pids[1], signal.SIGKILL)
        out.expect(rf"worker {pids[1]} was killed by signal 9: stopping the others")
        err = wait_exit(proc)
        assert proc.returncode == 1, err
        lines = out.rest()
    for pid in (pids[0], pids[2]):
        assert f"worker {pid}: stopped" in lines
    assert lines[-1] == "stopped"
    assert err == f"tofu serve: worker {pids[1]} was killed by signal 9\n"


def test_workers_stop_when_the_parent_is_killed() -> None:
    """Each worker's stdin is a pipe from the parent: when the parent dies, they stop.
    They share the parent's stderr, so its end of file means every worker has ended."""
    with serve_workers("tcp://127.0.0.1:0", "--workers", "2") as (proc, _out, _url, _pids):
        proc.kill()
        proc.wait(TIMEOUT)
        ended = threading.Event()

        def drain() -> None:
            proc.stderr.read()  # type: ignore[union-attr]
            ended.set()

        threading.Thread(target=drain, daemon=True).start()
        assert ended.wait(TIMEOUT), "the workers outlived their parent"


def test_conformance_suite_passes_against_two_workers() -> None:
    with serve_workers("tcp://127.0.0.1:0", "--workers", "2", "--grace", "1") as (proc, _out, url, _pids):
        result = subprocess.run(
            [sys.executable, "-m", "tofu", "conform", url, "--quiet", "--cases", "1.*,2.*,3.*,4.*"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        proc.send_signal(signal.SIGINT)
        err = wait_exit(proc)
        assert proc.returncode == 0, err


def test_workers_with_a_unix_socket_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    path = tofu.temp_uds_path()
    code = main(["serve", "tcp://127.0.0.1:0", f"uds://{path}", "--workers", "2"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tofu serve: --workers 2: uds://"), err
    assert "cannot be shared by several processes" in lines[0]
    assert not Path(path).exists()


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_workers_must_be_a_positive_count(capsys: pytest.CaptureFixture[str], value: str) -> None:
    assert main(["serve", "tcp://127.0.0.1:0", "--workers", value]) == 2
    assert "--workers" in capsys.readouterr().err


def test_one_worker_is_todays_serve() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tofu", "serve", "tcp://127.0.0.1:0", "--workers", "1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = Output(proc)
        out.expect(r"listening on tcp://127\.0\.0\.1:\d+")  # no worker count: no workers
        proc.send_signal(signal.SIGTERM)
        err = wait_exit(proc)
        assert proc.returncode == 0, err
        assert out.rest() == [
            out.seen[0],
            "stopping: saying bye to 0 client(s), waiting up to 3 s",
            "served 0 request(s) on 0 connection(s)",
            "stopped",
        ]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)


def test_the_more_than_one_core_program_in_the_docs_runs(tmp_path: Path) -> None:
    """docs/concepts.md's multi-process program, run as a script (spawn needs an importable main module)."""
    text = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    section = text.split("## More than one core", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the section has no python block"
    script = tmp_path / "more_than_one_core.py"
    script.write_text(match.group(1), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"8 connections served by 2 processes: \{\d+: \d+, \d+: \d+\}\n", result.stdout), result.stdout


def test_a_port_taken_without_reuse_port_fails_at_start_with_status_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "tofu", "serve", f"tcp://127.0.0.1:{port}", "--workers", "2"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1, result
    assert "listening on" not in result.stdout
    assert f"cannot listen on tcp://127.0.0.1:{port}" in result.stderr
    assert re.search(r"^tofu serve: worker \d+ exited with status 1$", result.stderr, re.MULTILINE), result.stderr
