"""A server's conversation with its peers, shared by tofu.Server (a
dispatcher thread and a pool of workers) and tofu.aio.Server (a dispatcher
task and a task per request): listening, hellos (accepted unless on_hello
says no), requests put together from their frames and handed to the
handler, Byes answered once the peer's requests are answered, peers that
close, and the Bye to every peer when the server stops.

`handle` runs on the dispatcher; `send`, `done` and `take` also on the
threads (or tasks) that run handlers, under one lock for the counts. What
the dispatcher keeps of each peer's conversation is a PeerState of its own,
beside the public tofu.Peer, which holds what a handler may read.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from ..addresses import Address
from ..ampe import Ampe
from ..generated import CLOSE_DETAIL_HEADER, CLOSE_REASON_HEADER, AmpeError, AmpeStatus, OpCode, raw_to_status
from ..groups import ChannelGroup
from ..message import Message
from .errors import status_named
from .frames import Body, Chunks, frames, next_id, stream_frames
from .headers import EMPTY_HEADERS, Headers, HeadersLike
from .listeners import Listeners
from .replies import error_answer
from .requests import Peer, Request

if TYPE_CHECKING:
    import asyncio

__all__ = ["Dispatcher", "Job", "PeerState"]

log = logging.getLogger("tofu.server")

Job = tuple[Callable[[Request], Any], Request]
"""A handler (or on_signal) and the request to call it with."""

_REQUEST: Final = OpCode.Request
_CLOSED: Final = AmpeStatus.channel_closed
_IDLE, _LEAVING, _BYE_SENT = 0, 1, 2  # PeerState.leaving


class PeerState:
    """The dispatcher's side of one peer's conversation: the tofu.Peer a
    handler sees, and the rest (`in_flight`, `bye`, `leaving`, `queue` and
    `running` under the Dispatcher's lock)."""

    __slots__ = ("aborted", "bye", "first_mid", "in_flight", "leaving", "peer", "queue", "running", "streams", "tasks")

    def __init__(self, peer: Peer, first_mid: int) -> None:
        self.peer = peer
        self.first_mid = first_mid  # its channel_closed notification carries it
        self.aborted = False  # the server closed it when it stopped
        self.in_flight = 0  # requests and signals received and not yet handled
        self.bye: Message | None = None  # its ByeRequest, answered once nothing is in flight
        self.leaving = _IDLE  # _LEAVING: the server is stopping, a ByeRequest goes once nothing is in flight
        self.streams: dict[int, _Partial] = {}  # message id -> the frames of a request so far
        self.queue: deque[Job] = deque()  # ordered: waiting jobs
        self.running = False  # ordered: a job of this peer is running
        self.tasks: set[asyncio.Task[None]] = set()  # tofu.aio.Server: its handlers' tasks


class _Partial:
    """The frames of a request that came as a `more` stream, so far."""

    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        self.frames: list[tuple[Headers, bytes]] = []
        self.size = 0


class Dispatcher:
    """The server's side of every channel (see the module's docstring).

    `start(state, job)` runs a job on the server's workers (job None, in
    ordered mode: run `take(state)` until it returns None), and `done(state)`
    follows every job; `changed()` wakes
    whoever waits for the listeners, for room or for the peers to go;
    `on_update()` runs on the dispatcher when update_receiver() woke it
    (the server's commands: stop, abort)."""

    def __init__(
        self,
        ampe: Ampe,
        group: ChannelGroup,
        addresses: list[Address],
        handler: Callable[[Request], Any],
        start: Callable[[PeerState, Job | None], None],
        changed: Callable[[], None],
        on_update: Callable[[], None],
        *,
        on_hello: Callable[[Peer], object] | None,
        on_close: Callable[[Peer], object] | None,
        on_signal: Callable[[Request], Any] | None,
        ordered: bool,
        max_request_size: int,
    ) -> None:
        self.ampe, self.group = ampe, group
        self._handler, self._on_signal = handler, on_signal
        self._start, self._changed, self._on_update = start, changed, on_update
        self._on_hello, self._on_close = on_hello, on_close
        self.ordered = ordered
        self._max_request_size = max_request_size
        self._lock = threading.Lock()  # the counts below and each PeerState's in_flight, bye, leaving, queue
        self.in_flight = 0  # requests and signals handed to workers and not done
        self.states: dict[int, PeerState] = {}  # channel -> its peer's
        self.listeners = Listeners(ampe, group, addresses)
        self.stopping = False

    def peers(self) -> list[Peer]:
        """The peers connected now."""
        return [state.peer for state in list(self.states.values())]

    # ------------------------------------------------------------ listening and stopping

    def stop_listening(self) -> None:
        """Close every listener; from now on hellos are refused."""
        self.stopping = True
        self.listeners.close()

    def leave_all(self) -> None:
        """Ask every peer to leave: a ByeRequest as soon as its requests in
        flight are answered (new ones get a shutdown_started error)."""
        for state in list(self.states.values()):
            with self._lock:
                if state.leaving != _IDLE:
                    continue
                state.leaving = _LEAVING
                go = not state.in_flight and state.bye is None
                if go:
                    state.leaving = _BYE_SENT
            if go:
                self._bye(state.peer)

    def stop(self) -> None:
        """stop_listening(), then leave_all()."""
        self.stop_listening()
        self.leave_all()

    def abort_all(self) -> None:
        """Close every peer's channel now (ByeSignal); their close_reason is shutdown_started."""
        for ch, state in list(self.states.items()):
            state.aborted = True
            self._command(OpCode.ByeSignal, ch)

    # ------------------------------------------------------------ the dispatcher's call

    def handle(self, msg: Message) -> None:
        """One message of the server's group; it is posted again as an answer or goes back to the pool."""
        bh = msg.bhdr
        ch = bh.channel_number
        op = bh.proto.op_code
        if op == OpCode.WelcomeResponse and self.listeners.answered(msg, ch):
            if self.listeners.ready:
                self._changed()
        elif msg.is_from_engine():
            self._from_engine(msg, ch, op)
        elif op == _REQUEST:
            state = self.states.get(ch)
            if state is not None:
                self._request(msg, state)
                return
        elif op == OpCode.HelloRequest:
            self._hello(msg, ch)
            return
        elif op == OpCode.Signal:
            state = self.states.get(ch)
            if state is not None and self._on_signal is not None:
                request = Request(self, state.peer, bh.message_id, [(Headers.of(msg.thdrs), bytes(msg.body))], True)
                self._dispatch(state, (self._on_signal, request))
        elif op == OpCode.ByeRequest:
            state = self.states.get(ch)
            if state is not None:
                self._peer_bye(msg, state)
                return
        self.ampe.put(msg)

    # ------------------------------------------------------------ Sender (any thread)

    def make(self, op: OpCode, body: Body, headers: HeadersLike) -> list[Message]:
        """The frames of one message."""
        return frames(self.ampe, op, body, headers)

    def make_stream(self, op: OpCode, chunks: Chunks, headers: HeadersLike) -> Iterable[Message]:
        """The frames of a stream, made as they are sent."""
        return stream_frames(self.ampe, op, chunks, headers)

    def send(self, peer: Peer, mid: int, msgs: Iterable[Message]) -> None:
        """Post `msgs` on `peer`'s channel under `mid`; dropped quietly when the peer is gone."""
        post, put = self.group.post, self.ampe.put
        for msg in msgs:
            if peer.closed:
                put(msg)
                continue
            bh = msg.bhdr
            bh.channel_number = peer.channel
            bh.message_id = mid
            try:
                post(msg)
            except AmpeError as exc:
                put(msg)
                log.debug("channel %d: answer to %d dropped: %s", peer.channel, mid, exc)

    # ------------------------------------------------------------ the workers' calls

    def done(self, state: PeerState) -> None:
        """A job of the peer's is over: answer its Bye, or say ours, once none is left."""
        answer: Message | None = None
        leave = False
        with self._lock:
            state.in_flight -= 1
            self.in_flight -= 1
            if not state.in_flight and not state.peer.closed:
                if state.bye is not None:
                    answer, state.bye = state.bye, None
                elif state.leaving == _LEAVING:
                    state.leaving = _BYE_SENT
                    leave = True
        if answer is not None:
            answer.bhdr.proto.op_code = OpCode.ByeResponse
            self._post(answer)
        elif leave:
            self._bye(state.peer)
        self._changed()

    def take(self, state: PeerState) -> Job | None:
        """Ordered mode: the peer's next job, or None (then it has none running)."""
        with self._lock:
            if state.queue:
                return state.queue.popleft()
            state.running = False
            return None

    # ------------------------------------------------------------ internals

    def _post(self, msg: Message) -> None:
        try:
            self.group.post(msg)
        except AmpeError as exc:
            log.debug("channel %d: %s not sent: %s", msg.bhdr.channel_number, msg.bhdr.proto.op_code.name, exc)
            self.ampe.put(msg)

    def _command(self, op: OpCode, ch: int, headers: HeadersLike = None) -> None:
        (msg,) = frames(self.ampe, op, b"", headers)
        msg.bhdr.channel_number = ch
        msg.bhdr.message_id = next_id()
        self._post(msg)

    def _bye(self, peer: Peer) -> None:
        self._command(OpCode.ByeRequest, peer.channel, [("reason", "server shutting down")])

    def _from_engine(self, msg: Message, ch: int, op: OpCode) -> None:
        bh = msg.bhdr
        status = raw_to_status(bh.status)
        if op != OpCode.Signal or status is not _CLOSED:
            if status is AmpeStatus.receiver_update:
                self._on_update()
            elif status is not AmpeStatus.pool_empty:
                log.debug("channel %d: %s came back: %s", ch, op.name, status.name)
            return
        state = self.states.get(ch)
        reason = status_named(msg.thdrs.get(CLOSE_REASON_HEADER), _CLOSED)
        detail = msg.thdrs.get(CLOSE_DETAIL_HEADER)
        if state is not None and bh.message_id == state.first_mid:
            self._peer_closed(state, reason, detail)
        elif self.listeners.ended(ch, bh.message_id, reason, detail, expected=self.stopping):
            self._changed()

    def _hello(self, msg: Message, ch: int) -> None:
        bh = msg.bhdr
        peer = Peer(ch, Headers.of(msg.thdrs))
        accept = not self.stopping
        if accept and self._on_hello is not None:
            try:
                accept = self._on_hello(peer) is not False
            except Exception:
                log.exception("channel %d: on_hello raised: the hello is refused", ch)
                accept = False
        if not accept:
            log.info("channel %d: hello refused", ch)
            self.ampe.put(msg)
            self._command(OpCode.ByeSignal, ch)
            return
        self.states[ch] = PeerState(peer, bh.message_id)
        bh.proto.op_code = OpCode.HelloResponse
        msg.thdrs.clear()
        msg.body.clear()
        self._post(msg)

    def _request(self, msg: Message, state: PeerState) -> None:
        bh = msg.bhdr
        mid = bh.message_id
        more = bh.proto.more
        streams = state.streams
        partial = streams.get(mid) if streams else None
        if partial is None and not more:
            thdrs = msg.thdrs
            parts = [(Headers(thdrs) if thdrs else EMPTY_HEADERS, bytes(msg.body))]
        else:
            if partial is None:
                partial = streams[mid] = _Partial()
            if partial.size <= self._max_request_size:
                partial.size += len(msg.body)
                partial.frames.append((Headers.of(msg.thdrs), bytes(msg.body)))
            if more:
                self.ampe.put(msg)
                return
            del streams[mid]
            parts = partial.frames
            if partial.size > self._max_request_size:
                too_big = f"the request is larger than {self._max_request_size} bytes"
                self._refuse(msg, AmpeStatus.invalid_body_len, too_big)
                return
        peer = state.peer
        peer.requests += 1
        if state.leaving != _IDLE:
            self._refuse(msg, AmpeStatus.shutdown_started, "the server is shutting down")
            return
        self.ampe.put(msg)
        self._dispatch(state, (self._handler, Request(self, peer, mid, parts)))

    def _refuse(self, msg: Message, status: AmpeStatus, detail: str) -> None:
        """Answer the request `msg` ends at once with an error (reusing the message)."""
        self._post(error_answer(msg, status, detail))

    def _dispatch(self, state: PeerState, job: Job) -> None:
        with self._lock:
            state.in_flight += 1
            self.in_flight += 1
            if self.ordered:
                state.queue.append(job)
                if state.running:
                    return
                state.running = True
        self._start(state, None if self.ordered else job)

    def _peer_bye(self, msg: Message, state: PeerState) -> None:
        state.peer.said_bye = True
        state.streams.clear()
        with self._lock:
            now = not state.in_flight
            if not now:
                state.bye = msg  # answered by done() once the requests before it are
        if now:
            msg.bhdr.proto.op_code = OpCode.ByeResponse
            self._post(msg)

    def _peer_closed(self, state: PeerState, reason: AmpeStatus, detail: str | None) -> None:
        peer = state.peer
        del self.states[peer.channel]
        if state.aborted:
            reason, detail = AmpeStatus.shutdown_started, "closed when the server stopped"
        with self._lock:
            peer.closed = True
            peer.close_reason, peer.close_detail = reason, detail
            bye, state.bye = state.bye, None
            dropped = len(state.queue)
            state.queue.clear()
            state.in_flight -= dropped
            self.in_flight -= dropped
        state.streams.clear()
        self.ampe.put(bye)
        for task in list(state.tasks):
            task.cancel()  # tofu.aio.Server: its handlers' answers would go nowhere
        if self._on_close is not None:
            try:
                self._on_close(peer)
            except Exception:
                log.exception("channel %d: on_close raised", peer.channel)
        self._changed()
