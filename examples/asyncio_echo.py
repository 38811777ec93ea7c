"""An echo server and a client as coroutines in one asyncio event loop.

`tofu.aio.wrap(group)` makes a channel group awaitable: `await
agroup.receive()` and `async for msg in agroup` never block the loop, so the
server, the client and a ticker all run in one thread.

    python examples/asyncio_echo.py
"""

from __future__ import annotations

import asyncio
import sys

import tofu
import tofu.aio

OP = tofu.OpCode
ECHO = {OP.HelloRequest: OP.HelloResponse, OP.Request: OP.Response, OP.ByeRequest: OP.ByeResponse}


async def server(agroup: tofu.aio.AsyncChannelGroup) -> int:
    answered = 0
    async for msg in agroup:  # ends when the group is destroyed
        if msg.is_from_engine():
            continue
        reply = ECHO.get(msg.bhdr.proto.op_code)
        if reply is None:
            continue
        answered += reply == OP.Response
        msg.bhdr.proto.op_code = reply
        agroup.post(msg)  # post never waits for the network: fine inside a coroutine
    return answered


async def client(agroup: tofu.aio.AsyncChannelGroup, port: int, count: int) -> int:
    channel = agroup.post(tofu.TCPClientAddress("127.0.0.1", port).format(tofu.Message())).channel_number
    resp = await agroup.receive(timeout=5.0)
    assert resp is not None and resp.bhdr.proto.op_code == OP.HelloResponse, "connect failed"
    ok = 0
    for i in range(count):
        req = tofu.Message(OP.Request)
        req.bhdr.channel_number = channel
        req.body.append(f"ping {i}")
        mid = agroup.post(req).message_id
        resp = await agroup.receive(timeout=5.0)
        ok += resp is not None and resp.bhdr.message_id == mid and bytes(resp.body) == f"ping {i}".encode()
    bye = tofu.Message(OP.ByeRequest)
    bye.bhdr.channel_number = channel
    agroup.post(bye)
    async for msg in agroup:  # ByeResponse, then channel_closed
        if msg.is_close_notice():
            break
    return ok


async def main() -> int:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        srv_group = ampe.create()
        async with tofu.aio.wrap(srv_group) as srv, tofu.aio.wrap(ampe.create()) as cli:
            srv.post(tofu.TCPServerAddress("127.0.0.1", 0).format(tofu.Message()))
            welcome = await srv.receive(timeout=5.0)
            assert welcome is not None and welcome.bhdr.status == 0, "listen failed"
            port = tofu.TCPServerAddress.from_message(welcome).port  # port 0: the engine picked a free one
            tick_task = asyncio.create_task(ticker())
            server_task = asyncio.create_task(server(srv))
            ok = await client(cli, port, 100)
            ampe.destroy(srv_group)  # ends the server's `async for`
            answered = await server_task
            tick_task.cancel()
    print(f"client: {ok}/100 echoes; server answered {answered}; the loop ticked {ticks} times meanwhile")
    return 0 if ok == 100 and answered == 100 and ticks > 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
