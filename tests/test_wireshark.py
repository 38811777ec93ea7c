"""The generated Wireshark dissector (generated/tofu.lua) on real captured traffic.

dumpcap captures tofu frames exchanged on loopback, then tshark decodes the
capture with the dissector and every frame it shows must be the frame that was
sent: op code, flags, channel, status, message id, lengths, each text header
and every byte of the body. tshark and dumpcap are required (.ci/run installs
them): without them these tests fail, they are never skipped. They carry the
`tshark` marker, so an environment without Wireshark runs the rest of the suite
with `pytest -m "not tshark"` (the README's command), and says so.

The traffic comes from generators with one contract (listen on
127.0.0.1:port, return the frames put on the wire): two tofu engines talking,
and plain sockets sending hand-made frames no engine would send.

The dissector also follows each connection through the channel state machine
(spec [machine]) and marks a frame its receiver's table refuses: the scripted
connections of plain sockets check those verdicts exactly, the engines' and
the legal scripts that there are none.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tofu
from engine_support import assert_closed, io_thread_parked
from tofu import AmpeStatus, Message, MoreMessagesFlag, OpCode
from tofu.generated import machine

ROOT = Path(__file__).resolve().parent.parent
DISSECTOR = ROOT / "generated" / "tofu.lua"

pytestmark = pytest.mark.tshark

TIMEOUT = 30.0  # seconds: the longest any single step may take

CLIENT, SERVER = "client", "server"
Sent = list[tuple[str, Message]]  # (who sent it, the frame as it went on the wire), in send order


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(
            f"{tool} is required for the Wireshark dissector test and was not found on PATH; install it with\n"
            "  echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections\n"
            "  DEBIAN_FRONTEND=noninteractive apt-get install -y tshark",
            pytrace=False,
        )
    return path


# ---------------------------------------------------------------- traffic


def _msg(
    op: OpCode,
    *,
    ch: int,
    mid: int,
    status: int = 0,
    more: bool = False,
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> Message:
    msg = Message(op)
    msg.bhdr.channel_number = ch
    msg.bhdr.message_id = mid
    msg.bhdr.status = status
    if more:
        msg.bhdr.proto.more = MoreMessagesFlag.more
    for name, value in headers:
        msg.thdrs.append(name, value)
    msg.body.append(body)
    return msg


CLIENT_CH, SERVER_CH = 20189, 7  # senders' channel numbers, as a real engine would put them
BIG = bytes(i % 251 for i in range(60000))
PAD = "p" * 8000  # with BIG, makes a frame over 64 KiB: no single loopback segment can carry it


def _client_batches(port: int) -> list[tuple[list[Message], bool]]:
    """What the client sends: (frames sent together, split into several writes?)."""
    return [
        ([_msg(OpCode.HelloRequest, ch=0, mid=1, headers=((tofu.CONNECT_TO_HEADER, f"tcp|127.0.0.1|{port}"),))], False),
        (
            [
                _msg(
                    OpCode.Request,
                    ch=CLIENT_CH,
                    mid=2,
                    headers=(("path", "/echo"), ("x-note", "\t héllo wörld  ")),
                    body=b"ping",
                )
            ],
            False,
        ),
        # header, text headers and body in separate writes, as the reference writes a frame
        ([_msg(OpCode.Request, ch=CLIENT_CH, mid=3, headers=(("path", "/upload"),), body=BIG)], True),
        (
            [
                _msg(
                    OpCode.Request,
                    ch=CLIENT_CH,
                    mid=4,
                    headers=(("want-status", str(int(AmpeStatus.processing_failed))),),
                    body=b"fail",
                )
            ],
            False,
        ),
        # several small frames in one write: several frames per segment
        (
            [
                _msg(OpCode.Signal, ch=CLIENT_CH, mid=5, more=True, headers=(("part", "1"),), body=b"a"),
                _msg(OpCode.Signal, ch=CLIENT_CH, mid=5, more=True, headers=(("part", "2"),), body=b"bb"),
                _msg(OpCode.Signal, ch=CLIENT_CH, mid=5, headers=(("part", "3"),), body=b"ccc"),
                _msg(OpCode.Signal, ch=CLIENT_CH, mid=6, status=45),  # a status byte past unknown_error
                _msg(OpCode.Request, ch=CLIENT_CH, mid=7),  # no text headers, no body
            ],
            False,
        ),
        ([_msg(OpCode.ByeRequest, ch=CLIENT_CH, mid=8)], False),
    ]


def _replies(req: Message) -> list[Message]:
    """What the server answers to one received frame."""
    op, mid = req.bhdr.proto.op_code, req.bhdr.message_id
    if op == OpCode.HelloRequest:
        return [_msg(OpCode.HelloResponse, ch=SERVER_CH, mid=mid, headers=(("server", "wireshark-test"),))]
    if op == OpCode.Request:
        headers: tuple[tuple[str, str], ...] = (("echo-of", str(mid)),)
        if len(req.body) >= len(BIG):
            headers += (("x-pad", PAD),)
        status = int(req.thdrs.get("want-status", "0"))
        body = bytes(req.body)[::-1]
        return [_msg(OpCode.Response, ch=SERVER_CH, mid=mid, status=status, headers=headers, body=body)]
    if op == OpCode.ByeRequest:
        return [_msg(OpCode.ByeResponse, ch=SERVER_CH, mid=mid)]
    return []


def _receive(sock: socket.socket, decoder: tofu.FrameDecoder, count: int) -> list[Message]:
    frames: list[Message] = []
    while len(frames) < count:
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionError(f"peer closed after {len(frames)} of {count} frames")
        frames += decoder.feed(data)
    assert len(frames) == count, f"got {len(frames)} frames, expected {count}"
    return frames


def socket_traffic(port: int) -> Sent:
    """A client and a server on plain sockets exchange tofu frames over 127.0.0.1:port.

    Returns every frame put on the wire, with who sent it, in send order (the
    frames' channel numbers are the senders' own, as on the wire)."""
    sent: Sent = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def record(who: str, msgs: list[Message]) -> None:
        with lock:
            sent.extend((who, m.copy()) for m in msgs)

    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(TIMEOUT)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                decoder = tofu.FrameDecoder()
                while True:
                    data = conn.recv(1 << 16)
                    if not data:
                        return
                    for req in decoder.feed(data):
                        out = _replies(req)
                        if out:
                            record(SERVER, out)  # before sending: the client may already be reading it
                            conn.sendall(b"".join(tofu.encode(m) for m in out))
                        if req.bhdr.proto.op_code == OpCode.ByeRequest:
                            return
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
            errors.append(exc)
        finally:
            listener.close()

    server = threading.Thread(target=serve, name="tofu-test-server", daemon=True)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            decoder = tofu.FrameDecoder()
            for msgs, split in _client_batches(port):
                record(CLIENT, msgs)
                if split:
                    for m in msgs:
                        frame = tofu.encode(m)
                        cut1 = tofu.HEADER_SIZE
                        cut2 = cut1 + len(bytes(m.thdrs))
                        for piece in (frame[:cut1], frame[cut1:cut2], frame[cut2:]):
                            sock.sendall(piece)
                else:
                    sock.sendall(b"".join(tofu.encode(m) for m in msgs))
                expected = sum(len(_replies(m)) for m in msgs)
                replies = _receive(sock, decoder, expected)
                assert [r.bhdr.message_id for r in replies] == [r.bhdr.message_id for m in msgs for r in _replies(m)]
    finally:
        server.join(TIMEOUT)
    if errors:
        raise errors[0]
    assert not server.is_alive(), "the server thread did not finish"
    return sent


# Scripted connections: plain sockets on both ends, so nothing enforces the
# state machine and a script can send what no engine would. A step is (what
# the client sends, what the server sends): each side writes its frames whole,
# the client first, before either reads the other's, so the capture shows a
# connection's frames in script order (a step where both send: two frames
# crossing on the wire).
Step = tuple[list[Message], list[Message]]


def _frames(ch: int, ops: tuple[OpCode, ...]) -> list[Message]:
    return [_msg(op, ch=ch, mid=i + 1) for i, op in enumerate(ops)]


def client(*ops: OpCode) -> Step:
    return _frames(CLIENT_CH, ops), []


def server(*ops: OpCode) -> Step:
    return [], _frames(SERVER_CH, ops)


def crossing(client_op: OpCode, server_op: OpCode) -> Step:
    return _frames(CLIENT_CH, (client_op,)), _frames(SERVER_CH, (server_op,))


def scripted_traffic(scripts: list[list[Step]]) -> Callable[[int], Sent]:
    """Traffic that runs each script on a connection of its own, one after the other."""

    def traffic(port: int) -> Sent:
        sent: Sent = []
        with socket.create_server(("127.0.0.1", port)) as listener:
            listener.settimeout(TIMEOUT)
            for steps in scripts:
                with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as conn:
                    accepted, _ = listener.accept()
                    with accepted:
                        accepted.settimeout(TIMEOUT)
                        ends = ((conn, CLIENT, tofu.FrameDecoder()), (accepted, SERVER, tofu.FrameDecoder()))
                        for sock, _, _ in ends:
                            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        for step in steps:
                            for (sock, who, _), msgs in zip(ends, step):
                                if msgs:
                                    sent.extend((who, m.copy()) for m in msgs)
                                    sock.sendall(b"".join(tofu.encode(m) for m in msgs))
                            # each side reads what the other sent
                            for (sock, _, decoder), msgs in zip(ends, reversed(step)):
                                got = _receive(sock, decoder, len(msgs))
                                assert [m.bhdr.proto.op_code for m in got] == [m.bhdr.proto.op_code for m in msgs]
        return sent

    return traffic


# ---------------------------------------------------------------- capture


def _pcap_source_ports(path: Path) -> set[int]:
    """TCP source ports of the IPv4 packets in a (possibly still growing) pcap file."""
    data = path.read_bytes() if path.exists() else b""
    if len(data) < 24:
        return set()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise AssertionError(f"{path} is not a pcap file (magic {magic.hex()})")
    (linktype,) = struct.unpack_from(endian + "I", data, 20)
    # link-layer header length and offset of the ethertype in it
    layouts = {1: (14, 12), 113: (16, 14), 276: (20, 0)}  # Ethernet, Linux cooked v1, v2
    if linktype not in layouts:
        raise AssertionError(f"unexpected link type {linktype} in {path}")
    link_len, type_at = layouts[linktype]
    ports = set()
    pos = 24
    while pos + 16 <= len(data):
        incl_len = struct.unpack_from(endian + "I", data, pos + 8)[0]
        pkt = data[pos + 16 : pos + 16 + incl_len]
        pos += 16 + incl_len
        if len(pkt) < incl_len:
            break  # a record still being written
        if len(pkt) < link_len + 24 or pkt[type_at : type_at + 2] != b"\x08\x00":
            continue
        ip = pkt[link_len:]
        if ip[9] != 6:  # not TCP
            continue
        ihl = (ip[0] & 0x0F) * 4
        ports.add(struct.unpack_from("!H", ip, ihl)[0])
    return ports


def _probe(port: int) -> int:
    """Knock on the (closed) port: a SYN and a RST on the wire. Returns the source port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        src = s.getsockname()[1]
        s.settimeout(2)
        with contextlib.suppress(OSError):
            s.connect(("127.0.0.1", port))
    return src


@contextlib.contextmanager
def capture(pcap: Path, port: int) -> Iterator[None]:
    """Capture `tcp port PORT` on lo into `pcap` while the block runs.

    Returns only once the capture is really running (a probe sent on the port
    is in the file), and before stopping waits for a probe sent after the
    traffic to be in the file, so every packet of the traffic is too."""
    dumpcap = _require("dumpcap")
    proc = subprocess.Popen(
        [dumpcap, "-i", "lo", "-f", f"tcp port {port}", "-P", "-w", str(pcap)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stderr = bytearray()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):  # type: ignore[union-attr]
            stderr.extend(chunk)

    reader = threading.Thread(target=read_stderr, name="dumpcap-stderr", daemon=True)
    reader.start()

    def wait_for(what: str, done: Callable[[], bool], step: Callable[[], None] | None = None) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not done():
            if proc.poll() is not None:
                reader.join(5)
                pytest.fail(f"dumpcap exited ({proc.returncode}) {what}:\n{stderr.decode(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out {what}; dumpcap said:\n{stderr.decode(errors='replace')}")
            if step is not None:
                step()
            time.sleep(0.05)

    def wait_for_probe(what: str) -> None:
        probes: set[int] = set()
        last = [0.0]

        def knock() -> None:
            if time.monotonic() - last[0] > 0.5:
                probes.add(_probe(port))
                last[0] = time.monotonic()

        knock()
        wait_for(what, lambda: bool(probes & _pcap_source_ports(pcap)), knock)

    try:
        wait_for("before capturing", lambda: b"Capturing on" in stderr)
        wait_for_probe("waiting for the capture to see a probe")
        yield
        wait_for_probe("waiting for the capture to catch up with the traffic")
    finally:
        proc.terminate()
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(TIMEOUT)
        reader.join(5)


# ---------------------------------------------------------------- decoding


def tshark(*args: str) -> str:
    """Run tshark with the generated dissector loaded; return its stdout."""
    exe = _require("tshark")
    result = subprocess.run(
        [exe, "-X", f"lua_script:{DISSECTOR}", *args],
        capture_output=True,
        timeout=TIMEOUT * 2,
        check=False,
    )
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 0, f"tshark {' '.join(args)} failed ({result.returncode}):\n{err}"
    # a Lua error in a dissector is reported in the output, not as a failure
    out = result.stdout.decode()
    for marker in ("Lua Error", "Lua: Error", "[Malformed Packet", "_ws.malformed"):
        assert marker not in out and marker not in err, f"tshark reported {marker!r}:\n{err}\n{out[:4000]}"
    return out


def _named(showname: str) -> str:
    """'....0011 = op_code: HelloRequest (3)' -> 'HelloRequest'."""
    m = re.search(r": (\S+) \(\d+\)", showname)
    return m.group(1) if m else ""


EXPERT = re.compile(r"Expert Info \((\w+)/(\w+)\): (.*)")


def _experts(proto: ET.Element, group: str) -> list[str]:
    """The expert infos of `group` on one tofu frame, as 'Severity: message'."""
    found = []
    for field in proto.iter("field"):
        m = EXPERT.fullmatch(field.get("showname", "")) if field.get("name") == "_ws.expert" else None
        if m and m.group(2) == group:
            found.append(f"{m.group(1)}: {m.group(3)}")
    return found


def decode(pcap: Path, port: int, *options: str) -> list[dict]:
    """Every tofu frame tshark shows in the capture, in order, as plain values."""
    root = ET.fromstring(tshark(*options, "-r", str(pcap), "-d", f"tcp.port=={port},tofu", "-T", "pdml"))
    frames = []
    for packet in root.iter("packet"):
        number = int(packet.find("proto[@name='frame']/field[@name='frame.number']").get("show"))
        srcport = int(packet.find("proto[@name='tcp']/field[@name='tcp.srcport']").get("show"))
        dstport = int(packet.find("proto[@name='tcp']/field[@name='tcp.dstport']").get("show"))
        segments = packet.find(".//field[@name='tcp.segment.count']")
        tofus = packet.findall("proto[@name='tofu']")
        for proto in tofus:
            fields: dict[str, ET.Element] = {}
            for field in proto.iter("field"):
                fields.setdefault(field.get("name", ""), field)
            body = fields.get("tofu.body")
            state, sender_state = fields.get("tofu.state"), fields.get("tofu.sender_state")
            frames.append(
                {
                    "packet": number,
                    "frames_in_packet": len(tofus),
                    "segments": int(segments.get("show")) if segments is not None else 1,
                    "sender": SERVER if srcport == port else CLIENT,
                    "client_port": dstport if srcport == port else srcport,
                    "channel_number": int(fields["tofu.channel_number"].get("show")),
                    "op_code": int(fields["tofu.op_code"].get("show")),
                    "op_name": _named(fields["tofu.op_code"].get("showname")),
                    "origin": int(fields["tofu.origin"].get("show")),
                    "more": int(fields["tofu.more"].get("show")),
                    "status": int(fields["tofu.status"].get("show")),
                    "status_name": _named(fields["tofu.status"].get("showname")),
                    "message_id": int(fields["tofu.message_id"].get("show")),
                    "thl": int(fields["tofu.thl"].get("show")),
                    "bl": int(fields["tofu.bl"].get("show")),
                    "headers": [
                        (
                            h.find("field[@name='tofu.header.name']").get("show"),
                            h.find("field[@name='tofu.header.value']").get("show"),
                        )
                        for h in proto.iter("field")
                        if h.get("name") == "tofu.header"
                    ],
                    "body": bytes.fromhex(body.get("value")) if body is not None else b"",
                    # the sequence checks
                    "state": state.get("show") if state is not None else None,
                    "sender_state": sender_state.get("show") if sender_state is not None else None,
                    "sequence": _experts(proto, "Sequence"),
                }
            )
    return frames


def expected(who: str, msg: Message) -> dict:
    """What tshark must show for `msg` sent by `who` (the keys of `decode`'s frames it checks)."""
    bh = msg.bhdr
    return {
        "sender": who,
        "channel_number": bh.channel_number,
        "op_code": int(bh.proto.op_code),
        "op_name": OpCode(bh.proto.op_code).name,
        "origin": int(bh.proto.origin),
        "more": int(bh.proto.more),
        "status": bh.status,
        # statuses past the spec's last show as a bare number
        "status_name": AmpeStatus(bh.status).name if bh.status < len(AmpeStatus) else "Unknown",
        "message_id": bh.message_id,
        "thl": len(bytes(msg.thdrs)),
        "bl": len(msg.body),
        "headers": list(msg.thdrs),
        "body": bytes(msg.body),
    }


def engine_traffic(port: int) -> Sent:
    """Two tofu engines, a client and a server, talk over 127.0.0.1:port.

    The same conversation as socket_traffic, as far as an application can
    make it (post() sends every status as success): a Hello exchange,
    Requests answered by Responses (one frame over 64 KiB), a `more` stream
    of Signals posted together (the engine writes them in one send), then a
    ByeRequest answered by ByeResponse."""
    sent: Sent = []

    def post(who: str, group: tofu.ChannelGroup, msg: Message) -> None:
        wire = msg.copy()
        header = group.post(msg)
        wire.bhdr.channel_number = header.channel_number
        wire.bhdr.message_id = header.message_id
        sent.append((who, wire))

    def receive(group: tofu.ChannelGroup) -> Message:
        while True:
            msg = group.wait_receive(TIMEOUT)
            assert msg is not None, "the engine delivered nothing"
            if msg.is_from_application():
                return msg

    # Every post through the I/O thread, which writes the Signals posted
    # together (while it is held) in one send: the capture must show
    # segments of several frames.
    # (A post to an idle connection would otherwise write its own frame;
    # those direct writes are tested in test_engine_direct.py.)
    queued = tofu.Options(direct_send=False)
    with tofu.Reactor(queued) as client_rtr, tofu.Reactor(queued) as server_rtr:
        client, server = client_rtr.ampe().create(), server_rtr.ampe().create()
        server.post(tofu.TCPServerAddress("127.0.0.1", port).format(Message()))
        welcome = server.wait_receive(TIMEOUT)
        assert welcome is not None and welcome.bhdr.status == 0, welcome

        def exchange(msgs: list[Message], channel: int) -> None:
            """The client posts `msgs` on `channel`, all before its I/O thread
            looks (it is held meanwhile: one round takes them all, and writes
            them in one send); the server answers each."""
            with io_thread_parked(client_rtr):
                for m in msgs:
                    m.bhdr.channel_number = channel
                    m.bhdr.status = 0
                    post(CLIENT, client, m)
            replies = 0
            for _ in msgs:
                req = receive(server)
                for reply in _replies(req):
                    reply.bhdr.channel_number = req.bhdr.channel_number  # the server's own
                    reply.bhdr.status = 0
                    post(SERVER, server, reply)
                    replies += 1
            for _ in range(replies):
                receive(client)

        batches = _client_batches(port)
        exchange(batches[0][0], 0)  # the HelloRequest opens the channel
        client_channel = sent[0][1].bhdr.channel_number
        for msgs, _split in batches[1:]:
            exchange(msgs, client_channel)
        # the Bye exchange closes the channel on both sides
        for group in (client, server):
            while True:
                msg = group.wait_receive(TIMEOUT)
                assert msg is not None, "no channel_closed after the Bye exchange"
                if msg.is_close_notice():
                    assert_closed(msg, None)  # the Bye exchange: a normal close
                    break
    return sent


def engine_print_server_traffic(port: int) -> Sent:
    """Two tofu engines, the server as the reference's print server: it
    answers the HelloRequest with a Request of its own (no HelloResponse),
    the client answers that Request, then says bye."""
    sent: Sent = []

    def post(who: str, group: tofu.ChannelGroup, msg: Message) -> Message:
        wire = msg.copy()
        header = group.post(msg)
        wire.bhdr.channel_number = header.channel_number
        wire.bhdr.message_id = header.message_id
        sent.append((who, wire))
        return wire

    def receive(group: tofu.ChannelGroup, op: OpCode) -> Message:
        while True:
            msg = group.wait_receive(TIMEOUT)
            assert msg is not None, f"the engine delivered nothing, expected {op.name}"
            if msg.is_from_application():
                assert msg.bhdr.proto.op_code == op, msg
                return msg

    with tofu.Reactor() as client_rtr, tofu.Reactor() as server_rtr:
        client, server = client_rtr.ampe().create(), server_rtr.ampe().create()
        server.post(tofu.TCPServerAddress("127.0.0.1", port).format(Message()))
        welcome = server.wait_receive(TIMEOUT)
        assert welcome is not None and welcome.bhdr.status == 0, welcome
        post(CLIENT, client, tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
        hello = receive(server, OpCode.HelloRequest)
        post(SERVER, server, _msg(OpCode.Request, ch=hello.bhdr.channel_number, mid=0, body=b"print me"))
        request = receive(client, OpCode.Request)
        post(CLIENT, client, _msg(OpCode.Response, ch=request.bhdr.channel_number, mid=request.bhdr.message_id))
        receive(server, OpCode.Response)
        post(CLIENT, client, _msg(OpCode.ByeRequest, ch=request.bhdr.channel_number, mid=0))
        bye = receive(server, OpCode.ByeRequest)
        post(SERVER, server, _msg(OpCode.ByeResponse, ch=bye.bhdr.channel_number, mid=bye.bhdr.message_id))
        for group in (client, server):
            while True:
                msg = group.wait_receive(TIMEOUT)
                assert msg is not None, "no channel_closed after the Bye exchange"
                if msg.is_close_notice():
                    assert_closed(msg, None)  # the Bye exchange: a normal close
                    break
    return sent


# ---------------------------------------------------------------- the tests


def _capture_and_decode(tmp_path: Path, traffic: Callable[[int], Sent]) -> tuple[Sent, list[dict], Path, int]:
    _require("tshark")
    assert DISSECTOR.exists(), f"{DISSECTOR} is missing: run `python -m codegen`"
    port = tofu.find_free_tcp_port()
    pcap = tmp_path / "tofu.pcap"
    with capture(pcap, port):
        sent = traffic(port)
    return sent, decode(pcap, port), pcap, port


def _check_frames(sent: Sent, frames: list[dict]) -> None:
    """Every frame tshark shows is the frame that was sent, side by side."""
    for who in (CLIENT, SERVER):
        want = [expected(w, m) for w, m in sent if w == who]
        got = [{k: f[k] for k in want[0]} for f in frames if f["sender"] == who]
        assert len(got) == len(want), f"{who}: tshark shows {len(got)} frames, {len(want)} were sent"
        for i, (g, w) in enumerate(zip(got, want)):
            assert g == w, f"{who} frame {i} (message id {w['message_id']}) decoded wrong"
    # the capture exercised both kinds of TCP framing
    assert any(f["frames_in_packet"] > 1 for f in frames), "no TCP segment carried several tofu frames"
    assert any(f["segments"] > 1 for f in frames), "no tofu frame was reassembled from several TCP segments"


def test_dissector_decodes_two_engines_talking(tmp_path: Path) -> None:
    sent, frames, _, _ = _capture_and_decode(tmp_path, engine_traffic)
    _check_frames(sent, frames)
    _check_no_sequence_verdicts(frames)


def test_dissector_decodes_hand_made_frames(tmp_path: Path) -> None:
    """Plain sockets reach what an engine never sends: error statuses, a
    status byte past the last one, a frame written in three pieces."""
    sent, frames, pcap, port = _capture_and_decode(tmp_path, socket_traffic)
    _check_frames(sent, frames)
    _check_no_sequence_verdicts(frames)  # what they send is in sequence

    # the port preference attaches the dissector as well as Decode As; Info names each frame
    info = tshark(
        "-r", str(pcap), "-o", f"tofu.tcp_port:{port}", "-Y", "tofu",
        "-T", "fields", "-e", "tofu.op_code", "-e", "tofu.message_id", "-e", "_ws.col.Info",
    )  # fmt: skip
    lines = info.splitlines()
    assert len(lines) == len({f["packet"] for f in frames}), info
    summaries = ", ".join(line.split("\t")[2] for line in lines)
    for w, m in sent:
        summary = f"{m.bhdr.proto.op_code.name} ch={m.bhdr.channel_number} id={m.bhdr.message_id}"
        assert summary in summaries, f"Info column lacks {summary!r}:\n{info}"
    assert re.search(r"Signal ch=\d+ id=5 more, Signal ch=\d+ id=5 more, Signal ch=\d+ id=5", summaries), info
    assert f"Response ch={SERVER_CH} id=4 processing_failed" in summaries, info


# ---------------------------------------------------------------- the sequence checks

# The dissector's words for the tables of generated/machine.py.
OPENED = "connector -> connecting (its HelloRequest opens the channel)"


def _in(state: int) -> str:
    return f"{machine.ChannelRole(machine.STATE_ROLE[state]).name} state {machine.STATE_NAME[state]}"


def illegal(op: OpCode, state: int) -> str:
    """The warning on `op` received in `state`, which refuses it."""
    status = machine.refusal(machine.RECEIVE[state][op]).name
    why = machine.why(False, state, op)
    return f"Warning: {op.name} is refused in {_in(state)}: {why} (the receiver closes the channel with {status})"


def not_from_engine(op: OpCode, state: int) -> str:
    """The note on `op` sent in `state`, whose post() refuses it."""
    cell = machine.SEND[state][op]
    if cell == machine.OPENS:
        why = f"posting a {op.name} opens a new channel, on a connection of its own"
    else:
        why = f"{machine.why(True, state, op)} (post() raises {machine.refusal(cell).name})"
    return f"Note: a tofu engine would not send this: {op.name} is refused to {_in(state)}: {why}"


UNKNOWN = (
    "Note: the capture does not show this conversation begin with a HelloRequest (it began before the capture,"
    " or a peer opened it with another frame): the states of its sides are unknown, none of its frames is checked"
)

# (sender, op code, the receiver's state field, the sender's state field, the expert infos of group Sequence)
Verdict = tuple[str, str, str | None, str | None, list[str]]
M = machine
HELLO_DONE: list[Verdict] = [
    (CLIENT, "HelloRequest", "acceptor awaiting_hello -> greeted", OPENED, []),
    (SERVER, "HelloResponse", "connector connecting -> open", "acceptor greeted -> open", []),
]
HELLO = [client(OpCode.HelloRequest), server(OpCode.HelloResponse)]
O = OpCode

# name: (the script, the verdict on each of its frames, in order)
ILLEGAL: dict[str, tuple[list[Step], list[Verdict]]] = {
    # a ByeResponse nobody asked for: refused, and the acceptor is closed from then on
    "unasked ByeResponse": (
        [*HELLO, client(O.ByeResponse), client(O.Request)],
        [
            *HELLO_DONE,
            (
                CLIENT, "ByeResponse", "acceptor open -> closed (refused: not_allowed)",
                "connector open (its post() refuses ByeResponse: not_allowed)",
                [illegal(O.ByeResponse, M.ACCEPTOR_OPEN), not_from_engine(O.ByeResponse, M.CONNECTOR_OPEN)],
            ),
            (CLIENT, "Request", "acceptor closed (dropped)", "connector open -> open", []),
        ],
    ),
    # a second HelloRequest on an open channel; what follows reaches a closed side
    "HelloRequest again": (
        [*HELLO, client(O.Request), server(O.Response), client(O.HelloRequest), client(O.ByeResponse)],
        [
            *HELLO_DONE,
            (CLIENT, "Request", "acceptor open -> open", "connector open -> open", []),
            (SERVER, "Response", "connector open -> open", "acceptor open -> open", []),
            (
                CLIENT, "HelloRequest", "acceptor open -> closed (refused: not_allowed)",
                "connector open (its post() of HelloRequest opens a new channel)",
                [illegal(O.HelloRequest, M.ACCEPTOR_OPEN), not_from_engine(O.HelloRequest, M.CONNECTOR_OPEN)],
            ),
            (
                CLIENT, "ByeResponse", "acceptor closed (dropped)",
                "connector open (its post() refuses ByeResponse: not_allowed)", [],
            ),
        ],
    ),
    # a local command on the wire: the receiver refuses it; no post() sends it, so the sender stays
    "ByeSignal on the wire": (
        [*HELLO, server(O.ByeSignal)],
        [
            *HELLO_DONE,
            (
                SERVER, "ByeSignal", "connector open -> closed (refused: invalid_op_code)",
                "acceptor open (no post sends ByeSignal)", [illegal(O.ByeSignal, M.CONNECTOR_OPEN)],
            ),
        ],
    ),
    # the first frame is no HelloRequest: nothing of the connection is checked, and that is said once
    "Request first": (
        [client(O.Request), server(O.Response), client(O.HelloRequest)],
        [
            (CLIENT, "Request", None, None, [UNKNOWN]),
            (SERVER, "Response", None, None, []),
            (CLIENT, "HelloRequest", None, None, []),
        ],
    ),
}  # fmt: skip

LEGAL: dict[str, tuple[list[Step], list[Verdict]]] = {
    # the reference's print server: the acceptor answers the HelloRequest with a Request
    "print server": (
        [client(O.HelloRequest), server(O.Request), client(O.Response), client(O.ByeRequest), server(O.ByeResponse)],
        [
            (CLIENT, "HelloRequest", "acceptor awaiting_hello -> greeted", OPENED, []),
            (SERVER, "Request", "connector connecting -> open", "acceptor greeted -> open", []),
            (CLIENT, "Response", "acceptor open -> open", "connector open -> open", []),
            (CLIENT, "ByeRequest", "acceptor open -> bye_received", "connector open -> bye_sent", []),
            (SERVER, "ByeResponse", "connector bye_sent -> closed", "acceptor bye_received -> closed", []),
        ],
    ),
    # the reference's client: a Request right behind its HelloRequest (a tofu
    # engine's post() would refuse it, the acceptor takes it: legal, nothing
    # said); then the two sides' ByeRequests cross
    "Request right behind the HelloRequest, crossing ByeRequests": (
        [
            client(O.HelloRequest, O.Request), server(O.HelloResponse, O.Response),
            crossing(O.ByeRequest, O.ByeRequest),
        ],
        [
            (CLIENT, "HelloRequest", "acceptor awaiting_hello -> greeted", OPENED, []),
            (
                CLIENT, "Request", "acceptor greeted -> greeted",
                "connector connecting (its post() refuses Request: not_allowed)", [],
            ),
            (SERVER, "HelloResponse", "connector connecting -> open", "acceptor greeted -> open", []),
            (SERVER, "Response", "connector open -> open", "acceptor open -> open", []),
            (CLIENT, "ByeRequest", "acceptor open -> bye_received", "connector open -> bye_sent", []),
            (SERVER, "ByeRequest", "connector bye_sent -> closed", "acceptor bye_received -> closed", []),
        ],
    ),
}  # fmt: skip


def _verdicts(frames: list[dict]) -> list[list[Verdict]]:
    """The verdicts tshark shows, per connection (in the order they began)."""
    connections: dict[int, list[Verdict]] = {}
    for f in frames:
        verdict = (f["sender"], f["op_name"], f["state"], f["sender_state"], f["sequence"])
        connections.setdefault(f["client_port"], []).append(verdict)
    return list(connections.values())


def _packets(pcap: Path, port: int, display_filter: str) -> list[int]:
    out = tshark(
        "-r", str(pcap), "-d", f"tcp.port=={port},tofu", "-Y", display_filter, "-T", "fields", "-e", "frame.number"
    )
    return [int(line) for line in out.split()]


def _check_no_sequence_verdicts(frames: list[dict]) -> None:
    """Every frame checked (the states known from the HelloRequest on), none refused."""
    assert frames
    for f in frames:
        assert f["state"] and f["sender_state"], f"frame in packet {f['packet']} was not checked: {f}"
        assert f["sequence"] == [], f"packet {f['packet']}: {f['op_name']} {f['state']}: {f['sequence']}"
    assert frames[0]["state"] == "acceptor awaiting_hello -> greeted"


def test_dissector_marks_frames_refused_in_their_state(tmp_path: Path) -> None:
    """Scripted connections of plain sockets: the dissector's verdict on
    every frame is the table's, the expert infos are on exactly the refused
    frames, and a second pass (tshark -2, which shows what the first pass
    decided) shows the same."""
    assert illegal(O.ByeResponse, M.ACCEPTOR_OPEN) == (
        "Warning: ByeResponse is refused in acceptor state open: no ByeRequest was sent"
        " (the receiver closes the channel with not_allowed)"
    )
    cases = {**ILLEGAL, **LEGAL}
    sent, frames, pcap, port = _capture_and_decode(tmp_path, scripted_traffic([steps for steps, _ in cases.values()]))
    assert [(f["sender"], f["op_name"]) for f in frames] == [(w, m.bhdr.proto.op_code.name) for w, m in sent]
    got = _verdicts(frames)
    assert len(got) == len(cases)
    for (name, (_, want)), verdicts in zip(cases.items(), got):
        assert verdicts == want, f"{name}: the dissector's verdicts differ from the table's"

    # the expert infos by name, on exactly the packets of the frames that carry them
    for name, start in (
        ("illegal_in_state", "Warning: "),
        ("not_from_engine", "Note: a tofu"),
        ("sequence_unknown", UNKNOWN),
    ):
        carrying = sorted({f["packet"] for f in frames if any(e.startswith(start) for e in f["sequence"])})
        assert carrying, name
        assert _packets(pcap, port, f"tofu.{name}") == carrying, name
    assert len(_packets(pcap, port, "tofu.illegal_in_state")) == 3  # one per illegal case but "Request first"

    # the fields select a side's state
    refused = [f["packet"] for f in frames if f["state"] and "(refused: " in f["state"]]
    assert _packets(pcap, port, 'tofu.state contains "refused"') == refused

    # a second pass reads the verdicts the first pass made, in any order
    two_pass = decode(pcap, port, "-2")
    assert _verdicts(two_pass) == got


def test_dissector_finds_no_sequence_errors_in_engine_traffic(tmp_path: Path) -> None:
    """Two engines, the server answering the HelloRequest with a Request of
    its own as the reference's print server does: every frame legal."""
    sent, frames, _, _ = _capture_and_decode(tmp_path, engine_print_server_traffic)
    assert [(f["sender"], f["op_name"]) for f in frames] == [(w, m.bhdr.proto.op_code.name) for w, m in sent]
    assert [f["op_name"] for f in frames] == ["HelloRequest", "Request", "Response", "ByeRequest", "ByeResponse"]
    _check_no_sequence_verdicts(frames)
    assert frames[1]["state"] == "connector connecting -> open"
    assert frames[-1]["state"] == "connector bye_sent -> closed"
