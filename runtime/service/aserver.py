"""tofu.aio.Server: tofu.Server for asyncio, a task per request."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import AsyncIterable, Callable, Sequence
from types import TracebackType
from typing import Any, Final, Self

from ..addresses import Address
from ..asyncgroup import AsyncChannelGroup
from ..generated import AmpeError, NotAllowed, ShutdownStarted
from ..options import Options
from .dispatch import Dispatcher, Job, PeerState
from .engines import Engine, server_engine
from .requests import Peer, Request, outcome, report, send_chunk
from .signals import STOP_SIGNALS
from .urls import server_addresses, url_of

__all__ = ["Server"]

log = logging.getLogger("tofu.server")

_NEW, _SERVING, _STOPPING, _STOPPED = range(4)
_YIELD_EVERY: Final = 256  # messages handled in a row before the dispatcher lets other tasks run


class Server:
    """tofu.Server for asyncio: `async with tofu.aio.Server(urls, handler) as
    server:` serves in the background; `await server.serve_forever()` until
    `await server.shutdown()` or SIGINT / SIGTERM.

    `handler(request)` is a coroutine function (a plain function works too)
    and answers as tofu.Server's does; it may also return an async iterable
    of chunks (an `async def` with `yield`): a streamed answer. Each request
    runs in a task of its own, at most `max_tasks` at once (past it the
    server stops reading until one ends). When a client goes away, the tasks
    of its requests are cancelled. `ordered=True`: one request at a time per
    client, in order. on_hello, on_close and on_signal as for tofu.Server
    (on_hello and on_close are plain functions, called on the event loop;
    on_signal may be a coroutine function). Use it on one event loop.
    """

    def __init__(
        self,
        urls: str | Address | Sequence[str | Address],
        handler: Callable[[Request], Any],
        *,
        max_tasks: int = 1024,
        ordered: bool = False,
        on_hello: Callable[[Peer], object] | None = None,
        on_close: Callable[[Peer], object] | None = None,
        on_signal: Callable[[Request], Any] | None = None,
        max_request_size: int = 16 * 2**20,
        options: Options | None = None,
        cert: str | None = None,
        key: str | None = None,
        ca: str | None = None,
    ) -> None:
        if max_tasks < 1:
            raise ValueError("max_tasks must be at least 1")
        self._addresses = server_addresses(urls)
        self.urls: list[str] = [url_of(a) for a in self._addresses]
        """The addresses it listens on, as URLs: after start(), the real ones (port 0 replaced)."""
        self._handler = handler
        self._max_tasks = max_tasks
        self._on_hello, self._on_close, self._on_signal = on_hello, on_close, on_signal
        self._ordered = ordered
        self._max_request_size = max_request_size
        self._engine_args = (options, cert, key, ca)
        self._state = _NEW
        self._waiters: list[asyncio.Future[None]] = []
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._force = False
        self._deadline: float | None = None  # when the shutdown's grace period ends (loop time)
        self._stopper: asyncio.Task[int] | None = None  # a second signal's shutdown(0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._engine: Engine | None = None
        self._core: Dispatcher | None = None
        self._agroup: AsyncChannelGroup | None = None
        self._dispatcher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ life cycle

    async def start(self) -> Self:
        """Listen on every address and serve in the background; returns when
        every listener is up. Raises the listen failure (e.g. tofu.ListenFailed)."""
        if self._state != _NEW:
            raise RuntimeError("a Server starts once")
        self._state = _SERVING
        options, cert, key, ca = self._engine_args
        self._engine = server_engine(self._addresses, options, cert, key, ca)
        ampe = self._engine.reactor.ampe()
        group = ampe.create()
        self._agroup = AsyncChannelGroup(group)
        self._core = core = Dispatcher(
            ampe,
            group,
            self._addresses,
            self._handler,
            self._start_job,
            self._changed,
            lambda: None,
            on_hello=self._on_hello,
            on_close=self._on_close,
            on_signal=self._on_signal,
            ordered=self._ordered,
            max_request_size=self._max_request_size,
        )
        try:
            core.listeners.listen()  # before the dispatcher runs: it must know the listeners when their answers come
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch(), name="tofu-server")
            await self._wait_for(lambda: core.listeners.ready, 10.0)
            if core.listeners.error is not None or not core.listeners.ready:
                raise core.listeners.error or AmpeError("no answer to listening within 10 s")
        except BaseException:
            await self.shutdown(0)
            raise
        self.urls = list(core.listeners.urls)
        return self

    async def serve_forever(self, grace: float = 5.0, ready: Callable[[], object] | None = None) -> None:
        """start() if needed, then serve until shutdown() or, on the main
        thread, SIGINT / SIGTERM; then shut down with `grace` seconds (a
        second signal: at once). `ready()` is called once the server listens
        and the signals are taken care of."""
        loop = asyncio.get_running_loop()
        installed = []
        for sig in STOP_SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_stop_signal, sig)
                installed.append(sig)
            except (ValueError, RuntimeError, NotImplementedError):
                pass  # not the main thread (or no signals here): shutdown() alone stops it
        try:
            if self._state == _NEW:
                await self.start()
            if ready is not None:
                ready()
            await self._stop_requested.wait()
            await self.shutdown(0 if self._force else grace)  # a second signal meanwhile cuts it short
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def shutdown(self, grace: float = 5.0) -> int:
        """tofu.Server.shutdown for asyncio: stop listening, let the requests
        in flight finish, say Bye to every client and wait for them at most
        `grace` seconds, then close what is left; return how many were
        closed so. A call while another is in progress waits for it, and
        cuts its grace period short when it gives a shorter one."""
        self._stop_requested.set()
        loop = asyncio.get_running_loop()
        state, self._state = self._state, max(self._state, _STOPPING)
        end = loop.time() + max(grace, 0.0)
        if self._deadline is None or end < self._deadline:
            self._deadline = end
        if state == _NEW:
            self._stopped.set()
            return 0
        if state != _SERVING:
            self._changed()  # a shorter grace: the shutdown in progress sees it
            await self._stopped.wait()
            return 0
        core, engine, agroup = self._core, self._engine, self._agroup
        assert core is not None and engine is not None and agroup is not None
        closed = 0
        try:
            log.info("stopping: closing the listeners, then Bye to %d client(s) within %g s", len(core.states), grace)
            core.stop()
            self._changed()
            await self._wait_for(lambda: not core.states and not core.listeners.open, None, lambda: self._deadline)
            if core.states:
                closed = len(core.states)
                log.warning("grace period over: closing %d channel(s)", closed)
                core.abort_all()
                await self._wait_for(lambda: not core.states, 2.0)
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=2.0)
            agroup.close()
            if self._dispatcher is not None:
                await asyncio.wait([self._dispatcher], timeout=2.0)
            try:
                core.ampe.destroy(core.group)
            except AmpeError:
                pass
        finally:
            engine.release()
            self._state = _STOPPED
            self._stopped.set()
        return closed

    @property
    def peers(self) -> list[Peer]:
        """The clients connected now."""
        core = self._core
        return [] if core is None else core.peers()

    @property
    def serving(self) -> bool:
        """True between start() and shutdown()."""
        return self._state == _SERVING

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()

    def __repr__(self) -> str:
        state = ("new", "serving", "stopping", "stopped")[self._state]
        return f"<tofu.aio.Server {' '.join(self.urls)} {state}, {len(self.peers)} client(s)>"

    # ------------------------------------------------------------ internals

    def _on_stop_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stop_requested.is_set():
            log.warning("%s again: stopping at once", name)
            self._force = True
            self._stopper = asyncio.get_running_loop().create_task(self.shutdown(0))  # cuts the grace short
            return
        log.info("%s: stopping", name)
        self._stop_requested.set()

    async def _wait_for(
        self, condition: Callable[[], bool], timeout: float | None, moving: Callable[[], float | None] | None = None
    ) -> bool:
        """Wait until `condition()` holds, at most `timeout` seconds (None: as
        long as it takes), or until the deadline `moving()` says (loop time;
        it may change while we wait)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not condition():
            if moving is not None:
                deadline = moving()
            if deadline is not None and loop.time() >= deadline:
                return False
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            timer = None if deadline is None else loop.call_at(deadline, _resolve, fut)
            try:
                await fut
            finally:
                if timer is not None:
                    timer.cancel()
        return True

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            _resolve(fut)

    def _start_job(self, state: PeerState, job: Job | None) -> None:
        task = asyncio.get_running_loop().create_task(self._run(state, job))
        self._tasks.add(task)
        state.tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(state.tasks.discard)

    async def _run(self, state: PeerState, job: Job | None) -> None:
        core = self._core
        assert core is not None
        if job is not None:
            await _handle(job)
            core.done(state)
            return
        while (job := core.take(state)) is not None:
            await _handle(job)
            core.done(state)

    async def _dispatch(self) -> None:
        """The dispatcher task: every message of the server's group."""
        core, agroup = self._core, self._agroup
        assert core is not None and agroup is not None
        handle, limit = core.handle, self._max_tasks
        try:
            while True:
                handled = 0
                while (msg := agroup.receive_nowait()) is not None:
                    handle(msg)
                    handled += 1
                    if core.in_flight >= limit:  # backpressure: read no more until a task ends
                        await self._wait_for(lambda: core.in_flight < limit or self._state != _SERVING, None)
                    elif handled >= _YIELD_EVERY:
                        handled = 0
                        await asyncio.sleep(0)
                msg = await agroup.receive()
                if msg is not None:
                    handle(msg)
        except (ShutdownStarted, NotAllowed):
            pass
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.exception("the server's dispatcher failed")
        finally:
            self._changed()


async def _handle(job: Job) -> None:
    handler, request = job
    if request.peer.closed:
        return
    try:
        result = handler(request)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, AsyncIterable):
            await _stream(request, result)
            return
    except asyncio.CancelledError:
        if request.peer.closed:
            return  # the client is gone: its answer would go nowhere
        raise
    except BaseException as exc:  # a handler never ends the server
        outcome(request, error=exc)
        return
    outcome(request, result)


async def _stream(request: Request, chunks: AsyncIterable[Any]) -> None:
    """A streamed answer from an async iterable: each chunk sent as it comes
    (one behind, so the last one's `more` flag is known)."""
    previous: Any = None
    started = False
    try:
        async for chunk in chunks:
            if started:
                send_chunk(request, previous, last=False)
            previous, started = chunk, True
        send_chunk(request, previous if started else b"", last=True)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        report(request, exc)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
