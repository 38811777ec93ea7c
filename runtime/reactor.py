"""The Reactor: one engine, with its own I/O thread.

The Reactor makes the engine's parts and drives I/O: its thread runs the
loop over the poller (epoll), takes what application threads post through
the inbox, hands ready sockets to the connection traffic (transfer.py) or
the listeners (listening.py), runs the timers, and closes channels. What a
frame or a post means is the channel protocol's business (protocol.py, the
state machine's table); what a group receives is its mailbox's.

    post() (groups.py) -> protocol check -> inbox -> _on_posted -> sendq -> Transfer.flush -> send()
    recv_into -> protocol.receive (decoder, checks, state) -> mailbox -> wait_receive()

(a post to an idle connection may write its frame itself: direct.py; a
receiver waiting on a group's one connection may read it itself:
direct_receive.py).

Failures stay where they happen: an exception while handling one channel's
event, post, close or flush closes that channel with processing_failed and
a ~close_detail; the I/O thread and the other channels go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final, Self

from .ampe import Ampe
from .channels import APP, QUEUED_FRAME_COST, Channel, ChannelTable, Connection, Listener
from .connecting import Connector
from .deadlines import Deadlines
from .direct import DirectWriter
from .direct_receive import DirectReceiver
from .generated import AmpeStatus, OpCode, ShutdownStarted
from .generated.machine import STATE_RETURNS_HELLO
from .groups import ChannelGroup, mailbox_of
from .inbox import Inbox
from .listening import Listeners
from .mailbox import SHUTDOWN, Mailbox, Shutdown
from .message import Message, body_buffer, header_of, headers_buffer
from .options import Options
from .poller import READ, make_poller
from .pool import Pool, pool_capacity
from .resolver import Resolver, block_signals
from .timers import Clock, Timers
from .transfer import Transfer
from .transport import TLSTransport

__all__ = ["Reactor", "describe"]

log = logging.getLogger("tofu")

JOIN_TIMEOUT: Final = 10.0  # seconds destroy() waits for the I/O thread

# The members the per-message methods compare with. Final: compiled code holds
# them in C variables instead of looking up the enum and then its member.
_HELLO_REQUEST: Final = OpCode.HelloRequest
_WELCOME_REQUEST: Final = OpCode.WelcomeRequest
_BYE_SIGNAL: Final = OpCode.ByeSignal
_CHANNEL_CLOSED: Final = AmpeStatus.channel_closed
_PROCESSING_FAILED: Final = AmpeStatus.processing_failed


class Reactor:
    """An engine: an I/O thread, a message pool and a channel table.

    Use it as a context manager, or call destroy() (idempotent) when done.
    """

    def __init__(self, options: Options | None = None) -> None:
        self._options = options = options if options is not None else Options()
        self._pool = pool = Pool(options.initial_pool_msgs, pool_capacity(options))
        self._inbox = inbox = Inbox()
        self._table = table = ChannelTable(pool.for_frame, pool.put, options.max_unsent_msgs)
        self._clock = clock = Clock()
        self._timers = Timers()
        self._poller = make_poller()
        self._transfer = transfer = Transfer(
            self._poller, pool, table, inbox, options, clock, self._close, self._moved, self._shortage
        )
        self._deadlines = Deadlines(self._timers, options, lambda: clock.now, self._close)
        self._resolver = resolver = Resolver(inbox.call_soon)
        self._listeners = Listeners(options, pool, table, transfer, resolver, self._adopt, self._close)
        self._connector = Connector(options, resolver, transfer, self._close)
        self._writer = DirectWriter(pool, table, inbox, transfer, options.idle_timeout is not None)
        self._receiver = DirectReceiver(
            pool,
            inbox,
            transfer,
            self._timers,
            self._shortage,
            self._descriptor_freed,
            options.idle_timeout is not None,
            bool(options.direct_receive),
        )
        self._mailboxes: list[Mailbox] = []
        self._lock = threading.Lock()  # guards _mailboxes and destroy()
        self._destroyed = False
        self._running = True
        self._rounds = 0  # rounds of the I/O thread's loop (its wake-ups), for tests
        self._stopped = threading.Event()  # the I/O thread has shut everything down
        self._ampe = Ampe(pool, inbox, self._new_group, lambda group: self._retire(mailbox_of(group)))
        self._poller.register(inbox.reader, READ, inbox)
        self._io_thread = threading.Thread(target=self._run, name="tofu-reactor", daemon=True)
        inbox.io_thread = self._io_thread
        self._io_thread.start()
        self._receiver.io_ident = self._io_thread.ident or 0

    # ------------------------------------------------------------------ public

    def ampe(self) -> Ampe:
        """The engine's interface."""
        if self._inbox.closing:
            raise ShutdownStarted("the engine is shutting down")
        return self._ampe

    def destroy(self) -> None:
        """Close every channel, stop the I/O thread and wait for it. Idempotent."""
        with self._lock:
            if self._destroyed:
                return
            self._destroyed = True
        self._inbox.closing = True
        if threading.current_thread() is self._io_thread:
            self._running = False
            return
        self._inbox.call_soon(self._stop)
        self._io_thread.join(JOIN_TIMEOUT)
        if self._io_thread.is_alive():
            log.error("the tofu I/O thread did not stop within %.0f s", JOIN_TIMEOUT)
        self._resolver.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    # ------------------------------------------------ called on app threads

    def _new_group(self) -> ChannelGroup:
        """Ampe.create(): a new group, unless the engine is shutting down."""
        mailbox = Mailbox(self._options.max_queued_msgs)
        with self._lock:
            if self._inbox.closing:
                raise ShutdownStarted("the engine is shutting down")
            self._mailboxes.append(mailbox)
        return ChannelGroup(
            mailbox, self._inbox, self._table, self._writer, self._receiver, self._resume_reading, self._retire
        )

    def _retire(self, mailbox: Mailbox) -> None:
        """Ampe.destroy(group): close its channels on the I/O thread and wait."""
        if mailbox.destroyed:
            return
        mailbox.destroyed = True
        with self._lock:
            if mailbox in self._mailboxes:
                self._mailboxes.remove(mailbox)
        if self._inbox.closing:
            mailbox.deliver(SHUTDOWN)  # the engine is stopping anyway: just wake the receiver
            return
        done = threading.Event()
        self._inbox.call_soon(lambda: self._destroy_group(mailbox, done))
        if threading.current_thread() is self._io_thread:
            return
        # Until the I/O thread has done it, or has stopped (then it woke the receiver itself).
        while not done.wait(0.05) and not self._stopped.is_set():
            pass

    def _resume_reading(self, mailbox: Mailbox) -> None:
        """The group's receiver has caught up: read its channels again."""
        transfer = self._transfer
        self._inbox.call_soon(lambda: transfer.resume(mailbox))

    # ------------------------------------------------------- the I/O thread

    def _run(self) -> None:
        block_signals()
        poller = self._poller
        timers = self._timers
        deadlines = timers.heap  # checked inline: no call per loop when there are no timers
        clock = self._clock
        transfer = self._transfer
        inbox = self._inbox
        monotonic = time.monotonic
        try:
            while self._running:
                self._rounds += 1
                # clock.now is from before the handlers ran: a deadline may
                # fire that much late, which is nothing next to its seconds.
                events = poller.select(timers.timeout(clock.now) if deadlines else None)
                clock.now = now = monotonic()
                for ch, mask in events:
                    if type(ch) is Connection:  # the common case: a direct (compiled) call
                        try:
                            transfer.on_event(ch, mask)
                        except Exception as exc:
                            self._failed(ch, exc, "handling its socket's event")
                    elif type(ch) is Listener:
                        try:
                            self._listeners.on_event(ch)
                        except Exception as exc:
                            self._failed(ch, exc, "accepting a connection")
                    else:
                        self._on_wakeup()
                if transfer.dirty:
                    transfer.flush_dirty()
                inbox.round_done()
                if deadlines and deadlines[0][0] <= now:
                    self._run_timers()
        except Exception:
            log.exception("tofu: the I/O thread failed")
        finally:
            self._shutdown()

    def _stop(self) -> None:
        self._running = False

    def _failed(self, ch: Channel, exc: Exception, doing: str) -> None:
        """An engine bug while `doing` something for `ch`: that channel closes, nothing else."""
        log.exception("tofu: internal error on channel %d while %s", ch.number, doing)
        self._close(ch, _PROCESSING_FAILED, f"internal error while {doing}: {type(exc).__name__}: {exc}")

    def _run_timers(self) -> None:
        for timer in self._timers.run_due(self._clock.now):
            try:
                timer.callback()
            except Exception:
                log.exception("tofu: internal error in a timer")

    def _on_wakeup(self) -> None:
        inbox = self._inbox
        inbox.clear_wakeup()
        items = inbox.items
        while True:
            while items:
                ch, item = items.popleft()
                if ch is None:
                    try:
                        item()  # type: ignore[operator]
                    except Exception:
                        log.exception("tofu: internal error in a call on the I/O thread")
                    continue
                try:
                    self._on_posted(ch, item)  # type: ignore[arg-type]
                except Exception as exc:
                    self._failed(ch, exc, "taking a posted message")
            # Posts made while we worked saw `woken` set and wrote no byte:
            # they are in the queue, and the check below finds them. A post
            # after this line sees False and writes a byte.
            inbox.woken = False
            if not items:
                return

    def _on_posted(self, ch: Channel, msg: Message) -> None:
        """A message posted on `ch` (post() has checked it and moved the
        channel's state): open the channel, queue it, or close for a ByeSignal."""
        mailbox = ch.mailbox
        op = header_of(msg).proto.op_code
        if op is _HELLO_REQUEST or op is _WELCOME_REQUEST:  # the post opened `ch`
            if ch.closed or mailbox.destroyed:  # its group was destroyed meanwhile
                self._pool.put(msg)
                self._close(ch, _CHANNEL_CLOSED, silent=True)
                return
            if type(ch) is Connection:
                self._deadlines.follow(ch)  # connect_timeout covers the name lookup and the connect too
                self._connector.open(ch, msg)
            else:
                self._listeners.open(ch, msg)  # type: ignore[arg-type]
            return
        if ch.closed:  # it closed after the post
            if mailbox.destroyed:
                self._pool.put(msg)
            else:
                self._give_back_closed(ch, msg, _CHANNEL_CLOSED)
            return
        if op is _BYE_SIGNAL:
            self._pool.put(msg)
            self._close(ch, _CHANNEL_CLOSED)
            return
        if type(ch) is not Connection:  # (post() refuses anything else on a listener)
            mailbox.give_back(msg, AmpeStatus.not_allowed)
            return
        ch.sendq.append(msg)
        ch.queued += QUEUED_FRAME_COST + len(headers_buffer(msg)) + len(body_buffer(msg))
        if ch.protocol.state != ch.timed_state:  # the post moved the state (a Hello or Bye answer...)
            self._moved(ch)
        if not ch.connecting:
            self._transfer.mark(ch)

    def _moved(self, conn: Connection) -> None:
        """`conn`'s state moved: its timers follow, its HelloRequest's copy
        goes once the state no longer gives it back, and a flush at the end
        of the round says again whether posts may write directly."""
        self._deadlines.follow(conn)
        self._transfer.mark(conn)
        if conn.hello is not None and not STATE_RETURNS_HELLO[conn.protocol.state]:
            self._pool.put(conn.hello)
            conn.hello = None

    def _adopt(self, conn: Connection) -> None:
        """An accepted connection waits for its hello (the table put it in its listener's group)."""
        self._deadlines.follow(conn)
        self._transfer.update_events(conn)

    def _shortage(self, decoded: int) -> bool:
        """A shortage to report (docs/concepts.md): the pool is empty with all
        its messages in use, and the application holds more than the pool
        keeps, beyond those the engine holds (the `decoded` frames of this
        read, receive queues, then messages posted and not yet written: those
        are counted only when the others are not enough)."""
        pool = self._pool
        with self._lock:
            mailboxes = list(self._mailboxes)
        held = pool.in_use() - decoded - sum(mailbox.qsize() for mailbox in mailboxes)
        if held <= pool.maximum:
            return False
        held -= len(self._inbox.items)
        held -= sum(len(c.sendq) + len(c.inflight) for c in self._table.snapshot() if type(c) is Connection)
        return held > pool.maximum and pool.begin_shortage()

    # ---- closing

    def _close(self, ch: Channel, reason: AmpeStatus, detail: str = "", silent: bool = False) -> None:
        """Close a channel: its socket goes, and the application gets what
        the state machine says a close in the channel's state gives back (its
        unsent messages with `reason`, then the channel_closed notice naming
        an abnormal `reason`, and `detail` in words) unless `silent` or the
        group is gone. Never raises: a failure while closing still closes the
        channel, with processing_failed (see _close_now), and a delivery hook
        that raises loses nothing (the message is queued before it runs)."""
        if ch.closed:
            return
        try:
            given = self._close_now(ch, reason, detail, silent)
        except Exception:  # the state machine's own close failed: nothing to give back
            log.exception("tofu: internal error closing channel %d", ch.number)
            ch.closed = True
            self._table.remove(ch)
            self._close_socket(ch)
            return
        mailbox = ch.mailbox
        for msg in given:
            self._deliver(mailbox, msg)
        log.debug("channel %d closed: %s", ch.number, reason.name)

    def _close_now(self, ch: Channel, reason: AmpeStatus, detail: str, silent: bool) -> list[Message]:
        """The close itself: the channel leaves the table and the posters,
        its resources go, what it held to send is taken; the protocol says
        what the application gets. A failure while letting the resources go
        (a TLS session that raises on close_notify...) closes the socket all
        the same and turns the close into processing_failed, saying why."""
        if type(ch) is Connection:
            with ch.send_lock:  # waits for a direct write in progress (runtime/direct.py)
                ch.direct_ok = False
        ch.closed = True
        self._table.remove(ch)
        try:
            self._release(ch)
        except Exception as exc:
            log.exception("tofu: internal error closing channel %d", ch.number)
            self._close_socket(ch)
            reason = _PROCESSING_FAILED
            detail = f"internal error while closing: {type(exc).__name__}: {exc}"
        unsent: list[Message] = []
        hello: Message | None = None
        if type(ch) is Connection:
            unsent = self._transfer.take_unsent(ch)  # after the TLS stream's last records went (or not)
            hello, ch.hello = ch.hello, None
        if reason is _CHANNEL_CLOSED:  # a normal close: no detail
            detail = ""
        silent = silent or ch.mailbox.destroyed
        if type(ch) is Connection and ch.reader == APP and self._defer_close(ch, reason, unsent, hello, detail, silent):
            return []  # a receiving thread reading the socket now delivers them after what it read
        return ch.protocol.close(reason, unsent, hello, detail, silent)

    def _defer_close(
        self,
        conn: Connection,
        reason: AmpeStatus,
        unsent: list[Message],
        hello: Message | None,
        detail: str,
        silent: bool,
    ) -> bool:
        """A lent `conn` closes (runtime/direct_receive.py, "Closing"): True
        when its receiving thread is reading it now, and will run the
        close's deliveries once what it read is queued; False: the caller
        delivers them now. Never waits."""
        return self._receiver.defer(conn, lambda: self._finish_close(conn, reason, unsent, hello, detail, silent))

    def _finish_close(
        self,
        conn: Connection,
        reason: AmpeStatus,
        unsent: list[Message],
        hello: Message | None,
        detail: str,
        silent: bool,
    ) -> None:
        """A deferred close's deliveries, on the thread that held the gate."""
        try:
            given = conn.protocol.close(reason, unsent, hello, detail, silent)
        except Exception:
            log.exception("tofu: internal error closing channel %d", conn.number)
            return
        for msg in given:
            self._deliver(conn.mailbox, msg)

    def _release(self, ch: Channel) -> None:
        """What a closing channel holds of the engine goes: its registration,
        its timers and counts, its TLS stream (ended with close_notify), its socket."""
        self._transfer.unregister(ch)
        if type(ch) is Connection:
            self._transfer.forget(ch)
            self._deadlines.stop(ch)
            if ch.listener is not None:
                self._listeners.connection_closed(ch.listener)
            if type(ch.transport) is TLSTransport:
                ch.transport.close_notify()  # a TLS stream ends with its alert, not a bare FIN
        elif type(ch) is Listener:
            self._listeners.closed(ch)
        self._close_socket(ch)

    def _close_socket(self, ch: Channel) -> None:
        """Close `ch`'s socket (unregistered), unless a receiving thread may
        be polling it: that thread closes it on its way out (runtime/direct_receive.py)."""
        sock = ch.sock
        if sock is not None and (type(ch) is not Connection or self._receiver.closing(ch)):
            sock.close()
            self._listeners.descriptor_freed()

    def _descriptor_freed(self) -> None:
        """A receiving thread closed a socket: listeners out of descriptors accept again (on the I/O thread)."""
        self._inbox.call_soon(self._listeners.descriptor_freed)

    def _deliver(self, mailbox: Mailbox, msg: Message | Shutdown) -> None:
        """Deliver where nothing may stop the engine (a close, the stop): a
        delivery hook that raises is logged (the message is queued already)."""
        try:
            mailbox.deliver(msg)
        except Exception:
            log.exception("tofu: a channel group's delivery hook failed")

    def _give_back(self, mailbox: Mailbox, msg: Message, status: AmpeStatus) -> None:
        """Give `msg` back where nothing may stop the engine (see _deliver)."""
        try:
            mailbox.give_back(msg, status)
        except Exception:  # (queued before the hook ran: nothing lost)
            log.exception("tofu: a channel group's delivery hook failed")

    def _give_back_closed(self, ch: Channel, msg: Message, status: AmpeStatus) -> None:
        """Give back `msg`, posted on `ch` after it closed: now, or after the
        close's own deliveries if a receiving thread that was reading `ch`
        when it closed has them still (runtime/direct_receive.py). (A
        method of its own: a closure made in _on_posted would cost its
        variables' cells on every post.)"""
        mailbox = ch.mailbox
        deliver: Callable[[], None] = lambda: self._give_back(mailbox, msg, status)
        if type(ch) is not Connection or ch.reader != APP or not self._receiver.defer(ch, deliver):
            deliver()

    def _shut(self, mailbox: Mailbox) -> None:
        """The engine stops: the group's SHUTDOWN, after what a close left to
        its receiving thread (runtime/direct_receive.py)."""
        self._receiver.deliver_last(mailbox, lambda: self._deliver(mailbox, SHUTDOWN))

    def _destroy_group(self, mailbox: Mailbox, done: threading.Event) -> None:
        """Ampe.destroy(group), on the I/O thread: close its channels, silently, and wake its receiver."""
        try:
            for ch in self._table.of_group(mailbox):
                self._close(ch, _CHANNEL_CLOSED, silent=True)
            mailbox.deliver(SHUTDOWN)
            self._receiver.close(mailbox)
        finally:
            done.set()

    def _shutdown(self) -> None:
        """Last act of the I/O thread: every channel closes with
        shutdown_started; what was posted and not taken comes back with the
        rest of its channel (before the channel's notice); every receiver wakes."""
        inbox = self._inbox
        inbox.closing = True
        try:
            while inbox.items:
                ch, item = inbox.items.popleft()
                if ch is None:
                    continue  # a call for the I/O thread: nothing to do any more
                msg: Message = item  # type: ignore[assignment]
                if type(ch) is Connection and not ch.closed:
                    ch.sendq.append(msg)  # comes back with the channel's other unsent messages
                elif ch.mailbox.destroyed:
                    self._pool.put(msg)
                else:
                    self._give_back_closed(ch, msg, AmpeStatus.shutdown_started)
            for ch in self._table.snapshot():
                self._close(ch, AmpeStatus.shutdown_started)
            with self._lock:
                mailboxes = list(self._mailboxes)
            for mailbox in mailboxes:
                self._shut(mailbox)
        finally:
            self._receiver.close_all()
            self._timers.clear()
            self._poller.close()
            inbox.close()
            self._pool.clear()
            self._stopped.set()


def describe(rtr: Reactor, group: ChannelGroup | None = None) -> str:
    """One line on what an engine (and `group`) is doing now: its inbox,
    connections, queues and paused groups. For diagnostics (the benchmark
    prints it when a trial stalls); it reads without locking, so under load
    the numbers are a moment's, not one instant's."""
    conns = [c for c in rtr._table.snapshot() if type(c) is Connection]
    line = (
        f"engine: woken={rtr._inbox.woken} inbox={len(rtr._inbox.items)} dirty={len(rtr._transfer.dirty)} "
        f"channels={len(rtr._table)} conns={len(conns)} sendq={sum(len(c.sendq) for c in conns)} "
        f"outbuf={sum(len(c.outbuf) for c in conns)} events={sorted({c.events for c in conns})} "
        f"io_thread_alive={rtr._io_thread.is_alive()}"
    )
    if group is not None:
        mailbox = mailbox_of(group)
        line += f" group: paused={mailbox.paused} resume_requested={mailbox.resume_requested} queued={group.pending()}"
    return line
