"""Direct writes: a post that writes its frame to the socket itself.

Normally post() queues a message for the I/O thread, which wakes, encodes it
and writes it: a thread switch and a wake-up on every message of a request /
response exchange. When a connection is idle, the posting thread can write
the frame itself with one send(), as the I/O thread would have. A stream of
posts must still go through the I/O thread, which writes many frames per
send() (a send() per message would halve one-way throughput), so a post
writes directly only when

- the connection is idle: nothing queued, encoded or in flight, connected,
  its state steady (open, or answering the peer's Bye: a post that moves the
  state always goes through the I/O thread, which follows the state's
  timers), plain TCP or Unix domain socket (a TLS session belongs to the
  I/O thread), Options.direct_send on; and
- something was read on it since the last direct write (`direct_credit`),
  and the application has received everything its group was given: the
  request / response rhythm. A sender that only sends writes one frame
  directly, then queues; a pipelined one, with answers still to receive,
  queues (the I/O thread then writes its posts in batches).

Ownership. `conn.send_lock` (reentrant) is held by the I/O thread while it
flushes (runtime/transfer.py) and while a close takes the channel from the
posters, and by a direct write. `direct_ok` says the posters may write; only the I/O thread sets it,
under the lock, at the end of a _flush that wrote everything while the inbox
was empty. Every post that goes through the inbox clears it *after* its
append, so from then until the I/O thread has written that message nothing
overtakes it. A direct write checks `direct_ok`, the send queue and the
output buffer under the lock, so it never runs beside the I/O thread's
writes, and it encodes into the connection's (empty) output buffer.

What the kernel does not take stays in that buffer, the message in
`inflight`, `direct_ok` cleared, and the I/O thread is asked to flush: it
writes the rest before anything queued after it. A send() error is handed to
the I/O thread, which closes the channel exactly as its own send() failing
would (the message comes back with the same status). A message written
whole goes back to the pool here, and gives back its send-window permit.
"""

from __future__ import annotations

import time

from .channels import ChannelTable, Connection
from .inbox import Inbox
from .message import Message
from .pool import Pool
from .transfer import Transfer

__all__ = ["DirectWriter"]


class DirectWriter:
    """Writes posted messages from the posting thread when the connection is
    idle (see the module's docstring); `stamp`: keep `last_active` for
    Options.idle_timeout."""

    def __init__(self, pool: Pool, table: ChannelTable, inbox: Inbox, transfer: Transfer, stamp: bool) -> None:
        self._pool = pool
        self._table = table
        self._inbox = inbox
        self._transfer = transfer
        self._stamp = stamp
        self._windowed = table.windowed

    def write(self, conn: Connection, msg: Message) -> bool:
        """Write `msg` now if `conn` is idle; False (nothing done) when it
        must go through the I/O thread."""
        if conn.mailbox.qsize():
            return False  # more to receive: more posts are likely to follow, let them go out together
        # acquire()/release() rather than `with`: no bound __enter__/__exit__ per post.
        lock = conn.send_lock
        lock.acquire()
        try:
            out = conn.outbuf
            if not conn.direct_ok or not conn.direct_credit or out or conn.sendq:
                return False
            conn.direct_credit = False
            conn.protocol.write(msg, out)
            try:
                n = conn.transport.send(out)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                conn.inflight.append(msg)
                conn.direct_ok = False
                self._hand_over_failure(conn, exc)
                return True
            if self._stamp:
                conn.last_active = time.monotonic()
            if n == len(out):
                conn.outbuf = bytearray()  # a fresh buffer: cheaper than clear() (a method call and a shrinking realloc)
                if self._windowed:
                    window = self._table.window(conn.number)
                    if window is not None:
                        window.release(1)
                self._pool.put(msg)
                return True
            # The kernel's buffer is full: the I/O thread writes the rest.
            del out[:n]
            conn.inflight.append(msg)
            conn.direct_ok = False
            self._hand_over_rest(conn)
            return True
        finally:
            lock.release()

    # The closures for the I/O thread are made here, not in write(): a
    # function that makes a closure pays for its variables' cell on every call.
    def _hand_over_failure(self, conn: Connection, exc: OSError) -> None:
        transfer = self._transfer
        self._inbox.call_soon(lambda: transfer.send_failed(conn, exc))

    def _hand_over_rest(self, conn: Connection) -> None:
        transfer = self._transfer
        self._inbox.call_soon(lambda: transfer.flush(conn))
