"""tofu.connect and tofu.Client: request/response over a tofu channel, for
threads. A Client holds the engine, the channel group and the session
(session.py), runs the receiver thread, and makes a caller wait, when it
must, for the channel (a reconnect) or for room (max_in_flight), before its
request enters `pending` and goes. The asyncio twin is aclient.py
(tofu.aio.connect)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Final, Self

from ..addresses import Address
from ..generated import MAX_BODY_LEN, AmpeError, OpCode, ShutdownStarted
from ..message import Message
from ..options import Options
from .engines import client_engine
from .errors import ConnectionLost, RequestTimeout
from .frames import Body, Chunks, frames, next_id, stream_frames
from .headers import Headers, HeadersLike, pairs_of
from .reconnect import Reconnect
from .replies import Reply
from .session import Session
from .signals import start_thread
from .urls import client_address, url_of
from .waiters import ThreadAnswer, ThreadFrames

__all__ = ["Client", "ReplyStream", "connect"]

log = logging.getLogger("tofu.client")

_REQUEST: Final = OpCode.Request
_FOREVER: Final = -1.0  # what lock.acquire takes for "no timeout"


def _wait_time(deadline: float | None) -> float:
    """What lock.acquire / Condition.wait take for `deadline`: -1 for none, else
    the seconds left (0 when it passed)."""
    if deadline is None:
        return _FOREVER
    return max(0.0, deadline - time.monotonic())


class Client:
    """A channel to a tofu server, for request/response from any number of
    threads. Made by `tofu.connect(url)`; a context manager (leaving the
    block closes it).

    Every method may be called from any thread, with many requests in flight
    at once: each answer goes to its caller by message id. Errors are
    exceptions: tofu.RequestTimeout (a TimeoutError) when the answer did not
    come in time, tofu.ConnectionLost when the channel closed first.
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

    # ------------------------------------------------------------ requests

    def request(self, body: Body = b"", headers: HeadersLike = None, timeout: float | None = None) -> Reply:
        """Send a Request and return its answer, a tofu.Reply (`status`,
        `headers`, `body`). A body larger than a frame (65535 bytes) goes as
        a `more` stream and comes back joined.

        `headers`: a mapping or a list of (name, value) pairs. `timeout`:
        seconds to wait for the answer (None: the client's request_timeout),
        including any wait for room (max_in_flight) or for a reconnect.

        Raises tofu.RequestTimeout when no answer came in time (a later one
        is dropped), tofu.ConnectionLost when the channel closed first (its
        `reason` says why). A server's error comes back as a Reply whose
        `status` is not success (see Reply.raise_for_status)."""
        seconds = self.request_timeout if timeout is None else timeout
        deadline = None if seconds is None else time.monotonic() + seconds
        answer = ThreadAnswer()
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
            pending[mid] = answer
            if session.channel != channel:  # closed meanwhile: the long way says how
                if pending.pop(mid, None) is None:
                    self._put(msg)
                    raise self._swept(answer)
                mid = self._register(answer, [msg], deadline)
            else:
                try:
                    self._post(msg)
                except BaseException as exc:
                    self._put(msg)  # still ours (the pool ignores a message the engine took)
                    if pending.pop(mid, None) is None:
                        raise self._swept(answer) from None
                    self._freed()
                    if isinstance(exc, AmpeError):
                        raise self._lost_error(exc) from None
                    raise
        else:
            mid = self._register(answer, frames(self._ampe, _REQUEST, body, headers), deadline)
        try:
            answered = answer.done.acquire(True, _wait_time(deadline))
        except BaseException:  # e.g. KeyboardInterrupt: nothing of the request stays behind
            if pending.pop(mid, None) is not None:
                self._freed()
            raise
        if not answered:
            if pending.pop(mid, None) is not None:
                self._freed()
                raise RequestTimeout(f"no answer from {self.url} within {seconds:g} s", seconds)
            answer.done.acquire()  # the receiver has just taken it: its answer is on the way
        if answer.error is not None:
            raise answer.error
        assert answer.reply is not None
        return answer.reply

    def stream(
        self, body: Body | Chunks = b"", headers: HeadersLike = None, timeout: float | None = None
    ) -> ReplyStream:
        """Send a Request and iterate over its answer's frames as they come:
        a ReplyStream of tofu.Reply, `more` True on all but the last.

        `body` is one body, or an iterable of bodies (or of (headers, body)
        pairs) to send as a `more` stream of Requests under one message id.
        `timeout` bounds each wait (for the connection, and for every frame).
        Iterating raises what request() raises. Close the stream (or leave
        its `with` block) to stop early: later frames are dropped."""
        deadline = self._deadline(timeout)
        if isinstance(body, (bytes, bytearray, memoryview, str)):
            msgs = frames(self._ampe, _REQUEST, body, headers)
        else:
            msgs = list(stream_frames(self._ampe, _REQUEST, body, headers))
        waiter = ThreadFrames()
        mid = self._register(waiter, msgs, deadline)
        return ReplyStream(self, mid, waiter, timeout if timeout is not None else self.request_timeout)

    def signal(self, body: Body = b"", headers: HeadersLike = None, timeout: float | None = None) -> None:
        """Send a Signal: no answer. While reconnecting it waits for the
        channel, at most `timeout` seconds (None: request_timeout)."""
        deadline = self._deadline(timeout)
        msgs = frames(self._ampe, OpCode.Signal, body, headers)
        try:
            channel = self._channel(deadline)
            self._session.send(msgs, channel, next_id())
        except AmpeError as exc:
            if isinstance(exc, ConnectionLost):
                raise
            raise self._lost_error(exc) from None

    # ------------------------------------------------------------ closing

    def close(self, timeout: float = 5.0) -> None:
        """Say goodbye: a ByeRequest (sent after every request already sent,
        so their answers can still come), the server's ByeResponse, and the
        channel closed; then the client's thread ends. After `timeout`
        seconds the channel is closed anyway. Requests still waiting then
        fail with tofu.ConnectionLost. Idempotent."""
        if self._closed:
            self._finished.wait(timeout)
            return
        self._closed = True
        session = self._session
        session.close_requested = True
        with self._state:
            self._state.notify_all()
        try:
            self._group.update_receiver()  # the receiver posts the Bye, then waits for the close
        except AmpeError:
            pass  # the engine is gone: so is the channel
        if threading.current_thread() is not self._receiver and not self._finished.wait(timeout):
            log.info("%s: no close within %g s after ByeRequest: closing the channel", self.url, timeout)
        self._shut()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "connected" if self.connected else "connecting"
        return f"<tofu.Client {self.url} {state}, {self.in_flight} in flight>"

    # ------------------------------------------------------------ internals

    def _deadline(self, timeout: float | None) -> float | None:
        t = self.request_timeout if timeout is None else timeout
        return None if t is None else time.monotonic() + t

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
                left = _wait_time(deadline)
                if left == 0:
                    raise RequestTimeout(f"{self.url}: not connected again in time")
                self._state.wait(None if left < 0 else left)

    def _wait_for_room(self, deadline: float | None) -> None:
        pending = self._session.pending
        with self._room:
            self._session.room_waiters += 1
            try:
                while len(pending) >= self._max_in_flight:
                    left = _wait_time(deadline)
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


class ReplyStream(Iterator[Reply]):
    """The answer of Client.stream(), frame by frame: iterate over it (each
    frame a tofu.Reply, `more` True on all but the last), or `close()` it to
    stop early. A context manager. Its `message_id` is the request's."""

    def __init__(self, client: Client, mid: int, waiter: ThreadFrames, timeout: float | None) -> None:
        self._client = client
        self.message_id = mid
        """The message id of the request (and of every frame of the answer)."""
        self._waiter = waiter
        self._timeout = timeout
        self._over = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Reply:
        if self._over:
            raise StopIteration
        try:
            item = self._waiter.queue.get(True, self._timeout)
        except queue.Empty:
            self.close()
            raise RequestTimeout(
                f"no frame from {self._client.url} within {self._timeout:g} s", self._timeout
            ) from None
        if isinstance(item, BaseException):
            self._over = True
            raise item
        if not item.more:
            self._over = True
        return item

    def close(self) -> None:
        """Stop waiting: frames that come later are dropped. Idempotent."""
        if not self._over:
            self._over = True
            if self._client._session.pending.pop(self.message_id, None) is not None:
                self._client._freed()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def connect(
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
    """Open a channel to the server at `url` and return a tofu.Client.

    `url`: `tcp://HOST:PORT`, `tls://HOST:PORT`, `uds:///PATH` (or the
    protocol's `tcp|HOST|PORT` form, or a tofu.Address). `headers` go with
    the HelloRequest (the server's on_hello sees them). `timeout`: seconds
    the HelloResponse may take, per attempt (None: the engine's
    Options.connect_timeout alone bounds it).

    `options`: tofu.Options for an engine of the client's own (destroyed on
    close); without it the client runs on the process's shared engine.
    TLS (tls://): `ca` (the CAs to trust; default the system's), `cert` and
    `key` (a client certificate, for servers that require one),
    `server_name` (the name the server's certificate must carry).

    `request_timeout`: the default timeout of request(), stream() and
    signal() (None: they wait as long as it takes, or until the channel
    closes). `max_in_flight`: requests waiting for their answer at once;
    past it request() waits for room (within its timeout).

    `reconnect`: True or a tofu.Reconnect policy: when the channel closes,
    connect again (exponential backoff with jitter). Requests in flight then
    fail with tofu.ConnectionLost; new ones wait for the new channel, within
    their timeout. `on_disconnect(exc)` and `on_reconnect()` are called (on
    the client's thread) when it happens; the `tofu.client` logger says so
    too. The first connect is never retried.

    `on_signal(reply)`: called on the client's thread for every Signal the
    server sends (reply.signal is True, reply.message_id names the request
    it is about, if any).

    Raises tofu.ConnectionRefused when the server closed the connection
    instead of answering the hello (it refused it), tofu.ConnectError for
    every other failure (`status`: connect_failed, invalid_address,
    uds_path_not_found, ...; `detail`: why, e.g. a failed TLS handshake);
    when no HelloResponse came within `timeout`, that ConnectError is also a
    TimeoutError.
    """
    return Client(
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
