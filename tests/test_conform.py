"""`tofu conform`, the conformance suite: it passes against `tofu serve`
(TCP and UDS; TLS in test_tls_tools.py) and against a small correct
raw-socket echo server that follows the state machine, and each deliberately
broken server FAILS exactly the cases its fault touches, so no case can pass
vacuously."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tofu
from rich.console import Console
from tofu import FrameDecoder, OpCode
from tofu.conform import Level, Outcome, Result, catalogue, main, parse_target, run_cases, select
from tofu.conform.catalogue import GROUPS
from tofu.conform.refusals import COVERED, refused_cells, title
from tofu.conform.report import catalogue_markdown, to_html
from tofu.conform.runner import Transcript
from tofu.generated.codec import pack_header, pack_proto, unpack_header
from tofu.generated.machine import (
    ACCEPTED_STATE,
    ACCEPTOR_AWAITING_HELLO,
    ACCEPTOR_OPEN,
    RECEIVE,
    SEND,
    STATE_NAME,
    STATE_ROLE,
    STATE_TERMINAL,
    ChannelRole,
    why,
)

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0  # only bounds a failure
IDLE = 0.3


# ================================================================ tofu serve


@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, str]]:
    """`tofu serve` on TCP and UDS, as a subprocess: {"tcp": url, "uds": url}."""
    path = tofu.temp_uds_path()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tofu", "serve", "tcp://127.0.0.1:0", f"uds://{path}", "--grace", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    urls: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        while len(urls) < 2:
            line = proc.stdout.readline()
            assert line, "tofu serve ended before listening"
            if m := re.match(r"listening on ((tcp|uds)://\S+)", line):
                urls[m.group(2)] = m.group(1)
        # drain its output so it never blocks on a full pipe
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield urls
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _failures(results: list[Result]) -> dict[str, str]:
    return {r.case.id: r.detail for r in results if r.outcome is Outcome.failed}


@pytest.mark.parametrize("scheme", ["tcp", "uds"])
def test_tofu_serve_passes_every_must_and_should_case(served: dict[str, str], scheme: str) -> None:
    results = run_cases(catalogue(), parse_target(served[scheme]), TIMEOUT, IDLE)
    assert len(results) == len(catalogue())
    assert _failures(results) == {}
    assert {r.outcome for r in results if r.case.level is Level.info} == {Outcome.info}


def test_main_exit_status_table_json_and_html(served: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    page = tmp_path / "r.html"
    console = Console(record=True, width=200, force_terminal=False)
    args = [served["tcp"], "--cases", "1.*,close", "--json", str(out), "--html", str(page), "--idle", str(IDLE)]
    assert main(args, console=console) == 0
    text = console.export_text()
    assert "1.1" in text and "PASS" in text and "must: 8/8 passed" in text
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["target"] == served["tcp"]
    assert [c["id"] for c in data["cases"]] == [c.id for c in select(catalogue(), ["1.*,close"])]
    assert data["summary"]["must"] == {"pass": 8}
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "every must case passed" in html and 'id="case-4.2"' in html


def test_list_usage_errors_and_unreachable_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(record=True, width=200)
    assert main(["--help"]) == 0
    assert "--cases PATTERN" in capsys.readouterr().out
    assert main(["--list"], console=console) == 0
    listed = console.export_text()
    for case in catalogue():
        assert case.id in listed
    assert main(["tls://127.0.0.1:1", "--key", "k.pem"]) == 2
    assert "--key needs --cert" in capsys.readouterr().err
    assert main(["tcp://127.0.0.1:1", "--ca", "ca.pem"]) == 2
    assert main([]) == 2
    assert main(["--list", "--cases", "9.*"]) == 2
    assert "no case matches" in capsys.readouterr().err
    assert main(["http://x"]) == 2
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    assert main([f"tcp://127.0.0.1:{port}"]) == 1
    assert "cannot connect" in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the backlog), never answers
        assert main([f"tcp://127.0.0.1:{silent.getsockname()[1]}", "--timeout", "0.5"]) == 1
    assert "no answer to a HelloRequest within 0.5 s" in capsys.readouterr().err


def test_python_m_tofu_conform_runs(served: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tofu.conform", served["uds"], "--cases", "2.1", "--quiet"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "must: 1/1 passed" in proc.stdout


def test_the_tofu_command_runs_conform(served: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """`tofu conform` is the same suite as `python -m tofu.conform`, with the same arguments."""
    from tofu.cli import main as tofu_main

    assert tofu_main(["conform", served["tcp"], "--cases", "2.1,4.1", "--quiet"]) == 0
    assert "must: 2/2 passed" in capsys.readouterr().out
    assert tofu_main(["conform", "--list", "--markdown", "--cases", "1.*"]) == 0
    listed = capsys.readouterr().out
    assert "| 1.1 |" in listed and "| 2.1 |" not in listed
    assert tofu_main(["conform", "ftp://nowhere"]) == 2


def refusal_id(state: int, op: int) -> str:
    """The id of the refusals case for `op` received in `state`."""
    group = [name for name, _ in GROUPS].index("refusals") + 1
    return f"{group}.{refused_cells().index((state, op)) + 1}"


def test_catalogue_follows_the_spec() -> None:
    cases = catalogue()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids))
    assert all(c.level is not Level.info or not c.isolation for c in cases)
    assert select(cases, ["framing"]) == [c for c in cases if c.group == "framing"]
    assert [c.id for c in select(cases, ["1.1", "7.*"])] == ["1.1"] + [c.id for c in cases if c.id.startswith("7.")]
    # Nothing the state machine refuses is left to a handwritten case.
    titles = " ".join(c.title for c in cases if c.group != "refusals")
    for word in ("local-only", "invalid op code", "HelloResponse (4)", "ByeResponse (6)", "second HelloRequest"):
        assert word not in titles


def test_the_refusals_are_the_tables_refused_cells() -> None:
    """One case per op code the table refuses in each covered state (the
    acceptor's awaiting_hello and open), in order, titled from the table."""
    assert COVERED == (ACCEPTOR_AWAITING_HELLO, ACCEPTOR_OPEN)
    assert all(STATE_ROLE[state] is ChannelRole.acceptor for state in COVERED)
    cells = [(state, op) for state in COVERED for op in range(16) if RECEIVE[state][op] < 0]
    assert refused_cells() == cells
    # awaiting_hello refuses all but the HelloRequest; open refuses the Hello
    # frames, the ByeResponse, the local commands and the invalid op codes.
    assert [op for state, op in cells if state == ACCEPTOR_AWAITING_HELLO] == [0, 1, 2, *range(4, 16)]
    assert [op for state, op in cells if state == ACCEPTOR_OPEN] == [3, 4, *range(6, 16)]
    group = [c for c in catalogue() if c.group == "refusals"]
    assert len(group) == len(cells) == 27
    assert [c.id for c in group] == [refusal_id(state, op) for state, op in cells]
    for case, (state, op) in zip(group, cells, strict=True):
        assert case.title == title(state, op)
        assert f" in {STATE_NAME[state]}, refused (" in case.title and case.title.endswith(why(False, state, op))
        assert case.level is Level.should and case.isolation
    assert group[0].title.startswith("Request (0) in awaiting_hello, refused (not_allowed): ")
    assert group[-1].title.startswith("op code 15 in open, refused (invalid_op_code): ")


def test_docs_table_is_the_catalogue() -> None:
    doc = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
    start = doc.index("<!-- cases:begin -->\n") + len("<!-- cases:begin -->\n")
    end = doc.index("<!-- cases:end -->")
    assert doc[start:end] == catalogue_markdown(catalogue()), "regenerate it: python -m tofu.conform --list --markdown"


# ================================================================ raw echo servers


@dataclass
class Faults:
    """What a raw test server gets wrong (nothing, by default)."""

    drop_headers: bool = False  # Responses come back without text headers
    reverse_streams: bool = False  # the frames of a `more` stream come back in reverse order
    hello_mid_off: int = 0  # the HelloResponse's message id is off by this much
    channel_zero: bool = False  # replies carry channel number 0
    frame_per_read: bool = False  # treats each recv() as whole frames (breaks on cuts)
    cap_body: int | None = None  # bodies longer than this are cut
    no_bye_response: bool = False  # a ByeRequest just closes the connection
    bye_first: bool = False  # the ByeResponse jumps ahead of Responses read in the same recv()
    stay_open_after_bye: bool = False  # no close after the ByeResponse
    die_on_broken_peer: bool = False  # a reset, or a FIN inside a frame, stops the whole server
    die_on_bad_op: bool = False  # an invalid op code stops the whole server
    answer_everything: bool = False  # echoes bad, local-only and response op codes as they are
    no_states: bool = False  # keeps no state: answers a Request before the HelloRequest, a second HelloRequest...
    keep_origin_and_status: bool = False  # echoes origin and status as received
    stall_on_internal_bits: bool = False  # a frame with bit 6 or 7 set hangs its connection
    ignore_eof: bool = False  # never closes a connection the peer half-closed
    one_at_a_time: bool = False  # serves one connection at a time


Frame = tuple[int, int, int, bytes, bytes]  # proto, status, message id, text headers, body
BAD = (15, 0, 0, b"", b"")  # stands for an invalid op code: the stream cannot go on


class RawEchoServer:
    """A threaded raw-socket echo server with optional faults. Without them it
    follows the generated state machine as the acceptor: what the table
    refuses closes the connection, answering nothing."""

    def __init__(self, faults: Faults, uds: bool = False) -> None:
        self.faults = faults
        if uds:
            self.path = tofu.temp_uds_path()
            self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.lsock.bind(self.path)
            self.url = f"uds://{self.path}"
        else:
            self.lsock = socket.create_server(("127.0.0.1", 0))
            self.url = f"tcp://127.0.0.1:{self.lsock.getsockname()[1]}"
        self.lsock.listen(16)
        self.stopped = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stopped.set()
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        for c in list(self.conns):
            try:
                c.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv()
            except OSError:
                pass
        if threading.current_thread() is not self.thread:
            self.thread.join(TIMEOUT)

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(sock)
            if self.faults.one_at_a_time:
                self._serve(sock)
            else:
                threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _reply(self, frame: Frame, op: int | None = None) -> bytes:
        f = self.faults
        proto, status, mid, th, body = frame
        op_code, origin, more, a, b = proto & 15, proto >> 4 & 1, proto >> 5 & 1, proto >> 6 & 1, proto >> 7 & 1
        new = pack_proto(op if op is not None else op_code, origin if f.keep_origin_and_status else 0, more, a, b)
        if f.drop_headers and op_code == OpCode.Request:
            th = b""
        if f.cap_body is not None:
            body = body[: f.cap_body]
        status = status if f.keep_origin_and_status else 0
        return pack_header(0 if f.channel_zero else 7, new, status, mid, len(th), len(body)) + th + body

    def _batches(self, sock: socket.socket) -> Iterator[list[Frame]]:
        """The frames of each recv(); ends at the peer's EOF or a bad op code."""
        decoder = FrameDecoder()
        while data := sock.recv(1 << 20):
            if self.faults.frame_per_read:
                batch, pos = [], 0
                while len(data) - pos >= 16:
                    _, proto, status, mid, thl, bl = unpack_header(data, pos)
                    th = data[pos + 16 : pos + 16 + thl]
                    batch.append((proto, status, mid, th, data[pos + 16 + thl : pos + 16 + thl + bl]))
                    pos += 16 + thl + bl
                yield batch
                continue
            try:
                msgs = decoder.feed(data)
            except tofu.InvalidOpCode as exc:
                msgs, bad = exc.frames, True  # type: ignore[attr-defined]
            else:
                bad = False
            batch = [
                (m.bhdr.proto.to_byte(), m.bhdr.status, m.bhdr.message_id, bytes(m.thdrs), bytes(m.body)) for m in msgs
            ]
            yield [*batch, BAD] if bad else batch
            if bad:
                return
        if decoder.pending and self.faults.die_on_broken_peer:
            self.close()
        if self.faults.ignore_eof:
            self.stopped.wait()

    def _serve(self, sock: socket.socket) -> None:
        f = self.faults
        held: dict[int, list[bytes]] = {}
        state = [ACCEPTED_STATE]  # the connection's state in the table
        try:
            with sock:
                for batch in self._batches(sock):
                    out: list[bytes] = []
                    done = self._answer(batch, out, held, state)
                    if f.bye_first:
                        out.sort(key=lambda frame: frame[2] & 15 != OpCode.ByeResponse)
                    sock.sendall(b"".join(out))
                    if done:
                        return
        except OSError:
            if f.die_on_broken_peer and not self.stopped.is_set():
                self.close()

    def _answer(self, batch: list[Frame], out: list[bytes], held: dict[int, list[bytes]], state: list[int]) -> bool:
        """Append the answers to `batch` to `out`; True when the connection is
        to close. `state[0]`: the connection's state, moved by each frame
        received (RECEIVE) and each answer sent (SEND)."""
        f = self.faults

        def answer(frame: bytes, op: OpCode) -> None:
            out.append(frame)
            if not f.no_states:
                state[0] = SEND[state[0]][op]

        for frame in batch:
            proto, _, mid, _, _ = frame
            op = proto & 15
            if f.stall_on_internal_bits and proto & 0xC0:
                self.stopped.wait()
                return True
            if f.answer_everything and op not in (0, 2, 3, 5):
                out.append(pack_header(7, proto, frame[1], mid, len(frame[3]), len(frame[4])) + frame[3] + frame[4])
                continue
            if f.no_states:
                refused = op >= 10 or op not in (0, 1, 2, 3, 4, 5, 6)  # only local-only and invalid op codes
            else:
                refused = RECEIVE[state[0]][op] < 0
                if not refused:
                    state[0] = RECEIVE[state[0]][op]
            if refused:
                if op >= 10 and f.die_on_bad_op:
                    self.close()
                return True  # what the table refuses closes the connection
            if STATE_TERMINAL[state[0]] and not f.no_states:
                continue  # the channel is over: dropped
            if op == OpCode.HelloRequest:
                hello = self._reply((proto, 0, mid + f.hello_mid_off, frame[3], frame[4]), OpCode.HelloResponse)
                answer(hello, OpCode.HelloResponse)
            elif op == OpCode.Request:
                reply = self._reply(frame, OpCode.Response)
                if f.reverse_streams and (proto >> 5 & 1 or mid in held):
                    held.setdefault(mid, []).append(reply)
                    if not proto >> 5 & 1:
                        out.extend(reversed(held.pop(mid)))
                else:
                    answer(reply, OpCode.Response)
            elif op == OpCode.Signal:
                answer(self._reply(frame), OpCode.Signal)
            elif op == OpCode.ByeRequest:
                if f.no_bye_response:
                    return True
                answer(self._reply(frame, OpCode.ByeResponse), OpCode.ByeResponse)
                if not f.stay_open_after_bye:
                    return True
            elif op == OpCode.ByeResponse:
                return True
        return False


@pytest.fixture
def raw_server() -> Iterator[type[RawEchoServer]]:
    made: list[RawEchoServer] = []

    class Made(RawEchoServer):
        def __init__(self, faults: Faults, uds: bool = False) -> None:
            super().__init__(faults, uds)
            made.append(self)

    yield Made
    for server in made:
        server.close()


def _run(server: RawEchoServer, pattern: str, timeout: float = TIMEOUT) -> dict[str, Result]:
    cases = select(catalogue(), [pattern])
    return {r.case.id: r for r in run_cases(cases, parse_target(server.url), timeout, IDLE)}


def test_a_correct_raw_server_passes_every_must_and_should_case(raw_server: type[RawEchoServer]) -> None:
    results = _run(raw_server(Faults(), uds=True), "*")
    assert _failures(list(results.values())) == {}


# Each fault, the patterns of cases run (each on a fresh server), the wait
# (short where the failure is a wait running out) and the cases that must
# FAIL; every other case run must pass.
BROKEN: list[tuple[str, Faults, tuple[str, ...], float, set[str]]] = [
    (
        "drop_headers",
        Faults(drop_headers=True),
        ("2.*,3.*",),
        TIMEOUT,
        {f"2.{n}" for n in range(1, 10)} | {"3.1", "3.2"},
    ),
    ("reverse_streams", Faults(reverse_streams=True), ("2.*,3.*",), TIMEOUT, {"3.1", "3.2", "3.3"}),
    ("hello_mid_off", Faults(hello_mid_off=1), ("1.1,1.2,2.1,4.1",), TIMEOUT, {"1.1", "1.2", "2.1", "4.1"}),
    ("channel_zero", Faults(channel_zero=True), ("1.*,2.1,3.1",), TIMEOUT, {"1.2", "2.1", "3.1"}),
    # big frames arrive in pieces too
    ("frame_per_read", Faults(frame_per_read=True), ("2.*",), TIMEOUT, {"2.3", "2.4", "2.8"}),
    ("cap_body", Faults(cap_body=65000), ("2.*,7.1,7.2",), TIMEOUT, {"2.3", "7.1", "7.2"}),
    ("no_bye_response", Faults(no_bye_response=True), ("4.1,4.2,4.3",), TIMEOUT, {"4.1", "4.2", "4.3"}),
    ("bye_first", Faults(bye_first=True), ("4.1,4.2,4.3",), TIMEOUT, {"4.3"}),
    ("stay_open_after_bye", Faults(stay_open_after_bye=True), ("4.1,4.2",), 1.0, {"4.2"}),
    # single-threaded, so it meets the broken peer before it accepts the next connection
    (
        "die_on_broken_peer",
        Faults(die_on_broken_peer=True, one_at_a_time=True),
        ("4.4", "4.5", "4.6"),
        TIMEOUT,
        {"4.4", "4.5", "4.6"},
    ),
    # echoes what the table refuses (but a Request, Signal, HelloRequest or ByeRequest) and the unasked Response
    (
        "answer_everything",
        Faults(answer_everything=True),
        ("5.*,6.1",),
        TIMEOUT,
        {refusal_id(state, op) for state, op in refused_cells() if op not in (0, 2, 3, 5)} | {"6.1"},
    ),
    # takes every frame in any state: answers a Request, Signal or ByeRequest
    # before the HelloRequest and a second HelloRequest, ignores a Response or
    # HelloResponse before the HelloRequest and an unasked HelloResponse
    (
        "no_states",
        Faults(no_states=True),
        ("5.*,6.1",),
        TIMEOUT,
        {refusal_id(ACCEPTOR_AWAITING_HELLO, op) for op in (0, 1, 2, 4, 5)}
        | {refusal_id(ACCEPTOR_OPEN, op) for op in (3, 4)},
    ),
    ("keep_origin_and_status", Faults(keep_origin_and_status=True), ("1.1,6.*",), TIMEOUT, {"6.2", "6.3", "6.4"}),
    ("stall_on_internal_bits", Faults(stall_on_internal_bits=True), ("6.2,6.5,6.6",), 1.0, {"6.5", "6.6"}),
    ("ignore_eof", Faults(ignore_eof=True), ("6.6,6.7,6.8",), 1.0, {"6.7", "6.8"}),
]


@pytest.mark.parametrize(("name", "faults", "patterns", "timeout", "failing"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_server_fails_the_matching_cases(
    raw_server: type[RawEchoServer],
    name: str,
    faults: Faults,
    patterns: tuple[str, ...],
    timeout: float,
    failing: set[str],
) -> None:
    results: dict[str, Result] = {}
    for pattern in patterns:
        results.update(_run(raw_server(faults), pattern, timeout))
    failed = {cid for cid, r in results.items() if r.outcome is Outcome.failed}
    assert failed == failing, {cid: results[cid].detail for cid in failed ^ failing}
    for cid in failing:
        result = results[cid]
        assert result.transcripts, f"{cid}: a failed case shows the bytes"
        assert result.transcripts[-1].sent_total > 0
        if result.case.isolation and result.case.level is Level.must:
            assert "second connection is not served" in result.detail


def test_every_must_and_should_case_is_failed_by_some_broken_server() -> None:
    caught = set().union(*(failing for *_, failing in BROKEN)) | {
        refusal_id(ACCEPTOR_OPEN, 10),
        "6.9",
    }  # + the two below
    graded = {c.id for c in catalogue() if c.level is not Level.info}
    assert graded - caught == set()


def test_a_server_that_dies_on_bad_input_fails_as_must(raw_server: type[RawEchoServer]) -> None:
    case = refusal_id(ACCEPTOR_OPEN, 10)
    results = _run(raw_server(Faults(die_on_bad_op=True)), case, timeout=2.0)
    result = results[case]
    assert result.outcome is Outcome.failed and result.level is Level.must
    assert "second connection is not served" in result.detail


def test_a_server_serving_one_connection_at_a_time_fails_the_stall_case(raw_server: type[RawEchoServer]) -> None:
    results = _run(raw_server(Faults(one_at_a_time=True)), "6.9", timeout=1.0)
    assert results["6.9"].outcome is Outcome.failed
    assert results["6.9"].level is Level.must


def test_html_escapes_everything_from_the_peer() -> None:
    case = catalogue()[0]
    evil = "<script>alert('peer')</script> & \"quotes\""
    transcript = Transcript(b"<sent>", 6, b"<img src=x>", 11, "fin", b"<sent>", b"<img src=x>")
    results = [Result(case, Outcome.failed, Level.must, evil, 0.1, [transcript])]
    page = to_html(results, "tcp://<host>:1", 0.0, 0.1)
    assert "<script" not in page and "<img" not in page and "<host>" not in page
    assert "&lt;script&gt;alert(&#x27;peer&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "3c 69 6d 67" in page  # the received bytes, as hex


def test_a_failed_case_shows_the_bytes(raw_server: type[RawEchoServer], tmp_path: Path) -> None:
    server = raw_server(Faults(cap_body=3))
    page, out = tmp_path / "r.html", tmp_path / "r.json"
    console = Console(record=True, width=250, force_terminal=False)
    status = main([server.url, "--cases", "2.1,2.2,2.5", "--html", str(page), "--json", str(out)], console=console)
    assert status == 1
    text = console.export_text()
    # 2.5 sends a 5-byte body, which comes back cut to 3: the table shows that frame both ways
    assert "must: 2/3 passed, 1 FAILED" in text
    sent = re.search(r"last sent: ([0-9a-f ]+?) (?:\.\.\. )?\((\d+) B", text)
    back = re.search(r"received after it: ([0-9a-f ]+?) (?:\.\.\. )?\((\d+) B", text)
    assert sent and back, text
    assert sent.group(1).startswith("00 01 00 00") and back.group(1).startswith("00 07 01 00")  # Request, Response
    assert int(sent.group(2)) - int(back.group(2)) == 2
    data = json.loads(out.read_text())
    failed = [c for c in data["cases"] if c["result"] == "fail"]
    assert [c["id"] for c in failed] == ["2.5"]
    assert failed[0]["connections"][-1]["last_received_hex"].startswith(back.group(1).replace(" ", ""))
    assert data["passed"] is False
    html = page.read_text()
    assert "some must cases FAILED" in html and "first difference at byte 3" in html
