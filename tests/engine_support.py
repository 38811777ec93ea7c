"""Helpers for the engine tests: listen, connect, receive with a timeout."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import tofu
from tofu import AmpeStatus, Message, OpCode

TIMEOUT = 10.0  # seconds any single wait may take before the test fails


def is_pool_empty(msg: Message) -> bool:
    return msg.is_from_engine() and msg.bhdr.status == AmpeStatus.pool_empty


def recv(group: tofu.ChannelGroup, timeout: float = TIMEOUT, skip_pool_empty: bool = True) -> Message:
    """The next message; pool_empty warnings are skipped unless asked for."""
    while True:
        msg = group.wait_receive(timeout)
        assert msg is not None, f"nothing received within {timeout} s"
        if not (skip_pool_empty and is_pool_empty(msg)):
            return msg


def recv_until(
    group: tofu.ChannelGroup, predicate: Callable[[Message], bool], timeout: float = TIMEOUT
) -> tuple[Message, list[Message]]:
    """The first message matching `predicate`, and the ones received before it."""
    before = []
    while True:
        msg = recv(group, timeout)
        if predicate(msg):
            return msg, before
        before.append(msg)


def is_closed_signal(msg: Message) -> bool:
    """The engine's channel_closed notice (Message.is_close_notice: a Signal
    of the application that comes back unsent is not one). A predicate, for
    recv_until: what the close was is assert_closed's business."""
    return msg.is_close_notice()


def assert_closed(
    msg: Message, reason: AmpeStatus | None | frozenset[AmpeStatus | None], channel: int | None = None
) -> Message:
    """`msg` is the engine's channel_closed notice of a close for `reason`:
    None for a normal close (a Bye exchange, a ByeSignal), which names no
    reason; otherwise the status its ~close_reason must name (one of a set,
    where the test cannot tell which of two closes the engine meets first;
    None in the set: or a normal close). Returns `msg`."""
    assert msg.is_close_notice(), f"not a channel_closed notice: {msg!r} {list(msg.thdrs)}"
    named = msg.thdrs.get(tofu.CLOSE_REASON_HEADER)
    if isinstance(reason, frozenset):
        names = {None if r is None else r.name for r in reason}
        assert named in names, f"channel {msg.bhdr.channel_number} closed for {named}, expected one of {names}"
    else:
        expected = None if reason is None else reason.name
        assert named == expected, f"channel {msg.bhdr.channel_number} closed for {named}, expected {expected}"
    if channel is not None:
        assert msg.bhdr.channel_number == channel, f"closed channel {msg.bhdr.channel_number}, expected {channel}"
    return msg


def make(
    op: OpCode,
    channel: int = 0,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    mid: int = 0,
    more: bool = False,
) -> Message:
    msg = Message(op)
    msg.bhdr.channel_number = channel
    msg.bhdr.message_id = mid
    if more:
        msg.bhdr.proto.more = tofu.MoreMessagesFlag.more
    for name, value in headers:
        msg.thdrs.append(name, value)
    if body:
        msg.body.append(body)
    return msg


def listen(group: tofu.ChannelGroup, address) -> tuple[int, str]:
    """Start a listener; return its channel number and the `~listen_on` it reports."""
    header = group.post(address.format(Message()))
    resp = recv(group)
    assert resp.bhdr.proto.op_code == OpCode.WelcomeResponse
    assert resp.bhdr.status == AmpeStatus.success, tofu.raw_to_status(resp.bhdr.status)
    assert resp.bhdr.channel_number == header.channel_number
    return header.channel_number, resp.thdrs.get(tofu.LISTEN_ON_HEADER)


def tcp_listen(group: tofu.ChannelGroup) -> tuple[int, int]:
    """A TCP listener on 127.0.0.1 with a port the kernel picks: (channel, port)."""
    channel, value = listen(group, tofu.TCPServerAddress("127.0.0.1", 0))
    return channel, int(value.rsplit("|", 1)[1])


def connect(client: tofu.ChannelGroup, server: tofu.ChannelGroup, address) -> tuple[int, int]:
    """Connect and complete the Hello exchange: (client channel, server channel)."""
    hello = client.post(address.format(Message()))
    req = recv(server)
    assert req.bhdr.proto.op_code == OpCode.HelloRequest, req
    server_channel = req.bhdr.channel_number
    req.bhdr.proto.op_code = OpCode.HelloResponse
    server.post(req)
    resp = recv(client)
    assert resp.bhdr.proto.op_code == OpCode.HelloResponse, resp
    assert resp.bhdr.channel_number == hello.channel_number
    return hello.channel_number, server_channel


def answer_hello(lsock: socket.socket, group: tofu.ChannelGroup, channel: int) -> socket.socket:
    """Accept, on a plain listener, the connection of `group`'s HelloRequest
    (channel `channel`) and answer it as a tofu server does: a HelloResponse,
    which the group receives, so the channel is open and may carry Requests.
    Returns the peer's socket."""
    peer, _ = lsock.accept()
    hello = read_frame(peer)
    assert hello.bhdr.proto.op_code == OpCode.HelloRequest, hello
    hello.bhdr.proto.op_code = OpCode.HelloResponse
    peer.sendall(tofu.encode(hello))
    answer = recv(group)
    assert answer.bhdr.proto.op_code == OpCode.HelloResponse and answer.bhdr.channel_number == channel, answer
    return peer


def read_exactly(sock: socket.socket, n: int, timeout: float = TIMEOUT) -> bytes:
    sock.settimeout(timeout)
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"connection closed after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


def read_frame(sock: socket.socket, timeout: float = TIMEOUT) -> Message:
    """Read one frame from a plain socket and decode it."""
    header = read_exactly(sock, tofu.HEADER_SIZE, timeout)
    thl, bl = int.from_bytes(header[12:14], "big"), int.from_bytes(header[14:16], "big")
    rest = read_exactly(sock, thl + bl, timeout) if thl + bl else b""
    (msg,) = tofu.FrameDecoder().feed(header + rest)
    return msg


def wait_for_eof(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Read until the peer closes (EOF or reset); return what came before."""
    sock.settimeout(timeout)
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


@contextlib.contextmanager
def plain_listener() -> Iterator[tuple[socket.socket, int]]:
    """A plain listening socket on 127.0.0.1 (it reads nothing by itself): (socket, port)."""
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        lsock.settimeout(TIMEOUT)
        yield lsock, lsock.getsockname()[1]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Wait until `condition()` holds (for state that no event announces)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


@contextlib.contextmanager
def io_thread_parked(rtr: tofu.Reactor) -> Iterator[None]:
    """Hold the engine's I/O thread in a callback of its own until the block
    ends: whatever reaches a socket or a receiver meanwhile did not go through
    it, and whatever is posted meanwhile waits for its next round, together."""
    parked, release = threading.Event(), threading.Event()

    def park() -> None:
        parked.set()
        release.wait(TIMEOUT)

    rtr._inbox.call_soon(park)
    assert parked.wait(TIMEOUT), "the I/O thread did not park"
    try:
        yield
    finally:
        release.set()
