"""A server's conversation with its peers, shared by tofu.Server (a
dispatcher thread and a pool of workers) and tofu.aio.Server (a dispatcher
task and a task per request): listening, hellos (accepted unless on_hello
says no), requests put together from their frames and handed to the
handler, Byes answered once the peer's requests are answered, peers that
close, and the Bye to every peer when the server stops.

`handle` runs on the dispatcher; `send`, `done` and `take` also on the
threads (or tasks) that run handlers, under one lock for the counts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final

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
from .requests import Peer, Request, _Partial

__all__ = ["Dispatcher", "Job"]

log = logging.getLogger("tofu.server")

Job = tuple[Callable[[Request], Any], Request]
"""A handler (or on_signal) and the request to call it with."""

_REQUEST: Final = OpCode.Request
_CLOSED: Final = AmpeStatus.channel_closed
_IDLE, _LEAVING, _BYE_SENT = 0, 1, 2  # Peer._leaving


class Dispatcher:
    """The server's side of every channel (see the module's docstring).

    `start(peer, job)` runs a job on the server's workers (job None, in
    ordered mode: run `take(peer)` until it returns None); `changed()` wakes
    whoever waits for the listeners, for room or for the peers to go;
    `on_update()` runs on the dispatcher when update_receiver() woke it
    (the server's commands: stop, abort)."""

    def __init__(
        self,
        ampe: Ampe,
        group: ChannelGroup,
        addresses: list[Address],
        handler: Callable[[Request], Any],
        start: Callable[[Peer, Job | None], None],
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
        self._lock = threading.Lock()  # the counts below and each Peer's _in_flight, _bye, _leaving, _queue
        self.in_flight = 0  # requests and signals handed to workers and not done
        self.peers: dict[int, Peer] = {}
        self.listeners = Listeners(ampe, group, addresses)
        self.stopping = False

    # ------------------------------------------------------------ listening and stopping

    def stop_listening(self) -> None:
        """Close every listener; from now on hellos are refused."""
        self.stopping = True
        self.listeners.close()

    def leave_all(self) -> None:
        """Ask every peer to leave: a ByeRequest as soon as its requests in
        flight are answered (new ones get a shutdown_started error)."""
        for peer in list(self.peers.values()):
            with self._lock:
                if peer._leaving != _IDLE:
                    continue
                peer._leaving = _LEAVING
                go = not peer._in_flight and peer._bye is None
                if go:
                    peer._leaving = _BYE_SENT
            if go:
                self._bye(peer)

    def stop(self) -> None:
        """stop_listening(), then leave_all()."""
        self.stop_listening()
        self.leave_all()

    def abort_all(self) -> None:
        """Close every peer's channel now (ByeSignal); their close_reason is shutdown_started."""
        for ch, peer in list(self.peers.items()):
            peer._aborted = True
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
            peer = self.peers.get(ch)
            if peer is not None:
                self._request(msg, peer)
                return
        elif op == OpCode.HelloRequest:
            self._hello(msg, ch)
            return
        elif op == OpCode.Signal:
            peer = self.peers.get(ch)
            if peer is not None and self._on_signal is not None:
                request = Request(self, peer, bh.message_id, [(Headers.of(msg.thdrs), bytes(msg.body))], True)
                self._dispatch(peer, (self._on_signal, request))
        elif op == OpCode.ByeRequest:
            peer = self.peers.get(ch)
            if peer is not None:
                self._peer_bye(msg, peer)
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

    def done(self, peer: Peer) -> None:
        """A job of `peer` is over: answer its Bye, or say ours, once none is left."""
        answer: Message | None = None
        leave = False
        with self._lock:
            peer._in_flight -= 1
            self.in_flight -= 1
            if not peer._in_flight and not peer.closed:
                if peer._bye is not None:
                    answer, peer._bye = peer._bye, None
                elif peer._leaving == _LEAVING:
                    peer._leaving = _BYE_SENT
                    leave = True
        if answer is not None:
            answer.bhdr.proto.op_code = OpCode.ByeResponse
            self._post(answer)
        elif leave:
            self._bye(peer)
        self._changed()

    def take(self, peer: Peer) -> Job | None:
        """Ordered mode: the peer's next job, or None (then it has none running)."""
        with self._lock:
            if peer._queue:
                return peer._queue.popleft()
            peer._running = False
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
        peer = self.peers.get(ch)
        reason = status_named(msg.thdrs.get(CLOSE_REASON_HEADER), _CLOSED)
        detail = msg.thdrs.get(CLOSE_DETAIL_HEADER)
        if peer is not None and bh.message_id == peer._first_mid:
            self._peer_closed(peer, reason, detail)
        elif self.listeners.ended(ch, bh.message_id, reason, detail, expected=self.stopping):
            self._changed()

    def _hello(self, msg: Message, ch: int) -> None:
        bh = msg.bhdr
        peer = Peer(ch, Headers.of(msg.thdrs), bh.message_id)
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
        self.peers[ch] = peer
        bh.proto.op_code = OpCode.HelloResponse
        msg.thdrs.clear()
        msg.body.clear()
        self._post(msg)

    def _request(self, msg: Message, peer: Peer) -> None:
        bh = msg.bhdr
        mid = bh.message_id
        more = bh.proto.more
        partial = peer._streams.get(mid) if peer._streams else None
        if partial is None and not more:
            thdrs = msg.thdrs
            parts = [(Headers(thdrs) if thdrs else EMPTY_HEADERS, bytes(msg.body))]
        else:
            if partial is None:
                partial = peer._streams[mid] = _Partial()
            if partial.size <= self._max_request_size:
                partial.size += len(msg.body)
                partial.frames.append((Headers.of(msg.thdrs), bytes(msg.body)))
            if more:
                self.ampe.put(msg)
                return
            del peer._streams[mid]
            parts = partial.frames
            if partial.size > self._max_request_size:
                too_big = f"the request is larger than {self._max_request_size} bytes"
                self._refuse(msg, AmpeStatus.invalid_body_len, too_big)
                return
        peer.requests += 1
        if peer._leaving != _IDLE:
            self._refuse(msg, AmpeStatus.shutdown_started, "the server is shutting down")
            return
        self.ampe.put(msg)
        self._dispatch(peer, (self._handler, Request(self, peer, mid, parts)))

    def _refuse(self, msg: Message, status: AmpeStatus, detail: str) -> None:
        """Answer the request `msg` ends at once with an error (reusing the message)."""
        self._post(error_answer(msg, status, detail))

    def _dispatch(self, peer: Peer, job: Job) -> None:
        with self._lock:
            peer._in_flight += 1
            self.in_flight += 1
            if self.ordered:
                peer._queue.append(job)
                if peer._running:
                    return
                peer._running = True
        self._start(peer, None if self.ordered else job)

    def _peer_bye(self, msg: Message, peer: Peer) -> None:
        peer.said_bye = True
        peer._streams.clear()
        with self._lock:
            now = not peer._in_flight
            if not now:
                peer._bye = msg  # answered by done() once the requests before it are
        if now:
            msg.bhdr.proto.op_code = OpCode.ByeResponse
            self._post(msg)

    def _peer_closed(self, peer: Peer, reason: AmpeStatus, detail: str | None) -> None:
        del self.peers[peer.channel]
        if peer._aborted:
            reason, detail = AmpeStatus.shutdown_started, "closed when the server stopped"
        with self._lock:
            peer.closed = True
            peer.close_reason, peer.close_detail = reason, detail
            bye, peer._bye = peer._bye, None
            dropped = len(peer._queue)
            peer._queue.clear()
            peer._in_flight -= dropped
            self.in_flight -= dropped
        peer._streams.clear()
        self.ampe.put(bye)
        for task in list(peer._tasks):
            task.cancel()  # tofu.aio.Server: its handlers' answers would go nowhere
        if self._on_close is not None:
            try:
                self._on_close(peer)
            except Exception:
                log.exception("channel %d: on_close raised", peer.channel)
        self._changed()
