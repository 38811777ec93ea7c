"""tofu.Server: a handler behind one or more listeners, with a pool of
worker threads. The asyncio twin is in aserver.py (tofu.aio.Server)."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, Self

from ..addresses import Address
from ..generated import AmpeError, ShutdownStarted
from ..options import Options
from .dispatch import Dispatcher, Job, PeerState
from .engines import Engine, server_engine
from .requests import Peer, Request, outcome
from .signals import StopSignals, start_thread
from .urls import server_addresses, url_of

__all__ = ["Server"]

log = logging.getLogger("tofu.server")

_STOP: Final = None  # what a worker's queue holds to end it
_NEW, _SERVING, _STOPPING, _STOPPED = range(4)


class Server:
    """Serve `handler` on one address or several: tcp://HOST:PORT,
    tls://HOST:PORT, uds:///PATH (port 0 picks a free port; `urls` then lists
    the real addresses). A context manager: the block serves in the
    background, leaving it shuts the server down.

    `handler(request)` gets a tofu.Request (`body`, `headers`, `peer`,
    `reply()`, `stream()`, `signal()`) and answers by returning: bytes or str
    (the reply's body), a (headers, body) pair, an iterable of bodies (or of
    (headers, body) pairs: a streamed answer, `more` on all but the last
    frame), or None (an empty reply, unless the handler replied itself). A
    handler that raises still answers: a reply with the `tofu-error` header
    (tofu.ERROR_HEADER: the status of a tofu.AmpeError it raised, else
    processing_failed) and `tofu-error-detail`; the exception is logged on
    the `tofu.server` logger, and the server goes on.

    Handlers run on a pool of `workers` threads, many requests at once, each
    answer sent as soon as it is ready (a client matches them by message id).
    `workers=0` runs them on the server's dispatcher thread instead, one at a
    time and with no thread between a request and its handler: the quickest
    for handlers that never block (an echo), but a slow one holds up every
    client.
    `ordered=True` runs one request at a time per client, in the order they
    came, so the answers go back in that order too (what a client that does
    not match by id, or `tofu conform`, needs). Past `workers + backlog`
    requests waiting, the server stops reading until a worker is free; the
    engine then stops reading the sockets and TCP slows the clients down.

    Hooks, called on the server's dispatcher thread (keep them quick):
    `on_hello(peer)` returns False (or raises) to refuse a client: its
    connection is closed (the client's connect raises tofu.ConnectionRefused);
    it sees the hello's headers and the client's identity in `peer.headers`.
    `on_close(peer)` is told a client is gone (`peer.close_reason`).
    `on_signal(request)` runs (on a worker) for each Signal a client sends;
    without it Signals are dropped.

    A request larger than `max_request_size` bytes (as a `more` stream) is
    answered with an invalid_body_len error. `options` gives the server an
    engine of its own (else it shares the process's); `cert`, `key`, `ca`
    are the TLS files of tls:// addresses (`ca`: require client certificates
    signed by it).
    """

    def __init__(
        self,
        urls: str | Address | Sequence[str | Address],
        handler: Callable[[Request], Any],
        *,
        workers: int = 8,
        backlog: int = 1024,
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
        if workers < 0 or backlog < 0:
            raise ValueError("a Server needs workers >= 0 and backlog >= 0")
        self._addresses = server_addresses(urls)
        self.urls: list[str] = [url_of(a) for a in self._addresses]
        """The addresses it listens on, as URLs: after start(), the real ones (port 0 replaced)."""
        self._handler = handler
        self._workers_wanted = workers
        self._limit = workers + backlog
        self._on_hello, self._on_close, self._on_signal = on_hello, on_close, on_signal
        self._ordered = ordered
        self._max_request_size = max_request_size
        self._engine_args = (options, cert, key, ca)
        self._state = _NEW
        self._lock = threading.Lock()  # start() and shutdown() against each other
        self._cond = threading.Condition()  # the dispatcher's news: listening, room, peers gone
        self._watchers = 0
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._force = False
        self._deadline: float | None = None  # when the shutdown's grace period ends
        self._commands: list[Callable[[], object]] = []  # run on the dispatcher (see _command)
        self._jobs: queue.SimpleQueue[tuple[PeerState, Job | None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._engine: Engine | None = None
        self._core: Dispatcher | None = None

    # ------------------------------------------------------------ life cycle

    def start(self) -> Self:
        """Listen on every address and serve in the background; returns when
        every listener is up. Raises the listen failure (e.g.
        tofu.ListenFailed: the address is taken), having closed the others."""
        with self._lock:
            if self._state != _NEW:
                raise RuntimeError("a Server starts once")
            self._state = _SERVING
            options, cert, key, ca = self._engine_args
            self._engine = server_engine(self._addresses, options, cert, key, ca)
            ampe = self._engine.reactor.ampe()
            group = ampe.create()
            self._core = core = Dispatcher(
                ampe,
                group,
                self._addresses,
                self._handler,
                self._start_job,
                self._changed,
                self._run_commands,
                on_hello=self._on_hello,
                on_close=self._on_close,
                on_signal=self._on_signal,
                ordered=self._ordered,
                max_request_size=self._max_request_size,
            )
        try:
            core.listeners.listen()  # before the dispatcher runs: it must know the listeners when their answers come
            self._threads = [start_thread(self._dispatch, "tofu-server")]
            self._threads += [start_thread(self._work, f"tofu-worker-{i}") for i in range(self._workers_wanted)]
            self._wait_for(lambda: core.listeners.ready, time.monotonic() + 10.0)
            if core.listeners.error is not None or not core.listeners.ready:
                raise core.listeners.error or AmpeError("no answer to listening within 10 s")
        except BaseException:
            self.shutdown(0)
            raise
        self.urls = list(core.listeners.urls)
        return self

    def serve_forever(self, grace: float = 5.0, ready: Callable[[], object] | None = None) -> None:
        """start() if needed, then serve until shutdown() is called (from
        another thread) or, on the main thread, until SIGINT or SIGTERM:
        then shut down with `grace` seconds (a second signal: at once).
        `ready()` is called once the server listens and the signals are
        taken care of (e.g. to tell a supervisor, or to start a test)."""
        signals = StopSignals(self._on_stop_signal)
        try:
            if self._state == _NEW:
                self.start()
            if ready is not None:
                ready()
            self._stop_requested.wait()
            self.shutdown(0 if self._force else grace)  # a second signal meanwhile cuts it short
        finally:
            signals.close()

    def shutdown(self, grace: float = 5.0) -> int:
        """Stop: close the listeners, let the requests in flight finish, send
        every client a ByeRequest (once its requests are answered) and wait
        for the channels to close, at most `grace` seconds; then close what
        is left (those clients' `close_reason` is shutdown_started), stop the
        threads and return how many clients were closed so (0: all left in
        time). Safe from any thread but a handler's; a call while another is
        in progress waits for it, and cuts its grace period short when it
        gives a shorter one (0: close at once)."""
        self._stop_requested.set()
        now = time.monotonic()
        with self._lock:
            state, self._state = self._state, max(self._state, _STOPPING)
            if self._deadline is None or now + max(grace, 0.0) < self._deadline:
                self._deadline = now + max(grace, 0.0)
        if state == _NEW:
            self._stopped.set()
            return 0
        if state != _SERVING:
            self._changed(force=True)  # a shorter grace: the shutdown in progress sees it
            self._stopped.wait()
            return 0
        core = self._core
        assert core is not None and self._engine is not None
        closed = 0
        try:
            log.info("stopping: closing the listeners, then Bye to %d client(s) within %g s", len(core.states), grace)
            self._command(core.stop)
            self._wait_for(lambda: not core.states and not core.listeners.open, None, lambda: self._deadline)
            if core.states:
                closed = len(core.states)
                log.warning("grace period over: closing %d channel(s)", closed)
                self._command(core.abort_all)
                self._wait_for(lambda: not core.states, time.monotonic() + 2.0)
            try:
                core.ampe.destroy(core.group)  # the dispatcher gets ShutdownStarted and ends
            except AmpeError:
                pass
            for _ in range(self._workers_wanted):
                self._jobs.put(_STOP)
            assert self._deadline is not None
            end = time.monotonic() + max(self._deadline - time.monotonic(), 1.0)
            for thread in self._threads:
                if thread is threading.current_thread():
                    continue
                thread.join(max(end - time.monotonic(), 0.0))
                if thread.is_alive():
                    log.warning("%s still runs a handler after the grace period", thread.name)
        finally:
            self._engine.release()
            with self._lock:
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = ("new", "serving", "stopping", "stopped")[self._state]
        return f"<tofu.Server {' '.join(self.urls)} {state}, {len(self.peers)} client(s)>"

    # ------------------------------------------------------------ internals

    def _on_stop_signal(self, signum: int) -> None:
        if self._stop_requested.is_set():
            log.warning("%s again: stopping at once", signal.Signals(signum).name)
            self._force = True
            self.shutdown(0)  # cuts the grace period of the shutdown in progress short
            return
        log.info("%s: stopping", signal.Signals(signum).name)
        self._stop_requested.set()

    def _command(self, command: Callable[[], object]) -> None:
        """Run `command` on the dispatcher thread (the core is its alone)."""
        core = self._core
        assert core is not None
        self._commands.append(command)
        self._changed()  # a dispatcher held back by backpressure goes on
        try:
            core.group.update_receiver()
        except AmpeError:
            pass

    def _run_commands(self) -> None:
        while self._commands:
            self._commands.pop(0)()

    def _wait_for(
        self, condition: Callable[[], bool], deadline: float | None, moving: Callable[[], float | None] | None = None
    ) -> bool:
        """Wait until `condition()` holds (the dispatcher's news wake us), at
        most until `deadline` (time.monotonic(); None: as long as it takes),
        or the deadline `moving()` says (it may change while we wait)."""
        with self._cond:
            self._watchers += 1
            try:
                while not condition():
                    if moving is not None:
                        deadline = moving()
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._watchers -= 1

    def _changed(self, force: bool = False) -> None:
        if self._watchers or force:
            with self._cond:
                self._cond.notify_all()

    def _start_job(self, state: PeerState, job: Job | None) -> None:
        if self._workers_wanted:
            self._jobs.put((state, job))
        else:  # workers=0: right here, on the dispatcher thread
            self._run_jobs(state, job)

    def _dispatch(self) -> None:
        """The dispatcher thread: every message of the server's group."""
        core = self._core
        assert core is not None
        wait_receive, handle = core.group.wait_receive, core.handle
        limit = self._limit
        try:
            while True:
                msg = wait_receive(None)
                assert msg is not None
                handle(msg)
                if core.in_flight >= limit:  # backpressure: read no more until a worker is free
                    self._wait_for(lambda: core.in_flight < limit or self._state != _SERVING, None)
        except ShutdownStarted:
            pass
        except BaseException:
            log.exception("the server's dispatcher failed")
        finally:
            self._changed()

    def _work(self) -> None:
        """A worker thread: run jobs until told to stop."""
        get = self._jobs.get
        while (item := get()) is not _STOP:
            self._run_jobs(*item)

    def _run_jobs(self, state: PeerState, job: Job | None) -> None:
        """Run `job` (None, in ordered mode: the peer's jobs, one after another)."""
        core = self._core
        assert core is not None
        if job is not None:
            _run(job)
            core.done(state)
            return
        while (job := core.take(state)) is not None:
            _run(job)
            core.done(state)


def _run(job: Job) -> None:
    handler, request = job
    if request.peer.closed:
        return  # the client is gone: nobody would get the answer
    try:
        result = handler(request)
    except BaseException as exc:  # a handler never ends the server
        outcome(request, error=exc)
    else:
        outcome(request, result)
