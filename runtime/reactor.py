"""The Reactor: one engine with its own I/O thread, and the Ampe interface.

Application threads talk to the I/O thread through one inbox (a deque) and a
wake-up socket pair; the I/O thread talks back through each group's receive
queue. Everything that touches a socket runs on the I/O thread:

    post() --inbox--> _on_posted --> Connection.sendq --> _flush --> send()
    recv_into --> FrameDecoder --> _read --> ChannelGroup queue --> wait_receive()

except that a post to an idle connection may write its frame itself
(runtime/direct.py says when, and how it shares the socket with the I/O thread).

A post that finds 1024 posts still in the inbox waits for the I/O thread's
round to end (_catch_up): a thread that posts faster than the I/O thread
writes would otherwise keep the GIL from it.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, Self

from . import closing, connecting, limits, listening
from .addresses import (
    Address,
)
from .ampe import Ampe
from .channels import QUEUED_FRAME_COST, QUEUED_MESSAGE_COST, Channel, ChannelNumbers, Connection, Listener, SendWindow
from .direct import write_direct
from .framing import encode_into
from .generated import (
    AmpeError,
    AmpeStatus,
    NotAllowed,
    OpCode,
    OriginFlag,
    ShutdownStarted,
)
from .groups import SHUTDOWN, ChannelGroup
from .identity import HELLO_OPS, PEER_HEADER_MARK, stamp_identity
from .message import BinaryHeader, Message
from .options import Options
from .poller import READ, WRITE, make_poller
from .pool import AllocationStrategy, Pool, pool_capacity
from .sockets import (
    Resolved,
    ack_now,
    can_ack_now,
    finish_connect,
    needs_resolving,
    resolve,
)
from .timers import Timers
from .transport import HandshakeFailed, PlainTransport

__all__ = ["Ampe", "Reactor"]

log = logging.getLogger("tofu")


RECV_BUFFER_SIZE: Final = 256 * 1024  # one buffer per engine, shared by all its connections
SEND_BATCH: Final = 256 * 1024  # encode at most this much ahead of what the kernel took
JOIN_TIMEOUT: Final = 10.0  # seconds destroy() waits for the I/O thread
# A post that finds this many posts still queued for the I/O thread waits (at
# most _CATCH_UP_WAIT seconds) until the I/O thread has taken them and written
# what it could; see Reactor._submit.
_CATCH_UP_AT: Final = 1024
_CATCH_UP_WAIT: Final = 0.02
_QUEUED: Final = QUEUED_FRAME_COST  # what a queued message counts beyond its parts

# The members the per-message methods compare with. Final: compiled code holds
# them in C variables instead of looking up the enum and then its member.
_SIGNAL: Final = OpCode.Signal
_HELLO_REQUEST: Final = OpCode.HelloRequest
_HELLO_RESPONSE: Final = OpCode.HelloResponse
_WELCOME_REQUEST: Final = OpCode.WelcomeRequest
_BYE_REQUEST: Final = OpCode.ByeRequest
_BYE_RESPONSE: Final = OpCode.ByeResponse
_BYE_SIGNAL: Final = OpCode.ByeSignal
_ENGINE: Final = OriginFlag.engine
_CHANNEL_CLOSED: Final = AmpeStatus.channel_closed
_NOT_ALLOWED: Final = AmpeStatus.not_allowed
_POOL_EMPTY: Final = AmpeStatus.pool_empty
_ALWAYS: Final = AllocationStrategy.always
_POOL_ONLY: Final = AllocationStrategy.poolOnly
_HELLO_OPS: Final = HELLO_OPS
_PEER_HEADER_MARK: Final = PEER_HEADER_MARK


def _block_signals() -> None:
    """Keep SIGINT and SIGTERM off the engine's threads: the kernel then
    delivers them to a thread that can run the application's handlers, and a
    main thread blocked in wait_receive() is interrupted as it should be."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


class Reactor:
    """An engine: an I/O thread, a message pool and a channel table.

    Use it as a context manager, or call destroy() (idempotent) when done.
    """

    def __init__(self, options: Options | None = None) -> None:
        self._options = options if options is not None else Options()
        self._pool = Pool(self._options.initial_pool_msgs, pool_capacity(self._options))
        self._numbers = ChannelNumbers()
        # Send windows (Options.max_unsent_msgs): channel number -> permits to
        # post. post() takes one per message, the I/O thread gives it back once
        # the message is written; closing a channel wakes every waiting post.
        self._windows: dict[int, SendWindow] = {}
        self._closing = False
        self._direct_send = bool(self._options.direct_send)
        self._idle_timeout = self._options.idle_timeout
        self._groups: list[ChannelGroup] = []
        self._lock = threading.Lock()  # guards _groups and destroy()

        # Application threads -> I/O thread.
        self._inbox: deque[tuple[ChannelGroup | None, object]] = deque()
        self._woken = False
        self._caught_up = threading.Event()  # set by the I/O thread for posts waiting in _catch_up
        self._behind = False  # a post waits in _catch_up
        self._catch_up_wait = _CATCH_UP_WAIT
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

        # State owned by the I/O thread.
        self._selector = make_poller()
        self._selector.register(self._wake_r, READ, (self._on_wakeup, None))
        self._channels: dict[int, Channel] = {}
        self._dirty: set[Connection] = set()
        self._starved: set[Listener] = set()  # listeners paused for lack of descriptors
        self._rbuf = bytearray(RECV_BUFFER_SIZE)
        self._rview = memoryview(self._rbuf)
        self._pool_ran_dry = False
        self._timers = Timers()  # deadlines: handshake, connect and idle timeouts
        self._now = time.monotonic()  # when the loop last woke: the I/O path's clock
        self._resolver: ThreadPoolExecutor | None = None
        self._running = True

        self._ampe = Ampe(self)
        self._loop_thread = threading.Thread(target=self._run, name="tofu-reactor", daemon=True)
        self._loop_thread.start()

    # ------------------------------------------------------------------ public

    def ampe(self) -> Ampe:
        """The engine's interface."""
        if self._closing:
            raise ShutdownStarted("the engine is shutting down")
        return self._ampe

    def destroy(self) -> None:
        """Close every channel, stop the I/O thread and wait for it. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        if threading.current_thread() is self._loop_thread:
            self._running = False
            return
        self._call_soon(self._stop)
        self._loop_thread.join(JOIN_TIMEOUT)
        if self._loop_thread.is_alive():
            log.error("the tofu I/O thread did not stop within %.0f s", JOIN_TIMEOUT)
        if self._resolver is not None:
            self._resolver.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    # ------------------------------------------------ called on app threads

    def _new_group(self) -> ChannelGroup:
        """Ampe.create(): a new group, unless the engine is shutting down."""
        with self._lock:
            if self._closing:
                raise ShutdownStarted("the engine is shutting down")
            group = ChannelGroup(self)
            self._groups.append(group)
        return group

    def _retire_group(self, group: ChannelGroup) -> None:
        """Ampe.destroy(group): close its channels on the I/O thread and wait."""
        if group._destroyed:
            return
        group._destroyed = True
        with self._lock:
            if group in self._groups:
                self._groups.remove(group)
            closing = self._closing
        if closing:
            group._deliver(SHUTDOWN)  # the engine is stopping anyway: just wake the receiver
            return
        done = threading.Event()
        self._call_soon(lambda: self._destroy_group(group, done))
        if threading.current_thread() is not self._loop_thread:
            done.wait(JOIN_TIMEOUT)

    def _open_channel_number(self, group: ChannelGroup, connection: bool) -> int:
        """A number for a channel post() is opening (with a send window for a connection)."""
        number = self._numbers.allocate(group)
        if number is None:
            raise NotAllowed("every channel number is in use")
        if connection:
            self._open_window(number)
        return number

    def _open_window(self, number: int) -> None:
        if self._options.max_unsent_msgs:
            self._windows[number] = SendWindow(self._options.max_unsent_msgs)

    def _close_window(self, number: int) -> None:
        window = self._windows.pop(number, None)
        if window is not None:
            window.close()

    def _post(self, group: ChannelGroup, msg: Message, bh: BinaryHeader, regular: bool) -> BinaryHeader:
        """The end of ChannelGroup.post(), once `msg` (binary header `bh`, which
        post() already holds) has passed its checks: write it now if its
        connection is idle and `regular` (a Request, Response or Signal;
        runtime/direct.py), else queue it for the I/O thread. Returns a copy
        of its header."""
        header = bh.copy()
        msg = msg._take()
        ch = self._channels.get(bh.channel_number)  # (None for a channel post() is opening)
        if ch is None:
            self._submit(group, msg)
            return header
        if regular and ch.direct_ok and isinstance(ch, Connection) and write_direct(self, ch, msg):
            return header
        self._submit(group, msg)
        # After the append: no later post writes directly until the I/O thread
        # has written this message (see runtime/direct.py).
        ch.direct_ok = False
        return header

    def _submit(self, group: ChannelGroup, msg: Message) -> None:
        """Queue a posted message for the I/O thread."""
        inbox = self._inbox
        inbox.append((group, msg))
        if not self._woken:  # checked here too: most posts need no wake-up call
            self._wake()
        elif len(inbox) >= _CATCH_UP_AT:
            self._catch_up()

    def _catch_up(self) -> None:
        """Let the I/O thread catch up with a thread that posts faster than it
        writes: wait (at most _CATCH_UP_WAIT s) until it has taken the inbox
        and written what it could (the end of its loop's next round).

        Without this, a posting thread that never blocks holds the GIL while
        the I/O thread waits for it after every send() (each send releases
        the GIL, and takes up to the interpreter's switch interval, 5 ms, to
        get it back); with many connections the I/O thread makes one send()
        per connection, falls far behind, and every message posted meanwhile
        stays alive (memory, garbage collection). Never on the I/O thread."""
        if self._closing or threading.current_thread() is self._loop_thread:
            return
        caught_up = self._caught_up
        caught_up.clear()
        self._behind = True
        if len(self._inbox) >= _CATCH_UP_AT:  # the I/O thread may have emptied it meanwhile
            caught_up.wait(self._catch_up_wait)

    def _call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the I/O thread."""
        self._inbox.append((None, fn))
        self._wake()

    def _resume_reading(self, group: ChannelGroup) -> None:
        """The group's receiver has caught up: read its channels again."""
        self._call_soon(lambda: self._resume(group))

    def _wake(self) -> None:
        # One byte wakes the loop; posts made before it has emptied the inbox
        # need no more bytes (see _on_wakeup), so no post is missed and a burst
        # of posts costs one system call.
        if not self._woken:
            self._woken = True
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass  # the pipe is full (the loop will wake anyway) or closed

    # ------------------------------------------------------- the I/O thread

    def _run(self) -> None:
        _block_signals()
        selector = self._selector
        timers = self._timers
        deadlines = timers.heap  # checked inline: no call per loop when there are no timers
        monotonic = time.monotonic
        try:
            while self._running:
                # self._now is from before the handlers ran: a deadline may
                # fire that much late, which is nothing next to its seconds.
                events = selector.select(timers.timeout(self._now) if deadlines else None)
                self._now = now = monotonic()
                for data, mask in events:
                    handler, channel = data
                    try:
                        if type(channel) is Connection:  # the common case: a direct (compiled) call
                            self._on_connection_event(channel, mask)
                        else:
                            handler(channel, mask)
                    except Exception:
                        log.exception("tofu: internal error on channel %s", getattr(channel, "number", "-"))
                        if channel is not None:
                            self._close(channel, AmpeStatus.processing_failed)
                if self._dirty:
                    self._flush_dirty()
                if self._behind:
                    self._behind = False
                    self._caught_up.set()
                if deadlines and deadlines[0][0] <= now:
                    self._run_timers()
        except Exception:
            log.exception("tofu: the I/O thread failed")
        finally:
            self._shutdown_on_thread()

    def _stop(self) -> None:
        self._running = False

    def _on_wakeup(self, _: object, mask: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        inbox = self._inbox
        while True:
            while inbox:
                group, item = inbox.popleft()
                try:
                    if group is None:
                        item()  # type: ignore[operator]
                    else:
                        self._on_posted(group, item)  # type: ignore[arg-type]
                except Exception:
                    log.exception("tofu: internal error processing %r", item)
            # Posts made while we worked saw _woken set and wrote no byte: they
            # are in the inbox, and the check below finds them. A post after
            # this line sees False and writes a byte.
            self._woken = False
            if not inbox:
                return

    def _on_posted(self, group: ChannelGroup, msg: Message) -> None:
        # A posted message is the engine's: its parts are read from the slots
        # (post() took them from a live message, so none is a placeholder).
        bh = msg._bhdr
        op = bh.proto.op_code
        if group._destroyed:
            if op is _HELLO_REQUEST or op is _WELCOME_REQUEST:
                self._numbers.release(bh.channel_number)
                self._close_window(bh.channel_number)
            self._pool.put(msg)
            return
        if op is _HELLO_REQUEST:
            self._open_connection(group, msg)
            return
        if op is _WELCOME_REQUEST:
            self._open_listener(group, msg)
            return
        ch = self._channels.get(bh.channel_number)
        if ch is None or ch.group is not group:
            # It was open when posted and has closed since.
            self._return(group, msg, _CHANNEL_CLOSED)
        elif op is _BYE_SIGNAL:
            self._pool.put(msg)
            self._close(ch, _CHANNEL_CLOSED)
        elif not isinstance(ch, Connection):  # data for a listener
            self._return(group, msg, _NOT_ALLOWED)
        else:
            ch.sendq.append(msg)
            ch.queued += _QUEUED + len(msg._thdrs._buf) + len(msg._body._buf)
            if not ch.connecting:
                self._dirty.add(ch)

    def _return(self, group: ChannelGroup, msg: Message, status: AmpeStatus) -> None:
        """Give a message back to the application, marked as the engine's, with `status`."""
        bh = msg.bhdr
        bh.proto.origin = _ENGINE
        bh.status = status
        group._deliver(msg)

    def _engine_signal(self, status: AmpeStatus, channel_number: int, message_id: int) -> Message:
        msg = self._pool.get(_ALWAYS)
        bh = msg._bhdr
        bh.proto.op_code = _SIGNAL
        bh.proto.origin = _ENGINE
        bh.status = status
        bh.channel_number = channel_number
        bh.message_id = message_id
        return msg

    def _recycled(self) -> Message | None:
        """A pooled message for an incoming frame, or None (the decoder then
        makes one) when the pool is empty; the application hears of a
        shortage (see Pool), once."""
        msg = self._pool.get(_POOL_ONLY)
        if msg is None and self._pool.made_one():
            self._pool_ran_dry = True
        return msg

    def _pool_short(self, decoded: int) -> bool:
        """A shortage to report (docs/concepts.md): the pool is empty with all
        its messages in use, and the application holds more than the pool
        keeps, beyond those the engine holds (the `decoded` frames of this
        read, receive queues, then messages posted and not yet written: those
        are counted only when the others are not enough)."""
        pool = self._pool
        held = pool.in_use() - decoded - sum(group.pending() for group in list(self._groups))
        if held <= pool.maximum:
            return False
        held -= len(self._inbox)
        held -= sum(len(c.sendq) + len(c.inflight) for c in self._channels.values() if isinstance(c, Connection))
        return held > pool.maximum and pool.begin_shortage()

    def _resolve_then(
        self, address: Address, then: Callable[[Resolved], None], fail: Callable[[AmpeStatus], None]
    ) -> None:
        """Resolve `address` off the I/O thread when it may block on DNS."""
        if not needs_resolving(address):
            try:
                resolved = resolve(address)
            except AmpeError as exc:
                fail(exc.status)
                return
            then(resolved)
            return

        def work() -> None:
            try:
                resolved = resolve(address)
            except AmpeError as exc:
                status = exc.status
                self._call_soon(lambda: fail(status))
                return
            self._call_soon(lambda: then(resolved))

        if self._resolver is None:
            self._resolver = ThreadPoolExecutor(
                max_workers=2, thread_name_prefix="tofu-resolver", initializer=_block_signals
            )
        self._resolver.submit(work)

    # ---- connections (runtime/connecting.py)

    def _open_connection(self, group: ChannelGroup, msg: Message) -> None:
        connecting.open_connection(self, group, msg)

    def _connected(self, conn: Connection) -> None:
        connecting.connected(self, conn)

    def _on_connection_event(self, conn: Connection, mask: int) -> None:
        if conn.connecting:
            try:
                finish_connect(conn.sock)  # type: ignore[arg-type]
            except AmpeError as exc:
                self._close(conn, exc.status)
                return
            self._connected(conn)
            return
        if mask & READ:
            conn.direct_credit = True  # an answer may follow: let it be written directly
            self._read(conn)
        if (mask & WRITE or conn.transport.flush_after_read) and not conn.closed:
            self._flush(conn)

    def _read(self, conn: Connection) -> None:
        try:
            n = conn.transport.recv_into(self._rbuf)
        except (BlockingIOError, InterruptedError):
            return
        except HandshakeFailed as exc:
            self._handshake_failed(conn, exc)
            return
        except ConnectionResetError:
            self._close(conn, conn.ended_status())
            return
        except OSError as exc:
            log.info("channel %d: recv failed: %s", conn.number, exc)
            self._close(conn, AmpeStatus.recv_failed)
            return
        if n == 0:
            status = conn.ended_status()
            if status is AmpeStatus.peer_disconnected and conn.decoder.pending:
                log.warning("channel %d: peer closed in the middle of a frame", conn.number)
                status = AmpeStatus.communication_failed
            self._close(conn, status)
            return
        conn.last_active = self._now

        bad: AmpeStatus | None = None
        try:
            frames = conn.decoder.feed(self._rview[:n])
        except AmpeError as exc:
            log.warning("channel %d: bad frame from peer: %s", conn.number, exc)
            frames = exc.frames  # type: ignore[attr-defined]
            bad = exc.status
        if conn.decoder.pending and can_ack_now(conn.sock):  # type: ignore[arg-type]
            # The read ended inside a frame: a peer that writes a frame in
            # pieces with Nagle on (the reference does) sends the next piece
            # only once this one is acknowledged. Acknowledge it now.
            ack_now(conn.sock)  # type: ignore[arg-type]

        group = conn.group
        if self._pool_ran_dry:
            self._pool_ran_dry = False
            if self._pool_short(len(frames)):
                group._deliver(self._engine_signal(_POOL_EMPTY, conn.number, 0))

        number = conn.number
        inbound = conn.inbound
        for msg in frames:
            if bad is not None or conn.bye_done:
                self._pool.put(msg)  # nothing after a bad frame or a ByeResponse counts
                continue
            try:
                inbound.admit(msg)  # the rules of runtime/inbound.py; normalises the frame
            except AmpeError as exc:
                log.warning("channel %d: bad frame from peer: %s", number, exc)
                bad = exc.status
                self._pool.put(msg)
                continue
            bh = msg._bhdr  # a decoded frame: the slots, no posted-guard to pass
            op = bh.proto.op_code
            bh.channel_number = number
            if op in _HELLO_OPS or _PEER_HEADER_MARK in msg._thdrs._buf:  # only the engine names the peer
                stamp_identity(msg, conn.transport.identity if op in _HELLO_OPS else ())
            if not conn.first_mid:
                conn.first_mid = bh.message_id
            if op is _BYE_RESPONSE:
                conn.bye_done = True
            elif op is _BYE_REQUEST:
                conn.bye_received = True
                if conn.bye_sent:  # both sides said bye at once: the exchange is complete
                    conn.bye_done = True
            group._deliver(msg)

        if conn.hello is not None and frames:  # the peer answered our HelloRequest
            self._handshake_done(conn)
        if bad is not None:
            self._close(conn, bad)
        elif conn.bye_done:
            self._close(conn, _CHANNEL_CLOSED)
        elif group._over_limit():
            self._pause(group)

    def _handshake_failed(self, conn: Connection, exc: HandshakeFailed) -> None:
        connecting.handshake_failed(self, conn, exc)

    def _flush(self, conn: Connection) -> None:
        """Write what is queued, holding the connection against direct writes;
        then let posts write directly if it is idle (runtime/direct.py)."""
        with conn.send_lock:
            self._write_queued(conn)
            idle = (
                self._direct_send
                and not conn.outbuf
                and not conn.sendq
                and not conn.closed
                and not conn.connecting
                and not conn.bye_sent
                and type(conn.transport) is PlainTransport
            )
            # Store first, then look at the inbox: a post queued after this
            # look clears the flag itself (after its append), and one queued
            # before it is seen here. Looking first would let a post slip in
            # between the look and the store, and the flag would be set with
            # that post still unwritten: a later post would overtake it.
            # (Posters read the flag under this lock, so the moment it is
            # True here is never seen.)
            conn.direct_ok = idle
            if idle and self._inbox:
                conn.direct_ok = False

    def _write_queued(self, conn: Connection) -> None:
        """Encode what is queued and write as much as the kernel takes, in as
        few send() calls as possible (many frames per call)."""
        if conn.connecting or conn.closed:
            return
        out = conn.outbuf
        sendq = conn.sendq
        inflight = conn.inflight
        while True:
            queued, encoded = len(sendq), len(out)
            while sendq and len(out) < SEND_BATCH and not conn.bye_sent:
                msg = sendq.popleft()
                encode_into(out, msg)
                inflight.append(msg)
                op = msg._bhdr.proto.op_code
                if op is _BYE_REQUEST:
                    conn.bye_sent = True
                elif op is _BYE_RESPONSE:
                    conn.bye_sent = conn.bye_done = True
                elif op is _HELLO_RESPONSE and conn.deadline is not None:
                    self._handshake_done(conn)  # an accepted connection's handshake is complete
            conn.queued -= len(out) - encoded + (queued - len(sendq)) * QUEUED_MESSAGE_COST
            if not out and not conn.transport.wants_write:  # (TLS may hold ciphertext of its own)
                break
            try:
                n = conn.transport.send(out)
                conn.last_active = self._now
            except (BlockingIOError, InterruptedError):
                n = 0
            except (BrokenPipeError, ConnectionResetError):
                self._close(conn, conn.ended_status())
                return
            except OSError as exc:
                log.info("channel %d: send failed: %s", conn.number, exc)
                self._close(conn, AmpeStatus.send_failed)
                return
            del out[:n]
            if out or conn.transport.wants_write:
                break  # the kernel's buffer is full: wait until writable
            pool = self._pool
            permits = 0  # of what was written, to give back to the send window (a HelloRequest took none)
            for msg in inflight:
                if msg._bhdr.proto.op_code is not _HELLO_REQUEST:
                    permits += 1
                pool.put(msg)
            inflight.clear()
            window = self._windows.get(conn.number)
            if window is not None:
                window.release(permits)
        if not out and not conn.transport.wants_write:
            if conn.bye_done:
                self._close(conn, _CHANNEL_CLOSED)
                return
            if out.__sizeof__() > SEND_BATCH:
                conn.outbuf = bytearray()  # an idle channel keeps no big buffer
        self._update_events(conn)

    def _flush_dirty(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            self._flush(conn)

    # ---- listeners (runtime/listening.py); limits and timeouts (runtime/limits.py)

    # Methods that call the module functions (not class attributes bound to
    # them): a class compiled with mypyc does not bind plain functions.

    def _open_listener(self, group: ChannelGroup, msg: Message) -> None:
        listening.open_listener(self, group, msg)

    def _on_listener_event(self, lst: Listener, mask: int) -> None:
        listening.on_listener_event(self, lst, mask)

    def _run_timers(self) -> None:
        limits.run_timers(self)

    def _set_deadline(self, conn: Connection, seconds: float | None, status: AmpeStatus) -> bool:
        return limits.set_deadline(self, conn, seconds, status)

    def _handshake_done(self, conn: Connection) -> None:
        limits.handshake_done(self, conn)

    def _watch_idle(self, conn: Connection) -> None:
        limits.watch_idle(self, conn)

    def _connection_gone(self, lst: Listener) -> None:
        limits.connection_gone(self, lst)

    # ---- registration, backpressure, closing

    def _update_events(self, conn: Connection) -> None:
        if conn.connecting:
            want = WRITE
        else:
            # Stop reading while the receiver is behind, or while the peer
            # does not read what we owe it (Options.max_unsent_bytes); a TLS
            # handshake reads on regardless, or it could never finish.
            ready = conn.transport.ready
            held = conn.group._paused or conn.over_unsent(self._options.max_unsent_bytes)
            want = 0 if held and ready else READ
            if (conn.outbuf and ready) or conn.transport.wants_write:
                want |= WRITE
        self._set_events(conn, want)

    def _set_events(self, ch: Channel, want: int) -> None:
        if want == ch.events:
            return
        if ch.events == 0:
            handler = self._on_connection_event if isinstance(ch, Connection) else self._on_listener_event
            self._selector.register(ch.sock, want, (handler, ch))  # type: ignore[arg-type]
        elif want == 0:
            self._selector.unregister(ch.sock)  # type: ignore[arg-type]
        else:
            self._selector.modify(ch.sock, want)  # type: ignore[arg-type]
        ch.events = want

    def _pause(self, group: ChannelGroup) -> None:
        """Stop reading the group's sockets until its receiver catches up."""
        if group._paused:
            return
        group._resume_requested = False
        group._paused = True
        # The receiver may have drained the queue since over_limit() looked:
        # then it never saw _paused and will not ask to resume. Look again.
        if group.pending() <= group._resume_at:
            group._paused = False
            return
        log.debug("pausing reads: a channel group holds %d messages", group.pending())
        for ch in group._channels:
            if isinstance(ch, Connection) and not ch.connecting:
                self._update_events(ch)

    def _resume(self, group: ChannelGroup) -> None:
        if not group._paused:
            return
        group._paused = False
        for ch in group._channels:
            if isinstance(ch, Connection) and not ch.connecting:
                self._update_events(ch)

    # ---- closing (runtime/closing.py)

    def _close(self, ch: Channel, reason: AmpeStatus, notify: bool = True, detail: str = "") -> None:
        """Close a channel (see closing.close)."""
        closing.close(self, ch, reason, notify, detail)

    def _destroy_group(self, group: ChannelGroup, done: threading.Event) -> None:
        closing.destroy_group(self, group, done)

    def _shutdown_on_thread(self) -> None:
        closing.shutdown_on_thread(self)
