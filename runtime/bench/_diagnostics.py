"""DIAGNOSTICS ONLY: a snapshot of an engine's private state, printed when a trial stalls.

When a trial fails, the parent sends SIGUSR1 and each tofu process prints
what its engine was doing (queues, wake-ups, paused groups; the engine's own
tofu.reactor.describe), so that a stall can be told apart from a slow
machine. It only reads; nothing measured depends on it; and should the
engine's internals change under it, it says so instead of failing.
"""

from __future__ import annotations

from typing import Any


def engine_snapshot(rtr: Any, grp: Any) -> str:
    """A snapshot of a Reactor's and a ChannelGroup's state (tofu.reactor.describe)."""
    try:
        from ..reactor import describe

        return describe(rtr, grp)
    except Exception as exc:  # noqa: BLE001 - the engine's internals changed
        return f"engine state unavailable: {exc!r}"
