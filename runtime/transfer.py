"""Bytes between the connections' sockets and their protocols, on the I/O thread.

    readable: recv_into -> protocol.receive -> the group's mailbox
    writable: sendq -> protocol.write (encode) -> transport.send, many frames per call

Transfer also keeps the poller's registrations (what each channel waits
for: to read unless its group's receiver is behind or its peer does not read
what it is owed; to write while bytes wait), the connections with something
to write at the end of this round ("dirty"), and stops and resumes reading a
group's channels for backpressure (Options.max_queued_msgs).

It closes nothing itself: a connection that fails, or whose protocol says
it is over, goes to the `close` callback (the Reactor's), and never while
the connection's send lock is held (a close delivers to the application,
whose delivery hook may run anything); a state the peer moved goes to
`moved`; `shortage(decoded)` says whether an empty pool is worth a
pool_empty warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from .channels import IO, QUEUED_MESSAGE_COST, Channel, ChannelTable, Connection
from .framing import frame_size
from .generated import AmpeError, AmpeStatus, OpCode, OriginFlag
from .inbox import Inbox
from .mailbox import Mailbox
from .message import Message, header_of
from .options import Options
from .poller import READ, WRITE, Poller
from .pool import Pool
from .protocol import Closing, Moved
from .sockets import ack_now, can_ack_now, finish_connect
from .timers import Clock
from .transport import HandshakeFailed, PlainTransport

__all__ = ["RECV_BUFFER_SIZE", "SEND_BATCH", "Transfer", "pool_empty_notice"]

log = logging.getLogger("tofu")

RECV_BUFFER_SIZE: Final = 256 * 1024  # one buffer per engine, shared by all its connections
SEND_BATCH: Final = 256 * 1024  # encode at most this much ahead of what the kernel took

_HELLO_REQUEST: Final = OpCode.HelloRequest
_SIGNAL: Final = OpCode.Signal
_ENGINE: Final = OriginFlag.engine
_CHANNEL_CLOSED: Final = AmpeStatus.channel_closed
_POOL_EMPTY: Final = AmpeStatus.pool_empty
_PROCESSING_FAILED: Final = AmpeStatus.processing_failed


class Transfer:
    """The I/O thread's traffic for one engine (see the module's docstring).

    close(channel, status, detail): the Reactor's close.
    moved(conn): the peer moved `conn`'s state (its timers follow).
    shortage(decoded): whether the pool ran dry for real (pool_empty).
    """

    def __init__(
        self,
        poller: Poller,
        pool: Pool,
        table: ChannelTable,
        inbox: Inbox,
        options: Options,
        clock: Clock,
        close: Callable[[Connection, AmpeStatus, str], None],
        moved: Callable[[Connection], None],
        shortage: Callable[[int], bool],
    ) -> None:
        self._poller = poller
        self._pool = pool
        self._table = table
        self._inbox = inbox
        self._clock = clock
        self._close = close
        self._moved = moved
        self._shortage = shortage
        self._max_unsent = options.max_unsent_bytes
        self._direct_send = bool(options.direct_send)
        self._windowed = table.windowed
        self._rbuf = bytearray(RECV_BUFFER_SIZE)
        self._rview = memoryview(self._rbuf)
        self.dirty: set[Connection] = set()

    # ------------------------------------------------ events

    def on_event(self, conn: Connection, mask: int) -> None:
        """The poller says `conn`'s socket is ready for `mask`. An event of a
        channel that closed earlier in the same round (its socket is gone) is
        stale: ignored."""
        if conn.closed:
            return
        if conn.connecting:
            try:
                finish_connect(conn.sock)  # type: ignore[arg-type]
            except AmpeError as exc:
                self._close(conn, exc.status, str(exc))
                return
            conn.connecting = False
            log.debug("channel %d connected", conn.number)
            self.flush(conn)
            return
        if mask & READ:
            conn.direct_credit = True  # an answer may follow: let it be written directly
            self.read(conn)
        if (mask & WRITE or conn.transport.flush_after_read) and not conn.closed:
            self.flush(conn)

    # ------------------------------------------------ reading

    def read(self, conn: Connection) -> None:
        """Read what the socket has and deliver what it completes, unless a
        receiving thread reads it now (runtime/direct_receive.py: this
        thread's flag is set before it looks at the other's, as that thread
        does, so at most one of them reads)."""
        if conn.reader:  # an event of this round, from before that thread took the socket
            return
        conn.io_reading = True
        try:
            if not conn.reader:
                self._read(conn)
        finally:
            conn.io_reading = False

    def _read(self, conn: Connection) -> None:
        try:
            n = conn.transport.recv_into(self._rbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.read_failed(conn, exc)
            return
        if n == 0:
            self._peer_ended(conn)
            return
        conn.last_active = self._clock.now
        protocol = conn.protocol
        events = protocol.receive(self._rview[:n], conn.transport.identity)
        if protocol.decoder.pending and can_ack_now(conn.sock):  # type: ignore[arg-type]
            # The read ended inside a frame: a peer that writes a frame in
            # pieces with Nagle on (the reference does) sends the next piece
            # only once this one is acknowledged. Acknowledge it now.
            ack_now(conn.sock)  # type: ignore[arg-type]
        mailbox = conn.mailbox
        pool = self._pool
        if pool.ran_dry:
            pool.ran_dry = False
            if self._shortage(len(events)):
                mailbox.deliver(pool_empty_notice(pool.get(), conn.number))
        closing: Closing | None = None
        for event in events:
            if type(event) is Message:  # the common case
                mailbox.deliver(event)
            elif type(event) is Moved:
                self._moved(conn)
            else:
                closing = event  # type: ignore[assignment]
        if closing is not None:
            self.closing(conn, closing)
        elif mailbox.over_limit():
            self.pause(mailbox)

    def read_failed(self, conn: Connection, exc: OSError) -> None:
        """Reading `conn` failed with `exc`: close it for the reason."""
        if isinstance(exc, HandshakeFailed):
            self._handshake_failed(conn, exc)
        elif isinstance(exc, ConnectionResetError):
            self._peer_ended(conn)
        else:
            log.info("channel %d: recv failed: %s", conn.number, exc)
            self._close(conn, AmpeStatus.recv_failed, str(exc))

    def closing(self, conn: Connection, closing: Closing) -> None:
        """The protocol says `conn` must close now."""
        if closing.status is not _CHANNEL_CLOSED:
            log.warning("channel %d: %s: closing (%s)", conn.number, closing.detail, closing.status.name)
        self._close(conn, closing.status, closing.detail)

    def taken_back(
        self, conn: Connection, moved: bool, closing: Closing | None, failure: OSError | None, ended: bool
    ) -> None:
        """On the I/O thread: a receiving thread that read `conn` itself
        handed it back with what only this thread may act on, in the order
        Transfer.read acts (runtime/direct_receive.py): the state `moved`,
        then the close the protocol asked for, the read's `failure` or the
        end of the stream (`ended`). Reading goes on unless the channel
        closed; the group pauses if its receiver is behind."""
        conn.reader = IO
        if conn.closed:
            return
        if moved:
            self._moved(conn)
        if failure is not None:
            self.read_failed(conn, failure)
            return
        if ended:
            self._peer_ended(conn)
            return
        if closing is not None:
            self.closing(conn, closing)
            return
        mailbox = conn.mailbox
        if mailbox.over_limit():
            self.pause(mailbox)
        self.update_events(conn)

    def _peer_ended(self, conn: Connection) -> None:
        """The peer ended the stream: what that means is the state's."""
        ended = conn.protocol.peer_ended()
        if ended.status is AmpeStatus.communication_failed:
            log.warning("channel %d: peer closed in the middle of a frame", conn.number)
        self._close(conn, ended.status, ended.detail)

    def _handshake_failed(self, conn: Connection, exc: HandshakeFailed) -> None:
        """A listener drops the connection (logged; its application never saw
        it); a client's channel closes with connect_failed and the reason."""
        if exc.server_side:
            log.warning("channel %d: dropped an incoming connection: %s", conn.number, exc)
            self._close(conn, AmpeStatus.accept_failed, str(exc))
            return
        log.info("channel %d: connect failed: %s", conn.number, exc)
        self._close(conn, AmpeStatus.connect_failed, str(exc))

    # ------------------------------------------------ writing

    def mark(self, conn: Connection) -> None:
        """`conn` has something to write: flush it at the end of this round."""
        self.dirty.add(conn)

    def forget(self, conn: Connection) -> None:
        """`conn` is closing: nothing more to flush."""
        self.dirty.discard(conn)

    def flush_dirty(self) -> None:
        """Flush every connection marked this round; one that fails closes alone."""
        dirty, self.dirty = self.dirty, set()
        for conn in dirty:
            try:
                self.flush(conn)
            except Exception as exc:  # (flush closes a channel it fails on itself: this is the last resort)
                log.exception("tofu: internal error flushing channel %d", conn.number)
                self._close(conn, _PROCESSING_FAILED, _internal_error("flushing", exc))

    def flush(self, conn: Connection) -> None:
        """Write what is queued, holding the connection against direct writes;
        then let posts write directly if it is idle (runtime/direct.py). A
        failure, or the end of the channel, closes it after the lock is let go;
        so does an exception of the engine's own (a transport that raises):
        processing_failed, on this channel only, whoever asked for the flush."""
        with conn.send_lock:
            try:
                outcome = self._write_queued(conn)
            except Exception as exc:
                log.exception("tofu: internal error flushing channel %d", conn.number)
                outcome = Closing(_PROCESSING_FAILED, _internal_error("flushing", exc))
            idle = (
                outcome is None
                and self._direct_send
                and not conn.outbuf
                and not conn.sendq
                and not conn.closed
                and not conn.connecting
                and conn.protocol.steady
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
            if idle and self._inbox.items:
                conn.direct_ok = False
        if outcome is not None:
            self._close(conn, outcome.status, outcome.detail)

    def _write_queued(self, conn: Connection) -> Closing | None:
        """Encode what is queued and write as much as the kernel takes, in as
        few send() calls as possible (many frames per call). A Closing when
        the channel must close: the socket failed, or its last frame left."""
        if conn.connecting or conn.closed:
            return None
        out = conn.outbuf
        sendq = conn.sendq
        inflight = conn.inflight
        protocol = conn.protocol
        transport = conn.transport
        while True:
            queued, encoded = len(sendq), len(out)
            while sendq and len(out) < SEND_BATCH:
                if not protocol.write(sendq[0], out):
                    break  # the last frame went out: the rest stays, to come back at the close
                inflight.append(sendq.popleft())
            conn.queued -= len(out) - encoded + (queued - len(sendq)) * QUEUED_MESSAGE_COST
            if not out and not transport.wants_write:  # (TLS may hold ciphertext of its own)
                break
            try:
                n = transport.send(out)
                conn.last_active = self._clock.now
            except (BlockingIOError, InterruptedError):
                n = 0
            except HandshakeFailed as exc:  # a TLS handshake that fails while we write
                status = AmpeStatus.accept_failed if exc.server_side else AmpeStatus.connect_failed
                return Closing(status, str(exc))
            except (BrokenPipeError, ConnectionResetError):
                return conn.protocol.peer_ended()
            except OSError as exc:
                log.info("channel %d: send failed: %s", conn.number, exc)
                return Closing(AmpeStatus.send_failed, str(exc))
            del out[:n]
            if out or transport.wants_write:
                break  # the kernel's buffer is full: wait until writable
            self._written(conn)
        if not out and not transport.wants_write:
            if protocol.finished:
                return Closing(_CHANNEL_CLOSED)
            if out.__sizeof__() > SEND_BATCH:
                conn.outbuf = bytearray()  # an idle channel keeps no big buffer
        self.update_events(conn)
        return None

    def take_unsent(self, conn: Connection) -> list[Message]:
        """`conn` is closing: take what it holds to send, and return the
        messages it did not write, in order (what the close gives back). A
        message whose frame has wholly left, though others encoded with it
        have not, goes back to the pool: it was written, and may have been
        received (it must not also come back as unsent)."""
        inflight = conn.inflight
        left = len(conn.outbuf) + conn.transport.held  # the tail of the frames of `inflight` not yet gone
        kept = len(inflight)
        while kept and left > 0:
            kept -= 1
            left -= frame_size(inflight[kept])
        pool = self._pool
        for msg in inflight[:kept]:
            pool.put(msg)
        unsent = inflight[kept:]
        unsent.extend(conn.sendq)
        inflight.clear()
        conn.sendq.clear()
        conn.outbuf = bytearray()
        conn.queued = 0
        return unsent

    def send_failed(self, conn: Connection, exc: OSError) -> None:
        """A post's direct write failed with `exc` (runtime/direct.py): close
        the channel as a failed flush would."""
        if conn.closed:
            return
        if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            self._peer_ended(conn)
            return
        log.info("channel %d: send failed: %s", conn.number, exc)
        self._close(conn, AmpeStatus.send_failed, str(exc))

    def _written(self, conn: Connection) -> None:
        """Everything encoded has left: its messages go back to the pool and
        their permits to the send window (a HelloRequest took none)."""
        pool = self._pool
        permits = 0
        for msg in conn.inflight:
            if header_of(msg).proto.op_code is not _HELLO_REQUEST:
                permits += 1
            pool.put(msg)
        conn.inflight.clear()
        if self._windowed:
            window = self._table.window(conn.number)
            if window is not None:
                window.release(permits)

    # ------------------------------------------------ registrations

    def update_events(self, conn: Connection) -> None:
        """Register what `conn` waits for now."""
        lock = conn.recv_lock
        lock.acquire()
        try:
            self.update_events_held(conn)
        finally:
            lock.release()

    def update_events_held(self, conn: Connection) -> None:
        """update_events(), for a caller holding `conn.recv_lock`: the lock
        keeps `events` and the poller's registration one (a receiving thread
        that reads the socket itself registers it too: runtime/direct_receive.py)."""
        if conn.connecting:
            want = WRITE
        else:
            # Stop reading while the receiver is behind, or while the peer
            # does not read what we owe it (Options.max_unsent_bytes); a TLS
            # handshake reads on regardless, or it could never finish. Nor
            # while it is lent to a receiving thread, or handed back by it.
            ready = conn.transport.ready
            held = conn.mailbox.paused or conn.over_unsent(self._max_unsent)
            want = 0 if (held and ready) or conn.reader else READ
            if (conn.outbuf and ready) or conn.transport.wants_write:
                want |= WRITE
        self.set_events(conn, want)

    def set_events(self, ch: Channel, want: int) -> None:
        """Register `ch`'s socket for `want` (READ, WRITE, both, or 0: none)."""
        if want == ch.events:
            return
        if ch.events == 0:
            self._poller.register(ch.sock, want, ch)  # type: ignore[arg-type]
        elif want == 0:
            self._poller.unregister(ch.sock)  # type: ignore[arg-type]
        else:
            self._poller.modify(ch.sock, want)  # type: ignore[arg-type]
        ch.events = want

    def unregister(self, ch: Channel) -> None:
        """Stop watching `ch`'s socket (it is closing). A connection's under
        its `recv_lock`: a receiving thread may be changing the registration
        (runtime/direct_receive.py; it holds the lock for that alone)."""
        if type(ch) is Connection:
            lock = ch.recv_lock
            lock.acquire()
            try:
                self._unregister(ch)
            finally:
                lock.release()
        else:
            self._unregister(ch)

    def _unregister(self, ch: Channel) -> None:
        if ch.events and ch.sock is not None:
            self._poller.unregister(ch.sock)
        ch.events = 0

    # ------------------------------------------------ backpressure

    def pause(self, mailbox: Mailbox) -> None:
        """Stop reading the group's sockets until its receiver catches up."""
        if mailbox.paused:
            return
        mailbox.resume_requested = False
        mailbox.paused = True
        # The receiver may have drained the queue since over_limit() looked:
        # then it never saw `paused` and will not ask to resume. Look again.
        if mailbox.qsize() <= mailbox.resume_at:
            mailbox.paused = False
            return
        log.debug("pausing reads: a channel group holds %d messages", mailbox.qsize())
        self._update_all(mailbox)

    def resume(self, mailbox: Mailbox) -> None:
        """The group's receiver has caught up: read its channels again."""
        if not mailbox.paused:
            return
        mailbox.paused = False
        self._update_all(mailbox)

    def _update_all(self, mailbox: Mailbox) -> None:
        for ch in self._table.of_group(mailbox):
            # A connect posted but not begun yet has no socket to register:
            # its channel is in the table from post() on.
            if type(ch) is Connection and not ch.connecting and ch.sock is not None:
                self.update_events(ch)


def _internal_error(doing: str, exc: Exception) -> str:
    """The ~close_detail of a channel closed by an engine bug while `doing` something."""
    return f"internal error while {doing}: {type(exc).__name__}: {exc}"


def pool_empty_notice(msg: Message, number: int) -> Message:
    """The engine's pool_empty warning on channel `number` (an engine notice:
    origin engine, internal bit B)."""
    bh = header_of(msg)
    bh.proto.op_code = _SIGNAL
    bh.proto.origin = _ENGINE
    bh.proto.internal_b = 1
    bh.status = _POOL_EMPTY
    bh.channel_number = number
    return msg
