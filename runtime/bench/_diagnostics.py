"""DIAGNOSTICS ONLY: a snapshot of an engine's private state, printed when a trial stalls.

This is the one place where the bench looks behind tofu's public face: when a
trial fails, the parent sends SIGUSR1 and each tofu process prints what its
engine was doing (queues, wake-ups, paused groups), so that a stall can be told
apart from a slow machine. It only reads; nothing measured depends on it; and
when the engine's internals change it says so instead of failing.
"""

from __future__ import annotations

from typing import Any

from ._process import _socket_pending


def engine_snapshot(rtr: Any, grp: Any) -> str:
    """A read-only snapshot of a Reactor's and a ChannelGroup's private state."""
    try:
        from ..channels import Connection

        r, g = rtr, grp
        conns = [c for c in list(r._channels.values()) if isinstance(c, Connection)]
        sendq = sum(len(c.sendq) for c in conns)
        outbuf = sum(len(c.outbuf) for c in conns)
        events = sorted({c.events for c in conns})
        return (
            f"engine: woken={r._woken} inbox={len(r._inbox)} wake_pending={_socket_pending(r._wake_r)} "
            f"dirty={len(r._dirty)} channels={len(r._channels)} conns={len(conns)} sendq={sendq} "
            f"outbuf={outbuf} events={events} "
            f"group: paused={g._paused} resume_requested={g._resume_requested} queued={g.pending()} "
            f"io_thread_alive={r._loop_thread.is_alive()}"
        )
    except Exception as exc:  # noqa: BLE001 - the engine's internals changed
        return f"engine state unavailable: {exc!r}"
