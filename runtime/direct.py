"""Direct writes: a post that writes its frame to the socket itself.

Normally post() queues a message for the I/O thread, which wakes, encodes it
and writes it: a thread switch and a wake-up on every message of a request /
response exchange. When a connection is idle, the posting thread can write
the frame itself with one send(), as the I/O thread would have. A stream of
posts must still go through the I/O thread, which writes many frames per
send() (a send() per message would halve one-way throughput), so a post
writes directly only when

- the connection is idle: nothing queued, encoded or in flight, connected,
  handshake written, no Bye sent, plain TCP or Unix domain socket (a TLS
  session belongs to the I/O thread), Options.direct_send on; and
- something was read on it since the last direct write (`direct_credit`),
  and the application has received everything its group was given: the
  request / response rhythm. A sender that only sends writes one frame
  directly, then queues; a pipelined one, with answers still to receive,
  queues (the I/O thread then writes its posts in batches).

Ownership. `conn.send_lock` (reentrant) is held by the I/O thread for all of
_flush and while _close takes the channel from the posters, and by a direct
write. `direct_ok` says the posters may write; only the I/O thread sets it,
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

import logging
import time
from typing import TYPE_CHECKING

from .framing import encode_into
from .generated import AmpeStatus

if TYPE_CHECKING:
    from .channels import Connection
    from .message import Message
    from .reactor import Reactor

__all__ = ["send_failed", "write_direct"]

log = logging.getLogger("tofu")


def write_direct(rtr: Reactor, conn: Connection, msg: Message) -> bool:
    """Write `msg` on the posting thread if `conn` is idle; False (nothing
    done) when it must go through the I/O thread."""
    if conn.group._qsize():
        return False  # more to receive: more posts are likely to follow, let them go out together
    # acquire()/release() rather than `with`: no bound __enter__/__exit__ per post.
    lock = conn.send_lock
    lock.acquire()
    try:
        out = conn.outbuf
        if not conn.direct_ok or not conn.direct_credit or out or conn.sendq:
            return False
        conn.direct_credit = False
        encode_into(out, msg)
        try:
            n = conn.transport.send(out)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            conn.inflight.append(msg)
            conn.direct_ok = False
            _hand_over_failure(rtr, conn, exc)
            return True
        if rtr._idle_timeout is not None:
            conn.last_active = time.monotonic()
        if n == len(out):
            conn.outbuf = bytearray()  # a fresh buffer: cheaper than clear() (a method call and a shrinking realloc)
            window = rtr._windows.get(conn.number)
            if window is not None:
                window.release(1)
            rtr._pool.put(msg)
            return True
        # The kernel's buffer is full: the I/O thread writes the rest.
        del out[:n]
        conn.inflight.append(msg)
        conn.direct_ok = False
        _hand_over_rest(rtr, conn)
        return True
    finally:
        lock.release()


# The closures for the I/O thread are made here, not in write_direct: a
# function that makes a closure pays for its variables' cell on every call.
def _hand_over_failure(rtr: Reactor, conn: Connection, exc: OSError) -> None:
    rtr._call_soon(lambda: send_failed(rtr, conn, exc))


def _hand_over_rest(rtr: Reactor, conn: Connection) -> None:
    rtr._call_soon(lambda: rtr._flush(conn))


def send_failed(rtr: Reactor, conn: Connection, exc: OSError) -> None:
    """A direct write failed with `exc`: close the channel as _flush would (I/O thread)."""
    if conn.closed:
        return
    if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
        rtr._close(conn, conn.ended_status())
        return
    log.info("channel %d: send failed: %s", conn.number, exc)
    rtr._close(conn, AmpeStatus.send_failed)
