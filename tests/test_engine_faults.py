"""Two engines talking through a misbehaving network (tests/faultproxy.py).

The client engine connects to the server engine through a fault-injecting
proxy, posts a stream of Requests, and the server's application echoes each
one as a Response. Under each fault, either the whole stream arrives intact
and in order both ways (latency, one-byte segments, throttled bandwidth), or
the channel closes on both sides with `channel_closed` naming an abnormal
`~close_reason` (a cut in the middle of a frame, a half-close, a reset) after
exactly the frames that were whole on the wire. No message is delivered twice
or both delivered and returned; the engine logs no error; every wait is
bounded, so a hang fails with what was awaited.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import tofu
from engine_support import TIMEOUT, is_closed_signal, make, tcp_listen
from faultproxy import Fault, FaultProxy
from tofu import AmpeStatus, Message, OpCode


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Net:
    server: tofu.ChannelGroup
    client: tofu.ChannelGroup
    port: int


@pytest.fixture
def net() -> Iterator[Net]:
    errors = _Errors()
    logger = logging.getLogger("tofu")
    logger.addHandler(errors)
    try:
        with tofu.Reactor() as server_rtr, tofu.Reactor() as client_rtr:
            server = server_rtr.ampe().create()
            _, port = tcp_listen(server)
            yield Net(server, client_rtr.ampe().create(), port)
        assert not errors.records, [r.getMessage() for r in errors.records]
    finally:
        logger.removeHandler(errors)


def _body(seq: int, size: int) -> bytes:
    return bytes((seq * 31 + i) % 251 for i in range(min(size, 256))) * (size // 256 + 1)


@dataclass
class Workload:
    sizes: list[int]
    bodies: list[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.bodies = [_body(seq, size)[:size] for seq, size in enumerate(self.sizes)]

    def frame_size(self, seq: int) -> int:
        return tofu.HEADER_SIZE + len(f"seq:{seq}\r\n") + self.sizes[seq]


def _next(group: tofu.ChannelGroup, what: str, deadline: float) -> Message:
    while True:
        left = deadline - time.monotonic()
        msg = group.wait_receive(max(left, 0))
        assert msg is not None, f"hang: no {what} within {TIMEOUT} s"
        if not (msg.is_from_engine() and msg.bhdr.status == AmpeStatus.pool_empty):
            return msg


def _connect(net: Net, proxy: FaultProxy) -> tuple[int, int]:
    """The Hello exchange through the proxy: (client channel, server channel)."""
    deadline = time.monotonic() + TIMEOUT
    hello = net.client.post(tofu.TCPClientAddress("127.0.0.1", proxy.port).format(Message()))
    req = _next(net.server, "HelloRequest", deadline)
    assert req.bhdr.proto.op_code == OpCode.HelloRequest, req
    sch = req.bhdr.channel_number
    req.bhdr.proto.op_code = OpCode.HelloResponse
    net.server.post(req)
    resp = _next(net.client, "HelloResponse", deadline)
    assert resp.bhdr.proto.op_code == OpCode.HelloResponse, resp
    return hello.channel_number, sch


@dataclass
class Outcome:
    served: list[int] = field(default_factory=list)  # seqs the server's application received
    answered: list[int] = field(default_factory=list)  # seqs of Responses the client received
    returned: list[int] = field(default_factory=list)  # seqs of Requests given back to the client
    server_closed: Message | None = None
    client_closed: Message | None = None


def _run(net: Net, proxy: FaultProxy, work: Workload, graceful: bool, arm: Callable[[], None] | None = None) -> Outcome:
    """Post the workload, echo it on the server, and collect both sides until each channel closes.
    `arm`, if given, is called once the Hello exchange went through (to arm a fault)."""
    cch, sch = _connect(net, proxy)
    if arm is not None:
        arm()
    for seq, body in enumerate(work.bodies):
        try:
            net.client.post(make(OpCode.Request, cch, body, [("seq", str(seq))]))
        except tofu.InvalidChannelNumber:
            assert not graceful, f"the channel closed while request {seq} was being posted"
            break  # a fault broke the connection before the rest were posted: they never left
    out = Outcome()
    deadline = time.monotonic() + TIMEOUT
    while out.server_closed is None:
        msg = _next(net.server, "channel_closed on the server", deadline)
        if is_closed_signal(msg) and msg.thdrs.get("seq") is None:
            assert msg.bhdr.channel_number == sch
            out.server_closed = msg
        elif msg.bhdr.proto.op_code == OpCode.Request:
            assert msg.is_from_application() and msg.bhdr.channel_number == sch
            seq = int(msg.thdrs.get("seq") or -1)
            assert bytes(msg.body) == work.bodies[seq], f"request {seq} arrived damaged"
            out.served.append(seq)
            msg.bhdr.proto.op_code = OpCode.Response
            try:
                net.server.post(msg)
            except tofu.InvalidChannelNumber:
                pass  # closed meanwhile: its channel_closed is on the way
        elif msg.bhdr.proto.op_code == OpCode.ByeRequest:
            msg.bhdr.proto.op_code = OpCode.ByeResponse
            net.server.post(msg)
        elif msg.bhdr.proto.op_code == OpCode.Response and msg.is_from_engine():
            pass  # an echo that could not be sent before the close
        else:
            raise AssertionError(f"server: unexpected {msg!r}")
        if graceful and len(out.served) == len(work.bodies) and not out.answered:
            # Every request is in: the client says goodbye once its answers are back.
            while len(out.answered) < len(work.bodies):
                got = _next(net.client, f"response {len(out.answered)}", deadline)
                assert got.bhdr.proto.op_code == OpCode.Response and got.is_from_application(), got
                out.answered.append(_check_response(got, work))
            net.client.post(make(OpCode.ByeRequest, cch))
    while out.client_closed is None:
        msg = _next(net.client, "channel_closed on the client", deadline)
        if is_closed_signal(msg) and msg.thdrs.get("seq") is None:
            assert msg.bhdr.channel_number == cch
            out.client_closed = msg
        elif msg.bhdr.proto.op_code == OpCode.Response:
            assert msg.is_from_application()
            out.answered.append(_check_response(msg, work))
        elif msg.bhdr.proto.op_code == OpCode.Request:
            assert msg.is_from_engine() and msg.bhdr.status != AmpeStatus.success, msg
            out.returned.append(int(msg.thdrs.get("seq") or -1))
        elif msg.bhdr.proto.op_code == OpCode.ByeResponse:
            assert graceful
        else:
            raise AssertionError(f"client: unexpected {msg!r}")
    _check_once(out, work)
    return out


def _check_response(msg: Message, work: Workload) -> int:
    seq = int(msg.thdrs.get("seq") or -1)
    assert bytes(msg.body) == work.bodies[seq], f"response {seq} arrived damaged"
    return seq


def _check_once(out: Outcome, work: Workload) -> None:
    n = len(work.bodies)
    assert out.served == list(range(len(out.served))), f"requests out of order or missing: {out.served}"
    assert out.answered == list(range(len(out.answered))), f"responses out of order or missing: {out.answered}"
    assert len(out.answered) <= len(out.served)
    assert not set(out.served) & set(out.returned), "a request was both delivered and returned"
    assert len(set(out.returned)) == len(out.returned) and set(out.returned) <= set(range(n))


def _reason(closed: Message | None) -> str | None:
    assert closed is not None
    return closed.thdrs.get(tofu.CLOSE_REASON_HEADER)


# ------------------------------------------------------------ the stream survives

SMALL = Workload([0, 10, 300, 1, 200, 0, 77, 150])  # ~1 KB: one-byte segments cost a syscall per byte
MIXED = Workload([0, 10, 1000, 20_000, 65_535, 5, 3000, 40_000])


@pytest.mark.parametrize(
    ("fault", "work"),
    [
        pytest.param(Fault(delay=0.02), MIXED, id="delay"),
        pytest.param(Fault(segment=1), SMALL, id="one-byte-segments"),
        pytest.param(Fault(segment=7, delay=0.001), MIXED, id="seven-byte-segments-delayed"),
        pytest.param(Fault(rate=400_000), MIXED, id="throttled"),
    ],
)
def test_slow_or_fragmented_network_keeps_the_stream_whole(net: Net, fault: Fault, work: Workload) -> None:
    with FaultProxy(("127.0.0.1", net.port), up=fault, down=fault) as proxy:
        out = _run(net, proxy, work, graceful=True)
    n = len(work.bodies)
    assert out.served == list(range(n)) and out.answered == list(range(n)) and not out.returned
    assert _reason(out.server_closed) is None and _reason(out.client_closed) is None, "a normal close has no reason"


# ------------------------------------------------------------ the stream breaks

BREAKING = Workload([100, 200, 30_000, 10, 10, 50_000, 0, 10])


@pytest.mark.parametrize("action", ["cut", "half_close", "reset"])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_a_break_mid_frame_closes_the_channel_with_a_reason(net: Net, action: str, direction: str) -> None:
    # Two whole frames, then half of the third (its 30 000-byte body): the break is mid-frame.
    offset = BREAKING.frame_size(0) + BREAKING.frame_size(1) + BREAKING.frame_size(2) // 2
    with FaultProxy(("127.0.0.1", net.port)) as proxy:

        def arm() -> None:  # after the handshake, so the Hello frames pass untouched
            fault = Fault(after=proxy.forwarded[direction] + offset, action=action)  # type: ignore[arg-type]
            if direction == "up":
                proxy.up = fault
            else:
                proxy.down = fault

        out = _run(net, proxy, BREAKING, graceful=False, arm=arm)
        assert proxy.fired.wait(TIMEOUT), "the fault never fired"
    assert _reason(out.server_closed), f"server: an abnormal close without ~close_reason ({action} {direction})"
    assert _reason(out.client_closed), f"client: an abnormal close without ~close_reason ({action} {direction})"
    if direction == "up":
        # The server saw exactly the two whole frames before the break.
        assert out.served == [0, 1] or (action == "reset" and len(out.served) <= 2), out.served
    else:
        if action == "half_close":
            # Only the way down ended, so the way up stayed whole: every request
            # the client wrote before it saw the break (and closed the channel)
            # was served, and every one it had not written yet came back.
            assert sorted(out.served + out.returned) == list(range(len(BREAKING.bodies))), (out.served, out.returned)
        assert out.answered == [0, 1] or (action == "reset" and len(out.answered) <= 2), out.answered
