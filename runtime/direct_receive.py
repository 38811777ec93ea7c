"""Direct receives: a receiver that reads its connection's socket itself.

Normally the I/O thread reads a connection: epoll wakes it, it reads,
decodes and queues the messages in the group's mailbox, and that wakes the
application thread blocked in wait_receive(): two thread hand-offs per
message received, four per request / response round trip. direct.py lets a
post write its frame itself; this is its mirror on the receive side: a
thread that would block in wait_receive() reads and decodes the socket
itself when

- its group's queue is empty, and the group has exactly one connection
  (`Mailbox.sole`, kept by the channel table; listeners do not count: what
  they bring comes through the mailbox, which wakes the reader, see below);
- that connection is lent to it already (below), or it can take it from the
  I/O thread: registered for READ (connected, not paused for backpressure,
  not throttled by Options.max_unsent_bytes), its state steady (open, or
  answering the peer's Bye), plain TCP or Unix domain socket (a TLS session
  belongs to the I/O thread), not closed; the group has no delivery hook
  (tofu.aio receives with wait_receive(0), through the queue), the caller is
  not the I/O thread, wait_receive() may wait (a timeout of None or more
  than 0; a wait_receive(0) reads a lent socket without waiting, and takes
  none), and Options.direct_receive is on.

Who reads. `conn.reader` is IO (the I/O thread reads the socket), APP (it
is lent to the thread that receives on its group, which reads it inside
wait_receive(), and between its receives nobody does) or HANDED_BACK
(nobody, until the I/O thread has acted on what that thread handed back).
Transfer.read reads nothing unless `reader` is IO, and Transfer.update_events
never registers READ unless it is.

Taking. Under `conn.recv_lock`, which every change of `events`, of the
registration and of `reader` from IO takes (Transfer.update_events and
Transfer.unregister hold it; the receiving thread holds it only for a flag
test and an epoll_ctl, never while it waits or reads), the thread sets
`reader` to APP and then looks at `io_reading`, which the I/O thread sets
before it looks at `reader` in Transfer.read and clears once it has
delivered what it read: so at most one of them goes on (if both step back,
the level-triggered event comes again). Then it stops the I/O thread
watching the socket for READ (epoll_ctl from this thread). An event for the
socket from the I/O thread's current round finds `reader` APP and reads
nothing. Taking arms nothing on the I/O thread (see the lease).

A receive on a lent socket takes no lock and makes no epoll_ctl call. The
thread sets `polling` (it may use the socket's descriptor from now on),
then looks at `reclaim`, `reader` and `closed`; the lease sets `reclaim`
before it looks at `polling`, a close sets `closed` before it does: so
either the thread steps back, or they see it in a receive. Then it sets
`mailbox.waiting` and looks at the queue once more (a delivery made before
the flag was set woke nobody: it is received the ordinary way), and waits
in poll() on the socket and on the group's wake-up socket (made on its
first direct receive). While `waiting` is set, every delivery to the
mailbox (a notice, a message of another channel, update_receiver() from any
thread, a close, the engine stopping, the group destroyed) writes a byte
there; when nobody waits, a delivery costs one flag check.

Reading. With the socket readable, the thread takes the gate (below; found
taken, the channel is closing: it reads nothing) and, unless the channel
has closed, reads, decodes and queues what the read brought, through the
protocol as in Transfer.read: a pool_empty warning first when the pool ran
dry for real, then every Message in order; the connection's `last_active`
stamped (Options.idle_timeout) and its `direct_credit` given (an answer may
be written directly). Every message read is in the group's queue before
anything that may raise: the queueing is in a `finally` after the decoding,
and wait_receive() returns by taking the first from the queue. So a
KeyboardInterrupt that lands after a read loses nothing (in a compiled
build a signal surfaces only at a blocking call: poll(), before anything is
read; interpreted, a handler may run between any two bytecodes, so there
the window is the recv() and the decoding themselves; `after_decode`, a
hook for tests, runs where a signal may land after the decoding). A read
that ends inside a frame waits on for the rest while time is left; the
decoder keeps the partial frame for whoever reads next. poll() is
interruptible: SIGINT still interrupts a main thread in wait_receive(), and
the socket stays lent on the way out.

Handed back. A read that brought what only the I/O thread may act on leaves
`reader` HANDED_BACK (READ still off) and makes an inbox.call_soon of
Transfer.taken_back: a Moved state (the timers follow the state), a Closing
(after what came before it was queued), the end of the stream or a failed
recv() (the channel closes exactly as Transfer.read would close it), an
engine bug while reading (a Closing with processing_failed, as the I/O
thread's own error boundary closes a channel), or a queue over
Options.max_queued_msgs (reading pauses). What a read brought is kept in
`Reading.brought` as soon as it is queued, so it is handed back even if
something raises after. Until the I/O thread has run that call nobody
reads, so nothing read later is handled before it.

Closing, and never waiting. The I/O thread closes every channel, and never
waits for a receiving thread to let go of a socket (a thread slow to
answer its wake-up, or not scheduled, holds no close and no other channel
up). A close sets `closed` first, then:

- the close's messages (its unsent messages, the notice): `conn.gate` is a
  token (a list of one item, taken with pop() and given back with
  append(), each one atomic), which the receiving thread holds while it
  reads, decodes and queues, and nobody ever waits for. The I/O thread
  tries to take it. Got (the common case: the thread waits in poll(), or
  is not in a receive at all), it gives it back at once (any later read
  finds the channel closed and reads nothing) and delivers them itself.
  Held (the thread is reading now), it leaves them in `conn.parcels` and
  tries once more. Whoever gives the token back runs what was left
  meanwhile, in order, holding it again (the thread, after queueing what
  its read brought), so the notice follows every message read before the
  close;
- the descriptor: it is closed only once nobody may poll or read it (its
  number could belong to a new socket next, and a thread that read it would
  read a stranger's bytes). Once the socket is unregistered, the I/O thread
  sets `released` and closes it unless `polling` is set (looked at after
  `released`); then it wakes the thread, which closes it on its way out (it
  clears `polling`, then looks at `released`; it never uses the descriptor
  once it has seen `closed`). A socket's close() is idempotent: if both see
  the other gone, both close it, once;
- the group's wake-up sockets, once the group's channels are closed (the
  group destroyed, the engine stopped): the same rule, with
  `Reading.retired` for `released`. When the engine stops, its SHUTDOWN goes
  through the gate too, after what a close left there (and so does a
  message posted on the channel after it closed).

The lease. Between receives the socket stays lent, so the next receive
finds there whatever came meanwhile: a round trip's answer is read by the
thread that waits for it even when it comes before the wait. Nobody reads a
lent socket between receives; its bytes wait in the kernel (TCP slows a
fast peer, as a paused group does). The rule: a thread in a receive
attends to its socket itself (it reads the close, the Bye, the broken
frame, and stamps `last_active`), and a socket whose thread is outside
wait_receive() is always watched by the lease, a timer of the I/O thread
that runs only while it watches some socket (`leased`, `_lent`). At each
look, every LEASE seconds, a watched socket whose thread has not come out
of a receive since the last look

- comes back to the I/O thread (`reader` IO, READ registered) if the thread
  is outside wait_receive(): a thread that stops receiving leaves its
  socket unread for at most twice LEASE; so a peer that closes, a Bye, a
  frame that breaks the rules, a timeout give the same messages, statuses
  and notices, at most that much later;
- is no longer watched if the thread is in a receive (it attends to it);
  once nothing is watched, the timer stops. A thread blocked in
  wait_receive(None) for hours costs the I/O thread at most two looks.

A thread coming out of a receive with its socket lent (`polling` cleared,
then `leased` looked at: the look clears `leased` before it looks at
`polling`) does nothing more if the lease watches it. Otherwise: if that
receive waited LEASE or longer (or the lease let it go meanwhile) it gives
the socket back to the I/O thread itself (epoll_ctl from its own thread: no
hand-off), and its next receive takes it again; if it waited less (request
/ response traffic), it asks the lease to watch it, one inbox.call_soon at
the start of a run of quick receives, none per receive. The socket also
goes back when the thread finds its group paused or throttled, with a
second connection or a delivery hook (at its next wait_receive()).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Callable
from threading import get_ident
from time import monotonic
from typing import Final, cast

from .channels import APP, HANDED_BACK, IO, Connection
from .generated import AmpeStatus
from .inbox import Inbox
from .mailbox import Mailbox
from .message import Message
from .poller import READ
from .pool import Pool
from .protocol import Closing, Moved
from .sockets import ack_now, can_ack_now
from .timers import Timers
from .transfer import Transfer, pool_empty_notice
from .transport import PlainTransport

__all__ = ["LEASE", "RECV_BUFFER_SIZE", "DirectReceiver", "Reading"]

log = logging.getLogger("tofu")

RECV_BUFFER_SIZE: Final = 64 * 1024  # one buffer per group that receives directly
LEASE: Final = 0.02  # seconds between the lease's looks at the sockets it watches

_POLLIN: Final = select.POLLIN
_PROCESSING_FAILED: Final = AmpeStatus.processing_failed
_NOT_READ: Final = ~READ

# What a read brought (Reading.brought, DirectReceiver._read_gated).
_GOT: Final = 1
_OVER: Final = 2
_MOVED: Final = 4
_CLOSING: Final = 8
_FAILED: Final = 16
_ENDED: Final = 32
_CLOSED: Final = 64
_HANDED: Final = _OVER | _MOVED | _CLOSING | _FAILED | _ENDED  # for the I/O thread to act on


class Reading:
    """A group's means to receive directly, made on its first direct
    receive: the wake-up socket pair, the poll object over the wake-up socket
    and the connection `conn`'s socket (`polled`: its descriptor, -1
    before), and the receive buffer. `retired`: the group's channels are
    closed; whoever lets go of the wake-up sockets last closes them.
    `brought`, `closing`, `failure`: what the last read brought."""

    __slots__ = (
        "brought",
        "buf",
        "closing",
        "conn",
        "failure",
        "poll",
        "polled",
        "retired",
        "view",
        "wake_fd",
        "wake_peer",
        "wake_sock",
    )

    def __init__(self) -> None:
        self.wake_sock, self.wake_peer = socket.socketpair()
        self.wake_sock.setblocking(False)
        self.wake_peer.setblocking(False)
        self.wake_fd = self.wake_sock.fileno()
        self.poll = select.poll()
        self.poll.register(self.wake_fd, _POLLIN)
        self.polled = -1
        self.conn: Connection | None = None
        self.buf = bytearray(RECV_BUFFER_SIZE)
        self.view = memoryview(self.buf)
        self.retired = False
        self.brought = 0  # what the last read brought (_GOT, _MOVED...: DirectReceiver._read_gated)
        self.closing: Closing | None = None  # for the I/O thread
        self.failure: OSError | None = None

    def drain(self) -> None:
        """Read the wake-up bytes."""
        try:
            while self.wake_sock.recv(256):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.wake_sock.close()
        self.wake_peer.close()


class DirectReceiver:
    """Reads a group's one connection on the thread waiting in wait_receive()
    (see the module's docstring). `shortage`: the engine's pool_empty test;
    `freed`: a receiving thread closed a descriptor (listeners out of them
    may accept again: it hands that to the I/O thread); `stamp`: keep
    `last_active` for Options.idle_timeout; `enabled`: Options.direct_receive;
    `timers`: the engine's, for the lease. `io_ident`: the I/O thread's
    ident, set once it runs. `after_decode`: for tests, called on the
    receiving thread right after each direct read is decoded."""

    def __init__(
        self,
        pool: Pool,
        inbox: Inbox,
        transfer: Transfer,
        timers: Timers,
        shortage: Callable[[int], bool],
        freed: Callable[[], None],
        stamp: bool,
        enabled: bool,
    ) -> None:
        self._pool = pool
        self._inbox = inbox
        self._transfer = transfer
        self._shortage = shortage
        self._freed = freed
        self._stamp = stamp
        self.enabled = enabled
        self.io_ident = 0
        self.after_decode: Callable[[], None] | None = None
        self._timers = timers
        self._lock = threading.Lock()  # guards _readings, _closed, _lent, _leasing and each `leased`
        self._readings: list[Mailbox] = []
        self._closed = False
        self._lent: set[Connection] = set()  # the sockets the lease watches
        self._leasing = False  # the lease's timer runs

    # ------------------------------------------------ the receiving thread

    def receive(self, mailbox: Mailbox, conn: Connection, deadline: float) -> bool:
        """Read `conn` on this thread for `mailbox`'s group, waiting until the
        time.monotonic() `deadline` (0: no limit; below 0: no wait, and only
        from a socket lent already). True when it queued what it read: the
        caller takes the first message from the queue. False when it read
        nothing that way (it stepped back, was woken, or the time is up): the
        caller then receives from the queue as usual."""
        if conn.reader != APP and (deadline < 0 or not self._take(mailbox, conn)):
            return False
        # Lent to us. Say we are in a receive, then look whether the lease
        # takes the socket back or a close came: each says so before it looks
        # at `polling` (see the module's docstring), so one of us steps back.
        conn.polling = True
        if conn.reclaim or conn.reader != APP or conn.closed:  # (in this order)
            self._leave(mailbox, conn, True, 0.0)
            return False
        if mailbox.paused or conn.throttled or mailbox.sole is not conn or mailbox.on_delivery is not None:
            self._leave(mailbox, conn, True, 0.0)
            self.give_back(mailbox)  # the I/O thread decides when to read it
            return False
        reading = cast(Reading, mailbox.reading)  # (made by _take)
        watched = conn.leased
        started = 0.0 if watched else monotonic()
        reading.brought = 0
        mailbox.waiting = True
        try:
            if mailbox.qsize():  # delivered before `waiting` was set: receive it the ordinary way
                return False
            fd = reading.polled
            poll = reading.poll
            wait_ms = -1
            if deadline > 0:
                wait_ms = _ms(deadline - monotonic())
            elif deadline < 0:
                wait_ms = 0
            while True:
                ready = poll.poll(wait_ms)
                if not ready:
                    break  # the time is up
                readable = woken = False
                for ready_fd, _ in ready:
                    if ready_fd == fd:
                        readable = True
                    else:
                        woken = True
                if woken:  # a delivery, a close, or a byte left from an earlier wait
                    reading.drain()
                    if mailbox.qsize() or conn.closed:
                        break
                    mailbox.waiting = True  # nothing for us: wait on
                    if mailbox.qsize():
                        break
                if readable:
                    if conn.throttled or mailbox.paused:
                        break  # the I/O thread's view changed meanwhile
                    self._read(mailbox, conn, reading)
                    if reading.brought:
                        break
                if deadline:
                    wait_ms = _ms(deadline - monotonic()) if deadline > 0 else 0
                    if not wait_ms:
                        break
        finally:
            # What the read brought is queued already (even if something
            # raised since). Handed back, nobody reads it until the I/O
            # thread has acted on it.
            outcome = reading.brought
            conn.receives += 1
            mailbox.waiting = False
            if outcome & _HANDED:
                conn.reader = HANDED_BACK
                self._leave(mailbox, conn, False, 0.0)
                if not conn.closed:
                    self._hand_back(conn, outcome, reading)
            else:
                self._leave(mailbox, conn, watched, started)
        return bool(outcome & _GOT)

    def _read(self, mailbox: Mailbox, conn: Connection, reading: Reading) -> None:
        """Read the lent socket once, holding the gate (see "Reading" and
        "Closing"), then give it back. What the read brought goes to
        `reading.brought`, as _read_gated says. An engine bug on the way
        closes the channel with processing_failed (the I/O thread does:
        handed back as a Closing), as it would on the I/O thread."""
        if not _take_gate(conn):  # a close holds it: the channel is closing
            reading.brought = _CLOSED
            return
        try:
            self._read_gated(mailbox, conn, reading)
        except Exception as exc:
            log.exception("tofu: internal error on channel %d while reading it directly", conn.number)
            reading.closing = Closing(_PROCESSING_FAILED, f"internal error while reading: {type(exc).__name__}: {exc}")
            reading.brought |= _CLOSING
        finally:
            _give_gate(conn)

    def _read_gated(self, mailbox: Mailbox, conn: Connection, reading: Reading) -> None:
        """One recv() of the lent socket, decoded and queued; in
        `reading.brought`: 0 when it brought no whole message (a partial
        frame, or nothing), else _GOT (messages queued) with _OVER (the
        queue is over max_queued_msgs) and _MOVED (a state moved), _CLOSING
        (the protocol says close: reading.closing), _FAILED (recv() failed:
        reading.failure), _ENDED (the end of the stream), _CLOSED (the
        channel closed: nothing read). Set as soon as it is so: what the
        read queued and brought counts even if something raises after."""
        if conn.closed:  # (looked at under the gate: see "Closing")
            reading.brought = _CLOSED
            return
        sock = conn.sock
        try:
            n = sock.recv_into(reading.buf)  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            reading.failure = exc
            reading.brought = _FAILED
            return
        if n == 0:
            reading.brought = _ENDED
            return
        protocol = conn.protocol
        events = protocol.receive(reading.view[:n], conn.transport.identity)
        outcome = 0
        notice: Message | None = None
        try:
            hook = self.after_decode
            if hook is not None:
                hook()
            if self._stamp:
                conn.last_active = monotonic()
            conn.direct_credit = True  # an answer may follow: let it be written directly
            if protocol.decoder.pending and can_ack_now(sock):  # type: ignore[arg-type]
                ack_now(sock)  # type: ignore[arg-type]  # as Transfer.read does
            pool = self._pool
            if pool.ran_dry:
                pool.ran_dry = False
                if self._shortage(len(events)):
                    notice = pool_empty_notice(pool.get(), conn.number)
        finally:
            # Queued whatever happened above: nothing read is lost.
            put = mailbox.put
            if notice is not None:
                put(notice)
                outcome = _GOT
            for event in events:
                if type(event) is Message:  # the common case
                    put(event)
                    outcome |= _GOT
                elif type(event) is Moved:
                    outcome |= _MOVED
                else:
                    reading.closing = event  # type: ignore[assignment]
                    outcome |= _CLOSING
            reading.brought = outcome
        if outcome & _GOT and mailbox.over_limit():
            reading.brought = outcome | _OVER

    def _leave(self, mailbox: Mailbox, conn: Connection, watched: bool, started: float) -> None:
        """The thread comes out of a receive on `conn`: it stops using the
        descriptors, closes them if their channel or group closed meanwhile,
        and, the socket still lent, leaves it watched by the lease or gives
        it back (see "The lease"). `watched`: the lease watched it when the
        receive began (or a step back: give it back); `started`: when it
        began otherwise."""
        conn.polling = False
        if conn.released:  # (looked at after `polling` was cleared: see "Closing")
            self._let_go(mailbox, conn)
            return
        if conn.closed or conn.reader != APP or conn.leased:  # (`leased` looked at after `polling` was cleared)
            return
        if watched or monotonic() - started >= LEASE:
            self.give_back(mailbox)
        else:
            self._watch(conn)

    def _let_go(self, mailbox: Mailbox, conn: Connection) -> None:
        """`conn` closed while this thread could use its descriptor: close it
        (and the group's wake-up sockets once the group is retired)."""
        sock = conn.sock
        if sock is not None and sock.fileno() >= 0:
            sock.close()
            self._freed()
        reading = _reading_of(mailbox)
        if reading is not None and reading.retired:
            _close_reading(mailbox, reading)

    def _take(self, mailbox: Mailbox, conn: Connection) -> bool:
        """Take `conn` from the I/O thread (it reads it now, nothing queued):
        stop it watching the socket for READ; lent from now on."""
        if (
            not conn.events & READ
            or type(conn.transport) is not PlainTransport
            or not conn.protocol.steady
            or mailbox.on_delivery is not None
            or get_ident() == self.io_ident
        ):
            return False
        reading = _reading_of(mailbox)
        if reading is None:
            reading = self._prepare(mailbox)
            if reading is None:
                return False
        lock = conn.recv_lock
        lock.acquire()
        try:
            if (
                conn.closed
                or conn.reader != IO
                or not conn.events & READ
                or mailbox.paused
                or conn.throttled
                or mailbox.sole is not conn
                or mailbox.qsize()
            ):
                return False
            conn.reader = APP
            if conn.io_reading:  # it reads it now: it delivers, we receive from the queue
                conn.reader = IO
                return False
            self._transfer.set_events(conn, conn.events & _NOT_READ)
            if reading.conn is not conn:
                fd = conn.sock.fileno()  # type: ignore[union-attr]
                if reading.polled >= 0:
                    reading.poll.unregister(reading.polled)
                reading.poll.register(fd, _POLLIN)
                reading.polled = fd
                reading.conn = conn
        finally:
            lock.release()
        return True

    def give_back(self, mailbox: Mailbox) -> None:
        """On the receiving thread, outside a receive: a socket lent to it
        goes back to the I/O thread now (its group paused, no longer with one
        connection, or the thread waited long: see "The lease")."""
        reading = _reading_of(mailbox)
        conn = reading.conn if reading is not None else None
        if conn is None or conn.reader != APP:
            return
        self._unwatch(conn)
        lock = conn.recv_lock
        lock.acquire()
        try:
            if conn.reader == APP:
                conn.reader = IO
                if not conn.closed:
                    self._transfer.update_events_held(conn)
        finally:
            lock.release()

    def _watch(self, conn: Connection) -> None:
        """The lease watches `conn` from now on (its timer started if it did not run)."""
        with self._lock:
            if self._closed:
                return
            conn.leased = True
            conn.lease_seen = -1  # the first look keeps it
            self._lent.add(conn)
            if self._leasing:
                return
            self._leasing = True
        self._inbox.call_soon(self._start_lease)

    def _unwatch(self, conn: Connection) -> None:
        """The lease no longer watches `conn` (it goes back to the I/O thread)."""
        with self._lock:
            conn.leased = False
            self._lent.discard(conn)

    def _hand_back(self, conn: Connection, outcome: int, reading: Reading) -> None:
        """Hand `conn` back to the I/O thread with what the read brought (the
        closure is made here, not in receive(): a function that makes a
        closure pays for its variables' cells on every call)."""
        moved = bool(outcome & _MOVED)
        ended = bool(outcome & _ENDED)
        closing, reading.closing = reading.closing, None
        failure, reading.failure = reading.failure, None
        self._inbox.call_soon(lambda: self._taken_back(conn, moved, closing, failure, ended))

    def _prepare(self, mailbox: Mailbox) -> Reading | None:
        """The group's first direct receive: its wake-up sockets and buffer
        (None once the engine or the group has stopped)."""
        with self._lock:
            if self._closed or mailbox.destroyed:
                return None
            reading = Reading()
            mailbox.wake_send = reading.wake_peer.send
            mailbox.reading = reading
            self._readings.append(mailbox)
        return reading

    # ------------------------------------------------ the I/O thread

    def _taken_back(
        self, conn: Connection, moved: bool, closing: Closing | None, failure: OSError | None, ended: bool
    ) -> None:
        self._unwatch(conn)
        self._transfer.taken_back(conn, moved, closing, failure, ended)

    def _start_lease(self) -> None:
        self._timers.call_later(LEASE, self._check_leases)

    def _check_leases(self) -> None:
        """A look of the lease (see "The lease" in the module's docstring)."""
        idle: list[Connection] = []
        with self._lock:
            for conn in list(self._lent):
                if conn.reader != APP or conn.closed:
                    conn.leased = False
                    self._lent.discard(conn)
                elif conn.receives == conn.lease_seen:  # not out of a receive since the last look
                    conn.leased = False  # (before `polling` is looked at: see "The lease")
                    self._lent.discard(conn)
                    idle.append(conn)
                else:
                    conn.lease_seen = conn.receives
            more = bool(self._lent)
            if not more:
                self._leasing = False
        for conn in idle:
            if not conn.polling:  # outside wait_receive() since the last look: back to the I/O thread
                self._take_back(conn)
            # else it is in a receive (it attends to the socket), and sees `leased` cleared on its way out
        if more:
            self._timers.call_later(LEASE, self._check_leases)

    def _take_back(self, conn: Connection) -> None:
        """Take a lent `conn` back, unless its thread has come into a receive
        meanwhile (then it decides on its way out)."""
        lock = conn.recv_lock
        lock.acquire()
        try:
            if conn.reader != APP:
                return
            conn.reclaim = True
            if not conn.polling:  # (looked at after `reclaim` was set: see the module's docstring)
                conn.reader = IO
                if not conn.closed:
                    self._transfer.update_events_held(conn)
            conn.reclaim = False
        finally:
            lock.release()

    def closing(self, conn: Connection) -> bool:
        """`conn` is closing (`closed` is set, its socket unregistered): True
        when its socket may be closed now; False when a receiving thread is
        in a receive on it and may use the descriptor: it is woken, and
        closes the descriptor on its way out. Never waits."""
        conn.released = True
        if not conn.polling:  # (looked at after `released` was set)
            return True
        conn.mailbox.wake()
        return False

    def defer(self, conn: Connection, finish: Callable[[], None]) -> bool:
        """On the I/O thread, `conn` closed: whether `finish` (the close's
        deliveries) is left to the receiving thread, which holds the gate
        because it is reading `conn` now (True), or is the caller's to run
        now (False: nothing left before it, and any later read finds the
        channel closed). Never waits."""
        if _take_gate(conn):
            _give_gate(conn)  # (runs what an earlier close left: it comes first)
            return False
        conn.parcels.append(finish)
        if _take_gate(conn):  # the thread let go meanwhile
            _give_gate(conn)
        return True

    def deliver_last(self, mailbox: Mailbox, deliver: Callable[[], None]) -> None:
        """On the I/O thread, the engine stopping: run `deliver` (the
        group's SHUTDOWN) after what a close left to the group's receiving
        thread, if any."""
        reading = _reading_of(mailbox)
        conn = reading.conn if reading is not None else None
        if conn is None or not self.defer(conn, deliver):
            deliver()

    def close(self, mailbox: Mailbox) -> None:
        """The group's channels are closed: close its wake-up sockets (or
        leave them to its receiving thread, if it is in a receive)."""
        with self._lock:
            if mailbox in self._readings:
                self._readings.remove(mailbox)
                _retire(mailbox)

    def close_all(self) -> None:
        """The engine stopped, every channel closed: close every group's
        wake-up sockets (or leave them to its receiving thread)."""
        with self._lock:
            self._closed = True
            for mailbox in self._readings:
                _retire(mailbox)
            self._readings.clear()
            self._lent.clear()


def _take_gate(conn: Connection) -> bool:
    """Take `conn`'s gate token (False: someone holds it). Never waits."""
    try:
        conn.gate.pop()
    except IndexError:
        return False
    return True


def _give_gate(conn: Connection) -> None:
    """Give the gate token back, then run what closes left meanwhile, in
    order, holding it again (whoever gives it back looks: see "Closing")."""
    gate = conn.gate
    parcels = conn.parcels
    gate.append(True)
    while parcels and _take_gate(conn):
        try:
            while parcels:
                parcels.pop(0)()
        finally:
            gate.append(True)


def _retire(mailbox: Mailbox) -> None:
    """The group's channels are closed: its wake-up sockets go now, unless
    its receiving thread may be polling them (it closes them on its way out)."""
    reading = _reading_of(mailbox)
    if reading is None:
        return
    reading.retired = True
    conn = reading.conn
    if conn is None or not conn.polling:  # (looked at after `retired` was set)
        _close_reading(mailbox, reading)


def _close_reading(mailbox: Mailbox, reading: Reading) -> None:
    mailbox.wake_send = None
    mailbox.reading = None
    reading.close()


def _ms(seconds: float) -> int:
    """poll()'s timeout for `seconds` left: whole milliseconds, rounded up (0: the time is up)."""
    if seconds <= 0:
        return 0
    return int(seconds * 1000) + 1


def _reading_of(mailbox: Mailbox) -> Reading | None:
    """The Reading a receiver of `mailbox`'s group made, if any (the mailbox
    holds it untyped: it names no module above it)."""
    return cast(Reading | None, mailbox.reading)
