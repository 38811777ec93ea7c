"""Closing: a channel, a channel group, and the whole engine.

Reactor's methods of that job: they run on the I/O thread, Reactor binds
them as its private methods (`_close`, `_destroy_group`,
`_shutdown_on_thread`), and `rtr` is the Reactor. A closed channel gives
back its unsent messages with the reason as their status, then a
channel_closed Signal naming a reason that was not a normal close.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from .channels import Channel, Connection, Listener
from .generated import CLOSE_DETAIL_HEADER, CLOSE_REASON_HEADER, AmpeStatus
from .groups import SHUTDOWN
from .message import Message
from .poller import READ
from .sockets import unlink_uds

if TYPE_CHECKING:
    from .groups import ChannelGroup
    from .reactor import Reactor

__all__ = ["close", "destroy_group", "shutdown_on_thread"]

log = logging.getLogger("tofu")


def close(rtr: Reactor, ch: Channel, reason: AmpeStatus, notify: bool = True, detail: str = "") -> None:
    """Close a channel: give back its unsent messages with `reason` as their
    status, then a channel_closed Signal (unless `notify` is False); when
    the close was not a normal one, the Signal names `reason` in its
    `~close_reason` header, and `detail` (words) in `~close_detail`."""
    if ch.closed:
        return
    if isinstance(ch, Connection):
        with ch.send_lock:  # waits for a direct write in progress (runtime/direct.py)
            ch.direct_ok = False
    ch.closed = True
    if rtr._channels.get(ch.number) is ch:
        del rtr._channels[ch.number]
    rtr._numbers.release(ch.number)
    rtr._close_window(ch.number)
    group = ch.group
    group._channels.discard(ch)
    if ch.sock is not None:
        if ch.events:
            rtr._selector.unregister(ch.sock)
            ch.events = 0
        ch.sock.close()
    if isinstance(ch, Listener):
        rtr._starved.discard(ch)
    for lst in rtr._starved:  # a descriptor is free again: accept again
        rtr._set_events(lst, READ)
    rtr._starved.clear()
    log.debug("channel %d closed: %s", ch.number, reason.name)

    unsent: list[Message] = []
    if isinstance(ch, Listener):
        if ch.uds_path:
            unlink_uds(ch.uds_path, ch.uds_inode)
    else:
        assert isinstance(ch, Connection)
        rtr._dirty.discard(ch)
        ch.stop_timers()
        ch.queued = 0
        if ch.listener is not None:
            rtr._connection_gone(ch.listener)
        unsent = ch.inflight + list(ch.sendq)
        ch.inflight.clear()
        ch.sendq.clear()
        ch.outbuf = bytearray()

    if not notify or group._destroyed:
        for msg in unsent:
            rtr._pool.put(msg)
        return
    for msg in unsent:
        rtr._return(group, msg, reason)
    closed = rtr._engine_signal(AmpeStatus.channel_closed, ch.number, ch.first_mid)
    if reason is not AmpeStatus.channel_closed:
        closed.thdrs.append(CLOSE_REASON_HEADER, reason.name)
    if detail:
        closed.thdrs.append(CLOSE_DETAIL_HEADER, detail)
    group._deliver(closed)


def destroy_group(rtr: Reactor, group: ChannelGroup, done: threading.Event) -> None:
    """Ampe.destroy(group), on the I/O thread: close its channels, silently, and wake its receiver."""
    try:
        for ch in list(group._channels):
            close(rtr, ch, AmpeStatus.channel_closed, notify=False)
        group._deliver(SHUTDOWN)
    finally:
        done.set()


def shutdown_on_thread(rtr: Reactor) -> None:
    """Last act of the I/O thread: close everything, wake every receiver."""
    rtr._closing = True
    for ch in list(rtr._channels.values()):
        close(rtr, ch, AmpeStatus.shutdown_started)
    while rtr._inbox:
        group, item = rtr._inbox.popleft()
        if group is not None and not group._destroyed:
            rtr._return(group, item, AmpeStatus.shutdown_started)  # type: ignore[arg-type]
    with rtr._lock:
        groups = list(rtr._groups)
    for group in groups:
        group._deliver(SHUTDOWN)
    rtr._caught_up.set()  # a post waiting in _catch_up goes on (and finds the engine stopped)
    rtr._timers.clear()
    rtr._selector.close()
    rtr._wake_r.close()
    rtr._wake_w.close()
    rtr._pool.clear()
