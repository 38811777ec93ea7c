"""The `tofu` command: demo, serve, ping, decode, the bench hook, and parse_url.

`tofu serve` runs as a real subprocess (signals, stdout announcing the
address); the other commands run in-process through `tofu.cli.main(argv)`.
Every failure must be one line on stderr with a non-zero exit status.
"""

from __future__ import annotations

import importlib.machinery
import io
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import tofu
from engine_support import assert_closed
from output_lines import Lines
from tofu.addresses import parse_url
from tofu.cli import format_url, main

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
C2S = GOLDEN / "zig-client-to-server.bin"
S2C = GOLDEN / "zig-server-to-client.bin"
TIMEOUT = 15.0  # for any one subprocess step; the tests take far less


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


# ---------------------------------------------------------------- parse_url


@pytest.mark.parametrize(
    ("text", "server", "expected"),
    [
        ("tcp://127.0.0.1:7099", False, tofu.TCPClientAddress("127.0.0.1", 7099)),
        ("tcp://127.0.0.1:0", True, tofu.TCPServerAddress("127.0.0.1", 0)),
        ("tcp://:7099", True, tofu.TCPServerAddress("", 7099)),
        ("tcp://[::1]:80", False, tofu.TCPClientAddress("::1", 80)),
        ("TCP://localhost:80/", False, tofu.TCPClientAddress("localhost", 80)),
        ("uds:///tmp/a.sock", False, tofu.UDSClientAddress("/tmp/a.sock")),
        ("uds:///tmp/a.sock", True, tofu.UDSServerAddress("/tmp/a.sock")),
        ("uds://rel.sock", True, tofu.UDSServerAddress("rel.sock")),
        ("tcp|10.0.0.1|5", False, tofu.TCPClientAddress("10.0.0.1", 5)),
        ("tcp|127.0.0.1|0", True, tofu.TCPServerAddress("127.0.0.1", 0)),
        ("uds|/tmp/b.sock", True, tofu.UDSServerAddress("/tmp/b.sock")),
        ("  uds|/tmp/b.sock \n", False, tofu.UDSClientAddress("/tmp/b.sock")),
    ],
)
def test_parse_url_accepts_urls_and_protocol_values(text: str, server: bool, expected: tofu.Address) -> None:
    assert parse_url(text, server) == expected


@pytest.mark.parametrize(
    ("text", "server", "reason"),
    [
        ("", True, "empty address"),
        ("http://x:1", False, "is not tcp://HOST:PORT"),
        ("localhost", False, "is not tcp://HOST:PORT"),
        ("tcp://host", False, "has no port"),
        ("tcp://host:http", False, "is not a number"),
        ("tcp://host:70000", False, "not in 0..65535"),
        ("tcp://host:0", False, "port 0 is only for listening"),
        ("tcp|host|0", False, "port 0 is only for listening"),
        ("tcp://:80", False, "has no host"),
        ("tcp://::1:80", False, "IPv6 host in brackets"),
        ("tcp://[::1]80", False, "[HOST]:PORT"),
        ("tcp://host:80/path", False, "has no path"),
        ("uds://", True, "no socket path"),
        ("tcp|host", False, "neither tcp|HOST|PORT nor uds|PATH"),
        ("tcp|host|x", False, "is not a number"),
    ],
)
def test_parse_url_rejects_with_a_reason(text: str, server: bool, reason: str) -> None:
    with pytest.raises(tofu.WrongAddress, match=re.escape(reason)):
        parse_url(text, server)


@pytest.mark.parametrize(
    "address",
    [
        tofu.TCPClientAddress("127.0.0.1", 1),
        tofu.TCPServerAddress("::1", 2),
        tofu.UDSClientAddress("/tmp/x.sock"),
        tofu.UDSServerAddress("rel.sock"),
    ],
)
def test_format_url_reads_back(address: tofu.Address) -> None:
    server = isinstance(address, (tofu.TCPServerAddress, tofu.UDSServerAddress))
    assert parse_url(format_url(address), server) == address


# ---------------------------------------------------------------- help and usage


@pytest.mark.parametrize("command", [[], ["demo"], ["serve"], ["ping"], ["decode"]])
def test_help_on_every_command(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code, out, err = run_cli(capsys, *command, "--help")
    assert code == 0
    assert out.startswith(f"usage: tofu {' '.join(command)}".rstrip())
    assert err == ""


def test_python_dash_m_and_console_script() -> None:
    for argv in ([sys.executable, "-m", "tofu", "--help"], [_console_script(), "--help"]):
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, proc.stderr
        for command in ("demo", "serve", "ping", "decode"):
            assert command in proc.stdout


def _console_script() -> str:
    script = shutil.which("tofu", path=str(Path(sys.executable).parent))
    assert script is not None, "the `tofu` console script is not installed next to this Python"
    return script


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["ping", "tcp://nowhere"], ["tofu ping: error:", "has no port", "tofu ping --help"]),
        (["serve", "http://x:1"], ["tofu serve: error:", "is not tcp://HOST:PORT"]),
        (["ping", "tcp://127.0.0.1:1", "-n", "zero"], ["tofu ping: error:", "'zero' is not a whole number"]),
        (["ping", "tcp://127.0.0.1:1", "--size", "70000"], ["70000 is not in 0..65535"]),
        (["frobnicate"], ["tofu: error:", "invalid choice"]),
        ([], ["tofu: error:", "required"]),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragments: list[str]
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, *fragments)


# ---------------------------------------------------------------- ping failures


def test_ping_refused_connection(capsys: pytest.CaptureFixture[str]) -> None:
    port = tofu.find_free_tcp_port()
    code, _, err = run_cli(capsys, "ping", f"tcp://127.0.0.1:{port}")
    assert code == 1
    assert_one_line_error(err, "tofu ping: cannot connect to", f"127.0.0.1:{port}", "connect_failed")


def test_ping_missing_uds_path(capsys: pytest.CaptureFixture[str]) -> None:
    path = tofu.temp_uds_path()
    code, _, err = run_cli(capsys, "ping", f"uds://{path}")
    assert code == 1
    assert_one_line_error(err, "cannot connect to", path, "uds_path_not_found")


def test_ping_interrupted_is_one_line_and_exit_130() -> None:
    # A listener that accepts and never answers: ping waits for its HelloResponse.
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        port = lsock.getsockname()[1]
        lsock.settimeout(TIMEOUT)
        # The child must get SIGINT's usual action: a test run started in the
        # background (by a shell without job control) ignores SIGINT, and a
        # child inherits an ignored signal, not a handled one.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tofu", "ping", f"tcp://127.0.0.1:{port}", "--timeout", "60"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        finally:
            signal.signal(signal.SIGINT, previous)
        try:
            conn, _ = lsock.accept()  # the HelloRequest is on its way: ping is waiting
            with conn:
                conn.settimeout(TIMEOUT)
                assert conn.recv(16)  # its first bytes arrived
                proc.send_signal(signal.SIGINT)
                _, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)
    assert proc.returncode == 130
    assert_one_line_error(err, "tofu ping: interrupted")


# ---------------------------------------------------------------- serve + ping


@contextmanager
def serve(
    *addresses: str, grace: str = "3", verbose: bool = False
) -> Iterator[tuple[subprocess.Popen[str], Lines, list[str]]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tofu", *(["-v"] if verbose else []), "serve", *addresses, "--grace", grace],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = Lines(proc.stdout)  # type: ignore[arg-type]
        urls = [lines.expect("listening on ").removeprefix("listening on ") for _ in addresses]
        yield proc, lines, urls
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> str:
    proc.send_signal(sig)
    proc.wait(TIMEOUT)
    return proc.stderr.read()  # type: ignore[union-attr]


PING_STATS = re.compile(r"round trip: min ([\d.]+) ms, median ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms")


def test_serve_announces_real_port_answers_ping_and_stops_on_sigint(capsys: pytest.CaptureFixture[str]) -> None:
    with serve("tcp://127.0.0.1:0") as (proc, lines, urls):
        (url,) = urls
        port = int(url.rsplit(":", 1)[1])
        assert url == f"tcp://127.0.0.1:{port}" and port != 0

        code, out, err = run_cli(capsys, "ping", url, "-n", "50", "--size", "1000")
        assert code == 0, err
        assert f"PING {url}: 50 requests of 1000 bytes" in out
        assert "50 replies to 50 requests, 0 with a different body" in out
        lo, median, p99, hi = (float(x) for x in PING_STATS.search(out).groups())  # type: ignore[union-attr]
        assert 0 < lo <= median <= p99 <= hi

        connected = lines.expect("channel ")  # it logged the connection, our Bye and the close
        number = connected.split(":")[0]
        assert connected == f"{number}: connected (tcp|127.0.0.1|{port})"
        assert lines.expect("channel ") == f"{number}: bye"
        assert lines.expect("channel ") == f"{number}: closed after 50 request(s)"
        err = stop(proc)
        assert proc.returncode == 0, err
        assert lines.expect("served ") == "served 50 request(s) on 1 connection(s)"
        lines.expect("stopped")
        assert err == ""


def test_serve_on_tcp_and_uds_and_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    path = tofu.temp_uds_path()
    with serve("tcp://127.0.0.1:0", f"uds://{path}") as (proc, lines, urls):
        assert urls[1] == f"uds://{path}"
        code, out, err = run_cli(capsys, "ping", f"uds|{path}", "-n", "5", "--size", "0")
        assert code == 0, err
        assert "5 replies to 5 requests" in out
        code, out, err = run_cli(
            capsys, "ping", urls[0].replace("tcp://", "tcp|").replace(":", "|"), "-n", "300", "--progress"
        )
        assert code == 0, err
        assert "300 replies to 300 requests" in out
        assert "300/300" in err  # the progress bar, drawn on stderr
        err = stop(proc, signal.SIGTERM)
        assert proc.returncode == 0, err
        lines.expect("stopped")
    assert not Path(path).exists()  # the listener's socket file is gone


def test_serve_stops_gracefully_with_a_connected_client() -> None:
    with serve("tcp://127.0.0.1:0") as (proc, lines, urls):
        with tofu.Reactor() as rtr:
            ampe = rtr.ampe()
            group = ampe.create()
            channel = group.post(parse_url(urls[0], server=False).format(tofu.Message())).channel_number
            hello = group.wait_receive(TIMEOUT)
            assert hello is not None and hello.bhdr.proto.op_code == tofu.OpCode.HelloResponse
            # A request with headers and body comes back as a Response with the same.
            req = tofu.Message(tofu.OpCode.Request)
            req.bhdr.channel_number = channel
            req.thdrs.append("x-test", "yes")
            req.body.append(b"\x00\x01payload")
            mid = group.post(req).message_id
            resp = group.wait_receive(TIMEOUT)
            assert resp is not None and resp.bhdr.proto.op_code == tofu.OpCode.Response
            assert resp.bhdr.message_id == mid
            assert list(resp.thdrs) == [("x-test", "yes")] and bytes(resp.body) == b"\x00\x01payload"
            # A Signal is echoed as a Signal.
            sig = tofu.Message(tofu.OpCode.Signal)
            sig.bhdr.channel_number = channel
            sig.body.append("tick")
            group.post(sig)
            echoed = group.wait_receive(TIMEOUT)
            assert echoed is not None and echoed.bhdr.proto.op_code == tofu.OpCode.Signal
            assert bytes(echoed.body) == b"tick"
            lines.expect("channel ")

            proc.send_signal(signal.SIGINT)
            bye = group.wait_receive(TIMEOUT)  # the server says goodbye first
            assert bye is not None and bye.bhdr.proto.op_code == tofu.OpCode.ByeRequest
            assert bye.thdrs.get("reason") == "server shutting down"
            bye.bhdr.proto.op_code = tofu.OpCode.ByeResponse
            group.post(bye)
            closed = group.wait_receive(TIMEOUT)
            assert closed is not None
            assert_closed(closed, None, channel)  # the Bye exchange: a normal close
        proc.wait(TIMEOUT)
        assert proc.returncode == 0, proc.stderr.read()  # type: ignore[union-attr]
        assert lines.expect("stopping: ").startswith("stopping: saying bye to 1 client(s)")
        assert lines.expect("channel ").endswith(": closed after 1 request(s)")
        lines.expect("stopped")


def test_serve_logs_why_a_client_vanished() -> None:
    with serve("tcp://127.0.0.1:0") as (proc, lines, urls):
        with tofu.Reactor() as rtr:  # leaving the block drops the connection without a Bye
            group = rtr.ampe().create()
            group.post(parse_url(urls[0], server=False).format(tofu.Message()))
            hello = group.wait_receive(TIMEOUT)
            assert hello is not None and hello.bhdr.proto.op_code == tofu.OpCode.HelloResponse
        connected = lines.expect("channel ")
        number = connected.split(":")[0]
        assert lines.expect("channel ") == f"{number}: closed after 0 request(s) (peer_disconnected)"
        assert stop(proc) == "" and proc.returncode == 0


def test_serve_survives_a_hello_request_it_cannot_read(capsys: pytest.CaptureFixture[str]) -> None:
    """A peer's HelloRequest with a header line without a colon once killed
    `tofu serve`; now the engine closes that channel and serving goes on."""
    with serve("tcp://127.0.0.1:0") as (proc, _lines, urls):
        port = int(urls[0].rsplit(":", 1)[1])
        bad_headers = b"~connect_to:tcp|127.0.0.1|1\r\nno colon here\r\n"
        frame = tofu.generated.codec.pack_header(1, int(tofu.OpCode.HelloRequest), 0, 1, len(bad_headers), 0)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as peer:
            peer.sendall(frame + bad_headers)
            peer.settimeout(TIMEOUT)
            try:
                assert peer.recv(1024) == b""  # closed by the engine, nothing sent
            except ConnectionResetError:
                pass
        code, out, err = run_cli(capsys, "ping", urls[0], "-n", "3")
        assert code == 0, err
        assert "3 replies to 3 requests" in out
        assert proc.poll() is None
        err = stop(proc)
        assert proc.returncode == 0, err
        assert "Traceback" not in err


def test_serve_on_a_taken_port_fails_with_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "tofu", "serve", f"tcp://127.0.0.1:{port}"],
            check=False,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "tofu serve: cannot listen on", f"127.0.0.1:{port}", "listen_failed")


# ---------------------------------------------------------------- decode


FRAME_HEADER = re.compile(r"^frame (\d+) at offset (\d+) \((\d+) bytes\)$", re.MULTILINE)


def frames_of(out: str) -> list[tuple[int, int, int]]:
    return [tuple(int(g) for g in m.groups()) for m in FRAME_HEADER.finditer(out)]  # type: ignore[misc]


def test_decode_golden_client_stream(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "decode", str(C2S))
    assert code == 0, err
    assert frames_of(out) == [(1, 0, 49), (2, 49, 25), (3, 74, 30), (4, 104, 35), (5, 139, 16)]
    ops = re.findall(r"op_code (\w+) \((\d+)\)", out)
    assert ops == [("HelloRequest", "3"), ("Request", "0"), ("Request", "0"), ("Request", "0"), ("ByeRequest", "5")]
    assert re.findall(r"message_id\s+(\d+)", out) == ["1", "101", "102", "103", "2"]
    assert "~connect_to: tcp|127.0.0.1|47413" in out
    assert [f"x-seq: {n}" in out for n in (1, 2, 3)] == [True] * 3
    assert re.findall(r"status\s+(\d+ \w+)", out) == ["0 success"] * 5
    assert "channel_number  20189" in out
    assert "body            5 bytes:" in out and "body            10 bytes:" in out
    assert out.rstrip().endswith("5 frame(s), 155 byte(s)")


def test_decode_golden_server_stream_as_hex_on_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = S2C.read_bytes()
    hex_text = "# the server's side\n" + "\n".join(data[i : i + 16].hex(" ") for i in range(0, len(data), 16))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(hex_text.encode())))
    code, out, err = run_cli(capsys, "decode", "--hex", "-")
    assert code == 0, err
    ops = re.findall(r"op_code (\w+) ", out)
    assert ops == ["HelloResponse", "Response", "Response", "Response", "ByeResponse"]
    assert re.findall(r"message_id\s+(\d+)", out) == ["1", "101", "102", "103", "2"]
    # binary input decodes the same
    code, out_bin, _ = run_cli(capsys, "decode", str(S2C))
    assert code == 0 and out_bin == out


def test_decode_invalid_op_code_names_the_offset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = bytearray(C2S.read_bytes())
    data[49 + 2] = 0x0C  # the second frame's proto byte: op code 12
    f = tmp_path / "bad.bin"
    f.write_bytes(data)
    code, out, err = run_cli(capsys, "decode", str(f))
    assert code == 1
    assert frames_of(out) == [(1, 0, 49)]  # the frame before the damage is still shown
    assert_one_line_error(err, "frame 2 at offset 49", "invalid op code 12")


@pytest.mark.parametrize(
    ("cut", "fragments"),
    [
        (60, ["frame 2 at offset 49", "truncated binary header (11 of 16 bytes)"]),
        (100, ["frame 3 at offset 74", "truncated frame", "9 bytes of text headers and 5 of body", "26 bytes left"]),
    ],
)
def test_decode_truncated_stream(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cut: int, fragments: list[str]
) -> None:
    f = tmp_path / "cut.bin"
    f.write_bytes(C2S.read_bytes()[:cut])
    code, out, err = run_cli(capsys, "decode", str(f))
    assert code == 1
    assert len(frames_of(out)) == int(fragments[0].split()[1]) - 1
    assert_one_line_error(err, *fragments)


def test_decode_malformed_text_headers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tofu.encode(tofu.Message())[:12] + (7).to_bytes(2, "big") + (0).to_bytes(2, "big") + b"nocolon"
    f = tmp_path / "headers.bin"
    f.write_bytes(bad + C2S.read_bytes())
    code, out, _ = run_cli(capsys, "decode", str(f))
    assert code == 1
    assert "MALFORMED" in out and "no colon" in out
    assert len(frames_of(out)) == 6  # the stream itself is intact: decoding goes on
    assert "1 with malformed text headers" in out


@pytest.mark.parametrize(
    ("argv", "stdin", "fragments"),
    [
        (["decode", "/nonexistent/x.bin"], None, ["/nonexistent/x.bin: no such file"]),
        (["decode", "--hex", "-"], "00 11 zz", ["<stdin>: line 1: 'z' is not a hex digit"]),
        (["decode", "--hex", "-"], "001", ["odd number of hex digits"]),
    ],
)
def test_decode_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    stdin: str | None,
    fragments: list[str],
) -> None:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    code, _, err = run_cli(capsys, *argv)
    assert code == 1
    assert_one_line_error(err, "tofu decode:", *fragments)


@pytest.mark.parametrize("columns", [20, 30, 60, 80, 200])
def test_decode_progress_bar_when_forced(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))  # the terminal's width, as rich reads it
    code, out, err = run_cli(capsys, "decode", str(C2S), "--progress")
    assert code == 0
    assert "5 frame(s)" in out
    # rich drew the bar on stderr: the count and the time whole, whatever the width
    drawn = [strip_ansi(part) for part in re.split(r"[\r\n]", err) if "155" in part]
    assert drawn and "155/155" in drawn[-1] and "0:00:0" in drawn[-1]
    assert all(len(line) <= columns for line in drawn)


# ---------------------------------------------------------------- demo


def demo_lines(out: str, src: str, dst: str) -> list[str]:
    return [line for line in out.splitlines() if re.search(rf"\b{src} -> {dst}\b", line)]


def test_demo_plays_the_print_server_conversation(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "demo")
    assert code == 0, err
    assert re.search(r"spool listening on tcp://127\.0\.0\.1:\d+", out)

    to_spool = demo_lines(out, "rip", "spool")
    assert "HelloRequest" in to_spool[0] and "PDL:PS" in to_spool[0] and "~connect_to:tcp|127.0.0.1|" in to_spool[0]
    progress = [re.search(r"Progress:\[(\d+):(\d+)\]", x).groups() for x in to_spool if " Signal " in x]  # type: ignore[union-attr]
    assert progress == [("1", "3"), ("4", "6"), ("7", "9"), ("10", "12")]
    assert "ByeRequest" in to_spool[-1] and "Progress:[1:12]" in to_spool[-1] and "JobStatus:completed" in to_spool[-1]

    to_rip = demo_lines(out, "spool", "rip")
    requests = [x for x in to_rip if " Request " in x]
    assert "JobTicket:PPD" in requests[0]
    assert all("PDL:PS" in x for x in requests[1:]) and len(requests) == 5
    assert all(" more " in x for x in requests[:-1]) and " more " not in requests[-1]
    assert all(" 1001 " in x for x in requests)  # every frame carries the job id
    assert "ByeResponse" in to_rip[-1]
    assert not any("HelloResponse" in x for x in to_rip)  # "Do I need to send you a HelloResponse? No"

    assert len(demo_lines(out, "tofu", "rip")) == len(demo_lines(out, "tofu", "spool")) == 1  # channel_closed
    assert "channel_closed" in demo_lines(out, "tofu", "rip")[0]
    assert re.search(r"1001 .* completed \[1:12\]", out)  # the summary table


def test_demo_pdf_jobs_over_uds(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "demo", "--pdl", "PDF", "--jobs", "2", "--pages", "4", "--uds")
    assert code == 0, err
    assert re.search(r"spool listening on uds:///\S+", out)
    hellos = [x for x in demo_lines(out, "rip", "spool") if "HelloRequest" in x]
    assert len(hellos) == 2 and all("PDL:PDF" in x and "~connect_to:uds|" in x for x in hellos)
    tickets = [x for x in demo_lines(out, "spool", "rip") if "JobTicket:JDF" in x]
    assert sorted(re.search(r" (100[12]) ", x).group(1) for x in tickets) == ["1001", "1002"]  # type: ignore[union-attr]
    byes = [x for x in demo_lines(out, "rip", "spool") if "ByeRequest" in x]
    assert len(byes) == 2 and all("Progress:[1:4]" in x for x in byes)


# ---------------------------------------------------------------- the bench hook


def _fake_bench(**attrs: object) -> types.ModuleType:
    module = types.ModuleType("tofu.bench")
    module.__spec__ = importlib.machinery.ModuleSpec("tofu.bench", None)
    module.__doc__ = "Fake benchmarks."
    for name, value in attrs.items():
        setattr(module, name, value)
    return module


def test_bench_subcommand_calls_the_hook(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def add_arguments(parser: object) -> None:
        parser.add_argument("--quick", action="store_true")  # type: ignore[attr-defined]

    def run(args: object) -> int:
        calls.append(args)
        return 7

    monkeypatch.setitem(sys.modules, "tofu.bench", _fake_bench(add_arguments=add_arguments, run=run))
    code, _, _ = run_cli(capsys, "bench", "--quick")
    assert code == 7
    assert len(calls) == 1 and calls[0].quick is True  # type: ignore[attr-defined]
    code, out, _ = run_cli(capsys, "bench", "--help")
    assert code == 0 and "Fake benchmarks." in out


@pytest.mark.parametrize("module", [None, _fake_bench(add_arguments=lambda p: None)])
def test_no_bench_subcommand_without_the_hook(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, module: object
) -> None:
    monkeypatch.setitem(sys.modules, "tofu.bench", module)  # None: not importable; else: no run()
    code, _, err = run_cli(capsys, "bench")
    assert code == 2
    assert_one_line_error(err, "invalid choice: 'bench'")


# ---------------------------------------------------------------- -v, --grace 0, what serve prints and survives


def raw_frame(op: int, mid: int, text_headers: bytes, body: bytes = b"", channel: int = 0) -> bytes:
    """A frame built by hand, so that it can hold what the API would refuse."""
    return struct.pack(">HBBQHH", channel, op, 0, mid, len(text_headers), len(body)) + text_headers + body


def read_until_eof(sock: socket.socket) -> bytes:
    sock.settimeout(TIMEOUT)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_verbose_logs_the_engine_activity(capsys: pytest.CaptureFixture[str]) -> None:
    with serve("tcp://127.0.0.1:0", verbose=True) as (proc, lines, urls):
        code, _, err = run_cli(capsys, "ping", urls[0], "-n", "1")
        assert code == 0, err
        number = lines.expect("channel ").split(":")[0].split()[1]
        lines.expect(f"channel {number}: closed")
        err = stop(proc)
    assert proc.returncode == 0, err
    # One -v is enough to see channels come and go (-vv adds the debug detail).
    assert re.search(r"channel \d+ listening on tcp\|127\.0\.0\.1\|\d+", err), err
    assert f"channel {number} accepted" in err, err
    assert f"channel {number} closed" in err, err


def test_serve_grace_zero_stops_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    # A client that never answers the server's ByeRequest.
    with serve("tcp://127.0.0.1:0", grace="0") as (proc, lines, urls), tofu.Reactor() as rtr:
        group = rtr.ampe().create()
        group.post(parse_url(urls[0], server=False).format(tofu.Message()))
        hello = group.wait_receive(TIMEOUT)
        assert hello is not None and hello.bhdr.proto.op_code == tofu.OpCode.HelloResponse
        lines.expect("channel ")
        err = stop(proc)
        assert proc.returncode == 0, err
        assert lines.expect("stopping: ") == "stopping: saying bye to 1 client(s), waiting up to 0 s"
        lines.expect("grace period over: closing 1 channel(s)")
        lines.expect("stopped")
    code, _, err = run_cli(capsys, "serve", "tcp://127.0.0.1:0", "--grace", "-1")
    assert code == 2
    assert_one_line_error(err, "-1 is not zero or a positive number of seconds")


def test_serve_never_prints_a_peer_s_control_characters() -> None:
    hostile = b"tcp|\x1b[2J\x1b]0;owned\x07\x08|1"  # (a CR or NUL would make the engine refuse the header)
    with serve("tcp://127.0.0.1:0") as (proc, lines, urls):
        port = int(urls[0].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as peer:
            peer.sendall(raw_frame(int(tofu.OpCode.HelloRequest), 1, b"~connect_to:" + hostile + b"\r\n"))
            line = lines.expect("channel ")
            assert line.endswith(r": connected (tcp|\x1b[2J\x1b]0;owned\x07\x08|1)"), line
            assert not any(ch in line for ch in "\x1b\x07\x08")
            reply = peer.recv(16)  # and it was still accepted
            assert reply[2] & 0x0F == int(tofu.OpCode.HelloResponse)
        assert stop(proc) == "" and proc.returncode == 0


def test_serve_survives_a_malformed_hello_request(capsys: pytest.CaptureFixture[str]) -> None:
    with serve("tcp://127.0.0.1:0") as (proc, lines, urls):
        port = int(urls[0].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as bad:
            bad.sendall(raw_frame(int(tofu.OpCode.HelloRequest), 1, b"no colon here\r\n"))
            read_until_eof(bad)  # that one channel is closed
        # The engine closed that channel before serve heard of it; everybody else is still served.
        code, out, err = run_cli(capsys, "ping", urls[0], "-n", "3")
        assert code == 0, err
        assert "3 replies to 3 requests, 0 with a different body" in out
        line = lines.expect("channel ")  # the first channel serve saw is the ping's
        assert line.endswith(f": connected (tcp|127.0.0.1|{port})"), line
        err = stop(proc)
        assert proc.returncode == 0, err
        lines.expect("stopped")


# ---------------------------------------------------------------- ping and Ctrl-C


def test_ping_ctrl_c_prints_the_statistics_so_far() -> None:
    """A server that answers the first request only: ping waits for the second
    one's reply when SIGINT comes, and reports like ping(8)."""
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        group = ampe.create()
        group.post(tofu.TCPServerAddress("127.0.0.1", 0).format(tofu.Message()))
        welcome = group.wait_receive(TIMEOUT)
        assert welcome is not None and welcome.bhdr.status == 0
        port = welcome.thdrs.get(tofu.LISTEN_ON_HEADER).rsplit("|", 1)[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tofu", "ping", f"tcp://127.0.0.1:{port}", "-n", "1000", "--timeout", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            requests = 0
            while requests < 2:
                msg = group.wait_receive(TIMEOUT)
                assert msg is not None, "ping sent nothing"
                op = msg.bhdr.proto.op_code
                if msg.is_from_engine():
                    continue
                if op == tofu.OpCode.HelloRequest:
                    msg.bhdr.proto.op_code = tofu.OpCode.HelloResponse
                    group.post(msg)
                elif op == tofu.OpCode.Request:
                    requests += 1
                    if requests == 1:
                        msg.bhdr.proto.op_code = tofu.OpCode.Response
                        group.post(msg)
            proc.send_signal(signal.SIGINT)  # the second request is unanswered: ping is waiting
            while True:  # it still says bye
                msg = group.wait_receive(TIMEOUT)
                assert msg is not None, "no ByeRequest after SIGINT"
                if msg.bhdr.proto.op_code == tofu.OpCode.ByeRequest and not msg.is_from_engine():
                    msg.bhdr.proto.op_code = tofu.OpCode.ByeResponse
                    group.post(msg)
                    break
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)
    assert proc.returncode == 0, err
    assert err == ""
    assert "interrupted after 2 requests" in out
    assert "1 reply to 2 requests, 0 with a different body" in out
    lo, median, p99, hi = (float(x) for x in PING_STATS.search(out).groups())  # type: ignore[union-attr]
    assert 0 < lo == median == p99 == hi


# ---------------------------------------------------------------- demo order


def test_demo_transcript_reads_in_causal_order(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "demo", "--pages", "6", "--pages-per-chunk", "2", "--jobs", "2")
    assert code == 0, err
    lines = out.splitlines()
    for job in (1001, 1002):
        done = next(i for i, line in enumerate(lines) if f"R: job {job} done" in line)
        progress = [i for i, line in enumerate(lines) if re.search(rf"rip -> spool\s+Signal\s+\d+\s+{job}\s", line)]
        assert len(progress) == 3 and max(progress) < done, lines
        assert re.search(rf"rip -> spool\s+ByeRequest\s+\d+\s+{job}\s", lines[done + 1]), lines[done + 1]


# ---------------------------------------------------------------- decode: pcap and pcapng captures


def _tcp(sport: int, dport: int, seq: int, payload: bytes, syn: bool = False) -> bytes:
    flags = 0x02 if syn else 0x18  # SYN, or PSH|ACK
    return struct.pack(">HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload


def _ipv4(src: str, dst: str, tcp: bytes) -> bytes:
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )
    return header + tcp


def _ipv6(src: str, dst: str, tcp: bytes) -> bytes:
    v6 = socket.AF_INET6
    return (
        struct.pack(">IHBB16s16s", 6 << 28, len(tcp), 6, 64, socket.inet_pton(v6, src), socket.inet_pton(v6, dst)) + tcp
    )


def _ethernet(ip: bytes) -> bytes:
    return (
        b"\x00\x00\x00\x00\x00\x01"
        + b"\x00\x00\x00\x00\x00\x02"
        + (b"\x08\x00" if ip[0] >> 4 == 4 else b"\x86\xdd")
        + ip
    )


def _pcap(linktype: int, frames: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for n, frame in enumerate(frames):
        out += struct.pack("<IIII", 1_700_000_000, n, len(frame), len(frame)) + frame
    return out


def _pcapng(linktype: int, frames: list[bytes], bo: str = ">") -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        return struct.pack(bo + "II", btype, len(body) + 12) + body + struct.pack(bo + "I", len(body) + 12)

    out = block(0x0A0D0D0A, struct.pack(bo + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack(bo + "HHI", linktype, 0, 65535))
    for n, frame in enumerate(frames):
        out += block(6, struct.pack(bo + "IIIII", 0, 0, n, len(frame), len(frame)) + frame)
    return out


CLIENT, SERVER = ("127.0.0.1", 40001), ("127.0.0.1", 7099)


def _golden_session(
    ip: Callable[[str, str, bytes], bytes], client: tuple[str, int], server: tuple[str, int]
) -> list[bytes]:
    """The Zig golden session as IP packets: each direction cut into segments,
    one out of order, one sent twice, one overlapping two others; sequence
    numbers that wrap around 2**32."""
    c2s, s2c = C2S.read_bytes(), S2C.read_bytes()
    c_isn, s_isn = 0xFFFFFFF0, 1000

    def seg(src: tuple[str, int], dst: tuple[str, int], isn: int, data: bytes, a: int, b: int) -> bytes:
        return ip(src[0], dst[0], _tcp(src[1], dst[1], (isn + 1 + a) & 0xFFFFFFFF, data[a:b]))

    def c(a: int, b: int) -> bytes:
        return seg(client, server, c_isn, c2s, a, b)

    def s(a: int, b: int) -> bytes:
        return seg(server, client, s_isn, s2c, a, b)

    return [
        ip(client[0], server[0], _tcp(client[1], server[1], c_isn, b"", syn=True)),
        ip(server[0], client[0], _tcp(server[1], client[1], s_isn, b"", syn=True)),
        c(0, 20),
        c(49, 100),  # out of order: before 20..49
        c(20, 49),
        c(20, 49),  # retransmitted
        s(0, 30),
        c(40, 60),  # overlaps what is already there
        s(30, 155),
        c(100, 155),
    ]


def _stream_section(out: str, label: str) -> list[str]:
    """The frame lines of one direction, without the direction label."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("stream ") and line.endswith("segments"))
    lines = lines[start:]
    body = [line.replace(f", {label}", "") for line in lines if not line.startswith("stream ")]
    return body


def _raw_decode(capsys: pytest.CaptureFixture[str], path: Path) -> list[str]:
    code, out, _ = run_cli(capsys, "decode", str(path))
    assert code == 0
    return out.splitlines()[:-1]  # without the summary


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("pcap", lambda: _pcap(1, [_ethernet(p) for p in _golden_session(_ipv4, CLIENT, SERVER)])),
        ("pcapng", lambda: _pcapng(101, _golden_session(_ipv4, CLIENT, SERVER))),  # raw IP, big-endian
        (
            "pcapng",
            lambda: _pcapng(1, [_ethernet(p) for p in _golden_session(_ipv6, ("::1", 40001), ("::1", 7099))], "<"),
        ),
    ],
)
def test_decode_reassembles_each_direction_of_a_capture(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str, make: Callable[[], bytes]
) -> None:
    f = tmp_path / f"session.{kind}"
    f.write_bytes(make())
    code, out, err = run_cli(capsys, "decode", str(f))
    assert code == 0, err
    v6 = "[::1]" in out
    client = "[::1]:40001" if v6 else "127.0.0.1:40001"
    server = "[::1]:7099" if v6 else "127.0.0.1:7099"
    c2s, s2c = f"{client} -> {server}", f"{server} -> {client}"
    assert out.startswith(f"{f}: {kind} capture, 10 packets, 2 TCP direction(s) with data")
    assert f"stream 1: {c2s}: 155 bytes in 6 segments" in out
    assert f"stream 2: {s2c}: 155 bytes in 2 segments" in out
    assert f"stream 1: {c2s}: 5 frame(s), 155 byte(s)" in out
    assert f"stream 2: {s2c}: 5 frame(s), 155 byte(s)" in out
    assert "invalid op code" not in out + err
    # Each direction decodes exactly as the raw stream it carried, every frame labelled.
    first, second = out.split(f"\nstream 2: {s2c}: 155 bytes")
    assert f"frame 1 at offset 0 (49 bytes), {c2s}" in first
    assert _stream_section(first, c2s) == _raw_decode(capsys, C2S)
    assert _stream_section("stream 2: x: 155 bytes in 2 segments" + second, s2c) == _raw_decode(capsys, S2C)


def test_decode_capture_with_a_missing_segment(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    packets = _golden_session(_ipv4, CLIENT, SERVER)
    del packets[4:6]  # bytes 20..49 of the client's direction were never captured
    f = tmp_path / "holes.pcap"
    f.write_bytes(_pcap(101, packets))
    code, out, _ = run_cli(capsys, "decode", str(f))
    assert code == 1
    assert "127.0.0.1:40001 -> 127.0.0.1:7099: the capture misses bytes at offset 20: decoded up to there" in out
    assert "127.0.0.1:7099 -> 127.0.0.1:40001: 5 frame(s), 155 byte(s)" in out  # the other direction is whole


def test_decode_damaged_capture_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "cut.pcap"
    f.write_bytes(_pcap(1, [_ethernet(p) for p in _golden_session(_ipv4, CLIENT, SERVER)])[:-10])
    code, _, err = run_cli(capsys, "decode", str(f))
    assert code == 1
    assert_one_line_error(err, "cut.pcap: pcap: the packet at offset", "is cut short")


# ---------------------------------------------------------------- examples/echo_server.py


def test_echo_server_example_says_what_it_prints() -> None:
    script = Path(__file__).resolve().parents[1] / "examples" / "echo_server.py"
    shown = subprocess.run(
        [sys.executable, str(script), "--help"], check=False, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert shown.returncode == 0, shown.stderr
    described = " ".join(shown.stdout.split())
    # the whole description, not its first line cut mid-sentence
    assert "answers every Request with a Response carrying the same headers and body, and accepts" in described
    assert "by default it waits for its clients as long as it takes; Ctrl-C stops it" in described
    for promise in ("`listening on ADDRESS`", "`channel N connected`", "`channel N closed`", "`echo server done: N"):
        assert promise in described
    assert "stop after this long with no client (default: wait)" in described

    ran = subprocess.run(
        [sys.executable, str(script), "--idle", "0.1"], check=False, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    address = re.fullmatch(r"listening on (tcp\|127\.0\.0\.1\|(\d+))", lines[0])
    assert address is not None and address.group(2) != "0", lines  # port 0: the engine's real port
    assert lines[1] == f"connect a client with: python examples/echo_client.py '{address.group(1)}'"
    assert lines[2:] == ["nobody connected for 0.1 s: stopping", "echo server done: 0 request(s) answered"]
