"""tofu.aio.connect and tofu.aio.Client: tofu.Client for asyncio. The
same session (session.py) runs in a task of the event loop instead of a
thread: a Client holds the engine, the channel group and the session, runs
the receiver task, and makes a caller wait, when it must, for the channel
(a reconnect) or for room (max_in_flight), before its request enters
`pending` and goes. Every method is called from the loop it was made on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Final, Self

from ..addresses import Address
from ..asyncgroup import AsyncChannelGroup
from ..generated import MAX_BODY_LEN, AmpeError, NotAllowed, OpCode, ShutdownStarted
from ..message import Message
from ..options import Options
from .engines import client_engine
from .errors import ConnectionLost, RequestTimeout
from .frames import Body, Chunks, frames, next_id, stream_frames
from .headers import Headers, HeadersLike, pairs_of
from .reconnect import Reconnect
from .replies import Reply
from .session import Session
from .urls import client_address, url_of
from .waiters import Deadlines, Expired, TaskAnswer, TaskFrames

__all__ = ["Client", "ReplyStream", "connect"]

log = logging.getLogger("tofu.client")

_REQUEST: Final = OpCode.Request
_YIELD_EVERY: Final = 256  # messages handled in a row before the receiver lets other tasks run


class Client:
    """tofu.Client for asyncio: made by `await tofu.aio.connect(url)`; an
    async context manager (leaving the block closes it).

    `await client.request(...)`, `async for reply in client.stream(...)`,
    `await client.signal(...)`, `await client.close()`: the same behaviour,
    arguments and exceptions as tofu.Client, with any number of tasks
    waiting at once. Use it from the event loop it was made on. Its hooks
    (on_signal, on_disconnect, on_reconnect) are plain functions, called on
    that loop.
    """

    def __init__(
        self,
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
    ) -> None:
        """Set up the client and start connecting; `await tofu.aio.connect(...)` is the way to call this."""
        address = client_address(url, server_name)
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.url = url_of(address)
        """The server's address, as a URL."""
        self.request_timeout = request_timeout
        """The timeout of a request that gives none (None: as long as it takes)."""
        self._max_in_flight = max_in_flight
        policy = Reconnect() if reconnect is True else reconnect or None
        self._loop = asyncio.get_running_loop()
        self._engine = client_engine(address, options, ca, cert, key)
        self._ampe = self._engine.reactor.ampe()
        self._group = self._ampe.create()
        self._get, self._put, self._post = self._ampe.get, self._ampe.put, self._group.post
        self._agroup = AsyncChannelGroup(self._group)
        self._state_waiters: list[asyncio.Future[None]] = []
        self._room_waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self._finished = asyncio.Event()
        self._session = Session(
            self._ampe,
            self._group,
            address,
            self.url,
            pairs_of(headers),
            timeout,
            policy,
            self._changed,
            self._freed,
            on_signal,
            on_disconnect,
            on_reconnect,
        )
        self._deadlines = Deadlines(self._loop, self._session.pending)
        self._receiver = self._loop.create_task(self._receive(), name=f"tofu-client {self.url}")

    async def _first_connect(self) -> None:
        session = self._session
        try:
            while not (session.channel or session.done):
                await self._wait(self._state_waiters, None)
            if session.first_error is not None:
                raise session.first_error
        except BaseException:
            await self._shut()
            raise

    # ------------------------------------------------------------ properties

    @property
    def connected(self) -> bool:
        """True while the channel is open (False while reconnecting and after close())."""
        return bool(self._session.channel) and not self._closed

    @property
    def closed(self) -> bool:
        """True once close() was called, or the channel closed for good."""
        return self._closed or (self._session.done and not self._session.channel)

    @property
    def server_headers(self) -> Headers:
        """The text headers of the server's HelloResponse."""
        return self._session.hello_headers

    @property
    def in_flight(self) -> int:
        """Requests (and streams) waiting for their answer."""
        return len(self._session.pending)

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

    # ------------------------------------------------------------ internals

    async def _register(self, waiter: TaskAnswer | TaskFrames, msgs: list[Message], deadline: float | None) -> int:
        """Wait for room and a channel, then post `msgs` under a new id with
        `waiter` in `pending`: return the id."""
        session = self._session
        pending = session.pending
        try:
            while len(pending) >= self._max_in_flight:
                session.room_waiters += 1
                try:
                    room = await self._wait(self._room_waiters, deadline)
                finally:
                    session.room_waiters -= 1
                if not room and len(pending) >= self._max_in_flight:
                    raise RequestTimeout(f"{self.url}: {len(pending)} requests in flight, no room in time")
            channel = await self._channel(deadline)
        except BaseException:
            for msg in msgs:
                self._ampe.put(msg)
            raise
        mid = next_id()
        pending[mid] = waiter  # the receiver runs on this loop: nothing can come before the post
        try:
            session.send(msgs, channel, mid)
        except BaseException as exc:
            pending.pop(mid, None)
            self._freed()
            if isinstance(exc, AmpeError):
                raise self._lost_error(exc) from None
            raise
        return mid

    def _lost_error(self, exc: AmpeError) -> ConnectionLost:
        lost = self._session.lost
        if lost is not None:
            return ConnectionLost(lost.reason, lost.detail)
        return ConnectionLost(exc.status, str(exc))

    async def _channel(self, deadline: float | None) -> int:
        """The open channel; while (re)connecting, wait for it until `deadline`."""
        session = self._session
        while True:
            if self._closed:
                raise ConnectionLost(detail="the client was closed")
            if session.channel:
                return session.channel
            if session.done:
                lost = session.lost
                raise ConnectionLost(lost.reason, lost.detail) if lost else ConnectionLost()
            if not await self._wait(self._state_waiters, deadline) and not (session.channel or session.done):
                raise RequestTimeout(f"{self.url}: not connected again in time")

    async def _wait(self, waiters: list[asyncio.Future[None]], deadline: float | None) -> bool:
        """Wait for the next _changed() / _freed() (as `waiters` says); False at `deadline`."""
        if deadline is not None and self._loop.time() >= deadline:
            return False
        fut: asyncio.Future[None] = self._loop.create_future()
        waiters.append(fut)
        timer = None if deadline is None else self._loop.call_at(deadline, _resolve, fut)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            if fut in waiters:
                waiters.remove(fut)
        return deadline is None or self._loop.time() < deadline

    def _changed(self) -> None:
        waiters, self._state_waiters = self._state_waiters, []
        for fut in waiters:
            _resolve(fut)

    def _freed(self) -> None:
        """A request left `pending`: wake one waiting for room."""
        if self._room_waiters:
            _resolve(self._room_waiters.pop(0))

    async def _receive(self) -> None:
        """The receiver task: every message of the group goes to the session."""
        session = self._session
        agroup = self._agroup
        handle = session.handle
        take = self._group.wait_receive  # what is queued, without waiting (the wrapper's receive waits)
        try:
            while not session.done:
                handled = 0
                while (msg := take(0)) is not None:
                    handle(msg)
                    if session.done:
                        break
                    handled += 1
                    if handled >= _YIELD_EVERY:
                        handled = 0
                        await asyncio.sleep(0)
                if session.done:
                    break
                msg = await agroup.receive(session.timeout())
                if msg is None:
                    session.on_timer()
                else:
                    handle(msg)
        except (ShutdownStarted, NotAllowed):
            session.stopped()
        except asyncio.CancelledError:
            session.stopped()
            raise
        except BaseException:
            log.exception("%s: the client's receiver failed", self.url)
            session.stopped()
        finally:
            self._finished.set()
            self._changed()

    async def _shut(self) -> None:
        """Stop the receiver, close the group, give back an engine of our own."""
        self._closed = True
        self._agroup.close()  # a receive() in progress ends (the receiver task with it)
        if not self._receiver.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._receiver), 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._receiver.cancel()
        try:
            self._ampe.destroy(self._group)
        except AmpeError:
            pass
        if not self._session.done:
            self._session.stopped()
        self._engine.release()


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


def _resolve(fut: asyncio.Future[None]) -> None:
    """Resolve `fut` with None, unless it is done."""
    if not fut.done():
        fut.set_result(None)
