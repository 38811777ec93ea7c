"""Direct writes (runtime/direct.py, Options.direct_send): a post to an idle
connection that has read since its last direct write writes its frame on the
posting thread; everything else goes through the I/O thread. Both paths over
real sockets: what each writes, order across them and across threads, a peer
that stops reading (partial writes), a peer that resets, and the option."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
import tofu
from engine_support import (
    TIMEOUT,
    assert_closed,
    connect,
    io_thread_parked,
    listen,
    make,
    plain_listener,
    read_frame,
    recv,
    recv_until,
    tcp_listen,
    wait_for,
)
from tofu import AmpeStatus, Message, OpCode
from tofu.channels import Connection


@contextlib.contextmanager
def raw_peer(client: tofu.ChannelGroup) -> Iterator[tuple[socket.socket, int]]:
    """A plain socket that accepted a tofu connection and answered its
    HelloRequest: (the socket, the client's channel number)."""
    with plain_listener() as (lsock, port):
        header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
        peer, _ = lsock.accept()
        with peer:
            hello = read_frame(peer)
            assert hello.bhdr.proto.op_code == OpCode.HelloRequest
            peer.sendall(tofu.encode(make(OpCode.HelloResponse, 1, mid=hello.bhdr.message_id)))
            answer = recv(client)
            assert answer.bhdr.proto.op_code == OpCode.HelloResponse
            yield peer, header.channel_number


def peer_speaks(peer: socket.socket, client: tofu.ChannelGroup) -> None:
    """The peer sends a Signal and the client receives it: the connection has
    read since its last direct write."""
    peer.sendall(tofu.encode(make(OpCode.Signal, 1, b"tick")))
    got = recv(client)
    assert got.bhdr.proto.op_code == OpCode.Signal and bytes(got.body) == b"tick"


def request(channel: int, body: bytes) -> Message:
    return make(OpCode.Request, channel, body)


def test_a_post_to_an_idle_connection_writes_its_frame_itself() -> None:
    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(client) as (peer, channel):
            peer_speaks(peer, client)
            with io_thread_parked(rtr):
                client.post(request(channel, b"direct"))
                # Written while the I/O thread could not have done it.
                got = read_frame(peer)
                assert got.bhdr.proto.op_code == OpCode.Request and bytes(got.body) == b"direct"
                # Nothing read since: the next post goes through the I/O thread.
                client.post(request(channel, b"queued"))
                assert len(rtr._inbox.items) == 1
            got = read_frame(peer)
            assert bytes(got.body) == b"queued"


def test_with_direct_send_off_every_post_goes_through_the_io_thread() -> None:
    with tofu.Reactor(tofu.Options(direct_send=False)) as rtr:
        client = rtr.ampe().create()
        with raw_peer(client) as (peer, channel):
            peer_speaks(peer, client)
            with io_thread_parked(rtr):
                client.post(request(channel, b"queued"))
                assert len(rtr._inbox.items) == 1  # queued, not written
            got = read_frame(peer)
            assert bytes(got.body) == b"queued"


def test_a_direct_write_never_overtakes_a_queued_message() -> None:
    """A post that had to queue (here: its group had a message still to
    receive) clears the way for direct writes: every post after it goes
    through the I/O thread too until that one is written, credit or not."""
    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(client) as (peer, channel):
            peer_speaks(peer, client)
            peer.sendall(tofu.encode(make(OpCode.Signal, 1, b"unread")))
            wait_for(lambda: client.pending() == 1, "the Signal to be queued for the client")
            with io_thread_parked(rtr):
                client.post(request(channel, b"first"))  # more to receive: queued
                assert bytes(recv(client).body) == b"unread"  # nothing left to receive now
                client.post(request(channel, b"second"))  # has credit, but must wait its turn
                assert len(rtr._inbox.items) == 2
            assert [bytes(read_frame(peer).body) for _ in range(2)] == [b"first", b"second"]


def test_a_post_that_moves_the_state_goes_through_the_io_thread() -> None:
    """A ByeRequest never writes directly (the I/O thread follows the state's
    timers), and after it post() refuses a Request."""
    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(client) as (peer, channel):
            peer_speaks(peer, client)
            with io_thread_parked(rtr):
                client.post(make(OpCode.ByeRequest, channel))
                assert len(rtr._inbox.items) == 1
                late = request(channel, b"after the bye")
                with pytest.raises(tofu.NotAllowed, match="after its ByeRequest this side sends nothing more"):
                    client.post(late)
                assert not late.is_posted
            assert read_frame(peer).bhdr.proto.op_code == OpCode.ByeRequest


def test_a_partial_direct_write_is_finished_by_the_io_thread_in_order() -> None:
    """A peer that does not read fills the kernel's buffers: a direct write
    then leaves the rest of its frame to the I/O thread, and the posts after
    it follow it, whole and in order."""
    body = bytes(range(256)) * 255  # 65280 bytes
    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(client) as (peer, channel):
            conn = rtr._table.get(channel)
            assert isinstance(conn, Connection)
            sent = 0
            partial = False
            for _ in range(2000):  # far more than loopback's buffers hold
                peer_speaks(peer, client)
                with io_thread_parked(rtr):
                    client.post(request(channel, sent.to_bytes(4, "big") + body))
                    sent += 1
                    partial = bool(conn.outbuf)  # only the post can have left bytes there
                    if partial:
                        for _ in range(3):  # queued behind the partial frame
                            client.post(request(channel, sent.to_bytes(4, "big") + body))
                            sent += 1
                        break
            assert partial, "the kernel took every frame: no partial write happened"
            for i in range(sent):
                got = read_frame(peer)
                assert got.bhdr.proto.op_code == OpCode.Request
                assert bytes(got.body) == i.to_bytes(4, "big") + body, f"frame {i} of {sent}"


@pytest.mark.parametrize(("direct_send", "window"), [(True, 0), (True, 8), (False, 0)])
def test_order_per_thread_with_several_posting_threads(direct_send: bool, window: int) -> None:
    """Four threads post Requests on one channel to an echoing server: each
    thread's requests arrive in the order it posted them, whichever path
    each took (and with a send window, every permit comes back)."""
    threads, each = 4, 300
    options = tofu.Options(direct_send=direct_send, max_unsent_msgs=window)
    with tofu.Reactor(options) as srv, tofu.Reactor(options) as cli:
        server, client = srv.ampe().create(), cli.ampe().create()
        _, port = tcp_listen(server)
        channel, _ = connect(client, server, tofu.TCPClientAddress("127.0.0.1", port))
        seen: dict[int, list[int]] = {t: [] for t in range(threads)}

        def echo() -> None:
            for _ in range(threads * each):
                msg = recv(server)
                assert msg.bhdr.proto.op_code == OpCode.Request, msg
                data = bytes(msg.body)
                t, i = data[0], int.from_bytes(data[1:5], "big")
                seen[t].append(i)
                msg.bhdr.proto.op_code = OpCode.Response
                server.post(msg)

        def poster(t: int) -> None:
            for i in range(each):
                client.post(request(channel, bytes([t]) + i.to_bytes(4, "big")))

        echoer = threading.Thread(target=echo)
        echoer.start()
        posters = [threading.Thread(target=poster, args=(t,)) for t in range(threads)]
        for p in posters:
            p.start()
        for _ in range(threads * each):  # the client reads the answers as they come: credit for direct writes
            answer = recv(client)
            assert answer.bhdr.proto.op_code == OpCode.Response and not answer.bhdr.status, answer
        for p in posters:
            p.join(TIMEOUT)
        echoer.join(TIMEOUT)
        assert not echoer.is_alive()
        assert seen == {t: list(range(each)) for t in range(threads)}


def test_a_direct_write_to_a_reset_peer_fails_as_the_io_thread_would() -> None:
    """The send() error is the I/O thread's to act on: the message comes back
    with peer_disconnected and the channel closes with that reason."""
    with tofu.Reactor() as rtr:
        client = rtr.ampe().create()
        with raw_peer(client) as (peer, channel):
            peer_speaks(peer, client)
            with io_thread_parked(rtr):
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                peer.close()  # a reset
                client.post(request(channel, b"lost"))
                # It went the direct way and failed there: the inbox holds no message, only the failure.
                assert [group for group, _ in rtr._inbox.items] == [None]
            back = recv(client)
            assert back.bhdr.proto.op_code == OpCode.Request and bytes(back.body) == b"lost"
            assert back.is_from_engine() and back.bhdr.status == AmpeStatus.peer_disconnected
            assert_closed(recv(client), AmpeStatus.peer_disconnected, channel)


@pytest.mark.parametrize("direct_send", [True, False])
def test_request_response_over_uds(direct_send: bool) -> None:
    options = tofu.Options(direct_send=direct_send)
    with tofu.Reactor(options) as srv, tofu.Reactor(options) as cli:
        server, client = srv.ampe().create(), cli.ampe().create()
        path = tofu.temp_uds_path()
        listen(server, tofu.UDSServerAddress(path))
        channel, _ = connect(client, server, tofu.UDSClientAddress(path))
        for i in range(50):
            client.post(request(channel, i.to_bytes(2, "big")))
            msg = recv(server)
            assert int.from_bytes(bytes(msg.body), "big") == i
            msg.bhdr.proto.op_code = OpCode.Response
            server.post(msg)
            answer = recv(client)
            assert answer.bhdr.proto.op_code == OpCode.Response and int.from_bytes(bytes(answer.body), "big") == i
