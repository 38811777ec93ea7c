"""AsyncChannelGroup: receive from a ChannelGroup without blocking the event
loop (published as tofu.aio.AsyncChannelGroup and tofu.aio.wrap).

    import asyncio, tofu, tofu.aio

    async def main() -> None:
        with tofu.Reactor() as rtr:
            ampe = rtr.ampe()
            async with tofu.aio.wrap(ampe.create()) as agroup:
                ...                                # agroup.post(msg) as usual
                msg = await agroup.receive(timeout=5.0)   # Message, or None on timeout
                async for msg in agroup:           # ends when the engine shuts down
                    ...

How it works: no thread per call and no polling. The wrapper owns a socket
pair; the event loop watches one end (`loop.add_reader`). The engine calls the
group's delivery hook on its I/O thread after queueing a message; the hook
writes one byte to the other end, and only when no byte is already pending,
so a burst of messages costs one wake-up. When the loop sees the byte it
drains the socket and wakes the coroutines waiting in `receive()`, which take
messages with the non-blocking `wait_receive(0)`.

One wrapper per group, used from one event loop. `post()` and
`update_receiver()` never block and may be called from coroutines (or, as on
the plain group, from any thread).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

from .generated import NotAllowed, ShutdownStarted
from .groups import ChannelGroup, mailbox_of
from .message import BinaryHeader, Message

__all__ = ["AsyncChannelGroup", "wrap"]


class _Closed(NotAllowed):
    """Raised by receive() once the wrapper is closed."""


class AsyncChannelGroup:
    """A ChannelGroup for asyncio programs: `await receive()`, `async for`.

    Create it with a group from `Ampe.create()`; it installs itself as the
    group's delivery hook until `close()`. It binds to the running event loop
    on creation (or on the first `receive()` when created outside a loop).
    Use it as an async (or plain) context manager to close it at the end.

    Receiving ends with `ShutdownStarted` when the group is destroyed or the
    engine stops: `receive()` raises it, `async for` simply ends. Cancelling a
    task blocked in `receive()` loses no message: messages stay in the group's
    queue until a `receive()` returns them.
    """

    def __init__(self, group: ChannelGroup) -> None:
        mailbox = mailbox_of(group)
        hook = mailbox.on_delivery
        owner = getattr(hook, "__self__", None)
        if isinstance(owner, AsyncChannelGroup) and not owner.closed:
            raise NotAllowed("this channel group already has an AsyncChannelGroup")
        self._group = group
        self._previous_hook: Callable[[], None] | None = hook
        self._rsock, self._wsock = socket.socketpair()
        self._rsock.setblocking(False)
        self._wsock.setblocking(False)
        self._lock = threading.Lock()  # between the hook's send and close()
        self._signalled = False  # a wake-up byte is on its way: coalesce the next ones
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self._released = False
        self._shutdown = False
        #: Wake-up bytes written so far (one per burst of deliveries, not per message).
        self.wakeups = 0
        self._mailbox = mailbox
        mailbox.on_delivery = self._notify
        try:
            self._bind(asyncio.get_running_loop())
        except RuntimeError:
            pass  # no running loop yet: bind on the first receive()

    # ------------------------------------------------------------ properties

    @property
    def group(self) -> ChannelGroup:
        """The wrapped ChannelGroup."""
        return self._group

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closed

    # ------------------------------------------------------------ sending

    def post(self, msg: Message, timeout: float | None = None) -> BinaryHeader:
        """`ChannelGroup.post`: hand `msg` to the engine. It never blocks,
        unless `Options.max_unsent_msgs` is set and the channel's send window
        is full: then it waits at most `timeout` seconds (None: until there is
        room) and raises tofu.PostTimeout, leaving `msg` with the caller. In a
        coroutine, pass `timeout=0` so a full window never holds up the event
        loop: catch PostTimeout and try again later."""
        return self._group.post(msg, timeout)

    def update_receiver(self, msg: Message | None = None) -> None:
        """`ChannelGroup.update_receiver`: wake the receiver with a receiver_update message."""
        self._group.update_receiver(msg)

    # ------------------------------------------------------------ receiving

    def receive_nowait(self) -> Message | None:
        """The next message if one is queued, else None. Raises ShutdownStarted
        once the engine has stopped, NotAllowed after close()."""
        if self._closed:
            raise _Closed("this AsyncChannelGroup is closed")
        if self._shutdown:
            raise ShutdownStarted("the engine has stopped")
        try:
            return self._group.wait_receive(0)
        except ShutdownStarted:
            self._shutdown = True
            self._release()
            self._wake_waiters()  # every other receiver ends too
            raise

    async def receive(self, timeout: float | None = None) -> Message | None:
        """The next message for the group, or None after `timeout` seconds
        (None waits as long as it takes, 0 does not wait).

        Raises ShutdownStarted once the engine (or the group) has stopped and
        every message queued before has been received, NotAllowed after close()."""
        msg = self.receive_nowait()
        if msg is not None:
            return msg
        if timeout is not None and timeout <= 0:
            return None
        loop = asyncio.get_running_loop()
        self._bind(loop)
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            timer = None if deadline is None else loop.call_at(deadline, _resolve, fut)
            try:
                await fut
            finally:
                if timer is not None:
                    timer.cancel()
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass  # already taken by _wake_waiters
            msg = self.receive_nowait()
            if msg is not None:
                return msg
            if deadline is not None and loop.time() >= deadline:
                return None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        """The next message; the iteration ends when the engine stops or on close()."""
        try:
            msg = await self.receive()
        except (ShutdownStarted, _Closed):
            raise StopAsyncIteration from None
        assert msg is not None  # no timeout: receive() returns a message or raises
        return msg

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Stop watching the group: restore its delivery hook, remove the
        reader, close the socket pair and end every pending `receive()` (with
        NotAllowed; `async for` just ends). Idempotent. Call it on the event
        loop's thread. The group itself stays usable (and is not destroyed)."""
        if self._closed:
            return
        self._closed = True
        self._release()
        self._wake_waiters()

    async def aclose(self) -> None:
        """close(), for `async with` and contextlib.aclosing."""
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "shut down" if self._shutdown else "open"
        return f"<AsyncChannelGroup {state}, {self._group.pending()} pending, {self.wakeups} wake-ups>"

    # ------------------------------------------------------------ internals

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop or self._released:
            return
        if self._loop is not None and not self._loop.is_closed():
            raise RuntimeError("this AsyncChannelGroup is bound to another event loop")
        self._loop = loop
        loop.add_reader(self._rsock.fileno(), self._on_readable)

    def _notify(self) -> None:
        """The group's delivery hook: runs on the engine's I/O thread (or on a
        thread calling update_receiver) right after a message was queued."""
        previous = self._previous_hook
        if previous is not None:
            previous()
        if self._signalled:
            return  # a byte is pending: the reader will see this message too
        self._signalled = True
        with self._lock:
            if self._released:
                return
            try:
                self._wsock.send(b"\0")
            except (BlockingIOError, InterruptedError):
                return  # the pair is full of bytes: the reader will run anyway
            except OSError:
                return
            self.wakeups += 1

    def _on_readable(self) -> None:
        """On the event loop: drain the wake-up bytes, then wake the receivers.

        The flag is cleared only after draining: a delivery racing with the
        drain either sees the flag still set (and its message is found by the
        receivers woken below) or writes a new byte (and wakes us again)."""
        try:
            while self._rsock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass
        self._signalled = False
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            _resolve(fut)

    def _release(self) -> None:
        """Give back the hook, the reader and the sockets (once)."""
        if self._released:
            return
        group = self._group
        if self._mailbox.on_delivery == self._notify:
            self._mailbox.on_delivery = self._previous_hook
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._rsock.fileno())
        with self._lock:
            self._released = True
            self._rsock.close()
            self._wsock.close()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def wrap(group: ChannelGroup) -> AsyncChannelGroup:
    """`AsyncChannelGroup(group)`: make `group` awaitable."""
    return AsyncChannelGroup(group)
