"""tofu for asyncio.

A client and a server in the style of the synchronous tofu.connect and
tofu.Server, for coroutines:

    import asyncio, tofu.aio

    async def echo(request: tofu.Request) -> bytes:
        return request.body

    async def main() -> None:
        async with tofu.aio.Server("tcp://127.0.0.1:0", echo) as server:
            async with await tofu.aio.connect(server.urls[0]) as client:
                reply = await client.request(b"hello")
                async for frame in client.stream(b"a streamed answer"):
                    ...

And, under them, a channel group you can await: `tofu.aio.wrap(group)`
(AsyncChannelGroup) receives without blocking the event loop:

    async with tofu.aio.wrap(ampe.create()) as agroup:
        agroup.post(msg)                              # as ChannelGroup.post
        msg = await agroup.receive(timeout=5.0)       # Message, or None on timeout
        async for msg in agroup:                      # ends when the engine shuts down
            ...

See docs/client-server.md and docs/asyncio.md.
"""

from __future__ import annotations

from .asyncgroup import AsyncChannelGroup, wrap
from .service.aclient import Client, ReplyStream, connect
from .service.aserver import Server

__all__ = ["AsyncChannelGroup", "Client", "ReplyStream", "Server", "connect", "wrap"]
