"""Limits and timeouts (Options: handshake_timeout, connect_timeout,
idle_timeout, max_connections, max_unsent_bytes; post(timeout=)), over real
sockets."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
import tofu
from engine_support import (
    TIMEOUT,
    answer_hello,
    assert_closed,
    connect,
    is_closed_signal,
    make,
    plain_listener,
    read_frame,
    recv,
    recv_until,
    tcp_listen,
    wait_for,
    wait_for_eof,
)
from tofu import AmpeStatus, Message, OpCode
from tofu.channels import QUEUED_MESSAGE_COST, Connection
from tofu.window import SendWindow

SHORT = 0.3  # a timeout the tests wait out (seconds)


def _raw_connect(port: int, bufsize: int | None = None) -> socket.socket:
    sock = socket.socket()
    if bufsize is not None:  # small kernel buffers: less in flight between us and the engine
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _hello(mid: int = 1) -> bytes:
    return tofu.encode(make(OpCode.HelloRequest, 1, headers=[("~connect_to", "tcp|x|1")], mid=mid))


def _io_thread_caught_up(rtr: tofu.Reactor) -> None:
    """Wait until the I/O thread has done everything it was doing."""
    done = threading.Event()
    rtr._inbox.call_soon(done.set)
    assert done.wait(TIMEOUT)


def _close_reason(msg: Message) -> str | None:
    return msg.thdrs.get(tofu.CLOSE_REASON_HEADER)


# ------------------------------------------------------------ options


def test_defaults():
    opts = tofu.Options()
    assert 0 < opts.handshake_timeout <= 30
    assert 0 < opts.connect_timeout <= 30
    assert opts.idle_timeout is None and opts.max_connections is None
    assert opts.max_unsent_bytes == 1 << 20
    off = tofu.Options(handshake_timeout=0, connect_timeout=None, max_unsent_bytes=0)
    assert off.handshake_timeout is None and off.connect_timeout is None and off.max_unsent_bytes is None
    with pytest.raises(ValueError, match="idle_timeout"):
        tofu.Options(idle_timeout=-1)


# ------------------------------------------------------------ handshake_timeout


def test_a_silent_connection_is_closed_without_telling_the_application():
    with tofu.Reactor(tofu.Options(handshake_timeout=SHORT)) as rtr:
        group = rtr.ampe().create()
        _, port = tcp_listen(group)
        with _raw_connect(port) as sock:
            assert wait_for_eof(sock) == b""  # closed by the engine, nothing said
        _io_thread_caught_up(rtr)
        assert group.wait_receive(0) is None  # it never heard of that channel
        assert not any(isinstance(ch, Connection) for ch in rtr._table.snapshot())


def test_an_unanswered_hello_request_is_closed_with_a_reason():
    mid = 7
    with tofu.Reactor(tofu.Options(handshake_timeout=SHORT)) as rtr:
        group = rtr.ampe().create()
        _, port = tcp_listen(group)
        with _raw_connect(port) as sock:
            sock.sendall(_hello(mid=mid))
            hello = recv(group)
            assert hello.bhdr.proto.op_code == OpCode.HelloRequest
            # The application does not answer: the engine closes the channel.
            closed = assert_closed(recv(group), AmpeStatus.accept_failed, hello.bhdr.channel_number)
            assert closed.bhdr.message_id == mid
            assert "handshake_timeout" in closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER, "")
            assert wait_for_eof(sock) == b""


def test_a_completed_handshake_is_not_timed_out():
    with tofu.Reactor(tofu.Options(handshake_timeout=SHORT)) as rtr:
        client, server = rtr.ampe().create(), rtr.ampe().create()
        _, port = tcp_listen(server)
        cch, sch = connect(client, server, tofu.TCPClientAddress("127.0.0.1", port))
        # A silent connection made after the handshake times out later than
        # the handshake's deadline would have: once it is closed, that
        # deadline has passed.
        with _raw_connect(port) as sock:
            wait_for_eof(sock)
        client.post(make(OpCode.Request, cch, b"ping"))
        got = recv(server)
        assert got.bhdr.proto.op_code == OpCode.Request and got.bhdr.channel_number == sch
        got.bhdr.proto.op_code = OpCode.Response
        server.post(got)
        assert bytes(recv(client).body) == b"ping"


# ------------------------------------------------------------ connect_timeout


def test_an_unanswered_hello_request_comes_back_as_connect_failed():
    with tofu.Reactor(tofu.Options(connect_timeout=SHORT)) as rtr, plain_listener() as (lsock, port):
        client = rtr.ampe().create()
        hello = tofu.TCPClientAddress("127.0.0.1", port).format(Message())
        hello.thdrs.append("who", "me")
        header = client.post(hello)
        peer, _ = lsock.accept()
        with peer:
            assert read_frame(peer).bhdr.proto.op_code == OpCode.HelloRequest  # sent, never answered
            back = recv(client)
            assert back.bhdr.proto.op_code == OpCode.HelloRequest and back.is_from_engine()
            assert back.bhdr.status == AmpeStatus.connect_failed
            assert back.bhdr.channel_number == header.channel_number
            assert back.bhdr.message_id == header.message_id
            assert back.thdrs.get("who") == "me"
            closed = recv(client)
            assert is_closed_signal(closed) and _close_reason(closed) == "connect_failed"
            assert "connect_timeout" in closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER, "")
            assert wait_for_eof(peer) == b""
        # The returned request can be posted again as it is.
        assert not back.is_posted


def test_the_connecting_side_cannot_answer_its_own_hello_and_still_times_out():
    """The connecting side posting a HelloResponse (only the accepting side
    answers a HelloRequest) is refused by post(), and the connect timeout
    runs on: before, the HelloResponse went on the wire and, written, counted
    as the handshake done, so the connect never timed out."""
    with tofu.Reactor(tofu.Options(connect_timeout=SHORT)) as rtr, plain_listener() as (lsock, port):
        client = rtr.ampe().create()
        header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
        peer, _ = lsock.accept()
        with peer:
            assert read_frame(peer).bhdr.proto.op_code == OpCode.HelloRequest
            answer = make(OpCode.HelloResponse, header.channel_number, mid=header.message_id)
            with pytest.raises(tofu.NotAllowed, match="only the accepting side answers a HelloRequest"):
                client.post(answer)
            assert not answer.is_posted
            back = recv(client)
            assert back.bhdr.proto.op_code == OpCode.HelloRequest and back.bhdr.status == AmpeStatus.connect_failed
            closed = assert_closed(recv(client), AmpeStatus.connect_failed, header.channel_number)
            assert "connect_timeout" in closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER, "")
            assert wait_for_eof(peer) == b""  # nothing but the HelloRequest was written


def test_connect_timeout_covers_the_tcp_connect():
    # A listener that never accepts and whose backlog is full: the TCP
    # handshake of a further connect does not complete.
    with tofu.Reactor(tofu.Options(connect_timeout=SHORT)) as rtr, socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        port = lsock.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):  # fill the backlog (its size is a kernel detail)
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                fillers.append(s)
            client = rtr.ampe().create()
            header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
            back = recv(client)
            assert back.bhdr.proto.op_code == OpCode.HelloRequest
            assert back.bhdr.status == AmpeStatus.connect_failed
            assert back.bhdr.channel_number == header.channel_number
            closed = recv(client)
            assert is_closed_signal(closed)
        finally:
            for s in fillers:
                s.close()


def test_a_connection_that_is_answered_in_time_stays_open():
    with tofu.Reactor(tofu.Options(connect_timeout=SHORT, handshake_timeout=SHORT)) as rtr:
        client, server = rtr.ampe().create(), rtr.ampe().create()
        _, port = tcp_listen(server)
        cch, _ = connect(client, server, tofu.TCPClientAddress("127.0.0.1", port))
        with _raw_connect(port) as sock:  # outlives both deadlines (see above)
            wait_for_eof(sock)
        _io_thread_caught_up(rtr)
        assert client.wait_receive(0) is None and server.wait_receive(0) is None
        assert cch in rtr._table._channels


# ------------------------------------------------------------ idle_timeout


def test_an_idle_connection_is_closed():
    idle = 0.5
    # Only the server has the timeout: the client sees the server hang up.
    with tofu.Reactor(tofu.Options(idle_timeout=idle)) as srv, tofu.Reactor() as cli:
        server, client = srv.ampe().create(), cli.ampe().create()
        _, port = tcp_listen(server)
        started = time.monotonic()
        cch, sch = connect(client, server, tofu.TCPClientAddress("127.0.0.1", port))
        closed = recv(server)
        assert is_closed_signal(closed) and closed.bhdr.channel_number == sch
        assert _close_reason(closed) == "communication_failed"
        assert "idle_timeout" in closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER, "")
        assert time.monotonic() - started >= idle
        closed = recv(client)
        assert is_closed_signal(closed) and closed.bhdr.channel_number == cch
        assert _close_reason(closed) == "peer_disconnected"


def test_traffic_keeps_a_connection_open():
    idle = 1.5
    with tofu.Reactor(tofu.Options(idle_timeout=idle)) as srv, tofu.Reactor() as cli:
        server, client = srv.ampe().create(), cli.ampe().create()
        _, port = tcp_listen(server)
        cch, _ = connect(client, server, tofu.TCPClientAddress("127.0.0.1", port))
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < 1.5 * idle:  # traffic at a pace well inside the timeout
            client.post(make(OpCode.Signal, cch, b"%d" % i))
            got = recv(server)
            assert got.bhdr.proto.op_code == OpCode.Signal, got
            assert bytes(got.body) == b"%d" % i
            i += 1
            time.sleep(idle / 10)  # the pacing under test, not a synchronisation
        # Silence now: the connection goes.
        closed, _ = recv_until(server, is_closed_signal)
        assert _close_reason(closed) == "communication_failed"


# ------------------------------------------------------------ max_connections


def test_connections_past_the_limit_are_refused_and_logged_once_per_episode(caplog):
    caplog.set_level(logging.INFO, logger="tofu")
    with tofu.Reactor(tofu.Options(max_connections=2)) as rtr:
        group = rtr.ampe().create()
        _, port = tcp_listen(group)
        kept = [_raw_connect(port) for _ in range(2)]
        for sock in kept:
            sock.sendall(_hello())
        channels = [recv(group).bhdr.channel_number for _ in kept]
        refused = [_raw_connect(port) for _ in range(3)]
        for sock in refused:
            assert wait_for_eof(sock) == b""
        warnings = [r for r in caplog.records if "refusing" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in caplog.records]

        # One of the two goes: there is room for one more.
        kept[0].close()
        closed = recv(group)
        assert is_closed_signal(closed) and closed.bhdr.channel_number == channels[0]
        with _raw_connect(port) as sock:
            sock.sendall(_hello())
            assert recv(group).bhdr.proto.op_code == OpCode.HelloRequest
            # Full again: a new episode is logged again, once.
            for _ in range(2):
                with _raw_connect(port) as extra:
                    assert wait_for_eof(extra) == b""
            warnings = [r for r in caplog.records if "refusing" in r.getMessage()]
            assert len(warnings) == 2
        kept[1].close()


# ------------------------------------------------------------ post(timeout=)

WINDOW = 4


def test_post_timeout_raises_and_leaves_the_message_with_the_caller():
    with tofu.Reactor(tofu.Options(max_unsent_msgs=WINDOW, direct_send=False)) as rtr, plain_listener() as (lsock, port):
        client = rtr.ampe().create()
        header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
        peer = answer_hello(lsock, client, header.channel_number)
        with peer:
            release = threading.Event()
            rtr._inbox.call_soon(lambda: release.wait(TIMEOUT))  # the I/O thread writes nothing now
            channel = header.channel_number
            for i in range(WINDOW):
                client.post(make(OpCode.Signal, channel, b"%d" % i), timeout=0)
            late = make(OpCode.Signal, channel, b"late")
            with pytest.raises(tofu.PostTimeout) as info:
                client.post(late, timeout=SHORT)
            assert isinstance(info.value, tofu.SendFailed) and isinstance(info.value, tofu.AmpeError)
            assert info.value.status == AmpeStatus.send_failed
            assert not late.is_posted and bytes(late.body) == b"late"
            with pytest.raises(tofu.PostTimeout):
                client.post(late, timeout=0)  # 0: do not wait at all
            release.set()
            client.post(late, timeout=TIMEOUT)  # room again: the same message goes
            got = [bytes(read_frame(peer).body) for _ in range(WINDOW + 1)]
            assert got == [b"0", b"1", b"2", b"3", b"late"]


def test_a_timed_out_post_takes_no_permit():
    window = SendWindow(1)
    assert window.acquire(0)
    assert not window.acquire(0.01)
    window.release()
    assert window.acquire(0)  # the permit given back went to this post, not to the timed-out one


# ------------------------------------------------------------ flow control


class _Echo(threading.Thread):
    """A server application: accepts every HelloRequest, answers every Request."""

    def __init__(self, group: tofu.ChannelGroup) -> None:
        super().__init__(daemon=True)
        self.group = group

    def run(self) -> None:
        try:
            while True:
                msg = self.group.wait_receive()
                if msg is None or msg.is_from_engine():
                    continue
                op = msg.bhdr.proto.op_code
                if op == OpCode.HelloRequest:
                    msg.bhdr.proto.op_code = OpCode.HelloResponse
                elif op == OpCode.Request:
                    msg.bhdr.proto.op_code = OpCode.Response
                else:
                    continue
                self.group.post(msg)
        except (tofu.ShutdownStarted, tofu.NotAllowed, tofu.InvalidChannelNumber):
            return


def test_a_peer_that_does_not_read_cannot_make_the_engine_queue_without_bound():
    limit = 64 * 1024
    max_queued = 64
    body = b"x" * 2000
    frame_len = tofu.HEADER_SIZE + len(body)
    # More than the kernel can buffer both ways (tcp_rmem may let the engine's
    # receive buffer grow to tens of MiB): the sender must stall.
    count = 40_000
    opts = tofu.Options(max_unsent_bytes=limit, max_queued_msgs=max_queued)
    with tofu.Reactor(opts) as rtr:
        server = rtr.ampe().create()
        _, port = tcp_listen(server)
        echo = _Echo(server)
        echo.start()
        raw = _raw_connect(port, bufsize=64 * 1024)

        def send_all() -> None:
            raw.sendall(_hello())
            batch = b"".join(tofu.encode(make(OpCode.Request, 1, body, mid=i)) for i in range(1, 101))
            for _ in range(count // 100):
                raw.sendall(batch[:])
            # ids repeat per batch of 100: the reader checks the order by them

        sender = threading.Thread(target=send_all, daemon=True)
        raw.settimeout(None)
        sender.start()

        def raw_conn() -> Connection | None:
            for ch in list(rtr._table.snapshot()):
                if isinstance(ch, Connection) and ch.listener is not None:
                    return ch
            return None

        wait_for(lambda: raw_conn() is not None and raw_conn().throttled, "the engine to stop reading")
        conn = raw_conn()
        # What was read and not yet answered when reading stopped is bounded
        # by the group's queue and one read; then nothing more is read.
        read_size = 256 * 1024
        per_msg = frame_len + QUEUED_MESSAGE_COST
        bound = limit + (max_queued + read_size // frame_len + 2) * per_msg + 256 * 1024 + frame_len
        high = 0

        # Meanwhile another client gets its round trips.
        client = rtr.ampe().create()
        cch, _ = connect_to_echo(client, port)
        for i in range(50):
            client.post(make(OpCode.Request, cch, b"%d" % i))
            got = recv(client)
            assert got.bhdr.proto.op_code == OpCode.Response and bytes(got.body) == b"%d" % i
            high = max(high, len(conn.outbuf) + conn.queued)
        for _ in range(200):
            high = max(high, len(conn.outbuf) + conn.queued)
        assert sender.is_alive(), "the sender was never slowed down"
        assert high <= bound, (high, bound)
        assert bound < count * frame_len // 10

        # The raw client reads at last: every answer arrives, in order.
        decoder = tofu.FrameDecoder()
        raw.settimeout(TIMEOUT)
        hello = None
        answered = 0
        while answered < count:
            data = raw.recv(1 << 20)
            assert data, f"closed after {answered} answers"
            for msg in decoder.feed(data):
                if hello is None:
                    hello = msg
                    assert msg.bhdr.proto.op_code == OpCode.HelloResponse
                    continue
                assert msg.bhdr.proto.op_code == OpCode.Response
                assert msg.bhdr.message_id == answered % 100 + 1
                assert len(msg.body) == len(body)
                answered += 1
        sender.join(TIMEOUT)
        assert not sender.is_alive()
        raw.close()


def connect_to_echo(client: tofu.ChannelGroup, port: int) -> tuple[int, None]:
    """Connect to the echo server (its application answers the Hello)."""
    header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
    resp = recv(client)
    assert resp.bhdr.proto.op_code == OpCode.HelloResponse, resp
    return header.channel_number, None


def test_connections_this_engine_opened_are_not_throttled():
    with tofu.Reactor(tofu.Options(max_unsent_bytes=1024)) as rtr, plain_listener() as (lsock, port):
        client = rtr.ampe().create()
        header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
        peer = answer_hello(lsock, client, header.channel_number)
        with peer:
            release = threading.Event()
            rtr._inbox.call_soon(lambda: release.wait(TIMEOUT))
            for _ in range(10):
                client.post(make(OpCode.Signal, header.channel_number, b"y" * 1000))
            release.set()
            _io_thread_caught_up(rtr)
            conn = rtr._table.get(header.channel_number)
            assert not conn.throttled
            for _ in range(10):
                read_frame(peer)
