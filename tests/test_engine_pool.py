"""The message pool under traffic: ordinary traffic with the default Options
reuses messages and never hears `pool_empty`; an application that keeps what
it receives hears it once per shortage (docs/concepts.md)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import tofu
from engine_support import TIMEOUT, connect, is_pool_empty, make, recv, tcp_listen
from tofu import AllocationStrategy, AmpeStatus, Message, OpCode


def _count_data(group: tofu.ChannelGroup, ampe: tofu.Ampe, n: int, notices: list[Message]) -> bytes:
    """Receive `n` Signals from the peer, putting each back; collect pool_empty notices."""
    data = bytearray()
    got = 0
    while got < n:
        msg = recv(group, skip_pool_empty=False)
        if is_pool_empty(msg):
            notices.append(msg)
        elif msg.bhdr.proto.op_code == OpCode.Signal and msg.is_from_application():
            data += bytes(msg.body)
            got += 1
        ampe.put(msg)
    return bytes(data)


@pytest.fixture(params=["two engines", "one engine"])
def pair(request) -> Iterator[tuple[tofu.Ampe, tofu.ChannelGroup, tofu.Ampe, tofu.ChannelGroup, int]]:
    """(sender's ampe, sender's group, receiver's ampe, receiver's group, sender's channel), default Options."""
    with tofu.Reactor() as rtr1, tofu.Reactor() as rtr2:
        a1 = rtr1.ampe()
        a2 = rtr2.ampe() if request.param == "two engines" else a1
        sender, receiver = a1.create(), a2.create()
        _, port = tcp_listen(receiver)
        channel, _ = connect(sender, receiver, tofu.TCPClientAddress("127.0.0.1", port))
        yield a1, sender, a2, receiver, channel


def test_a_5_mb_upload_in_64_kib_chunks_hears_no_pool_empty(pair):
    ampe, sender, r_ampe, receiver, channel = pair
    chunk = tofu.MAX_BODY_LEN  # the largest body a message takes; 65536 is refused by body.append
    upload = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    parts = [upload[i : i + chunk] for i in range(0, len(upload), chunk)]
    notices: list[Message] = []
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(_count_data(receiver, r_ampe, len(parts), notices)))
    reader.start()
    for part in parts:
        msg = ampe.get(AllocationStrategy.always)
        msg.bhdr.proto.op_code = OpCode.Signal
        msg.bhdr.channel_number = channel
        msg.body.append(part)
        sender.post(msg)
    reader.join(TIMEOUT * 3)
    assert got == [upload]
    assert notices == []


def test_a_fast_sender_of_small_messages_hears_no_pool_empty(pair):
    """The receiver starts only once everything is posted: its queue fills
    to the backpressure bound and past it by a read, more than the reference's
    64-message pool ever held, and still no pool_empty."""
    ampe, sender, r_ampe, receiver, channel = pair
    n = 5000
    for i in range(n):
        msg = ampe.get(AllocationStrategy.always)
        msg.bhdr.proto.op_code = OpCode.Signal
        msg.bhdr.channel_number = channel
        msg.body.append(b"%063d" % i)
        sender.post(msg)
    notices: list[Message] = []
    data = _count_data(receiver, r_ampe, n, notices)
    assert data == b"".join(b"%063d" % i for i in range(n))
    assert notices == []


def test_a_send_window_is_served_from_the_pool():
    """With a window of 1000, the messages written come back to the pool and
    the next get() takes them: the pool keeps the window, not just 64."""
    with tofu.Reactor(tofu.Options(max_unsent_msgs=1000)) as rtr, tofu.Reactor() as peer:
        ampe, p_ampe = rtr.ampe(), peer.ampe()
        sender, receiver = ampe.create(), p_ampe.create()
        _, port = tcp_listen(receiver)
        channel, _ = connect(sender, receiver, tofu.TCPClientAddress("127.0.0.1", port))
        posted = [ampe.get(AllocationStrategy.always) for _ in range(1000)]
        for msg in posted:
            msg.bhdr.proto.op_code = OpCode.Signal
            msg.bhdr.channel_number = channel
            sender.post(msg)
        _count_data(receiver, p_ampe, 1000, [])
        # One more message: the I/O thread takes it up only after the write
        # that sent the last of the 1000 has put them all back.
        marker = Message(OpCode.Signal)  # not from the pool, which must hold the 1000
        marker.bhdr.proto.op_code = OpCode.Signal
        marker.bhdr.channel_number = channel
        sender.post(marker)
        _count_data(receiver, p_ampe, 1, [])
        again = [ampe.get(AllocationStrategy.poolOnly) for _ in range(1000)]
        assert all(m is not None for m in again)


def _raw_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_an_application_that_keeps_messages_hears_pool_empty_once_per_shortage():
    # The pool keeps 4 (max_queued_msgs); the application keeps what it receives.
    with tofu.Reactor(tofu.Options(initial_pool_msgs=1, max_pool_msgs=1, max_queued_msgs=4)) as rtr:
        ampe = rtr.ampe()
        group = ampe.create()
        _, port = tcp_listen(group)
        with _raw_connect(port) as sock:
            sock.sendall(tofu.encode(make(OpCode.HelloRequest, 1, headers=[("~connect_to", "x")], mid=1)))
            ampe.put(recv(group))
            held: list[Message] = []

            def burst(tag: int) -> list[Message]:
                """10 Signals the application keeps, then a ping it puts back:
                the notices of the burst come before the ping."""
                frames = b"".join(tofu.encode(make(OpCode.Signal, 1, b"%d" % i)) for i in range(10))
                sock.sendall(frames)
                notices = []
                for _ in range(10):
                    msg = recv(group, skip_pool_empty=False)
                    while is_pool_empty(msg):
                        notices.append(msg)
                        msg = recv(group, skip_pool_empty=False)
                    held.append(msg)
                sock.sendall(tofu.encode(make(OpCode.Signal, 1, b"ping %d" % tag)))
                while bytes((msg := recv(group, skip_pool_empty=False)).body) != b"ping %d" % tag:
                    assert is_pool_empty(msg), msg
                    notices.append(msg)
                ampe.put(msg)
                return notices

            first = [n for tag in range(4) for n in burst(tag)]
            assert len(first) == 1  # one shortage, told once
            notice = first[0]
            assert notice.is_from_engine() and notice.bhdr.proto.op_code == OpCode.Signal
            assert notice.bhdr.status == AmpeStatus.pool_empty and bytes(notice.body) == b""

            for msg in held:  # the application gives everything back: the shortage is over
                ampe.put(msg)
            held.clear()
            second = [n for tag in range(4, 8) for n in burst(tag)]
            assert len(second) == 1  # a new shortage, told once
