"""Direct receives (runtime/direct_receive.py, Options.direct_receive): a
thread waiting in wait_receive() on a group whose one connection is idle
reads and decodes that socket itself; otherwise the I/O thread reads it.
Over real sockets: what each path delivers and in what order, a peer that
closes, says bye or breaks the rules while the receiver reads (the same
messages, statuses and notices as through the I/O thread), everything that
must wake a receiver blocked on its socket, when it must not read directly
(a second connection, TLS, tofu.aio), the timeouts and backpressure; a close
never waits for the receiving thread (a receiver parked in poll(), or
between decoding and queueing, while its channel closes); the lease (no
wake-up of the I/O thread while a receiver waits, and a socket whose thread
stopped receiving goes back to the I/O thread); SIGINT, and an interrupt
right after a read."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tofu
import tofu.aio
from engine_support import (
    TIMEOUT,
    connect,
    io_thread_parked,
    is_closed_signal,
    listen,
    make,
    plain_listener,
    read_frame,
    recv,
    wait_for,
)
from tls_support import Pems
from tofu import AmpeStatus, Message, OpCode
from tofu.channels import APP, HANDED_BACK, IO, Connection
from tofu.groups import mailbox_of


@contextlib.contextmanager
def raw_peer(rtr: tofu.Reactor, client: tofu.ChannelGroup) -> Iterator[tuple[socket.socket, Connection]]:
    """A plain socket that accepted a tofu connection and answered its
    HelloRequest: (the socket, the client's connection)."""
    with plain_listener() as (lsock, port):
        header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
        peer, _ = lsock.accept()
        with peer:
            hello = read_frame(peer)
            assert hello.bhdr.proto.op_code == OpCode.HelloRequest
            peer.sendall(tofu.encode(make(OpCode.HelloResponse, 1, mid=hello.bhdr.message_id)))
            answer = recv(client)
            assert answer.bhdr.proto.op_code == OpCode.HelloResponse
            conn = rtr._table.get(header.channel_number)
            assert isinstance(conn, Connection)
            yield peer, conn


class Receiver(threading.Thread):
    """Receives on `group` with wait_receive(`timeout`) until `done(msg)`;
    `on_message` may answer (it runs on this thread)."""

    def __init__(
        self,
        group: tofu.ChannelGroup,
        done: Callable[[Message], bool] = is_closed_signal,
        timeout: float | None = None,
        on_message: Callable[[Message], None] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.group = group
        self.done = done
        self.timeout = timeout
        self.on_message = on_message
        self.got: list[Message] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                msg = self.group.wait_receive(self.timeout)
                if msg is None:
                    continue
                self.got.append(msg)
                if self.on_message is not None:
                    self.on_message(msg)
                if self.done(msg):
                    return
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc

    def finish(self) -> list[Message]:
        self.join(TIMEOUT)
        assert not self.is_alive(), f"the receiver is still waiting; it got {self.got}"
        return self.got


def reading_directly(conn: Connection) -> None:
    wait_for(lambda: conn.polling, "the receiver to read its connection itself")


def signal_frame(body: bytes, mid: int = 0) -> bytes:
    return tofu.encode(make(OpCode.Signal, 1, body, mid=mid))


def summary(msg: Message) -> tuple[object, ...]:
    """What the application can tell of a message."""
    return (
        OpCode(msg.bhdr.proto.op_code).name,
        tofu.raw_to_status(msg.bhdr.status),
        msg.is_from_engine(),
        msg.thdrs.get(tofu.CLOSE_REASON_HEADER),
        bytes(msg.body),
    )


# ---------------------------------------------------------------- the paths


@pytest.mark.parametrize("transport", ["tcp", "uds"])
def test_a_waiting_receiver_reads_its_connection_itself(transport: str) -> None:
    """The I/O thread is parked: the frames reach the receiver all the same,
    so it read them itself; between receives the socket is the I/O thread's."""
    with tofu.Reactor() as srv, tofu.Reactor() as cli:
        server, client = srv.ampe().create(), cli.ampe().create()
        if transport == "tcp":
            _, value = listen(server, tofu.TCPServerAddress("127.0.0.1", 0))
            address: tofu.Address = tofu.TCPClientAddress("127.0.0.1", int(value.split("|")[-1]))
        else:
            path = tofu.temp_uds_path()
            listen(server, tofu.UDSServerAddress(path))
            address = tofu.UDSClientAddress(path)
        channel, server_channel = connect(client, server, address)
        conn = cli._table.get(channel)
        assert isinstance(conn, Connection)
        assert mailbox_of(client).sole is conn
        for i in range(20):
            with io_thread_parked(cli):
                server.post(make(OpCode.Signal, server_channel, b"%d" % i))
                got = recv(client)
                assert bytes(got.body) == b"%d" % i
                assert conn.reader == APP and not conn.polling  # lent: kept for the next receive
        # A receiver that stops receiving: its socket is the I/O thread's again within the lease.
        wait_for(lambda: conn.reader == IO and bool(conn.events), "the lease to give the socket back")
        server.post(make(OpCode.Signal, server_channel, b"late"))
        wait_for(lambda: client.pending() == 1, "the I/O thread to read it")


def test_order_across_the_direct_and_the_queued_paths() -> None:
    """Frames read by the receiver and frames read by the I/O thread (while
    the receiver does something else), cut anywhere, arrive in order."""
    total = 600
    stream = b"".join(signal_frame(b"%05d" % i + b"." * (i % 97), mid=i + 1) for i in range(total))
    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (peer, conn):
            received: list[int] = []
            rounds = 0

            def receive_some(direct: bool) -> None:
                if direct:  # the peer writes while the receiver waits: it reads them itself
                    msg = client.wait_receive(TIMEOUT)
                    assert msg is not None
                    received.append(int(bytes(msg.body)[:5]))
                while (msg := client.wait_receive(0)) is not None:
                    received.append(int(bytes(msg.body)[:5]))

            pos = 0
            cut = 1
            while pos < len(stream):
                rounds += 1
                cut = cut * 7 % 1531 + 1  # pieces of 1..1531 bytes: frames split anywhere
                piece = stream[pos : pos + cut]
                pos += len(piece)
                if rounds % 3:
                    # The receiver waits first (directly, with nothing queued), then the piece comes.
                    sender = threading.Timer(0.001, peer.sendall, args=(piece,))
                    sender.start()
                    if not client.pending():
                        msg = client.wait_receive(0.2)
                        if msg is not None:
                            received.append(int(bytes(msg.body)[:5]))
                    sender.join(TIMEOUT)
                    receive_some(False)
                else:
                    # The I/O thread reads it: the receiver looks only later.
                    peer.sendall(piece)
                    time.sleep(0.002)
                    receive_some(False)
            while len(received) < total:
                msg = client.wait_receive(TIMEOUT)
                assert msg is not None, f"stalled after {len(received)} of {total}"
                received.append(int(bytes(msg.body)[:5]))
            assert received == list(range(total))
            assert not conn.polling


def test_a_timeout_inside_a_frame_leaves_the_rest_to_the_io_thread() -> None:
    """A direct receive that times out with half a frame read leaves it in
    the decoder; the I/O thread completes it; and the other way round."""
    frames = [signal_frame(b"first" * 50, mid=1), signal_frame(b"second" * 50, mid=2)]
    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (peer, conn):
            peer.sendall(frames[0][:30])  # the receiver reads this itself, then times out
            assert client.wait_receive(0.2) is None
            # It waited longer than the lease's period: it gave the socket back on its way out.
            assert conn.reader == IO and not conn.polling and conn.protocol.decoder.pending == 30
            peer.sendall(frames[0][30:] + frames[1][:20])  # the I/O thread completes it
            wait_for(lambda: client.pending() == 1, "the I/O thread to complete the frame")
            assert bytes(recv(client).body) == b"first" * 50
            assert conn.protocol.decoder.pending == 20
            with io_thread_parked(rtr):  # now the receiver completes what the I/O thread began
                threading.Timer(0.05, peer.sendall, args=(frames[1][20:],)).start()
                assert bytes(recv(client).body) == b"second" * 50


# ------------------------------------------- the same results as the I/O thread's


def peer_session(
    direct: bool, act: Callable[[socket.socket], None], answer_bye: bool = False
) -> list[tuple[object, ...]]:
    """A receiver waits on a raw peer's connection (reading it itself when
    `direct`); the peer does `act`; what the receiver got, up to the
    channel_closed notice."""
    with tofu.Reactor(tofu.Options(direct_receive=direct)) as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (peer, conn):

            def on_message(msg: Message) -> None:
                if answer_bye and msg.bhdr.proto.op_code == OpCode.ByeRequest:
                    client.post(make(OpCode.ByeResponse, msg.bhdr.channel_number, mid=msg.bhdr.message_id))

            receiver = Receiver(client, on_message=on_message)
            receiver.start()
            if direct:
                reading_directly(conn)
            else:
                time.sleep(0.05)
                assert conn.reader == IO
            act(peer)
            got = receiver.finish()
            assert receiver.error is None, receiver.error
            wait_for(lambda: conn.closed, "the channel to close")
            return [summary(m) for m in got]


def _close(peer: socket.socket) -> None:
    peer.sendall(signal_frame(b"before", mid=7))
    peer.shutdown(socket.SHUT_WR)


def _reset(peer: socket.socket) -> None:
    peer.sendall(signal_frame(b"before", mid=7))
    time.sleep(0.05)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.close()


def _half_frame_then_close(peer: socket.socket) -> None:
    peer.sendall(signal_frame(b"before", mid=7) + signal_frame(b"cut", mid=8)[:20])
    peer.shutdown(socket.SHUT_WR)


def _bye(peer: socket.socket) -> None:
    peer.sendall(signal_frame(b"before", mid=7) + tofu.encode(make(OpCode.ByeRequest, 1, mid=9)))
    answer = read_frame(peer)
    assert answer.bhdr.proto.op_code == OpCode.ByeResponse
    peer.shutdown(socket.SHUT_WR)


def _refused(peer: socket.socket) -> None:
    hello = make(OpCode.HelloRequest, 1, headers=[("~connect_to", "x")], mid=11)
    peer.sendall(signal_frame(b"before", mid=7) + tofu.encode(hello) + signal_frame(b"after", mid=12))


def _broken(peer: socket.socket) -> None:
    frame = bytearray(signal_frame(b"bad", mid=13))
    frame[2] = 0x3F  # the proto byte: an op code that does not exist
    peer.sendall(signal_frame(b"before", mid=7) + bytes(frame))


def _bad_more(peer: socket.socket) -> None:
    peer.sendall(signal_frame(b"before", mid=7))
    time.sleep(0.05)
    bye = make(OpCode.ByeRequest, 1, mid=14)
    bye.bhdr.proto.more = tofu.MoreMessagesFlag.more
    peer.sendall(tofu.encode(bye))


@pytest.mark.parametrize(
    ("act", "answer_bye"),
    [
        (_close, False),
        (_reset, False),
        (_half_frame_then_close, False),
        (_bye, True),
        (_refused, False),
        (_broken, False),
        (_bad_more, False),
    ],
    ids=["close", "reset", "half-frame", "bye", "refused", "invalid-op-code", "invalid-more"],
)
def test_a_peer_that_ends_while_the_receiver_reads_gives_what_the_io_thread_gives(
    act: Callable[[socket.socket], None], answer_bye: bool
) -> None:
    direct = peer_session(True, act, answer_bye)
    queued = peer_session(False, act, answer_bye)
    assert direct == queued
    assert direct[0][-1] == b"before" and direct[-1][0] == "Signal" and direct[-1][1] == AmpeStatus.channel_closed


# ------------------------------------------------------------- wake-ups


def test_update_receiver_wakes_a_direct_reader() -> None:
    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (peer, conn):
            for _ in range(3):
                receiver = Receiver(client, done=lambda m: True)
                receiver.start()
                reading_directly(conn)
                client.update_receiver()
                (got,) = receiver.finish()
                assert got.bhdr.status == AmpeStatus.receiver_update
                assert not conn.polling
            peer.sendall(signal_frame(b"still here"))
            assert bytes(recv(client).body) == b"still here"


def test_a_delivery_from_the_io_thread_wakes_a_direct_reader() -> None:
    """A second connection opened while the receiver reads the first: its
    HelloResponse, delivered by the I/O thread, wakes the receiver; from then
    on the group has two connections and receives through the queue."""
    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (peer, conn), plain_listener() as (lsock, port):
            receiver = Receiver(client, done=lambda m: True)
            receiver.start()
            reading_directly(conn)
            second = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
            peer2, _ = lsock.accept()
            with peer2:
                hello = read_frame(peer2)
                peer2.sendall(tofu.encode(make(OpCode.HelloResponse, 1, mid=hello.bhdr.message_id)))
                (got,) = receiver.finish()
                assert got.bhdr.proto.op_code == OpCode.HelloResponse
                assert got.bhdr.channel_number == second.channel_number
                assert mailbox_of(client).sole is None
                # Two connections: the receiver waits on the queue, the I/O thread reads both.
                receiver = Receiver(client, done=lambda m: len(receiver.got) == 2)
                receiver.start()
                time.sleep(0.05)
                assert conn.reader == IO
                peer.sendall(signal_frame(b"one"))
                peer2.sendall(signal_frame(b"two"))
                assert sorted(bytes(m.body) for m in receiver.finish()) == [b"one", b"two"]


@pytest.mark.parametrize("what", ["group", "engine"])
def test_destroying_the_group_or_the_engine_wakes_a_direct_reader(what: str) -> None:
    rtr = tofu.Reactor()
    try:
        ampe = rtr.ampe()
        client = ampe.create()
        with raw_peer(rtr, client) as (_, conn):
            receiver = Receiver(client, done=lambda m: False)
            receiver.start()
            reading_directly(conn)
            if what == "group":
                ampe.destroy(client)
            else:
                rtr.destroy()
            receiver.finish()
            assert isinstance(receiver.error, tofu.ShutdownStarted)
            assert conn.closed and conn.sock is not None and conn.sock.fileno() == -1
            if what == "engine":  # the channel's close came before the end
                assert [summary(m)[3] for m in receiver.got] == ["shutdown_started"]
            assert mailbox_of(client).reading is None  # its wake-up sockets are closed
    finally:
        rtr.destroy()


def test_an_idle_timeout_closes_a_connection_a_receiver_reads() -> None:
    with tofu.Reactor(tofu.Options(idle_timeout=0.3)) as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (_, conn):
            receiver = Receiver(client)
            receiver.start()
            reading_directly(conn)
            (closed,) = receiver.finish()
            assert closed.thdrs.get(tofu.CLOSE_REASON_HEADER) == "communication_failed"


def test_traffic_read_directly_keeps_an_idle_timeout_away() -> None:
    with tofu.Reactor(tofu.Options(idle_timeout=0.4)) as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (peer, conn):
            for i in range(8):
                threading.Timer(0.1, peer.sendall, args=(signal_frame(b"%d" % i),)).start()
                assert bytes(recv(client).body) == b"%d" % i
            assert not conn.closed


# ------------------------------------------------------ when it must not


def test_with_direct_receive_off_the_io_thread_reads() -> None:
    with tofu.Reactor(tofu.Options(direct_receive=False)) as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (peer, conn):
            receiver = Receiver(client, done=lambda m: True)
            receiver.start()
            time.sleep(0.1)
            assert conn.reader == IO
            peer.sendall(signal_frame(b"x"))
            assert bytes(receiver.finish()[0].body) == b"x"
            assert mailbox_of(client).reading is None


def test_a_group_with_two_connections_receives_through_the_queue() -> None:
    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (peer, conn), raw_peer(rtr, client) as (peer2, conn2):
            assert mailbox_of(client).sole is None
            for i in range(10):
                receiver = Receiver(client, done=lambda m: True, timeout=TIMEOUT)
                receiver.start()
                time.sleep(0.01)
                assert conn.reader == IO and conn2.reader == IO
                (peer if i % 2 else peer2).sendall(signal_frame(b"%d" % i))
                assert bytes(receiver.finish()[0].body) == b"%d" % i
            assert mailbox_of(client).reading is None
        wait_for(lambda: mailbox_of(client).sole is None, "both closed")


def test_a_listener_does_not_count_but_a_second_accepted_connection_does() -> None:
    """A server's group: its listener and one accepted connection read
    directly; a second accepted connection sends it back to the queue."""
    with tofu.Reactor() as srv, tofu.Reactor() as cli:
        server, client = srv.ampe().create(), cli.ampe().create()
        _, value = listen(server, tofu.TCPServerAddress("127.0.0.1", 0))
        address = tofu.TCPClientAddress("127.0.0.1", int(value.split("|")[-1]))
        channel, server_channel = connect(client, server, address)
        conn = srv._table.get(server_channel)
        assert isinstance(conn, Connection) and mailbox_of(server).sole is conn
        with io_thread_parked(srv):
            client.post(make(OpCode.Request, channel, b"direct"))
            assert bytes(recv(server).body) == b"direct"
        other = cli.ampe().create()
        connect(other, server, address)
        assert mailbox_of(server).sole is None


def test_tls_is_never_read_directly(tmp_path: Path) -> None:
    pems = Pems(tmp_path)
    options = tofu.Options(
        tls_server_context=tofu.server_tls_context(pems.server),
        tls_client_context=tofu.client_tls_context(ca=pems.ca_pem),
    )
    with tofu.Reactor(options) as rtr:
        ampe = rtr.ampe()
        server, client = ampe.create(), ampe.create()
        _, value = listen(server, tofu.TLSServerAddress("127.0.0.1", 0))
        channel, server_channel = connect(client, server, tofu.TLSClientAddress("127.0.0.1", int(value.split("|")[-1])))
        conn = rtr._table.get(channel)
        assert isinstance(conn, Connection) and mailbox_of(client).sole is conn
        for i in range(5):
            receiver = Receiver(client, done=lambda m: True)
            receiver.start()
            time.sleep(0.02)
            assert conn.reader == IO
            server.post(make(OpCode.Signal, server_channel, b"%d" % i))
            assert bytes(receiver.finish()[0].body) == b"%d" % i
        assert mailbox_of(client).reading is None and mailbox_of(server).reading is None


def test_aio_groups_receive_through_the_queue() -> None:
    async def main(rtr: tofu.Reactor, client: tofu.ChannelGroup, peer: socket.socket) -> list[bytes]:
        async with tofu.aio.wrap(client) as agroup:
            got = []
            for i in range(5):
                loop = asyncio.get_running_loop()
                loop.call_later(0.01, peer.sendall, signal_frame(b"%d" % i))
                msg = await agroup.receive(TIMEOUT)
                assert msg is not None
                got.append(bytes(msg.body))
            return got

    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (peer, conn):
            assert asyncio.run(main(rtr, client, peer)) == [b"%d" % i for i in range(5)]
            assert conn.reader == IO and mailbox_of(client).reading is None


# ------------------------------------------------------ interrupts, limits


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_sigint_interrupts_a_direct_reader_in_the_main_thread(timeout: float | None) -> None:
    """A real SIGINT interrupts the main thread's poll() on its socket. (A
    signal that lands just before poll() is only acted on after it returns:
    so SIGINT comes again every 10 ms until one has raised; the handler
    raises once.)"""
    assert threading.current_thread() is threading.main_thread()
    interrupted = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if not interrupted.is_set():
            interrupted.set()
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        with tofu.Reactor() as rtr:
            client = rtr.ampe().create()
            with raw_peer(rtr, client) as (peer, conn):
                main = threading.get_ident()

                def interrupt() -> None:
                    reading_directly(conn)
                    while not interrupted.wait(0.01):
                        signal.pthread_kill(main, signal.SIGINT)

                interrupter = threading.Thread(target=interrupt, daemon=True)
                interrupter.start()
                start = time.monotonic()
                with pytest.raises(KeyboardInterrupt):
                    client.wait_receive(timeout)
                assert time.monotonic() - start < TIMEOUT
                interrupter.join(TIMEOUT)
                assert not conn.polling and not mailbox_of(client).waiting
                peer.sendall(signal_frame(b"after"))
                assert bytes(recv(client).body) == b"after"
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_burst_read_directly_still_pauses_reading_at_max_queued_msgs() -> None:
    """One direct read brings many frames: the rest go to the queue, and past
    max_queued_msgs the engine stops reading until the receiver catches up."""
    limit, total = 8, 400
    with tofu.Reactor(tofu.Options(max_queued_msgs=limit)) as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (peer, _):
            mailbox = mailbox_of(client)
            burst = b"".join(signal_frame(b"%d" % i, mid=i + 1) for i in range(total))
            with io_thread_parked(rtr):
                threading.Timer(0.05, peer.sendall, args=(burst,)).start()
                first = recv(client)
                assert bytes(first.body) == b"0"
                queued = client.pending()
                assert queued >= limit, queued  # one read brought many
            wait_for(lambda: mailbox.paused, "reading to pause")
            numbers = [0]
            while len(numbers) < total:
                numbers.append(int(bytes(recv(client).body)))
                assert client.pending() <= max(queued, limit) + 1
            assert numbers == list(range(total))
            wait_for(lambda: not mailbox.paused, "reading to resume")


def test_request_response_both_sides_read_directly_and_in_order() -> None:
    """Many round trips between two engines, each answered by a thread, every
    receive able to go either way: every answer matches its request."""
    with tofu.Reactor() as srv, tofu.Reactor() as cli:
        server, client = srv.ampe().create(), cli.ampe().create()
        _, value = listen(server, tofu.TCPServerAddress("127.0.0.1", 0))
        channel, _ = connect(client, server, tofu.TCPClientAddress("127.0.0.1", int(value.split("|")[-1])))
        n = 2000

        def echo() -> None:
            for _ in range(n):
                msg = recv(server)
                msg.bhdr.proto.op_code = OpCode.Response
                server.post(msg)

        echoer = threading.Thread(target=echo, daemon=True)
        echoer.start()
        for i in range(n):
            client.post(make(OpCode.Request, channel, i.to_bytes(4, "big")))
            answer = recv(client, timeout=TIMEOUT if i % 7 else None)  # type: ignore[arg-type]
            assert answer.bhdr.proto.op_code == OpCode.Response
            assert int.from_bytes(bytes(answer.body), "big") == i
        echoer.join(TIMEOUT)
        assert not echoer.is_alive()


# ------------------------------------------------------ a close never waits


PROMPT = 2.0  # seconds: what "at once" may take on a loaded machine (the old close waited up to 10 s)


class ParkedPoll:
    """Stands in for a group's poll object (Reading.poll): poll() waits until
    the test releases it, then polls. The receiving thread is in
    wait_receive(), on its socket, and answers no wake-up until the test
    says: a thread slow to answer, or not scheduled."""

    def __init__(self, poll: Any) -> None:
        self._poll = poll
        self.entered = threading.Event()
        self.release = threading.Event()

    def register(self, fd: int, mask: int) -> None:
        self._poll.register(fd, mask)

    def unregister(self, fd: int) -> None:
        self._poll.unregister(fd)

    def poll(self, timeout: int | None = None) -> list[tuple[int, int]]:
        self.entered.set()
        self.release.wait(TIMEOUT)
        return self._poll.poll(timeout)  # type: ignore[no-any-return]


def park(rtr: tofu.Reactor, client: tofu.ChannelGroup, peer: socket.socket) -> ParkedPoll:
    """A first direct receive (it makes the group's Reading), then its poll parked."""
    with io_thread_parked(rtr):
        peer.sendall(signal_frame(b"first"))
        assert bytes(recv(client).body) == b"first"
    reading = mailbox_of(client).reading
    assert reading is not None
    parked = ParkedPoll(reading.poll)
    reading.poll = parked  # type: ignore[assignment]
    return parked


def reset(peer: socket.socket) -> None:
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.close()


@pytest.mark.parametrize("what", ["reset", "bye", "group", "engine"])
def test_a_close_never_waits_for_a_receiver_that_does_not_answer(what: str) -> None:
    """A receiver in wait_receive() on its lent socket answers no wake-up
    (parked in poll()) while the engine closes its channel: after a peer's
    reset (found by a post), a ByeSignal from another thread, the group
    destroyed, the engine destroyed. The close completes, the close's
    notice is queued and another group's channel is served, all while the
    receiver is parked; its socket's descriptor stays open meanwhile (the
    receiver may poll it), and it is closed once the receiver lets go."""
    rtr = tofu.Reactor()
    try:
        ampe = rtr.ampe()
        client, other = ampe.create(), ampe.create()
        with raw_peer(rtr, client) as (peer, conn), raw_peer(rtr, other) as (peer2, _):
            parked = park(rtr, client, peer)
            receiver = Receiver(client)
            receiver.start()
            assert parked.entered.wait(TIMEOUT), "the receiver never polled"
            assert conn.polling and conn.reader == APP
            reading = mailbox_of(client).reading
            assert reading is not None
            start = time.monotonic()
            if what == "reset":
                reset(peer)

                def posted_until_closed() -> bool:
                    if not conn.closed:
                        with contextlib.suppress(tofu.AmpeError):
                            client.post(make(OpCode.Signal, conn.number, b"x"))
                    return conn.closed

                wait_for(posted_until_closed, "a post to find the reset", PROMPT)
            elif what == "bye":
                client.post(make(OpCode.ByeSignal, conn.number))
            elif what == "group":
                ampe.destroy(client)
            else:
                rtr.destroy()
            if what in ("reset", "bye"):  # (after a reset, the posts not written come back before it)
                wait_for(lambda: client.pending() >= 1, "the close's notice", PROMPT)
            assert time.monotonic() - start < PROMPT
            assert conn.closed and rtr._table.get(conn.number) is not conn
            if what == "engine":
                assert other.pending() == 2  # its channel's notice, and the end
            else:
                peer2.sendall(signal_frame(b"served"))
                wait_for(lambda: other.pending() == 1, "the other group's message", PROMPT)
            assert not parked.release.is_set() and receiver.is_alive()
            assert conn.sock is not None and conn.sock.fileno() != -1  # the receiver may be polling it
            assert reading.wake_sock.fileno() != -1
            parked.release.set()
            got = receiver.finish()
            assert conn.sock.fileno() == -1
            if what == "group":  # destroyed: silent, and the receiver hears of the end
                assert got == [] and isinstance(receiver.error, tofu.ShutdownStarted)
            else:
                assert receiver.error is None
                reason = {"reset": "peer_disconnected", "bye": None, "engine": "shutdown_started"}[what]
                *unsent, notice = got
                assert notice.is_close_notice() and summary(notice)[3] == reason
                assert all(bytes(m.body) == b"x" and m.bhdr.status == AmpeStatus.peer_disconnected for m in unsent)
            if what in ("group", "engine"):
                assert mailbox_of(client).reading is None and reading.wake_sock.fileno() == -1
    finally:
        rtr.destroy()


@pytest.mark.parametrize("what", ["bye", "engine"])
def test_a_close_while_the_receiver_decodes_comes_after_what_it_read(what: str) -> None:
    """The receiver holds its read between decoding and queueing (the
    after_decode hook waits) when its channel closes: the close completes
    without waiting for it, and the close's notice (and the engine's end)
    come after the messages of that read, which the receiver queues first."""
    rtr = tofu.Reactor()
    try:
        ampe = rtr.ampe()
        client, other = ampe.create(), ampe.create()
        with raw_peer(rtr, client) as (peer, conn), raw_peer(rtr, other) as (peer2, _):
            decoded, go = threading.Event(), threading.Event()

            def hold() -> None:
                decoded.set()
                go.wait(TIMEOUT)

            rtr._receiver.after_decode = hold
            receiver = Receiver(client)
            receiver.start()
            reading_directly(conn)
            peer.sendall(signal_frame(b"one", mid=1) + signal_frame(b"two", mid=2))
            assert decoded.wait(TIMEOUT), "the receiver did not read"
            rtr._receiver.after_decode = None
            start = time.monotonic()
            if what == "bye":
                client.post(make(OpCode.ByeSignal, conn.number))
                wait_for(lambda: rtr._table.get(conn.number) is None, "the channel to close", PROMPT)
                peer2.sendall(signal_frame(b"served"))
                wait_for(lambda: other.pending() == 1, "the other group's message", PROMPT)
            else:
                rtr.destroy()
            assert time.monotonic() - start < PROMPT
            assert conn.closed and client.pending() == 0  # the notice waits for what the receiver read
            go.set()
            got = receiver.finish()
            assert receiver.error is None
            reason = None if what == "bye" else "shutdown_started"
            assert [(summary(m)[3], summary(m)[4]) for m in got] == [(None, b"one"), (None, b"two"), (reason, b"")]
            assert got[-1].is_close_notice()
            if what == "engine":
                with pytest.raises(tofu.ShutdownStarted):
                    client.wait_receive(0)
            assert conn.sock is not None and conn.sock.fileno() == -1
    finally:
        rtr.destroy()


# ------------------------------------------------------------- the lease


def io_thread_idle(rtr: tofu.Reactor) -> None:
    """Return once the I/O thread has run what was queued for it so far."""
    done = threading.Event()
    rtr._inbox.call_soon(done.set)
    assert done.wait(TIMEOUT), "the I/O thread did not run the call"


@pytest.mark.parametrize("before", ["nothing", "quick receives"])
def test_a_receiver_blocked_in_wait_receive_costs_the_io_thread_no_wake_up(before: str) -> None:
    """A thread blocked in wait_receive(None) on its lent socket: the I/O
    thread's loop makes no round for 0.3 s (no lease timer, nothing). After
    quick receives the lease watched the socket; it stops at its next looks."""
    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (peer, conn):
            watched: list[bool] = []
            received = threading.Semaphore(0)

            def on_message(msg: Message) -> None:
                watched.append(conn.leased)
                received.release()

            receiver = Receiver(client, done=lambda m: bytes(m.body) == b"last", on_message=on_message)
            receiver.start()
            if before == "quick receives":
                for i in range(20):
                    reading_directly(conn)
                    peer.sendall(signal_frame(b"%d" % i))
                    assert received.acquire(timeout=TIMEOUT)
                assert any(watched), "the lease never watched the socket"
            reading_directly(conn)
            wait_for(lambda: not conn.leased, "the lease to stop watching a thread in wait_receive()")
            io_thread_idle(rtr)
            rounds = rtr._rounds
            time.sleep(0.3)  # the window measured
            assert rtr._rounds == rounds
            assert conn.polling and conn.reader == APP  # still in wait_receive(), on its socket
            with io_thread_parked(rtr):
                peer.sendall(signal_frame(b"last"))
                assert bytes(receiver.finish()[-1].body) == b"last"  # read it itself


@pytest.mark.parametrize("wait", ["quick", "long"])
def test_a_receiver_that_stops_receiving_leaves_its_socket_to_the_io_thread(wait: str) -> None:
    """After a quick receive the lease watches the socket and takes it back
    once the thread stays away; after a receive that waited longer than the
    lease's period the thread gave it back on its way out. Either way, a
    peer that closes while nobody receives closes the channel."""
    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (peer, conn):
            if wait == "quick":
                with io_thread_parked(rtr):
                    peer.sendall(signal_frame(b"x"))
                    assert bytes(recv(client).body) == b"x"
                    assert conn.reader == APP and conn.leased
                wait_for(lambda: conn.reader == IO, "the lease to take the socket back")
            else:
                threading.Timer(0.05, peer.sendall, args=(signal_frame(b"x"),)).start()
                assert bytes(recv(client).body) == b"x"
                assert conn.reader == IO and not conn.leased
            assert not conn.leased and conn.events
            peer.shutdown(socket.SHUT_WR)
            wait_for(lambda: client.pending() == 1, "the I/O thread to close the channel")
            assert is_closed_signal(recv(client))


# ------------------------------------------------------------- signals


def broken_frame() -> bytes:
    frame = bytearray(signal_frame(b"bad", mid=99))
    frame[2] = 0x3F  # the proto byte: an op code that does not exist
    return bytes(frame)


@pytest.mark.parametrize("then", ["nothing", "a broken frame"])
def test_an_interrupt_right_after_a_direct_read_loses_nothing(then: str) -> None:
    """A KeyboardInterrupt raised on the receiving thread right after a read
    is decoded (the after_decode hook raises, where a signal's handler may run
    in the interpreted build) leaves every message of that read queued; and a
    broken frame in the same read still closes the channel, after them."""
    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(rtr, client) as (peer, conn):
            raised: list[bool] = []

            def interrupt() -> None:
                if not raised:
                    raised.append(True)
                    raise KeyboardInterrupt

            rtr._receiver.after_decode = interrupt
            stream = b"".join(signal_frame(b"%d" % i, mid=i + 1) for i in range(3))
            with io_thread_parked(rtr):
                peer.sendall(stream + (broken_frame() if then == "a broken frame" else b""))
                with pytest.raises(KeyboardInterrupt):
                    client.wait_receive(TIMEOUT)
                assert raised and client.pending() == 3
                assert not conn.polling and not mailbox_of(client).waiting
                assert conn.reader == (HANDED_BACK if then == "a broken frame" else APP)
                assert [bytes(recv(client).body) for _ in range(3)] == [b"0", b"1", b"2"]
            if then == "a broken frame":
                closed = recv(client)
                assert closed.is_close_notice() and summary(closed)[3] == "invalid_op_code"
            else:
                peer.sendall(signal_frame(b"after"))
                assert bytes(recv(client).body) == b"after"


def test_an_engine_bug_while_reading_directly_closes_only_that_channel(caplog: pytest.LogCaptureFixture) -> None:
    """An exception of the engine's own on the receiving thread, after a read
    is decoded (the after_decode hook raises RuntimeError): that read's
    messages are delivered, then the channel closes with processing_failed
    and a ~close_detail that says where, as on the I/O thread; the engine
    logs it; wait_receive() raises nothing; another group goes on."""
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        client, other = ampe.create(), ampe.create()
        with raw_peer(rtr, client) as (peer, conn), raw_peer(rtr, other) as (peer2, _):

            def bug() -> None:
                raise RuntimeError("a bug")

            rtr._receiver.after_decode = bug
            with io_thread_parked(rtr):
                peer.sendall(signal_frame(b"read", mid=1))
                assert bytes(recv(client).body) == b"read"
            rtr._receiver.after_decode = None
            closed = recv(client)
            assert closed.is_close_notice() and summary(closed)[3] == "processing_failed"
            assert closed.thdrs.get(tofu.CLOSE_DETAIL_HEADER) == "internal error while reading: RuntimeError: a bug"
            assert conn.closed and "while reading it directly" in caplog.text
            peer2.sendall(signal_frame(b"other"))
            assert bytes(recv(other).body) == b"other"
