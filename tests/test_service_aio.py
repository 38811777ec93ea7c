"""tofu.aio.connect / tofu.aio.Client and tofu.aio.Server over real sockets:
the service layer for asyncio (each test is one asyncio.run)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tofu
import tofu.aio
from tofu import AmpeStatus

from engine_support import make
from service_support import TIMEOUT, watching


async def echo(request: tofu.Request) -> tuple[tofu.Headers, bytes]:
    return request.headers, request.body


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_thousands_of_requests_from_100_tasks_each_get_their_own_reply() -> None:
    async def main() -> None:
        async with tofu.aio.Server("tcp://127.0.0.1:0", echo) as server:
            async with await tofu.aio.connect(server.urls[0]) as client:

                async def work(task: int) -> int:
                    for i in range(40):
                        body = f"{task}:{i}".encode()
                        reply = await client.request(body, {"x-i": i})
                        assert reply.body == body and reply.headers["x-i"] == str(i)
                    return 40

                assert sum(await asyncio.gather(*(work(t) for t in range(100)))) == 4000
                assert client.in_flight == 0
                (peer,) = server.peers
                assert peer.requests == 4000

    run(main())


def test_the_async_client_works_against_the_threaded_server_over_uds() -> None:
    async def main(url: str) -> None:
        async with await tofu.aio.connect(url, headers={"x-from": "aio"}) as client:
            reply = await client.request(b"hi", [("x-a", "1")])
            assert reply.body == b"hi" and reply.headers["x-a"] == "1"
            big = bytes(range(256)) * 300
            assert (await client.request(big)).body == big

    with tofu.Server(f"uds://{tofu.temp_uds_path()}", lambda r: (r.headers, r.body)) as server:
        run(main(server.urls[0]))


def test_a_timed_out_request_raises_and_its_late_reply_is_dropped() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def handler(request: tofu.Request) -> bytes:
            if request.body == b"slow":
                await release.wait()
                return b"late"
            return request.body

        with watching("tofu.client") as log:
            async with tofu.aio.Server("tcp://127.0.0.1:0", handler) as server:
                async with await tofu.aio.connect(server.urls[0]) as client:
                    with pytest.raises(tofu.RequestTimeout) as info:
                        await client.request(b"slow", timeout=0.2)
                    assert info.value.timeout == 0.2 and client.in_flight == 0
                    release.set()
                    await asyncio.to_thread(log.wait, "dropped an answer to request")
                    assert (await client.request(b"next")).body == b"next"

    run(main())


def test_the_deadlines_of_answered_requests_do_not_pile_up() -> None:
    """One timer serves every request's deadline; the entries of answered
    requests go, even while a slow request with an earlier deadline waits."""

    async def main() -> None:
        release = asyncio.Event()

        async def handler(request: tofu.Request) -> bytes:
            if request.body == b"slow":
                await release.wait()
            return request.body

        async with tofu.aio.Server("tcp://127.0.0.1:0", handler) as server:
            async with await tofu.aio.connect(server.urls[0]) as client:
                slow = asyncio.ensure_future(client.request(b"slow", timeout=TIMEOUT))
                for i in range(2000):
                    assert (await client.request(f"{i}".encode(), timeout=2 * TIMEOUT)).body == f"{i}".encode()
                assert client.in_flight == 1
                assert len(client._deadlines._heap) <= 4 * client.in_flight + 65  # not 2000
                release.set()
                assert (await slow).body == b"slow"
                assert client.in_flight == 0

    run(main())


def test_streams_signals_and_errors() -> None:
    async def handler(request: tofu.Request) -> Any:
        if request.body == b"fail":
            raise KeyError("missing")
        if request.headers.get("x-upload"):
            return f"{len(request.frames)} frames: {request.body.decode()}"
        request.signal(b"working")

        async def frames() -> AsyncIterator[bytes]:
            for i in range(3):
                await asyncio.sleep(0)
                yield f"frame {i}".encode()

        return frames()

    async def main() -> None:
        heard: list[tofu.Reply] = []
        async with tofu.aio.Server("tcp://127.0.0.1:0", handler) as server:
            async with await tofu.aio.connect(server.urls[0], on_signal=heard.append) as client:
                got = [f async for f in client.stream(b"go")]
                assert [(f.body, f.more) for f in got] == [(b"frame 0", True), (b"frame 1", True), (b"frame 2", False)]
                assert [h.body for h in heard] == [b"working"] and heard[0].message_id == got[0].message_id
                failed = await client.request(b"fail")
                assert failed.status is AmpeStatus.processing_failed and failed.error == "KeyError: 'missing'"
                (answer,) = [f async for f in client.stream([b"a", b"b"], {"x-upload": "yes"})]
                assert answer.body == b"2 frames: ab" and not answer.more

    with watching("tofu.server") as log:
        run(main())
    assert any("the handler raised KeyError" in m for m in log.messages(logging.ERROR))


def test_a_vanished_client_cancels_its_handler_tasks() -> None:
    async def main() -> None:
        entered, cancelled, gone = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def handler(request: tofu.Request) -> bytes:
            entered.set()
            try:
                await asyncio.Event().wait()  # forever, unless cancelled
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return b"never"

        def on_close(peer: tofu.Peer) -> None:
            assert peer.close_reason is AmpeStatus.peer_disconnected
            gone.set()

        async with tofu.aio.Server("tcp://127.0.0.1:0", handler, on_close=on_close) as server:
            with tofu.Reactor() as rtr:  # a client whose engine goes away: no Bye
                async with tofu.aio.wrap(rtr.ampe().create()) as group:
                    address = tofu.parse_url(server.urls[0], server=False)
                    channel = group.post(address.format(tofu.Message())).channel_number
                    hello = await group.receive(TIMEOUT)
                    assert hello is not None and hello.bhdr.proto.op_code == tofu.OpCode.HelloResponse
                    group.post(make(tofu.OpCode.Request, channel, b"work"))
                    await asyncio.wait_for(entered.wait(), TIMEOUT)
            await asyncio.wait_for(gone.wait(), TIMEOUT)
            await asyncio.wait_for(cancelled.wait(), TIMEOUT)
            assert server.peers == []

    with watching("tofu.server") as log:
        run(main())
    assert log.messages(logging.WARNING) == []


def test_shutdown_finishes_the_requests_in_flight() -> None:
    async def main() -> None:
        entered, release = asyncio.Event(), asyncio.Event()

        async def handler(request: tofu.Request) -> bytes:
            entered.set()
            await release.wait()
            return b"finished"

        server = await tofu.aio.Server("tcp://127.0.0.1:0", handler).start()
        client = await tofu.aio.connect(server.urls[0])
        pending = asyncio.ensure_future(client.request(b"work"))
        await asyncio.wait_for(entered.wait(), TIMEOUT)
        stopping = asyncio.ensure_future(server.shutdown(TIMEOUT))
        await asyncio.sleep(0)
        assert not server.serving  # shutting down while the request is in flight
        release.set()
        assert (await pending).body == b"finished"
        await asyncio.wait_for(stopping, TIMEOUT)
        with pytest.raises(tofu.ConnectionLost) as info:
            await client.request(b"again")
        assert info.value.detail == "the server closed the channel"
        with pytest.raises(tofu.ConnectError):
            await tofu.aio.connect(server.urls[0])
        await client.close()

    run(main())


def test_a_reconnecting_client_survives_a_server_restart() -> None:
    async def main() -> None:
        url = f"tcp://127.0.0.1:{tofu.find_free_tcp_port()}"
        down, up = asyncio.Event(), asyncio.Event()
        policy = tofu.Reconnect(initial=0.02, maximum=0.1)
        async with tofu.aio.Server(url, echo):
            client = await tofu.aio.connect(
                url, reconnect=policy, on_disconnect=lambda exc: down.set(), on_reconnect=up.set
            )
            assert (await client.request(b"before")).body == b"before"
        await asyncio.wait_for(down.wait(), TIMEOUT)
        waiting = asyncio.ensure_future(client.request(b"while down", timeout=TIMEOUT))
        async with tofu.aio.Server(url, echo):
            await asyncio.wait_for(up.wait(), TIMEOUT)
            assert (await waiting).body == b"while down"
            assert client.connected
        await client.close()
        assert client.closed

    run(main())


def test_refused_hello_and_connect_failure() -> None:
    async def main() -> None:
        async with tofu.aio.Server("tcp://127.0.0.1:0", echo, on_hello=lambda peer: False) as server:
            with pytest.raises(tofu.ConnectionRefused):
                await tofu.aio.connect(server.urls[0])
        with pytest.raises(tofu.ConnectError) as info:
            await tofu.aio.connect(f"tcp://127.0.0.1:{tofu.find_free_tcp_port()}")
        assert info.value.status is AmpeStatus.connect_failed

    run(main())
