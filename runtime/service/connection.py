"""A client's connection, for threads: the base of tofu.Client. It holds
the engine, the channel group and the session (session.py), runs the
receiver thread, and makes a caller wait, when it must, for the channel (a
reconnect) or for room (max_in_flight), before its request enters `pending`
and goes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from ..addresses import Address
from ..generated import AmpeError, ShutdownStarted
from ..message import Message
from ..options import Options
from .engines import client_engine
from .errors import ConnectionLost, RequestTimeout
from .frames import next_id
from .headers import Headers, HeadersLike, pairs_of
from .reconnect import Reconnect
from .replies import Reply
from .session import Session
from .signals import start_thread
from .urls import client_address, url_of
from .waiters import ThreadAnswer, ThreadFrames

__all__ = ["Connection", "wait_time"]

log = logging.getLogger("tofu.client")

_FOREVER: Final = -1.0  # what lock.acquire takes for "no timeout"


def wait_time(deadline: float | None) -> float:
    """What lock.acquire / Condition.wait take for `deadline`: -1 for none, else
    the seconds left (0 when it passed)."""
    if deadline is None:
        return _FOREVER
    return max(0.0, deadline - time.monotonic())


class Connection:
    """tofu.Client's connection (see the module's docstring)."""

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
        """Connect (see tofu.connect, which is the way to call this)."""
        address = client_address(url, server_name)
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.url = url_of(address)
        """The server's address, as a URL."""
        self.request_timeout = request_timeout
        """The timeout of a request that gives none (None: as long as it takes)."""
        self._max_in_flight = max_in_flight
        policy = Reconnect() if reconnect is True else reconnect or None
        self._engine = client_engine(address, options, ca, cert, key)
        self._ampe = self._engine.reactor.ampe()
        self._group = self._ampe.create()
        self._get, self._put, self._post = self._ampe.get, self._ampe.put, self._group.post
        self._state = threading.Condition()  # the session's changes wake waiting callers
        self._room = threading.Condition()  # a request finished: room for a waiting one
        self._closed = False
        self._finished = threading.Event()  # the receiver has ended
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
        try:
            self._receiver = start_thread(self._receive, f"tofu-client {self.url}")
            with self._state:
                while not (self._session.channel or self._session.done):
                    self._state.wait()
            if self._session.first_error is not None:
                raise self._session.first_error
        except BaseException:
            self._shut()
            raise

    # ------------------------------------------------------------ properties

    @property
    def connected(self) -> bool:
        """True while the channel is open (False while reconnecting and after close())."""
        return bool(self._session.channel) and not self._closed

    @property
    def closed(self) -> bool:
        """True once close() was called, or the channel closed for good (no reconnect, or given up)."""
        return self._closed or (self._session.done and not self._session.channel)

    @property
    def server_headers(self) -> Headers:
        """The text headers of the server's HelloResponse (with TLS, the
        engine adds the server's identity: `~peer_subject`, `~peer_san`)."""
        return self._session.hello_headers

    @property
    def in_flight(self) -> int:
        """Requests (and streams) waiting for their answer."""
        return len(self._session.pending)

    def _register(self, waiter: ThreadAnswer | ThreadFrames, msgs: list[Message], deadline: float | None) -> int:
        """Wait for room and a channel, enter `waiter` in `pending` under a new
        id and post `msgs` under it: return the id."""
        session = self._session
        pending = session.pending
        try:
            while True:
                if len(pending) >= self._max_in_flight:
                    self._wait_for_room(deadline)
                channel = self._channel(deadline)
                mid = next_id()
                pending[mid] = waiter
                if session.channel == channel:
                    break
                if pending.pop(mid, None) is None:  # the channel closed, and the sweep failed it
                    raise self._swept(waiter)
        except BaseException:
            for msg in msgs:
                self._ampe.put(msg)
            raise
        try:
            session.send(msgs, channel, mid)
        except BaseException as exc:
            if pending.pop(mid, None) is not None:
                self._freed()
                if isinstance(exc, AmpeError):
                    raise self._lost_error(exc) from None
                raise
            raise self._swept(waiter) from None
        return mid

    def _swept(self, waiter: ThreadAnswer | ThreadFrames) -> BaseException:
        """The failure the receiver handed `waiter` when it swept it from pending."""
        if isinstance(waiter, ThreadAnswer):
            waiter.done.acquire()
            return waiter.error or ConnectionLost()
        item = waiter.queue.get()
        return item if isinstance(item, BaseException) else ConnectionLost()

    def _lost_error(self, exc: AmpeError) -> ConnectionLost:
        """A post failed: the channel is closing (or closed)."""
        lost = self._session.lost
        if lost is not None:
            return ConnectionLost(lost.reason, lost.detail)
        return ConnectionLost(exc.status, str(exc))

    def _channel(self, deadline: float | None) -> int:
        """The open channel; while (re)connecting, wait for it until `deadline`."""
        session = self._session
        channel = session.channel
        if channel and not self._closed:
            return channel
        with self._state:
            while True:
                if self._closed:
                    raise ConnectionLost(detail="the client was closed")
                channel = session.channel
                if channel:
                    return channel
                if session.done:
                    lost = session.lost
                    raise ConnectionLost(lost.reason, lost.detail) if lost else ConnectionLost()
                left = wait_time(deadline)
                if left == 0:
                    raise RequestTimeout(f"{self.url}: not connected again in time")
                self._state.wait(None if left < 0 else left)

    def _wait_for_room(self, deadline: float | None) -> None:
        pending = self._session.pending
        with self._room:
            self._session.room_waiters += 1
            try:
                while len(pending) >= self._max_in_flight:
                    left = wait_time(deadline)
                    if left == 0:
                        raise RequestTimeout(f"{self.url}: {len(pending)} requests in flight, no room in time")
                    self._room.wait(None if left < 0 else left)
            finally:
                self._session.room_waiters -= 1

    def _freed(self) -> None:
        """A request left `pending`: wake one waiting for room."""
        if self._session.room_waiters:
            with self._room:
                self._room.notify()

    def _changed(self) -> None:
        with self._state:
            self._state.notify_all()

    def _receive(self) -> None:
        """The receiver thread: every message of the group goes to the session."""
        session = self._session
        wait_receive = self._group.wait_receive
        handle = session.handle
        try:
            while not session.done:
                msg = wait_receive(session.timeout())
                if msg is None:
                    session.on_timer()
                else:
                    handle(msg)
        except ShutdownStarted:
            session.stopped()
        except BaseException:
            log.exception("%s: the client's receiver failed", self.url)
            session.stopped()
        finally:
            self._finished.set()
            self._changed()

    def _shut(self) -> None:
        """Stop the receiver, close the group, give back an engine of our own."""
        self._closed = True
        try:
            self._ampe.destroy(self._group)  # a receiver still waiting gets ShutdownStarted
        except AmpeError:
            pass
        receiver = getattr(self, "_receiver", None)
        if receiver is not None and receiver is not threading.current_thread():
            receiver.join(10)
        if not self._session.done:
            self._session.stopped()
        self._engine.release()
