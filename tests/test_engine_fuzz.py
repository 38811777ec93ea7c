"""Whatever bytes a peer sends, the engine stays up: property tests over real sockets.

One engine serves the whole module. Each example connects a plain socket to
its listener, writes a byte stream in arbitrary pieces (random bytes, or real
frames that were cut, spliced or had bytes flipped), and closes its side. The
engine must close that channel (the application hears channel_closed and the
socket sees EOF), log no internal error, and keep a healthy channel beside it
working. Every message it delivers on the way is safe to inspect: its text
headers read without raising, and status, origin, internal bits and `more`
are what a well-behaved peer could send.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Iterator

import pytest
import tofu
from engine_support import TIMEOUT, connect, is_closed_signal, make, recv, tcp_listen, wait_for_eof
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import small_frame_specs
from tofu import OpCode


class _Errors(logging.Handler):
    """Collects the engine's ERROR records (an internal error is logged at ERROR)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Engine:
    def __init__(self, rtr: tofu.Reactor) -> None:
        self.ampe = rtr.ampe()
        self.server = self.ampe.create()
        _, self.port = tcp_listen(self.server)
        self.client = self.ampe.create()
        self.good, self.good_here = connect(self.client, self.server, tofu.TCPClientAddress("127.0.0.1", self.port))


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    errors = _Errors()
    logger = logging.getLogger("tofu")
    logger.addHandler(errors)
    try:
        with tofu.Reactor() as rtr:
            yield Engine(rtr)
        assert not errors.records, [r.getMessage() for r in errors.records]
    finally:
        logger.removeHandler(errors)


def _mutated(data: bytes, flips: list[tuple[int, int]], cut: int | None, splice: bytes) -> bytes:
    buf = bytearray(data)
    for at, value in flips:
        if buf:
            buf[at % len(buf)] = value
    if cut is not None and buf:
        buf = buf[: cut % len(buf)]
    return bytes(buf) + splice


frames = st.lists(small_frame_specs, min_size=1, max_size=6).map(
    lambda specs: b"".join(tofu.encode(spec.message()) for spec in specs)
)
mutated_frames = st.builds(
    _mutated,
    frames,
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    st.none() | st.integers(0, 10_000),
    st.binary(max_size=40),
)
streams = st.one_of(st.binary(min_size=1, max_size=3000), mutated_frames, frames)
# Half the streams open with a good HelloRequest, so what follows it is tried
# past the handshake too.
_HELLO = tofu.encode(make(OpCode.HelloRequest, 1, headers=[("~connect_to", "tcp|h|1")], mid=1))
opened_streams = st.tuples(st.booleans(), streams).map(lambda t: _HELLO + t[1] if t[0] else t[1])


def _assert_safe_to_inspect(msg: tofu.Message) -> None:
    """What the engine delivers from a peer can be read without raising, and
    carries nothing the peer may not set."""
    p = msg.bhdr.proto
    assert msg.is_from_application() and msg.bhdr.status == 0
    assert (p.internal_a, p.internal_b) == (0, 0)
    assert p.op_code.on_wire and p.op_code is not OpCode.HelloResponse  # this side accepted
    assert not p.more or p.get_type() == tofu.MessageType.regular
    for name, _ in msg.thdrs:
        assert msg.thdrs.get(name) is not None


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=120, deadline=None)
@given(data=opened_streams, cuts=st.lists(st.integers(0, 10_000), max_size=5))
def test_any_byte_stream_closes_only_its_own_channel(engine: Engine, data: bytes, cuts: list[int]) -> None:
    """Whatever a peer sends, its channel closes (the engine closes the
    socket) and the healthy channel beside it goes on. What reaches the
    application is safe to inspect; it hears of the channel (a HelloRequest
    first, a channel_closed notice last) only if the peer said hello."""
    with socket.create_connection(("127.0.0.1", engine.port), timeout=TIMEOUT) as peer:
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for piece in _pieces(data, cuts):
                peer.sendall(piece)
            peer.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the engine already closed the channel on a bad frame
        wait_for_eof(peer)  # the engine closed the socket
    # The close was one step of the I/O thread: what it gave the application
    # is queued before the Signal the healthy channel sends now.
    engine.client.post(make(OpCode.Signal, engine.good, b"still here"))
    bad: list[tofu.Message] = []
    while (msg := recv(engine.server)).bhdr.channel_number != engine.good_here:
        bad.append(msg)
    assert bytes(msg.body) == b"still here"
    engine.ampe.put(msg)
    if bad:
        *frames, closed = bad
        assert frames and frames[0].bhdr.proto.op_code == OpCode.HelloRequest, bad
        assert closed.is_close_notice() and closed.bhdr.message_id == frames[0].bhdr.message_id, bad
        for frame in frames:
            _assert_safe_to_inspect(frame)  # whatever frames got through reach the application
    for m in bad:
        engine.ampe.put(m)
