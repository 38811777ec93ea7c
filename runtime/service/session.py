"""One client's conversation with its server, shared by tofu.Client (a
receiver thread) and tofu.aio.Client (a receiver task): the hello and its
outcome, answers matched to their requests by message id, the server's Bye,
the channel's end, and connecting again.

Everything here runs on the client's receiver (thread or task), which feeds
it every message of the client's channel group (`handle`) and wakes it when
`timeout()` says a reconnect attempt or a hello's deadline is due
(`on_timer`). The callers of request() only add and remove their own
entries of `pending` (one dict operation each, atomic under the GIL) and read
`channel`: when the channel ends, `channel` is set to 0 before `pending` is
swept, so a caller that registered and then still sees its channel open is
certain to be failed by the sweep if it never gets its answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from ..addresses import Address
from ..ampe import Ampe
from ..generated import (
    CLOSE_DETAIL_HEADER,
    CLOSE_REASON_HEADER,
    AmpeError,
    AmpeStatus,
    OpCode,
    OriginFlag,
    raw_to_status,
)
from ..groups import ChannelGroup
from ..message import Message
from .frames import next_id, post_frames
from .errors import ConnectError, ConnectionLost, hello_failed, status_named
from .headers import EMPTY_HEADERS, Headers
from .reconnect import Reconnect
from .replies import Reply, error_answer, reply_of
from .waiters import Waiter

__all__ = ["Session"]

log = logging.getLogger("tofu.client")

_RESPONSE: Final = OpCode.Response
_SIGNAL: Final = OpCode.Signal
_CLOSED: Final = AmpeStatus.channel_closed
_APPLICATION: Final = OriginFlag.application
_SUCCESS: Final = AmpeStatus.success
_new: Final = object.__new__


class Session:
    """A client's connection state, driven by its receiver (see the module's docstring)."""

    def __init__(
        self,
        ampe: Ampe,
        group: ChannelGroup,
        address: Address,
        url: str,
        hello: list[tuple[str, str | int]],
        connect_timeout: float | None,
        policy: Reconnect | None,
        changed: Callable[[], None],
        freed: Callable[[], None],
        on_signal: Callable[[Reply], object] | None = None,
        on_disconnect: Callable[[ConnectionLost], object] | None = None,
        on_reconnect: Callable[[], object] | None = None,
    ) -> None:
        self.ampe, self.group, self.address, self.url = ampe, group, address, url
        self._put = ampe.put
        self._hello = hello
        self._connect_timeout = connect_timeout
        self.policy = policy
        self._changed, self._freed = changed, freed
        self._on_signal, self._on_disconnect, self._on_reconnect = on_signal, on_disconnect, on_reconnect
        self.pending: dict[int, Waiter] = {}
        self.room_waiters = 0  # callers waiting for room in `pending` (the client counts them)
        self.channel = 0  # the open channel; 0 while there is none
        self.hello_headers: Headers = EMPTY_HEADERS  # the HelloResponse's
        self.done = False  # no channel will open any more: the receiver ends
        self.lost: ConnectionLost | None = None  # why there is no channel now
        self.first_error: BaseException | None = None  # why the first connect failed
        self.close_requested = False  # set by close() before it wakes the receiver
        self.closing = False
        self.connects = 0  # channels opened so far
        self._first_mid: dict[int, int] = {}  # channel -> its HelloRequest's id (its channel_closed carries it)
        self._hello_channel = 0
        self._hello_deadline: float | None = None
        self._hello_status: AmpeStatus | None = None
        self._abandoned = False  # the hello on its way is given up (timed out, or closing)
        self._next_attempt: float | None = time.monotonic()  # the first connect: at once
        self._failed = 0  # attempts in a row that failed
        self._bye_from_server = False

    # ------------------------------------------------------------ the receiver's calls

    def timeout(self) -> float | None:
        """Seconds until on_timer() is due (None: nothing is)."""
        due = self._next_attempt if self._next_attempt is not None else self._hello_deadline
        if due is None:
            return None
        return max(0.0, due - time.monotonic())

    def on_timer(self) -> None:
        """Make a due connect attempt, or give up a hello that got no answer in time."""
        now = time.monotonic()
        if self._next_attempt is not None and now >= self._next_attempt:
            self._attempt()
        elif self._hello_deadline is not None and now >= self._hello_deadline:
            self._hello_deadline = None
            self._abandoned = True
            self._abort(self._hello_channel)

    def handle(self, msg: Message) -> None:
        """One message of the group. It goes back to the pool, or is posted again as an answer."""
        bh = msg.bhdr
        ch = bh.channel_number
        proto = bh.proto
        op = proto.op_code
        if op is _RESPONSE and proto.origin is _APPLICATION and not proto.more and ch == self.channel:
            waiter = self.pending.pop(bh.message_id, None)  # the common case: a request's one answer
            if waiter is not None:
                thdrs = msg.thdrs
                if thdrs:
                    waiter.frame(reply_of(msg))
                else:  # a Reply made here, without a call: this runs for every answer
                    reply: Reply = _new(Reply)
                    reply.body = bytes(msg.body)
                    reply.headers = EMPTY_HEADERS
                    reply.message_id = bh.message_id
                    reply.more = False
                    reply.signal = False
                    reply.status = _SUCCESS
                    reply.error = None
                    waiter.frame(reply)
                if self.room_waiters:
                    self._freed()
            else:
                log.debug("%s: dropped an answer to request %d, which nobody waits for", self.url, bh.message_id)
            self._put(msg)
            return
        if msg.is_from_engine():
            self._from_engine(msg, ch, op)
        elif ch == self.channel and ch:
            if op == _RESPONSE:
                mid = bh.message_id
                if proto.more:
                    waiter = self.pending.get(mid)
                    if waiter is not None:
                        waiter.frame(reply_of(msg))
                else:
                    waiter = self.pending.pop(mid, None)
                    if waiter is not None:
                        waiter.frame(reply_of(msg))
                        self._freed()
                    else:
                        log.debug("%s: dropped an answer to request %d, which nobody waits for", self.url, mid)
            elif op == _SIGNAL:
                self._signal(msg)
            elif op == OpCode.Request:  # a client serves nobody: say so rather than leave the peer waiting
                self._post(error_answer(msg, AmpeStatus.not_allowed, "a tofu client answers no requests"))
                return
            elif op == OpCode.ByeRequest:
                # Answered at once: the server's engine sends nothing after its ByeRequest, so a
                # request that crossed it will not be answered; it fails when the channel closes.
                self._bye_from_server = True
                bh.proto.op_code = OpCode.ByeResponse
                self._post(msg)
                return
        elif ch == self._hello_channel and ch and op == OpCode.HelloResponse:
            self._connected(msg, ch)
        self.ampe.put(msg)

    def stopped(self) -> None:
        """The engine stopped (or the group was destroyed): nothing more will come."""
        self.channel = 0
        if self.closing:
            self._lose(_CLOSED, "the client was closed", final=True)
        else:
            self._lose(AmpeStatus.shutdown_started, "the engine stopped", final=True)
        if not self.connects and self.first_error is None:
            self.first_error = ConnectError(
                f"cannot connect to {self.url}: the engine stopped", AmpeStatus.shutdown_started
            )
        self.done = True
        self._changed()

    def send(self, msgs: list[Message], channel: int, mid: int) -> None:
        """Post the frames of one message on `channel` under `mid` (any thread; see frames.post_frames)."""
        post_frames(self.ampe, self.group, msgs, channel, mid)

    # ------------------------------------------------------------ internals

    def _post(self, msg: Message) -> None:
        try:
            self.group.post(msg)
        except AmpeError as exc:  # the channel closed meanwhile
            log.debug("%s: %s not sent: %s", self.url, msg.bhdr.proto.op_code.name, exc)
            self.ampe.put(msg)

    def _abort(self, channel: int) -> None:
        bye = self.ampe.get()
        bye.bhdr.proto.op_code = OpCode.ByeSignal
        bye.bhdr.channel_number = channel
        self._post(bye)

    def _signal(self, msg: Message) -> None:
        if self._on_signal is None:
            log.debug("%s: a Signal came and nobody listens (on_signal)", self.url)
            return
        self._call(self._on_signal, reply_of(msg, signal=True))

    def _call(self, hook: Callable[..., object] | None, *args: object) -> None:
        """Call a hook of the client's; what it raises is logged, never the receiver's end."""
        if hook is not None:
            try:
                hook(*args)
            except Exception:
                log.exception("%s: %s raised", self.url, getattr(hook, "__name__", "a hook"))

    def _from_engine(self, msg: Message, ch: int, op: OpCode) -> None:
        """A notification, or a message of ours the engine gave back (handle() puts it in the pool)."""
        bh = msg.bhdr
        status = raw_to_status(bh.status)
        if op == _SIGNAL and status is _CLOSED and self._first_mid.get(ch) == bh.message_id:
            del self._first_mid[ch]
            reason = status_named(msg.thdrs.get(CLOSE_REASON_HEADER), _CLOSED)
            detail = msg.thdrs.get(CLOSE_DETAIL_HEADER)
            if ch == self.channel:
                self._channel_closed(reason, detail)
            elif ch == self._hello_channel:
                self._hello_closed(reason, detail)
        elif status is AmpeStatus.receiver_update:
            if self.close_requested:
                self._begin_close()
        elif status is AmpeStatus.pool_empty:
            pass
        elif op == OpCode.HelloRequest and ch == self._hello_channel:
            self._hello_status = status  # returned: connect_failed, invalid_address, ...
        elif op == OpCode.Request:  # could not be sent: its channel is closing
            waiter = self.pending.pop(bh.message_id, None)
            if waiter is not None:
                waiter.fail(ConnectionLost(status, "the request could not be sent"))
                self._freed()

    def _attempt(self) -> None:
        self._next_attempt = None
        mid = next_id()
        hello = self.ampe.get()
        try:
            self.address.format(hello)
            for name, value in self._hello:
                hello.thdrs.append(name, value)
            hello.bhdr.message_id = mid
            ch = self.group.post(hello).channel_number
        except AmpeError as exc:
            self.ampe.put(hello)
            err = ConnectError(f"cannot connect to {self.url}: {exc}", exc.status)
            self._hello_over(err, exc.status)
            return
        self._first_mid[ch] = mid
        self._hello_channel = ch
        self._hello_status = None
        self._abandoned = False
        self._hello_deadline = None if self._connect_timeout is None else time.monotonic() + self._connect_timeout

    def _connected(self, msg: Message, ch: int) -> None:
        if self._abandoned:
            return  # too late: the ByeSignal that gave it up closes it
        self._hello_channel = 0
        self._hello_deadline = None
        self.hello_headers = Headers.of(msg.thdrs)
        self._failed = 0
        self._bye_from_server = False
        self.lost = None
        self.connects += 1
        self.channel = ch
        if self.connects > 1:
            log.warning("%s: connected again (channel %d)", self.url, ch)
            self._call(self._on_reconnect)
        else:
            log.debug("%s: connected (channel %d)", self.url, ch)
        self._changed()

    def _channel_closed(self, reason: AmpeStatus, detail: str | None) -> None:
        if detail is None and reason is _CLOSED:
            if self.closing:
                detail = "the client was closed"
            elif self._bye_from_server:
                detail = "the server closed the channel"
        self.channel = 0
        self._lose(reason, detail, final=self.closing or self.policy is None)
        if self.done or self.policy is None:
            return
        delay = self.policy.delay(0)
        self._next_attempt = time.monotonic() + delay
        log.warning("%s: the channel closed (%s); connecting again in %.2f s", self.url, self.lost, delay)
        self._call(self._on_disconnect, self.lost)

    def _lose(self, reason: AmpeStatus, detail: str | None, final: bool) -> None:
        """No channel now: fail every request in flight; `final`: none will open."""
        self.lost = ConnectionLost(reason, detail)
        if final:
            self.done = True
        pending = self.pending
        failed = 0
        while True:
            try:
                _, waiter = pending.popitem()
            except KeyError:
                break
            waiter.fail(ConnectionLost(reason, detail))
            failed += 1
        if failed:
            self._freed()
        self._changed()

    def _hello_closed(self, reason: AmpeStatus, detail: str | None) -> None:
        self._hello_channel = 0
        self._hello_deadline = None
        timed_out = self._connect_timeout if self._abandoned and not self.closing else None
        self._hello_over(hello_failed(self.url, self._hello_status, reason, detail, timed_out), reason)

    def _hello_over(self, err: ConnectError, reason: AmpeStatus) -> None:
        """A connect attempt failed with `err`."""
        if self.closing:
            self.done = True
        elif not self.connects:
            self.first_error = err
            self.done = True
        else:
            assert self.policy is not None
            self._failed += 1
            if self.policy.gives_up_after(self._failed):
                log.error("%s: gave up connecting again after %d attempt(s): %s", self.url, self._failed, err)
                self._lose(reason, f"gave up connecting again after {self._failed} attempt(s): {err}", final=True)
                return
            delay = self.policy.delay(self._failed)
            self._next_attempt = time.monotonic() + delay
            log.info("%s: %s; trying again in %.2f s", self.url, err, delay)
        self._changed()

    def _begin_close(self) -> None:
        """close(): a ByeRequest behind every request already sent; the
        channel_closed that follows ends the receiver."""
        if self.closing:
            return
        self.closing = True
        self._next_attempt = None
        if self._hello_channel:
            self._abandoned = True
            self._abort(self._hello_channel)
        if self.channel:
            bye = self.ampe.get()
            bye.bhdr.proto.op_code = OpCode.ByeRequest
            bye.bhdr.channel_number = self.channel
            bye.bhdr.message_id = next_id()
            try:
                self.group.post(bye)
            except AmpeError as exc:
                self.ampe.put(bye)
                self.channel = 0
                self._lose(_CLOSED, f"the client was closed ({exc})", final=True)
        if not self.channel and not self._hello_channel:
            self.done = True
            self._changed()
