"""tofu.aio: real asyncio programs (asyncio.run) against a real engine.

Each test runs its coroutine with asyncio.run; waits are on the events the
test expects (a message, a Future, a threading.Event), always with a timeout.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from engine_support import answer_hello
import tofu
from tofu.groups import mailbox_of
import tofu.aio
from tofu.aio import AsyncChannelGroup

OP = tofu.OpCode
TIMEOUT = 10.0


def connect_pair(ampe: tofu.Ampe) -> tuple[tofu.ChannelGroup, tofu.ChannelGroup, int, int]:
    """A server group and a client group joined by one TCP connection (set up synchronously).

    Returns (server group, client group, server's channel, client's channel)."""
    srv, cli = ampe.create(), ampe.create()
    srv.post(tofu.TCPServerAddress("127.0.0.1", 0).format(tofu.Message()))
    welcome = srv.wait_receive(TIMEOUT)
    assert welcome is not None and welcome.bhdr.status == 0
    port = int(welcome.thdrs.get(tofu.LISTEN_ON_HEADER).rsplit("|", 1)[1])
    cli_channel = cli.post(tofu.TCPClientAddress("127.0.0.1", port).format(tofu.Message())).channel_number
    hello = srv.wait_receive(TIMEOUT)
    assert hello is not None and hello.bhdr.proto.op_code == OP.HelloRequest
    srv_channel = hello.bhdr.channel_number
    hello.bhdr.proto.op_code = OP.HelloResponse
    srv.post(hello)
    answer = cli.wait_receive(TIMEOUT)
    assert answer is not None and answer.bhdr.proto.op_code == OP.HelloResponse
    return srv, cli, srv_channel, cli_channel


def signal_to(channel: int, body: bytes = b"") -> tofu.Message:
    msg = tofu.Message(OP.Signal)
    msg.bhdr.channel_number = channel
    msg.body.append(body)
    return msg


def test_echo_between_two_wrapped_groups_in_one_loop(rtr: tofu.Reactor) -> None:
    ampe = rtr.ampe()
    srv_group, cli_group, _, channel = connect_pair(ampe)

    async def server(agroup: AsyncChannelGroup) -> int:
        answered = 0
        async for msg in agroup:
            if msg.bhdr.proto.op_code == OP.Request:
                msg.bhdr.proto.op_code = OP.Response
                agroup.post(msg)
                answered += 1
        return answered

    async def main() -> tuple[list[bytes], int]:
        async with tofu.aio.wrap(srv_group) as srv, tofu.aio.wrap(cli_group) as cli:
            server_task = asyncio.create_task(server(srv))
            bodies = []
            for i in range(50):
                req = tofu.Message(OP.Request)
                req.bhdr.channel_number = channel
                req.body.append(f"req {i}")
                mid = cli.post(req).message_id
                resp = await cli.receive(timeout=TIMEOUT)
                assert resp is not None and resp.bhdr.message_id == mid
                assert resp.bhdr.proto.op_code == OP.Response
                bodies.append(bytes(resp.body))
            ampe.destroy(srv_group)  # ends the server's `async for`
            answered = await asyncio.wait_for(server_task, TIMEOUT)
            return bodies, answered

    bodies, answered = asyncio.run(main())
    assert bodies == [f"req {i}".encode() for i in range(50)]
    assert answered == 50


def test_receive_timeout_returns_none(rtr: tofu.Reactor) -> None:
    group = rtr.ampe().create()

    async def main() -> tuple[object, object, float]:
        async with AsyncChannelGroup(group) as agroup:
            immediate = await agroup.receive(timeout=0)
            start = time.monotonic()
            timed_out = await agroup.receive(timeout=0.05)
            return immediate, timed_out, time.monotonic() - start

    immediate, timed_out, elapsed = asyncio.run(main())
    assert immediate is None and timed_out is None
    assert 0.05 <= elapsed < 2.0


def test_waiting_does_not_block_the_event_loop(rtr: tofu.Reactor) -> None:
    ampe = rtr.ampe()
    srv_group, cli_group, srv_channel, _ = connect_pair(ampe)

    async def main() -> tuple[int, bytes]:
        async with AsyncChannelGroup(cli_group) as cli:
            receiving = asyncio.create_task(cli.receive(timeout=TIMEOUT))
            ticks = 0
            while ticks < 200:  # the loop keeps running other work while receive() waits
                await asyncio.sleep(0)
                ticks += 1
                assert not receiving.done()
            srv_group.post(signal_to(srv_channel, b"late"))  # only now does a message come
            msg = await asyncio.wait_for(receiving, TIMEOUT)
            assert msg is not None
            return ticks, bytes(msg.body)

    assert asyncio.run(main()) == (200, b"late")


def test_many_receivers_and_no_thread_per_call(rtr: tofu.Reactor) -> None:
    group = rtr.ampe().create()
    threads_before = threading.active_count()

    async def main() -> tuple[int, int]:
        async with AsyncChannelGroup(group) as agroup:
            tasks = [asyncio.create_task(agroup.receive(timeout=TIMEOUT)) for _ in range(50)]
            await asyncio.sleep(0)  # let every task start waiting
            during = threading.active_count()
            waker = threading.Thread(target=lambda: [group.update_receiver() for _ in range(50)])
            waker.start()
            results = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
            waker.join(TIMEOUT)
            statuses = {r.bhdr.status for r in results if r is not None}
            assert statuses == {tofu.AmpeStatus.receiver_update}
            return during, sum(r is not None for r in results)

    during, received = asyncio.run(main())
    assert during == threads_before  # 50 pending receives, not one extra thread
    assert received == 50


def test_wakeups_are_coalesced_and_order_is_kept() -> None:
    with tofu.Reactor(tofu.Options(initial_pool_msgs=1024, max_pool_msgs=2048)) as rtr:  # no pool_empty
        _coalescing(rtr)


def _coalescing(rtr: tofu.Reactor) -> None:
    ampe = rtr.ampe()
    srv_group, cli_group, srv_channel, _ = connect_pair(ampe)
    count = 300
    delivered = threading.Event()
    seen = 0

    def counting_hook() -> None:  # chained: the wrapper calls the hook it replaced
        nonlocal seen
        seen += 1
        if seen == count:
            delivered.set()

    mailbox_of(cli_group).on_delivery = counting_hook

    async def main() -> tuple[int, list[bytes]]:
        agroup = AsyncChannelGroup(cli_group)
        for i in range(count):
            srv_group.post(signal_to(srv_channel, str(i).encode()))
        # Block the loop on purpose until all are queued: the reader cannot run meanwhile.
        assert delivered.wait(TIMEOUT)
        wakeups = agroup.wakeups
        bodies = []
        for _ in range(count):
            msg = await agroup.receive(timeout=TIMEOUT)
            assert msg is not None
            bodies.append(bytes(msg.body))
        agroup.close()
        return wakeups, bodies

    wakeups, bodies = asyncio.run(main())
    assert wakeups == 1  # one byte for a burst of 300 deliveries
    assert bodies == [str(i).encode() for i in range(count)]
    assert mailbox_of(cli_group).on_delivery is counting_hook  # restored by close()


def test_update_receiver_from_the_loop_thread_coalesces(rtr: tofu.Reactor) -> None:
    group = rtr.ampe().create()

    async def main() -> tuple[int, int]:
        async with AsyncChannelGroup(group) as agroup:
            for _ in range(100):
                agroup.update_receiver()  # no await in between: the reader cannot run
            n = 0
            while (msg := await agroup.receive(timeout=0.0)) is not None:
                assert msg.bhdr.status == tofu.AmpeStatus.receiver_update and msg.is_from_engine()
                n += 1
            return agroup.wakeups, n

    assert asyncio.run(main()) == (1, 100)


def test_async_for_ends_when_the_engine_stops(rtr: tofu.Reactor) -> None:
    ampe = rtr.ampe()
    srv_group, cli_group, srv_channel, _ = connect_pair(ampe)

    async def main() -> list[object]:
        agroup = AsyncChannelGroup(cli_group)
        got: list[object] = []
        two_in = asyncio.Event()

        async def consume() -> None:
            async for msg in agroup:
                if msg.is_close_notice():
                    got.append(("closed", msg.thdrs.get(tofu.CLOSE_REASON_HEADER)))
                else:
                    got.append(msg.bhdr.status if msg.is_from_engine() else bytes(msg.body))
                if len(got) == 2:
                    two_in.set()
                if msg.bhdr.status == tofu.AmpeStatus.receiver_update:
                    # Stop the whole engine from another thread while we keep iterating.
                    threading.Thread(target=rtr.destroy).start()

        task = asyncio.create_task(consume())
        srv_group.post(signal_to(srv_channel, b"one"))
        srv_group.post(signal_to(srv_channel, b"two"))
        await asyncio.wait_for(two_in.wait(), TIMEOUT)
        cli_group.update_receiver()
        await asyncio.wait_for(task, TIMEOUT)  # ends by itself, no exception
        with pytest.raises(tofu.ShutdownStarted):
            await agroup.receive(timeout=TIMEOUT)
        return got

    got = asyncio.run(main())
    # Then the engine stops: it closes the channel (shutdown_started) before it ends the iteration.
    assert got == [b"one", b"two", tofu.AmpeStatus.receiver_update, ("closed", "shutdown_started")]


def test_destroying_the_group_ends_every_waiting_receiver(rtr: tofu.Reactor) -> None:
    ampe = rtr.ampe()
    group = ampe.create()

    async def main() -> list[BaseException | object]:
        agroup = AsyncChannelGroup(group)
        tasks = [asyncio.create_task(agroup.receive()) for _ in range(3)]
        await asyncio.sleep(0)
        ampe.destroy(group)
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), TIMEOUT)
        assert agroup._rsock.fileno() == -1  # released by itself on ShutdownStarted
        agroup.close()  # still fine to call
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, tofu.ShutdownStarted) for r in results)


def test_cancelled_receive_loses_no_message(rtr: tofu.Reactor) -> None:
    ampe = rtr.ampe()
    srv_group, cli_group, srv_channel, _ = connect_pair(ampe)

    async def main() -> list[bytes]:
        async with AsyncChannelGroup(cli_group) as agroup:
            task = asyncio.create_task(agroup.receive())
            await asyncio.sleep(0)  # it is waiting now
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert agroup._waiters == []  # no leftover waiter
            with pytest.raises(TimeoutError):  # wait_for cancels the receive on timeout
                await asyncio.wait_for(agroup.receive(), 0.01)
            assert agroup._waiters == []
            srv_group.post(signal_to(srv_channel, b"first"))
            srv_group.post(signal_to(srv_channel, b"second"))
            got = []
            for _ in range(2):
                msg = await agroup.receive(timeout=TIMEOUT)
                assert msg is not None
                got.append(bytes(msg.body))
            return got

    assert asyncio.run(main()) == [b"first", b"second"]


def test_close_releases_everything_and_ends_iteration(rtr: tofu.Reactor) -> None:
    ampe = rtr.ampe()
    srv_group, cli_group, srv_channel, _ = connect_pair(ampe)

    async def main() -> AsyncChannelGroup:
        agroup = AsyncChannelGroup(cli_group)
        rfd = agroup._rsock.fileno()
        loop = asyncio.get_running_loop()
        ended = asyncio.Event()

        async def iterate() -> None:
            async for _ in agroup:
                pass
            ended.set()

        task = asyncio.create_task(iterate())
        await asyncio.sleep(0)
        agroup.close()
        await asyncio.wait_for(ended.wait(), TIMEOUT)  # `async for` ended on close
        await task
        assert not loop.remove_reader(rfd)  # the reader was already removed
        agroup.close()  # idempotent
        with pytest.raises(tofu.NotAllowed):
            await agroup.receive(timeout=0)
        return agroup

    agroup = asyncio.run(main())
    assert agroup.closed
    assert agroup._rsock.fileno() == -1 and agroup._wsock.fileno() == -1
    assert mailbox_of(cli_group).on_delivery is None
    # The group itself still works, synchronously.
    srv_group.post(signal_to(srv_channel, b"after"))
    msg = cli_group.wait_receive(TIMEOUT)
    assert msg is not None and bytes(msg.body) == b"after"


def test_one_wrapper_per_group(rtr: tofu.Reactor) -> None:
    group = rtr.ampe().create()
    first = AsyncChannelGroup(group)
    with pytest.raises(tofu.NotAllowed):
        AsyncChannelGroup(group)
    first.close()
    second = tofu.aio.wrap(group)  # fine once the first is closed
    assert mailbox_of(group).on_delivery == second._notify
    second.close()


def test_created_outside_a_loop_binds_on_first_receive(rtr: tofu.Reactor) -> None:
    ampe = rtr.ampe()
    srv_group, cli_group, srv_channel, _ = connect_pair(ampe)
    agroup = AsyncChannelGroup(cli_group)  # no running loop yet
    srv_group.post(signal_to(srv_channel, b"early"))

    async def main() -> list[bytes]:
        got = []
        msg = await agroup.receive(timeout=TIMEOUT)
        assert msg is not None
        got.append(bytes(msg.body))
        srv_group.post(signal_to(srv_channel, b"later"))
        msg = await agroup.receive(timeout=TIMEOUT)  # this one needs the reader
        assert msg is not None
        got.append(bytes(msg.body))
        agroup.close()
        return got

    assert asyncio.run(main()) == [b"early", b"later"]
    assert mailbox_of(cli_group).on_delivery is None


def test_post_with_timeout_0_never_holds_up_the_loop_on_a_full_window() -> None:
    """With a send window and a peer that never reads, post(timeout=0) raises
    PostTimeout at once, and the message is still the caller's."""
    import socket

    with tofu.Reactor(tofu.Options(max_unsent_msgs=2)) as engine, socket.create_server(("127.0.0.1", 0)) as silent:
        plain = engine.ampe().create()
        port = silent.getsockname()[1]
        hello = plain.post(tofu.TCPClientAddress("127.0.0.1", port).format(tofu.Message()))
        peer = answer_hello(silent, plain, hello.channel_number)  # open, then it never reads
        group = AsyncChannelGroup(plain)

        async def fill() -> tuple[int, tofu.Message]:
            posted = 0
            while True:
                msg = tofu.Message(tofu.OpCode.Signal)
                msg.bhdr.channel_number = hello.channel_number
                msg.body.append(b"x" * 65535)
                try:
                    group.post(msg, timeout=0)
                except tofu.PostTimeout:
                    return posted, msg
                posted += 1
                await asyncio.sleep(0)  # let the loop run between posts, as a real coroutine would

        posted, kept = asyncio.run(asyncio.wait_for(fill(), 30))
        assert posted >= 2 and len(kept.body) == 65535
        group.close()
        peer.close()
