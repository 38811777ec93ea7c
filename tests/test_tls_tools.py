"""The tools over TLS: `tofu serve` / `tofu ping` with certificates, mutual
TLS, plaintext and TLS peers that do not match, and `tofu conform tls://`.

`tofu serve` runs as a real subprocess (trustme certificates in tmp files);
ping and conform run in-process through their `main`, each with its own
engine or raw sockets, over real loopback sockets.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import tofu
from output_lines import Lines
from rich.console import Console
from tls_support import Pems
from tofu.addresses import parse_url
from tofu.cli import format_url, main
from tofu.conform import Level, Outcome, catalogue, parse_target, run_cases, select
from tofu.conform import main as conform_main
from tofu.conform.probe import TLSOptions

TIMEOUT = 15.0  # bounds a failure; the steps take far less


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> Pems:
    return Pems(tmp_path_factory.mktemp("pems"))


@contextmanager
def serve(*argv: str) -> Iterator[tuple[subprocess.Popen[str], Lines, str]]:
    """`tofu serve ARGV` as a subprocess; yields it, its output, and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tofu", "serve", *argv, "--grace", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = Lines(proc.stdout)  # type: ignore[arg-type]
        url = lines.expect("listening on ").removeprefix("listening on ")
        yield proc, lines, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(TIMEOUT)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def ping(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["ping", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def stopped_cleanly(proc: subprocess.Popen[str], lines: Lines) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(TIMEOUT) == 0
    lines.expect("stopped")


# ---------------------------------------------------------------- addresses and usage


@pytest.mark.parametrize(
    ("address", "url"),
    [
        (tofu.TLSClientAddress("127.0.0.1", 7099), "tls://127.0.0.1:7099"),
        (tofu.TLSServerAddress("::1", 0), "tls://[::1]:0"),
        (tofu.TCPClientAddress("localhost", 1), "tcp://localhost:1"),
    ],
)
def test_format_url_keeps_tls(address: tofu.Address, url: str) -> None:
    assert format_url(address) == url
    assert parse_url(url, isinstance(address, tofu.TCPServerAddress)) == address


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["serve", "tls://127.0.0.1:0"], ["tofu serve: error:", "a tls:// address needs --cert FILE"]),
        (["serve", "tcp://127.0.0.1:0", "--cert", "c.pem"], ["--cert needs a tls://HOST:PORT address"]),
        (["serve", "tcp://127.0.0.1:0", "--key", "k", "--ca", "c"], ["--key, --ca need a tls://HOST:PORT address"]),
        (["ping", "tcp://127.0.0.1:1", "--ca", "ca.pem"], ["tofu ping: error:", "--ca needs a tls://"]),
        (["ping", "tcp://127.0.0.1:1", "--server-name", "x"], ["--server-name needs a tls://"]),
        (["ping", "tls://127.0.0.1:1", "--key", "k.pem"], ["--key needs --cert"]),
        (["ping", "tls://127.0.0.1:1", "--server-name", "a:b"], ["bad TLS server name"]),
    ],
)
def test_tls_flags_that_do_not_fit_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragments: list[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    one_line(err, *fragments)


def test_unreadable_certificate_files_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pems: Pems
) -> None:
    missing = str(tmp_path / "missing.pem")
    assert main(["serve", "tls://127.0.0.1:0", "--cert", missing]) == 1
    one_line(capsys.readouterr().err, "tofu serve: cannot load the TLS certificate", "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    code, _, err = ping(capsys, "tls://127.0.0.1:1", "--ca", str(garbage))
    assert code == 1
    one_line(err, "tofu ping: cannot load the TLS files", "garbage.pem")


# ---------------------------------------------------------------- serve + ping


def test_serve_tls_and_ping_tls(capsys: pytest.CaptureFixture[str], pems: Pems) -> None:
    with serve("tls://127.0.0.1:0", "--cert", pems.server) as (proc, lines, url):
        port = int(url.rsplit(":", 1)[1])
        assert url == f"tls://127.0.0.1:{port}" and port != 0
        code, out, err = ping(capsys, url, "--ca", pems.ca_pem, "-n", "20", "--size", "3000")
        assert code == 0, err
        assert f"PING {url}: 20 requests of 3000 bytes" in out
        assert "20 replies to 20 requests, 0 with a different body" in out
        # A client without a certificate: serve names none.
        assert lines.expect("channel ").endswith(f": connected (tls|127.0.0.1|{port})")
        # --server-name: dial 127.0.0.1, verify the certificate's DNS name.
        code, out, err = ping(capsys, url, "--ca", pems.ca_pem, "--server-name", "localhost", "-n", "2")
        assert code == 0, err
        code, _, err = ping(capsys, url, "--ca", pems.ca_pem, "--server-name", "other.example", "-n", "2")
        assert code == 1
        one_line(err, f"cannot connect to {url}", "Hostname mismatch", "other.example")
        stopped_cleanly(proc, lines)


def test_mutual_tls_refuses_a_client_without_a_certificate(capsys: pytest.CaptureFixture[str], pems: Pems) -> None:
    with serve("tls://127.0.0.1:0", "--cert", pems.server, "--ca", pems.ca_pem) as (proc, lines, url):
        code, out, err = ping(capsys, url, "--ca", pems.ca_pem, "-n", "3", "--timeout", "5")
        assert code == 1
        one_line(err, f"tofu ping: cannot connect to {url}", "connect_failed", "certificate required")
        dropped = lines.expect("warning: ")  # the engine dropped it unseen: serve says so
        assert "dropped an incoming connection: TLS handshake failed" in dropped and "certificate" in dropped
        # ... and still serves a client with one, whose subject it names.
        code, out, err = ping(capsys, url, "--ca", pems.ca_pem, "--cert", pems.client, "-n", "3")
        assert code == 0, err
        assert "3 replies to 3 requests" in out
        line = lines.expect("channel ")
        assert re.search(r": connected \(tls\|127\.0\.0\.1\|\d+\), peer certificate .*CN=client$", line), line
        stopped_cleanly(proc, lines)


def test_serve_escapes_control_characters_in_a_peer_s_subject(capsys: pytest.CaptureFixture[str], pems: Pems) -> None:
    cert = pems.ca.issue_cert("hostile.example", common_name="x\x1b]0;owned\x07y")
    hostile = str(pems.dir / "hostile.pem")
    cert.private_key_and_cert_chain_pem.write_to_path(hostile)
    with serve("tls://127.0.0.1:0", "--cert", pems.server, "--ca", pems.ca_pem) as (proc, lines, url):
        code, _, err = ping(capsys, url, "--ca", pems.ca_pem, "--cert", hostile, "-n", "1")
        assert code == 0, err
        line = lines.expect("channel ")
        assert line.endswith(r"CN=x\x1b]0;owned\x07y"), line
        assert not any(ch in line for ch in "\x1b\x07")
        stopped_cleanly(proc, lines)


def test_plaintext_ping_against_tls_serve_fails_cleanly(capsys: pytest.CaptureFixture[str], pems: Pems) -> None:
    with serve("tls://127.0.0.1:0", "--cert", pems.server) as (proc, lines, url):
        plain = url.replace("tls://", "tcp://")
        code, out, err = ping(capsys, plain, "-n", "2", "--timeout", "3")
        assert code == 1
        assert out == ""
        one_line(
            err,
            f"tofu ping: {plain} closed the connection without a HelloResponse (peer_disconnected): "
            "the peer closed the connection before answering the HelloRequest",
        )
        assert "dropped an incoming connection: TLS handshake failed" in lines.expect("warning: ")
        code, out, err = ping(capsys, url, "--ca", pems.ca_pem, "-n", "2")  # still serving
        assert code == 0, err
        stopped_cleanly(proc, lines)


def test_tls_ping_against_plaintext_serve_fails_cleanly(capsys: pytest.CaptureFixture[str], pems: Pems) -> None:
    with serve("tcp://127.0.0.1:0") as (proc, lines, url):
        secure = url.replace("tcp://", "tls://")
        code, out, err = ping(capsys, secure, "--ca", pems.ca_pem, "-n", "2", "--timeout", "3")
        assert code == 1
        assert out == ""
        one_line(err, f"tofu ping: cannot connect to {secure}", "connect_failed", "TLS handshake failed")
        code, out, err = ping(capsys, url, "-n", "2")  # still serving
        assert code == 0, err
        stopped_cleanly(proc, lines)


def test_a_silent_tls_peer_fails_the_ping_within_its_timeout(capsys: pytest.CaptureFixture[str], pems: Pems) -> None:
    """A listener that accepts and says nothing: the TLS handshake never ends;
    ping's --timeout (not the engine's 10 s default) bounds the wait."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        code, _, err = ping(capsys, f"tls://127.0.0.1:{port}", "--ca", pems.ca_pem, "--timeout", "0.5")
    assert code == 1
    one_line(err, "cannot connect to", "connect_failed")


# ---------------------------------------------------------------- conform over TLS


def test_conform_tls_passes_every_must_and_should_case(pems: Pems) -> None:
    with serve("tls://127.0.0.1:0", "--cert", pems.server) as (_, _, url):
        target = parse_target(url, TLSOptions(ca=pems.ca_pem))
        assert target.scheme == "tls" and target.connect_to == f"tls|127.0.0.1|{url.rsplit(':', 1)[1]}"
        results = run_cases(catalogue(), target, TIMEOUT, 0.3)
        assert len(results) == len(catalogue())
        assert {r.case.id: r.detail for r in results if r.outcome is Outcome.failed} == {}
        assert {r.outcome for r in results if r.case.level is Level.info} == {Outcome.info}


def test_conform_tls_with_a_client_certificate(pems: Pems, capsys: pytest.CaptureFixture[str]) -> None:
    with serve("tls://127.0.0.1:0", "--cert", pems.server, "--ca", pems.ca_pem) as (_, _, url):
        console = Console(record=True, width=200, force_terminal=False)
        argv = [url, "--ca", pems.ca_pem, "--cert", pems.client, "--cases", "1.*,2.1,4.1", "--quiet"]
        assert conform_main(argv, console=console) == 0
        wanted = len([c for c in select(catalogue(), ["1.*,2.1,4.1"]) if c.level is Level.must])
        assert f"must: {wanted}/{wanted} passed" in console.export_text()
        # Without one the server refuses every connection: one line, exit 1.
        assert conform_main([url, "--ca", pems.ca_pem, "--cases", "2.1", "--quiet"], console=console) == 1
        err = capsys.readouterr().err
        assert f"tofu conform: {url}:" in err and "certificate" in err


def test_conform_tls_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert conform_main(["tls://127.0.0.1:1", "--key", "k.pem"]) == 2
    assert "--key needs --cert" in capsys.readouterr().err
    assert conform_main(["tls://127.0.0.1:1", "--ca", str(tmp_path / "none.pem")]) == 2
    assert "cannot load the TLS files" in capsys.readouterr().err
    assert conform_main(["tcp://127.0.0.1:1", "--ca", "ca.pem"]) == 2
    assert "need a tls:// target" in capsys.readouterr().err


def test_serve_tls_with_workers_passes_the_certificate_to_every_worker(
    capsys: pytest.CaptureFixture[str], pems: Pems
) -> None:
    """`--workers N` starts N processes: each must get the TLS files, or the
    connections the kernel hands to the others would fail."""
    with serve("tls://127.0.0.1:0", "--cert", pems.server, "--workers", "2") as (_, _lines, url):
        url = url.split(" ", 1)[0]  # "tls://127.0.0.1:PORT (2 workers)"
        for _ in range(8):  # the kernel spreads connections over both workers
            code, out, err = ping(capsys, url, "--ca", pems.ca_pem, "-n", "2")
            assert code == 0, err
            assert "2 replies to 2 requests" in out
