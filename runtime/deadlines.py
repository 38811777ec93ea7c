"""The engine's timeouts, as the state machine runs them.

Which timer runs is the state's business (the spec's [machine] states name
their timers; generated/machine.py has them as STATE_TIMERS): a timer starts
when a connection enters a state that has it and stops when it enters one
that has not; a move between two states that both have it keeps its
deadline. How long each runs is the Options':

    connect_timeout    the connect, the name lookup and the peer's answer
    handshake_timeout  an accepted connection's hello, and its application's answer
    idle_timeout       no bytes either way (the I/O path sets `last_active`,
                       one assignment per recv or send; the timer looks at it
                       when it fires and sets itself again while there was traffic)

On expiry the channel closes with the timer's status (TIMER_STATUS) through
the `expire` callback; ~close_detail names the option. Nothing here runs per
message: the deadlines sit in a heap (runtime/timers.py) the loop consults.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .channels import Connection
from .generated import AmpeStatus
from .generated.machine import STATE_TIMERS, TIMER_STATUS, ChannelTimer
from .options import Options
from .timers import Timer, Timers

__all__ = ["Deadlines"]

log = logging.getLogger("tofu")


class Deadlines:
    """The timers of one engine's connections.

    timers: the engine's heap; now: the I/O loop's clock; expire(conn,
    status, detail): closes a connection whose timer expired."""

    def __init__(
        self,
        timers: Timers,
        options: Options,
        now: Callable[[], float],
        expire: Callable[[Connection, AmpeStatus, str], None],
    ) -> None:
        self._timers = timers
        self._now = now
        self._expire = expire
        self._seconds: dict[ChannelTimer, float] = {}
        for kind, seconds in (
            (ChannelTimer.connect_timeout, options.connect_timeout),
            (ChannelTimer.handshake_timeout, options.handshake_timeout),
            (ChannelTimer.idle_timeout, options.idle_timeout),
        ):
            if seconds is not None:
                self._seconds[kind] = seconds

    def follow(self, conn: Connection) -> None:
        """Start and stop `conn`'s timers for the state it is in now."""
        state = conn.protocol.state
        if state == conn.timed_state:
            return
        conn.timed_state = state
        wanted = STATE_TIMERS[state]
        running = conn.timers
        if running:
            for kind in [k for k in running if not k & wanted]:
                running.pop(kind).cancel()
        for kind, seconds in self._seconds.items():
            if kind & wanted and (running is None or kind not in running):
                if running is None:
                    running = conn.timers = {}
                running[kind] = self._start(conn, kind, seconds)

    def _start(self, conn: Connection, kind: ChannelTimer, seconds: float) -> Timer:
        if kind is ChannelTimer.idle_timeout:
            conn.last_active = self._now()
            return self._timers.call_at(conn.last_active + seconds, lambda: self._idle(conn, seconds))
        return self._timers.call_later(seconds, lambda: self._expired(conn, kind, seconds))

    def stop(self, conn: Connection) -> None:
        """Cancel every timer of `conn` (it is closing)."""
        if conn.timers:
            for timer in conn.timers.values():
                timer.cancel()
        conn.timers = None

    def _expired(self, conn: Connection, kind: ChannelTimer, seconds: float) -> None:
        if conn.closed or conn.timers is None:
            return
        conn.timers.pop(kind, None)
        what = "the TLS handshake" if not conn.transport.ready else "the handshake"
        if kind is ChannelTimer.connect_timeout:
            what = "the connect" if conn.connecting else what
        detail = f"{what} did not complete within {seconds:g} s (Options.{kind.name})"
        status = TIMER_STATUS[kind]
        log.info("channel %d: %s: closing (%s)", conn.number, detail, status.name)
        self._expire(conn, status, detail)

    def _idle(self, conn: Connection, seconds: float) -> None:
        if conn.closed or conn.timers is None:
            return
        due = conn.last_active + seconds
        if due > self._now():  # there was traffic since: look again when it may be due
            conn.timers[ChannelTimer.idle_timeout] = self._timers.call_at(due, lambda: self._idle(conn, seconds))
            return
        conn.timers.pop(ChannelTimer.idle_timeout, None)
        detail = f"no bytes either way for {seconds:g} s (Options.idle_timeout)"
        log.info("channel %d: %s: closing", conn.number, detail)
        self._expire(conn, TIMER_STATUS[ChannelTimer.idle_timeout], detail)
