"""The engine under threads and processes: an echo server with several
clients, reconnect loops, concurrent posters, a peer in another process."""

from __future__ import annotations

import multiprocessing
import threading

import pytest
import tofu
from engine_support import TIMEOUT, assert_closed, connect, is_closed_signal, listen, make, recv, tcp_listen, wait_for
from tofu import Message, OpCode


def _addresses(kind: str, group: tofu.ChannelGroup):
    """Start a listener of `kind`; return the client address to reach it."""
    if kind == "tcp":
        _, port = tcp_listen(group)
        return tofu.TCPClientAddress("127.0.0.1", port)
    path = tofu.temp_uds_path()
    listen(group, tofu.UDSServerAddress(path))
    return tofu.UDSClientAddress(path)


def serve_echo(rtr: tofu.Reactor, group: tofu.ChannelGroup, stop: threading.Event) -> None:
    """Answer every request with its echo, reusing the received message."""
    ampe = rtr.ampe()
    while not stop.is_set():
        msg = group.wait_receive(0.05)
        if msg is None:
            continue
        if msg.is_from_engine():
            ampe.put(msg)
            continue
        echo = msg.bhdr.proto.op_code.echo()
        if echo is None:
            ampe.put(msg)
            continue
        msg.bhdr.proto.op_code = echo
        group.post(msg)


@pytest.fixture
def echo_server():
    """An engine running an echo server on its own thread: (reactor, group)."""
    rtr = tofu.Reactor()
    group = rtr.ampe().create()
    stop = threading.Event()
    started = []

    def start(kind: str = "tcp"):
        address = _addresses(kind, group)
        t = threading.Thread(target=serve_echo, args=(rtr, group, stop), daemon=True)
        t.start()
        started.append(t)
        return address

    yield start
    stop.set()
    for t in started:
        t.join(TIMEOUT)
    rtr.destroy()


def _client_session(rtr: tofu.Reactor, address, requests: int, errors: list) -> None:
    try:
        group = rtr.ampe().create()
        hello = group.post(address.format(Message()))
        resp = recv(group)
        assert resp.bhdr.proto.op_code == OpCode.HelloResponse, resp
        channel = hello.channel_number
        for i in range(requests):
            body = f"{threading.get_ident()}:{i}".encode()
            header = group.post(make(OpCode.Request, channel, body, [("n", str(i))]))
            got = recv(group)
            assert got.bhdr.proto.op_code == OpCode.Response
            assert got.bhdr.message_id == header.message_id and bytes(got.body) == body
        group.post(make(OpCode.ByeRequest, channel))
        bye = recv(group)
        assert bye.bhdr.proto.op_code == OpCode.ByeResponse
        assert_closed(recv(group), None, channel)  # the Bye exchange: a normal close
        rtr.ampe().destroy(group)
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


@pytest.mark.parametrize("kind", ["tcp", "uds"])
def test_echo_server_with_several_clients_on_threads(echo_server, kind):
    address = echo_server(kind)
    with tofu.Reactor() as rtr:
        errors: list = []
        threads = [threading.Thread(target=_client_session, args=(rtr, address, 50, errors)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []


@pytest.mark.parametrize("kind", ["tcp", "uds"])
def test_reconnect_loop_single_threaded(echo_server, kind):
    address = echo_server(kind)
    with tofu.Reactor() as rtr:
        errors: list = []
        for _ in range(20):
            _client_session(rtr, address, 3, errors)
        assert errors == []


def test_reconnect_loops_multi_threaded(echo_server):
    address = echo_server("tcp")
    with tofu.Reactor() as rtr:
        errors: list = []

        def loop():
            for _ in range(20):
                _client_session(rtr, address, 2, errors)

        threads = [threading.Thread(target=loop) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        assert errors == []


def test_concurrent_posts_keep_each_threads_order():
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        server, client = ampe.create(), ampe.create()
        _, port = tcp_listen(server)
        cch, _ = connect(client, server, tofu.TCPClientAddress("127.0.0.1", port))
        per_thread, nthreads = 500, 6
        barrier = threading.Barrier(nthreads)

        def post_all(t: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                client.post(make(OpCode.Signal, cch, b"%d:%d" % (t, i)))

        threads = [threading.Thread(target=post_all, args=(t,)) for t in range(nthreads)]
        for t in threads:
            t.start()
        last = {}
        for _ in range(per_thread * nthreads):
            msg = recv(server)
            t, i = map(int, bytes(msg.body).split(b":"))
            assert i == last.get(t, -1) + 1, f"thread {t}: {i} after {last.get(t)}"
            last[t] = i
            ampe.put(msg)
        for t in threads:
            t.join(TIMEOUT)
        assert last == {t: per_thread - 1 for t in range(nthreads)}


def _server_process(conn) -> None:
    """Runs in a child process: an echo server; tells its port, serves one
    client, then tells how its channel closed (the ~close_reason, None for a
    normal close)."""
    with tofu.Reactor() as rtr:
        group = rtr.ampe().create()
        _, port = tcp_listen(group)
        conn.send(port)
        while True:
            msg = recv(group, 30)
            if is_closed_signal(msg):
                break
            echo = msg.bhdr.proto.op_code.echo()
            if echo is not None and msg.is_from_application():
                msg.bhdr.proto.op_code = echo
                group.post(msg)
    conn.send(("done", msg.thdrs.get(tofu.CLOSE_REASON_HEADER)))


def test_client_and_server_in_separate_processes():
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_server_process, args=(child,), daemon=True)
    proc.start()
    try:
        assert parent.poll(60), "the server process did not start"
        port = parent.recv()
        with tofu.Reactor() as rtr:
            errors: list = []
            _client_session(rtr, tofu.TCPClientAddress("127.0.0.1", port), 100, errors)
            assert errors == []
        assert parent.poll(TIMEOUT) and parent.recv() == ("done", None)  # the client's Bye: a normal close
        proc.join(TIMEOUT)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()


def _held_io_thread(rtr: tofu.Reactor) -> threading.Event:
    """Keep the I/O thread busy (inside its wake-up handler) until the returned event is set."""
    gate, held = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        gate.wait(TIMEOUT)

    rtr._inbox.call_soon(hold)
    assert held.wait(TIMEOUT), "the I/O thread did not run the call"
    return gate


def test_a_post_far_ahead_of_the_io_thread_waits_until_it_catches_up():
    catch_up_at = tofu.inbox.CATCH_UP_AT
    with tofu.Reactor() as rtr:
        rtr._inbox.catch_up_wait = 60.0  # only the I/O thread catching up can end the wait within the test
        ampe = rtr.ampe()
        server, client = ampe.create(), ampe.create()
        _, port = tcp_listen(server)
        cch, _ = connect(client, server, tofu.TCPClientAddress("127.0.0.1", port))
        gate = _held_io_thread(rtr)
        count = catch_up_at + 10
        posted: list[int] = []

        def post_all() -> None:
            for i in range(count):
                client.post(make(OpCode.Signal, cch, b"%d" % i))
                posted.append(i)

        poster = threading.Thread(target=post_all)
        poster.start()
        wait_for(lambda: rtr._inbox._behind, "a post waiting for the I/O thread")
        # The post that found catch_up_at posts queued is the one waiting (the
        # first post may have been written directly: runtime/direct.py).
        assert len(rtr._inbox.items) == catch_up_at
        assert len(posted) < count
        gate.set()
        poster.join(TIMEOUT)
        assert not poster.is_alive(), "the post still waits after the I/O thread caught up"
        for i in range(count):
            msg = recv(server)
            assert bytes(msg.body) == b"%d" % i
            ampe.put(msg)


def test_posts_on_the_io_thread_never_wait_for_it():
    catch_up_at = tofu.inbox.CATCH_UP_AT
    with tofu.Reactor() as rtr:
        rtr._inbox.catch_up_wait = 60.0  # a wait would outlast the test's
        ampe = rtr.ampe()
        server, client = ampe.create(), ampe.create()
        _, port = tcp_listen(server)
        cch, _ = connect(client, server, tofu.TCPClientAddress("127.0.0.1", port))
        count = catch_up_at + 10
        done = threading.Event()

        def post_all() -> None:  # on the I/O thread: the inbox grows past the mark, nobody takes it meanwhile
            for i in range(count):
                client.post(make(OpCode.Signal, cch, b"%d" % i))
            done.set()

        rtr._inbox.call_soon(post_all)
        assert done.wait(TIMEOUT), "a post on the I/O thread waited for the I/O thread"
        for i in range(count):
            msg = recv(server)
            assert bytes(msg.body) == b"%d" % i
            ampe.put(msg)
