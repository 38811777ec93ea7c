"""Deadlines for the I/O thread: a heap of timers the event loop consults.

The loop asks `timeout()` how long select() may sleep, and calls `run_due()`
after each wake-up. A timer is armed once per event that needs it (an accept,
a connect), never per message: a timer that watches traffic (the idle
timeout) reads a timestamp the I/O path keeps with a plain assignment, and
re-arms itself when it fires early. Cancelling a timer only marks it; the
heap drops it when it comes up.

Everything here runs on the I/O thread; nothing takes a lock.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

__all__ = ["Clock", "Timer", "Timers"]


class Clock:
    """The I/O loop's clock: `now` is the monotonic time of its last wake-up,
    what the I/O path stamps activity with (a plain read, no call)."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = time.monotonic()


class Timer:
    """One deadline: `callback()` runs on the I/O thread at `when` (monotonic
    seconds) unless `cancel()` was called first."""

    __slots__ = ("_timers", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None], timers: Timers) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self._timers = timers

    def cancel(self) -> None:
        """Do not run. The callback (and what it holds, e.g. a closed
        connection) is released now; the heap entry goes when it comes up,
        or sooner if cancelled entries pile up."""
        if not self.cancelled:
            self.cancelled = True
            self.callback = _nothing
            self._timers._cancelled_one()


def _nothing() -> None:
    pass


class Timers:
    """The I/O thread's deadlines, earliest first."""

    __slots__ = ("_cancelled", "_seq", "heap")

    def __init__(self) -> None:
        # (when, sequence, timer), earliest first; the loop may look at
        # heap[0][0] itself to skip run_due() when nothing is due.
        self.heap: list[tuple[float, int, Timer]] = []
        self._seq = 0  # ties run in the order they were armed
        self._cancelled = 0  # cancelled timers still in the heap

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` at monotonic time `when`."""
        timer = Timer(when, callback, self)
        self._seq += 1
        heapq.heappush(self.heap, (when, self._seq, timer))
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` `delay` seconds from now."""
        return self.call_at(time.monotonic() + delay, callback)

    def timeout(self, now: float) -> float | None:
        """How long the loop may sleep: None (no timer) or seconds, at least 0."""
        heap = self.heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
        if not heap:
            return None
        return max(heap[0][0] - now, 0.0)

    def run_due(self, now: float) -> list[Timer]:
        """Take every timer due at `now` off the heap; the caller runs them
        (so that it can guard each one on its own)."""
        heap = self.heap
        due: list[Timer] = []
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if timer.cancelled:
                self._cancelled -= 1
            else:
                timer.cancelled = True  # runs once; a later cancel() is a no-op
                due.append(timer)
        return due

    def clear(self) -> None:
        self.heap.clear()
        self._cancelled = 0

    def _cancelled_one(self) -> None:
        # Many connections that complete their handshake at once leave many
        # cancelled deadlines: drop them once they are most of the heap.
        self._cancelled += 1
        if self._cancelled > 64 and 2 * self._cancelled > len(self.heap):
            self.heap[:] = [entry for entry in self.heap if not entry[2].cancelled]
            heapq.heapify(self.heap)
            self._cancelled = 0
