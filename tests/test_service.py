"""tofu.connect / tofu.Client and tofu.Server over real sockets (127.0.0.1
and Unix domain sockets): replies matched to their requests, streams,
signals, errors, timeouts, reconnecting, shutting down."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import tofu
from tofu import AmpeStatus, OpCode

from engine_support import make, recv, recv_until
from service_support import TIMEOUT, Gate, watching


def echo(request: tofu.Request) -> tuple[tofu.Headers, bytes]:
    return request.headers, request.body


@contextmanager
def serving(handler: Any = echo, url: str = "tcp://127.0.0.1:0", **kwargs: Any) -> Iterator[tofu.Server]:
    with tofu.Server(url, handler, **kwargs) as server:
        yield server


def uds_url() -> str:
    return f"uds://{tofu.temp_uds_path()}"


# ---------------------------------------------------------------- requests


@pytest.mark.parametrize("url", ["tcp://127.0.0.1:0", "uds"])
def test_a_request_gets_its_reply_with_headers_and_body(url: str) -> None:
    hellos: list[tofu.Peer] = []
    with serving(url=uds_url() if url == "uds" else url, on_hello=hellos.append) as server:
        with tofu.connect(server.urls[0], headers={"x-client": "test"}) as client:
            reply = client.request(b"\x00payload", {"x-a": "1", "x-n": 2})
            assert reply.ok and reply.status is AmpeStatus.success and reply.error is None
            assert reply.body == b"\x00payload"
            assert dict(reply.headers) == {"x-a": "1", "x-n": "2"}
            repeated = client.request("text", [("x-r", "1"), ("x-r", "2")])
            assert repeated.body == b"text" and repeated.headers.get_all("x-r") == ["1", "2"]
            assert repeated.headers["x-r"] == "1" and repeated.headers.pairs == (("x-r", "1"), ("x-r", "2"))
            with pytest.raises(TypeError):
                repeated.headers["x-r"] = "3"  # type: ignore[index]
            assert client.in_flight == 0 and client.connected
    (peer,) = hellos
    assert peer.headers["x-client"] == "test" and tofu.CONNECT_TO_HEADER in peer.headers


def test_thousands_of_requests_from_8_threads_each_get_their_own_reply() -> None:
    with serving() as server, tofu.connect(server.urls[0]) as client:

        def work(thread: int) -> int:
            for i in range(600):
                body = f"{thread}:{i}".encode()
                reply = client.request(body, {"x-i": i})
                assert reply.body == body and reply.headers["x-i"] == str(i)
            return 600

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(work, range(8))) == 4800
        assert client.in_flight == 0
        (peer,) = server.peers
        assert peer.requests == 4800


def test_bodies_larger_than_a_frame_go_as_more_streams_and_come_back_joined() -> None:
    seen: list[int] = []

    def handler(request: tofu.Request) -> bytes:
        seen.append(len(request.frames))
        return request.body[::-1]

    payload = bytes(range(256)) * 800  # 204,800 bytes: 4 frames
    with serving(handler) as server, tofu.connect(server.urls[0]) as client:
        assert client.request(payload).body == payload[::-1]
    assert seen == [4]


def test_what_a_handler_returns_is_the_reply() -> None:
    def handler(request: tofu.Request) -> Any:
        kind = request.body.decode()
        if kind == "bytes":
            return b"b"
        if kind == "str":
            return "s"
        if kind == "pair":
            return {"x-kind": "pair"}, b"p"
        if kind == "none":
            return None
        if kind == "replied":
            request.reply(b"by hand", {"x-kind": "reply"})
            return None
        return (f"frame {i}".encode() for i in range(3))

    with serving(handler) as server, tofu.connect(server.urls[0]) as client:
        assert client.request(b"bytes").body == b"b"
        assert client.request(b"str").body == b"s"
        pair = client.request(b"pair")
        assert (pair.body, dict(pair.headers)) == (b"p", {"x-kind": "pair"})
        assert client.request(b"none").body == b""
        replied = client.request(b"replied")
        assert (replied.body, replied.headers["x-kind"]) == (b"by hand", "reply")
        assert client.request(b"generator").body == b"frame 0frame 1frame 2"  # request() joins a stream


def test_stream_iterates_the_answer_frame_by_frame_and_uploads_a_stream() -> None:
    def handler(request: tofu.Request) -> Any:
        if request.headers.get("x-upload"):
            return f"{len(request.frames)} frames: {request.body.decode()}"
        return (({"x-i": i}, f"part {i}") for i in range(4))

    with serving(handler) as server, tofu.connect(server.urls[0]) as client:
        frames = list(client.stream(b"go"))
        assert [f.body for f in frames] == [b"part 0", b"part 1", b"part 2", b"part 3"]
        assert [f.more for f in frames] == [True, True, True, False]
        assert [f.headers["x-i"] for f in frames] == ["0", "1", "2", "3"]
        assert len({f.message_id for f in frames}) == 1
        (answer,) = client.stream([b"a", b"b", b"c"], {"x-upload": "yes"})
        assert answer.body == b"3 frames: abc" and not answer.more
        with client.stream(b"go") as partial:
            assert next(partial).body == b"part 0"
        assert client.in_flight == 0  # leaving the block early dropped the rest


def test_signals_go_both_ways() -> None:
    got: list[tofu.Request] = []
    heard: list[tofu.Reply] = []
    signalled = threading.Event()

    def on_signal(request: tofu.Request) -> None:
        got.append(request)
        signalled.set()

    def handler(request: tofu.Request) -> bytes:
        for step in (1, 2):
            request.signal(f"{step}/2", {"x-step": step})
        return b"done"

    with serving(handler, on_signal=on_signal) as server:
        with tofu.connect(server.urls[0], on_signal=heard.append) as client:
            client.signal(b"tick", {"x-t": "1"})
            assert signalled.wait(TIMEOUT)
            reply = client.request(b"work")
            assert reply.body == b"done"
    (signal,) = got
    assert signal.is_signal and signal.body == b"tick" and signal.headers["x-t"] == "1"
    assert [(h.body, h.signal, h.message_id) for h in heard] == [
        (b"1/2", True, reply.message_id),
        (b"2/2", True, reply.message_id),
    ]


# ---------------------------------------------------------------- errors


def test_a_handler_that_raises_answers_with_the_error_header_and_the_server_goes_on() -> None:
    def handler(request: tofu.Request) -> bytes:
        if request.body == b"bug":
            raise ValueError("no such thing")
        if request.body == b"refuse":
            raise tofu.NotAllowed("not for you")
        return request.body

    with watching("tofu.server") as log, serving(handler) as server, tofu.connect(server.urls[0]) as client:
        bug = client.request(b"bug")
        assert not bug.ok and bug.status is AmpeStatus.processing_failed
        assert bug.error == "ValueError: no such thing"
        assert bug.headers[tofu.ERROR_HEADER] == "processing_failed"
        assert bug.headers[tofu.ERROR_DETAIL_HEADER] == "ValueError: no such thing"
        with pytest.raises(tofu.ProcessingFailed, match="ValueError: no such thing"):
            bug.raise_for_status()
        refused = client.request(b"refuse")
        assert refused.status is AmpeStatus.not_allowed and refused.error == "not for you"
        assert client.request(b"fine").raise_for_status().body == b"fine"
        record = log.wait("the handler raised ValueError: no such thing")
        assert record.levelno == logging.ERROR and record.exc_info is not None
        assert log.wait("the handler raised NotAllowed").levelno == logging.INFO


def test_a_timed_out_request_raises_and_its_late_reply_is_dropped() -> None:
    gate = Gate()

    def handler(request: tofu.Request) -> bytes:
        if request.body == b"slow":
            gate.hold()
            return b"late"
        return request.body

    with serving(handler) as server, tofu.connect(server.urls[0]) as client, watching("tofu.client") as log:
        with pytest.raises(tofu.RequestTimeout) as info:
            client.request(b"slow", timeout=0.2)
        assert isinstance(info.value, TimeoutError) and info.value.timeout == 0.2
        assert client.in_flight == 0
        gate.open()
        log.wait("dropped an answer to request")  # the late reply reached the client, and went nowhere
        assert client.request(b"next").body == b"next"
        assert client.in_flight == 0


def test_a_channel_that_dies_fails_every_request_in_flight_with_its_reason() -> None:
    """A server (the engine alone) takes five requests, then aborts the connection."""
    with tofu.Reactor() as rtr, rtr.ampe().create() as group:
        group.post(tofu.TCPServerAddress("127.0.0.1", 0).format(tofu.Message()))
        port = tofu.TCPServerAddress.from_message(recv(group)).port
        failures: list[BaseException] = []

        def ask(client: tofu.Client, i: int) -> None:
            try:
                client.request(f"{i}".encode(), timeout=TIMEOUT)
            except BaseException as exc:  # noqa: BLE001 - the test looks at it
                failures.append(exc)

        def accept() -> int:
            hello = recv(group)
            channel = hello.bhdr.channel_number
            hello.bhdr.proto.op_code = OpCode.HelloResponse
            group.post(hello)
            return channel

        accepting = ThreadPoolExecutor(1).submit(accept)
        with tofu.connect(f"tcp://127.0.0.1:{port}") as client:
            channel = accepting.result(TIMEOUT)
            threads = [threading.Thread(target=ask, args=(client, i)) for i in range(5)]
            for t in threads:
                t.start()
            for _ in range(5):
                assert recv(group).bhdr.proto.op_code == OpCode.Request
            assert client.in_flight == 5
            group.post(make(OpCode.ByeSignal, channel))  # abort: the client's engine sees the peer vanish
            for t in threads:
                t.join(TIMEOUT)
            assert len(failures) == 5
            for exc in failures:
                assert isinstance(exc, tofu.ConnectionLost) and isinstance(exc, tofu.AmpeError)
                assert exc.reason is AmpeStatus.peer_disconnected
            with pytest.raises(tofu.ConnectionLost) as info:
                client.request(b"after")
            assert info.value.reason is AmpeStatus.peer_disconnected
            assert client.closed and not client.connected


def test_on_hello_refuses_and_the_client_is_told() -> None:
    def on_hello(peer: tofu.Peer) -> bool:
        return peer.headers.get("token") == "secret"

    with serving(on_hello=on_hello) as server:
        with pytest.raises(tofu.ConnectionRefused) as info:
            tofu.connect(server.urls[0], headers={"token": "guess"})
        assert isinstance(info.value, ConnectionRefusedError) and isinstance(info.value, tofu.ConnectFailed)
        assert info.value.status is AmpeStatus.connect_failed
        assert info.value.reason is AmpeStatus.peer_disconnected
        assert "closed the connection without a HelloResponse" in str(info.value)
        with tofu.connect(server.urls[0], headers={"token": "secret"}) as client:
            assert client.request(b"in").body == b"in"


def test_connect_failures_name_their_status() -> None:
    port = tofu.find_free_tcp_port()
    with pytest.raises(tofu.ConnectError) as info:
        tofu.connect(f"tcp://127.0.0.1:{port}")
    assert info.value.status is AmpeStatus.connect_failed and isinstance(info.value, ConnectionError)
    assert str(info.value).startswith(f"cannot connect to tcp://127.0.0.1:{port}: connect_failed")
    path = tofu.temp_uds_path()
    with pytest.raises(tofu.ConnectError) as info:
        tofu.connect(f"uds://{path}")
    assert info.value.status is AmpeStatus.uds_path_not_found
    with pytest.raises(tofu.WrongAddress):
        tofu.connect("http://nowhere")


def test_max_in_flight_makes_a_request_wait_for_room() -> None:
    gate = Gate()

    def handler(request: tofu.Request) -> bytes:
        gate.hold()
        return request.body

    with serving(handler) as server, tofu.connect(server.urls[0], max_in_flight=2) as client:
        with ThreadPoolExecutor(3) as pool:
            first = [pool.submit(client.request, f"{i}".encode()) for i in range(2)]
            gate.wait_entered(2)
            with pytest.raises(tofu.RequestTimeout, match="no room"):
                client.request(b"third", timeout=0.2)  # no room: it never went
            waiting = pool.submit(client.request, b"third")  # waits for room, then goes
            gate.open()
            assert [f.result(TIMEOUT).body for f in first] == [b"0", b"1"]
            assert waiting.result(TIMEOUT).body == b"third"
        assert server.peers[0].requests == 3


def test_workers_0_runs_every_handler_on_the_dispatcher_thread() -> None:
    threads: set[str] = set()

    def handler(request: tofu.Request) -> bytes:
        threads.add(threading.current_thread().name)
        return request.body

    with serving(handler, workers=0) as server, tofu.connect(server.urls[0]) as client:
        with ThreadPoolExecutor(4) as pool:
            bodies = [f"{i}".encode() for i in range(40)]
            assert [r.body for r in pool.map(client.request, bodies)] == bodies
    assert threads == {"tofu-server"}


# ---------------------------------------------------------------- closing


def client_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("tofu-client")}


def test_close_lets_the_requests_in_flight_finish_then_says_bye() -> None:
    gate = Gate()
    closed: list[tofu.Peer] = []

    def handler(request: tofu.Request) -> bytes:
        gate.hold()
        return request.body

    before = client_threads()
    with serving(handler, on_close=closed.append) as server:
        client = tofu.connect(server.urls[0])
        with ThreadPoolExecutor(2) as pool:
            pending = pool.submit(client.request, b"in flight")
            gate.wait_entered()
            closing = pool.submit(client.close)
            gate.open()
            assert pending.result(TIMEOUT).body == b"in flight"
            closing.result(TIMEOUT)
        assert client.closed
        with pytest.raises(tofu.ConnectionLost, match="the client was closed"):
            client.request(b"after")
        client.close()  # again: nothing happens
    (peer,) = closed
    assert peer.said_bye and peer.close_reason is AmpeStatus.channel_closed
    assert client_threads() == before  # no thread left behind


def test_shutdown_finishes_the_requests_in_flight_then_says_bye_to_every_client() -> None:
    gate = Gate()

    def handler(request: tofu.Request) -> bytes:
        gate.hold()
        return b"finished"

    before = set(threading.enumerate())
    server = tofu.Server("tcp://127.0.0.1:0", handler).start()
    client = tofu.connect(server.urls[0])
    with ThreadPoolExecutor(2) as pool, watching("tofu.server") as log:
        pending = pool.submit(client.request, b"work")
        gate.wait_entered()
        stopping = pool.submit(server.shutdown, TIMEOUT)
        log.wait("stopping: closing the listeners")  # while the request is in flight
        gate.open()
        assert pending.result(TIMEOUT).body == b"finished"
        stopping.result(TIMEOUT)
    with pytest.raises(tofu.ConnectionLost) as info:
        client.request(b"again")
    assert info.value.reason is AmpeStatus.channel_closed and info.value.detail == "the server closed the channel"
    with pytest.raises(tofu.ConnectError):
        tofu.connect(server.urls[0])
    client.close()
    assert not server.serving and server.peers == []
    left = {t.name for t in set(threading.enumerate()) - before}
    assert not {name for name in left if name.startswith(("tofu-server", "tofu-worker", "tofu-client"))}, left


def test_a_client_that_stays_is_closed_when_the_grace_period_ends_or_is_cut_short() -> None:
    closed: list[tofu.Peer] = []
    server = tofu.Server("tcp://127.0.0.1:0", echo, on_close=closed.append).start()
    with tofu.Reactor() as rtr, rtr.ampe().create() as group:  # a client that never answers the Bye
        group.post(tofu.parse_url(server.urls[0], server=False).format(tofu.Message()))
        assert recv(group).bhdr.proto.op_code == OpCode.HelloResponse
        with ThreadPoolExecutor(1) as pool:
            stopping = pool.submit(server.shutdown, 60.0)
            bye = recv(group)  # the server is in its grace period now
            assert bye.bhdr.proto.op_code == OpCode.ByeRequest and bye.thdrs.get("reason") == "server shutting down"
            assert server.shutdown(0) == 0  # a shorter grace: the first call stops waiting; this one waited for it
            assert stopping.result(TIMEOUT) == 1  # one client was still there: closed
        closed_signal, _ = recv_until(group, lambda m: m.is_from_engine())
        assert closed_signal.bhdr.status == AmpeStatus.channel_closed
    (peer,) = closed
    assert peer.close_reason is AmpeStatus.shutdown_started and not server.serving


def test_a_vanished_client_cancels_its_replies_quietly() -> None:
    gate = Gate()
    gone = threading.Event()
    closed: list[tofu.Peer] = []

    def on_close(peer: tofu.Peer) -> None:
        closed.append(peer)
        gone.set()

    def handler(request: tofu.Request) -> bytes:
        gate.hold()
        return b"nobody hears this"

    with watching("tofu.server") as log, serving(handler, on_close=on_close, workers=1) as server:
        with tofu.Reactor() as rtr, rtr.ampe().create() as group:  # a client that vanishes: no Bye
            address = tofu.parse_url(server.urls[0], server=False)
            channel = group.post(address.format(tofu.Message())).channel_number
            assert recv(group).bhdr.proto.op_code == OpCode.HelloResponse
            group.post(make(OpCode.Request, channel, b"work"))
            gate.wait_entered()
        assert gone.wait(TIMEOUT)
        gate.open()
        with tofu.connect(server.urls[0]) as client:  # one worker: this runs once the first handler is over
            assert client.request(b"still serving").body == b"nobody hears this"
        peer = closed[0]
        assert peer.close_reason is AmpeStatus.peer_disconnected and not peer.said_bye
    assert log.messages(logging.WARNING) == []


# ---------------------------------------------------------------- reconnecting


@pytest.mark.parametrize("transport", ["tcp", "uds"])
def test_a_reconnecting_client_survives_a_server_restart(transport: str) -> None:
    url = f"tcp://127.0.0.1:{tofu.find_free_tcp_port()}" if transport == "tcp" else uds_url()
    down, up = threading.Event(), threading.Event()
    lost: list[tofu.ConnectionLost] = []

    def on_disconnect(exc: tofu.ConnectionLost) -> None:
        lost.append(exc)
        down.set()

    policy = tofu.Reconnect(initial=0.02, maximum=0.1, jitter=0.5)
    with watching("tofu.client") as log:
        with serving(url=url) as first:
            client = tofu.connect(first.urls[0], reconnect=policy, on_disconnect=on_disconnect, on_reconnect=up.set)
            assert client.request(b"before").body == b"before"
        assert down.wait(TIMEOUT)  # the server said Bye on shutdown
        assert lost[0].reason is AmpeStatus.channel_closed and not client.connected and not client.closed
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.request, b"while down", None, TIMEOUT)  # waits for the new channel
            with serving(url=url):
                assert up.wait(TIMEOUT)
                assert waiting.result(TIMEOUT).body == b"while down"
                assert client.request(b"after").body == b"after" and client.connected
        log.wait("connected again")
        log.wait("connecting again in")
        client.close()


def test_requests_in_flight_fail_when_the_channel_dies_even_with_reconnect() -> None:
    gate = Gate()

    def handler(request: tofu.Request) -> bytes:
        gate.hold()
        return b"too late"

    server = tofu.Server("tcp://127.0.0.1:0", handler).start()
    client = tofu.connect(server.urls[0], reconnect=tofu.Reconnect(initial=0.05, attempts=2), request_timeout=TIMEOUT)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.request, b"work")
        gate.wait_entered()
        server.shutdown(0)  # no grace: the channel is closed under the request
        with pytest.raises(tofu.ConnectionLost):
            pending.result(TIMEOUT)
    gate.open()
    with pytest.raises(tofu.ConnectionLost, match="gave up connecting again after 2 attempt"):
        client.request(b"again")  # two attempts, both refused: the client gave up
    assert client.closed
    client.close()


def test_the_reconnect_policy_backs_off_with_bounded_jitter() -> None:
    policy = tofu.Reconnect(initial=0.1, maximum=1.0, factor=2.0, jitter=0.2, attempts=3)
    for attempt, base in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
        for _ in range(20):
            assert base * 0.8 <= policy.delay(attempt) <= base * 1.2
    assert tofu.Reconnect(jitter=0).delay(100) == 10.0
    assert not policy.gives_up_after(2) and policy.gives_up_after(3)
    assert not tofu.Reconnect().gives_up_after(10**6)
    with pytest.raises(ValueError):
        tofu.Reconnect(jitter=2)


# ---------------------------------------------------------------- TLS


def test_tls_with_a_client_certificate(tmp_path: Any) -> None:
    from tls_support import Pems

    pems = Pems(tmp_path)
    hellos: list[tofu.Peer] = []
    with serving(url="tls://127.0.0.1:0", on_hello=hellos.append, cert=pems.server, ca=pems.ca_pem) as server:
        url = server.urls[0]
        with tofu.connect(url, ca=pems.ca_pem, cert=pems.client) as client:
            assert client.request(b"secret").body == b"secret"
            assert "CN=server" in client.server_headers[tofu.PEER_SUBJECT_HEADER]
        with pytest.raises(tofu.ConnectError) as info:
            tofu.connect(url, ca=pems.ca_pem)  # no client certificate: the handshake fails
        assert info.value.status is AmpeStatus.connect_failed and info.value.detail
    (peer,) = hellos
    assert "CN=client" in peer.identity[tofu.PEER_SUBJECT_HEADER] and list(peer.identity) == [
        tofu.PEER_SUBJECT_HEADER,
        tofu.PEER_SAN_HEADER,
    ]
    with pytest.raises(ValueError, match="tls://"):
        tofu.connect("tcp://127.0.0.1:1", ca=pems.ca_pem)


def test_a_taken_address_fails_start_with_listen_failed() -> None:
    with serving() as server:
        with pytest.raises(tofu.ListenFailed, match="listen_failed"):
            tofu.Server(server.urls[0], echo).start()
