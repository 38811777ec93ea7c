"""tofu.aio.connect and tofu.aio.Client: tofu.Client for asyncio (the
connection under it is aconnection.py). The same session (session.py) runs
in a task of the event loop instead of a thread; every method is called
from that loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Final, Self

from ..addresses import Address
from ..generated import MAX_BODY_LEN, AmpeError, OpCode
from ..options import Options
from .aconnection import AsyncConnection
from .errors import ConnectionLost, RequestTimeout
from .frames import Body, Chunks, frames, next_id, stream_frames
from .headers import HeadersLike
from .reconnect import Reconnect
from .replies import Reply
from .waiters import Expired, TaskAnswer, TaskFrames

__all__ = ["Client", "ReplyStream", "connect"]

log = logging.getLogger("tofu.client")

_REQUEST: Final = OpCode.Request


class Client(AsyncConnection):
    """tofu.Client for asyncio: made by `await tofu.aio.connect(url)`; an
    async context manager (leaving the block closes it).

    `await client.request(...)`, `async for reply in client.stream(...)`,
    `await client.signal(...)`, `await client.close()`: the same behaviour,
    arguments and exceptions as tofu.Client, with any number of tasks
    waiting at once. Use it from the event loop it was made on. Its hooks
    (on_signal, on_disconnect, on_reconnect) are plain functions, called on
    that loop.
    """

    # ------------------------------------------------------------ requests

    async def request(self, body: Body = b"", headers: HeadersLike = None, timeout: float | None = None) -> Reply:
        """tofu.Client.request for asyncio: send a Request, return its Reply.
        Raises tofu.RequestTimeout (a later answer is dropped) or
        tofu.ConnectionLost. Cancelling the task leaves nothing behind."""
        seconds = self.request_timeout if timeout is None else timeout
        deadline = None if seconds is None else self._loop.time() + seconds
        fut: asyncio.Future[Reply | BaseException | Expired] = self._loop.create_future()
        session = self._session
        pending = session.pending
        channel = session.channel
        if (
            channel
            and headers is None
            and type(body) is bytes
            and len(body) <= MAX_BODY_LEN
            and len(pending) < self._max_in_flight
            and not self._closed
        ):  # the common case, in short: one frame on an open channel with room
            msg = self._get()
            bh = msg.bhdr
            bh.channel_number = channel
            mid = bh.message_id = next_id()
            if body:
                msg.body.append(body)
            pending[mid] = TaskAnswer(fut)  # the receiver runs on this loop: nothing can come before the post
            try:
                self._post(msg)
            except BaseException as exc:
                pending.pop(mid, None)
                self._freed()
                self._put(msg)
                if isinstance(exc, AmpeError):
                    raise self._lost_error(exc) from None
                raise
        else:
            mid = await self._register(TaskAnswer(fut), frames(self._ampe, _REQUEST, body, headers), deadline)
        if deadline is not None:
            self._deadlines.add(deadline, mid)
        try:
            result = await fut
        finally:
            if pending.pop(mid, None) is not None:  # not answered: timed out or cancelled
                self._freed()
        if isinstance(result, Reply):
            return result
        if isinstance(result, Expired):
            raise RequestTimeout(f"no answer from {self.url} within {seconds:g} s", seconds)
        raise result

    def stream(
        self, body: Body | Chunks = b"", headers: HeadersLike = None, timeout: float | None = None
    ) -> ReplyStream:
        """tofu.Client.stream for asyncio: `async for reply in client.stream(...)`.
        The request goes when the iteration starts (or on `async with`)."""
        return ReplyStream(self, body, headers, self.request_timeout if timeout is None else timeout)

    async def signal(self, body: Body = b"", headers: HeadersLike = None, timeout: float | None = None) -> None:
        """Send a Signal (no answer); while reconnecting, wait for the channel
        at most `timeout` seconds (None: request_timeout)."""
        seconds = self.request_timeout if timeout is None else timeout
        deadline = None if seconds is None else self._loop.time() + seconds
        msgs = frames(self._ampe, OpCode.Signal, body, headers)
        try:
            channel = await self._channel(deadline)
        except BaseException:
            for msg in msgs:
                self._ampe.put(msg)
            raise
        try:
            self._session.send(msgs, channel, next_id())
        except AmpeError as exc:
            raise self._lost_error(exc) from None

    # ------------------------------------------------------------ closing

    async def close(self, timeout: float = 5.0) -> None:
        """Say goodbye (ByeRequest behind every request sent, the ByeResponse,
        the channel closed); after `timeout` seconds close anyway. Requests
        still waiting then fail with tofu.ConnectionLost. Idempotent."""
        if self._closed:
            try:
                await asyncio.wait_for(self._finished.wait(), timeout)
            except TimeoutError:
                pass
            return
        self._closed = True
        self._session.close_requested = True
        self._changed()
        try:
            self._group.update_receiver()
            await asyncio.wait_for(self._finished.wait(), timeout)
        except TimeoutError:
            log.info("%s: no close within %g s after ByeRequest: closing the channel", self.url, timeout)
        except AmpeError:
            pass
        await self._shut()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "connected" if self.connected else "connecting"
        return f"<tofu.aio.Client {self.url} {state}, {self.in_flight} in flight>"


class ReplyStream(AsyncIterator[Reply]):
    """The answer of tofu.aio.Client.stream(), frame by frame:
    `async for reply in client.stream(...)` (each frame a tofu.Reply, `more`
    True on all but the last), or `async with client.stream(...) as s`.
    The request goes when the iteration starts; `aclose()` stops early."""

    def __init__(self, client: Client, body: Body | Chunks, headers: HeadersLike, timeout: float | None) -> None:
        self._client = client
        self._body = body
        self._headers = headers
        self._timeout = timeout
        self._waiter = TaskFrames()
        self.message_id = 0
        """The message id of the request (0 until it is sent)."""
        self._over = False

    async def _send(self) -> None:
        client = self._client
        deadline = None if self._timeout is None else client._loop.time() + self._timeout
        body = self._body
        if isinstance(body, (bytes, bytearray, memoryview, str)):
            msgs = frames(client._ampe, _REQUEST, body, self._headers)
        else:
            msgs = list(stream_frames(client._ampe, _REQUEST, body, self._headers))
        self.message_id = await client._register(self._waiter, msgs, deadline)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Reply:
        if self._over:
            raise StopAsyncIteration
        if not self.message_id:
            await self._send()
        try:
            item = await asyncio.wait_for(self._waiter.queue.get(), self._timeout)
        except TimeoutError:
            await self.aclose()
            raise RequestTimeout(
                f"no frame from {self._client.url} within {self._timeout:g} s", self._timeout
            ) from None
        except BaseException:
            await self.aclose()
            raise
        if isinstance(item, BaseException):
            self._over = True
            raise item
        if not item.more:
            self._over = True
        return item

    async def aclose(self) -> None:
        """Stop waiting: frames that come later are dropped. Idempotent."""
        if not self._over:
            self._over = True
            client = self._client
            if self.message_id and client._session.pending.pop(self.message_id, None) is not None:
                client._freed()

    async def __aenter__(self) -> Self:
        if not self.message_id:
            await self._send()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def connect(
    url: str | Address,
    *,
    options: Options | None = None,
    headers: HeadersLike = None,
    timeout: float | None = 10.0,
    request_timeout: float | None = None,
    reconnect: bool | Reconnect = False,
    max_in_flight: int = 1024,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    server_name: str | None = None,
    on_signal: Callable[[Reply], object] | None = None,
    on_disconnect: Callable[[ConnectionLost], object] | None = None,
    on_reconnect: Callable[[], object] | None = None,
) -> Client:
    """tofu.connect for asyncio: open a channel and return a tofu.aio.Client.
    The same arguments and exceptions as tofu.connect; the wait for the
    HelloResponse does not block the event loop."""
    client = Client(
        url,
        options=options,
        headers=headers,
        timeout=timeout,
        request_timeout=request_timeout,
        reconnect=reconnect,
        max_in_flight=max_in_flight,
        ca=ca,
        cert=cert,
        key=key,
        server_name=server_name,
        on_signal=on_signal,
        on_disconnect=on_disconnect,
        on_reconnect=on_reconnect,
    )
    await client._first_connect()
    return client
