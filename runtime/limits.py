"""Limits and timeouts of a Reactor (Options): deadlines, idle connections,
connection counts.

Reactor's methods of that job: they run on the I/O thread, Reactor binds
them as its private methods (`_set_deadline`, ...), and `rtr` is the Reactor.
The deadlines live in a Timers heap (runtime/timers.py) the loop consults;
nothing here runs per message:

- a handshake deadline (`_set_deadline`) closes a channel with a status
  unless `_handshake_done` comes first: Options.handshake_timeout for an
  accepted connection (done when its HelloResponse is written),
  Options.connect_timeout for one this engine opens (done when the peer's
  first frame arrives). A TLS handshake can use the same pair.
- an idle timer (Options.idle_timeout) per connection reads `last_active`,
  which the I/O path sets with one assignment per recv/send, and re-arms
  itself while there is traffic.
- Options.max_connections is counted per listener (`_connection_gone`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .channels import Connection, Listener
from .generated import AmpeStatus, OpCode

if TYPE_CHECKING:
    from .reactor import Reactor

__all__ = [
    "connection_gone",
    "deadline_passed",
    "handshake_done",
    "idle_check",
    "run_timers",
    "set_deadline",
    "watch_idle",
]

log = logging.getLogger("tofu")


def run_timers(rtr: Reactor) -> None:
    for timer in rtr._timers.run_due(rtr._now):
        try:
            timer.callback()
        except Exception:
            log.exception("tofu: internal error in a timer")


def set_deadline(rtr: Reactor, conn: Connection, seconds: float | None, status: AmpeStatus) -> bool:
    """Close `conn` with `status` unless _handshake_done(conn) comes within
    `seconds` (None: no deadline). Any handshake may use it (Hello, TLS)."""
    if seconds is None:
        return False
    if conn.deadline is not None:
        conn.deadline.cancel()
    conn.deadline = rtr._timers.call_later(seconds, lambda: deadline_passed(rtr, conn, status, seconds))
    return True


def handshake_done(rtr: Reactor, conn: Connection) -> None:
    if conn.deadline is not None:
        conn.deadline.cancel()
        conn.deadline = None
    conn.hello = None


def deadline_passed(rtr: Reactor, conn: Connection, status: AmpeStatus, seconds: float) -> None:
    conn.deadline = None
    if conn.closed:
        return
    option = "handshake_timeout" if conn.listener is not None else "connect_timeout"
    what = "the TLS handshake" if not conn.transport.ready else "the handshake"
    detail = f"{what} did not complete within {seconds:g} s (Options.{option})"
    log.info("channel %d: %s: closing (%s)", conn.number, detail, status.name)
    hello, conn.hello = conn.hello, None
    unsent = (*conn.inflight, *conn.sendq)  # the HelloRequest itself, if not yet sent, comes back by _close
    if hello is not None and not any(m.bhdr.proto.op_code is OpCode.HelloRequest for m in unsent):
        rtr._return(conn.group, hello, status)  # it was sent: give back its copy
    # An accepted connection the application never heard of closes silently.
    rtr._close(conn, status, notify=conn.listener is None or conn.inbound.hello_received, detail=detail)


def watch_idle(rtr: Reactor, conn: Connection) -> None:
    """Arm Options.idle_timeout: a timer that checks `last_active` when it fires."""
    idle = rtr._options.idle_timeout
    if idle is not None:
        conn.last_active = rtr._now
        conn.idle_timer = rtr._timers.call_at(rtr._now + idle, lambda: idle_check(rtr, conn, idle))


def idle_check(rtr: Reactor, conn: Connection, idle: float) -> None:
    if conn.closed:
        return
    due = conn.last_active + idle
    if due > rtr._now:  # there was traffic since: look again when it may be due
        conn.idle_timer = rtr._timers.call_at(due, lambda: idle_check(rtr, conn, idle))
        return
    detail = f"no bytes either way for {idle:g} s (Options.idle_timeout)"
    log.info("channel %d: %s: closing", conn.number, detail)
    rtr._close(conn, AmpeStatus.communication_failed, detail=detail)


def connection_gone(rtr: Reactor, lst: Listener) -> None:
    lst.open_connections -= 1
    if lst.refusing and not lst.full(rtr._options.max_connections):
        lst.refusing = False
        log.info("channel %d: accepting connections again", lst.number)
