"""An echo server and its client for asyncio: tofu.aio.Server and
tofu.aio.connect in one event loop, 100 requests in flight at once.
(examples/asyncio_echo.py is the same against the engine.)

    python examples/service_asyncio.py
"""

from __future__ import annotations

import asyncio
import sys

import tofu
import tofu.aio

answered = 0


async def echo(request: tofu.Request) -> bytes:
    global answered
    answered += 1  # one event loop: no lock needed
    await asyncio.sleep(0)  # a real handler would await something
    return request.body


async def main() -> int:
    async with tofu.aio.Server("tcp://127.0.0.1:0", echo) as server:
        async with await tofu.aio.connect(server.urls[0]) as client:
            replies = await asyncio.gather(*(client.request(f"hello #{i}", timeout=10.0) for i in range(100)))
    ok = sum(reply.body == f"hello #{i}".encode() for i, reply in enumerate(replies))
    print(f"client: {ok}/100 echoes; server answered {answered}")
    return 0 if ok == 100 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
