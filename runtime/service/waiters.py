"""What a request waits on: the object a client's receiver hands the
frames of an answer (or the failure) to, for threads (a lock, a queue) and
for asyncio tasks (a future, an asyncio queue); and the asyncio client's
deadlines, one timer for every request in flight."""

from __future__ import annotations

import _thread
import asyncio
import heapq
import math
import queue
from typing import Any, Final, Protocol

from .replies import Reply, joined

__all__ = ["EXPIRED", "Deadlines", "Expired", "TaskAnswer", "TaskFrames", "ThreadAnswer", "ThreadFrames", "Waiter"]


class Waiter(Protocol):
    """A request's side of a client's `pending`: what its receiver hands it."""

    def frame(self, reply: Reply) -> None:
        """A frame of the answer (the last one when `reply.more` is False)."""

    def fail(self, exc: BaseException) -> None:
        """The answer will never come."""


class _Joiner:
    """An answer's frames joined into one Reply: a `more` stream is kept
    until its last frame."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[Reply] | None = None

    def _whole(self, reply: Reply) -> Reply | None:
        """The whole answer once `reply` is its last frame; None before."""
        if reply.more:
            if self._parts is None:
                self._parts = []
            self._parts.append(reply)
            return None
        if self._parts is not None:
            self._parts.append(reply)
            return joined(self._parts)
        return reply


class ThreadAnswer(_Joiner):
    """tofu.Client.request()'s waiter: a lock held until the answer (or the failure) is in."""

    __slots__ = ("done", "error", "reply")

    def __init__(self) -> None:
        super().__init__()
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.reply: Reply | None = None
        self.error: BaseException | None = None

    def frame(self, reply: Reply) -> None:
        whole = self._whole(reply)
        if whole is not None:
            self.reply = whole
            self.done.release()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.done.release()


class ThreadFrames:
    """tofu.Client.stream()'s waiter: a queue of frames (or the failure)."""

    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Reply | BaseException] = queue.SimpleQueue()

    def frame(self, reply: Reply) -> None:
        self.queue.put(reply)

    def fail(self, exc: BaseException) -> None:
        self.queue.put(exc)


class Expired:
    """What a timed-out request's future is resolved with."""


EXPIRED: Final = Expired()


class TaskAnswer(_Joiner):
    """tofu.aio.Client.request()'s waiter: a future resolved with the Reply, or the failure."""

    __slots__ = ("fut",)

    def __init__(self, fut: asyncio.Future[Reply | BaseException | Expired]) -> None:
        super().__init__()
        self.fut = fut

    def frame(self, reply: Reply) -> None:
        whole = self._whole(reply)
        if whole is not None and not self.fut.done():
            self.fut.set_result(whole)

    def fail(self, exc: BaseException) -> None:
        if not self.fut.done():
            self.fut.set_result(exc)


class TaskFrames:
    """tofu.aio.Client.stream()'s waiter: a queue of frames (or the failure)."""

    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Reply | BaseException] = asyncio.Queue()

    def frame(self, reply: Reply) -> None:
        self.queue.put_nowait(reply)

    def fail(self, exc: BaseException) -> None:
        self.queue.put_nowait(exc)


class Deadlines:
    """The deadlines of the requests in flight, with one timer for them all:
    a heap of (deadline, message id) and an asyncio timer at the earliest.
    A timer per request (call_at, then cancel) costs more than the rest of a
    request; most requests are answered long before their deadline, and
    their entries are dropped lazily: when the timer fires, and in one sweep
    whenever the heap holds twice what is in flight (plus 64)."""

    __slots__ = ("_at", "_heap", "_loop", "_pending", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, pending: dict[int, Any]) -> None:
        self._loop = loop
        self._pending = pending
        self._heap: list[tuple[float, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf

    def add(self, deadline: float, mid: int) -> None:
        """Request `mid` (in `pending`) gives up at `deadline` (loop time)."""
        heap = self._heap
        heapq.heappush(heap, (deadline, mid))
        if len(heap) > 2 * len(self._pending) + 64:  # mostly answered ones: sweep them
            pending = self._pending
            heap[:] = [entry for entry in heap if entry[1] in pending]
            heapq.heapify(heap)
        if deadline < self._at:
            self._arm(deadline)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at = at
        self._timer = self._loop.call_at(at, self._expire)

    def _expire(self) -> None:
        """The earliest deadline came: resolve what is still waiting with EXPIRED."""
        self._timer, self._at = None, math.inf
        heap, pending = self._heap, self._pending
        now = self._loop.time()
        while heap and (heap[0][0] <= now or heap[0][1] not in pending):
            _, mid = heapq.heappop(heap)
            waiter = pending.get(mid)
            if isinstance(waiter, TaskAnswer) and not waiter.fut.done():
                waiter.fut.set_result(EXPIRED)  # request() takes it out of pending
        if heap:
            self._arm(heap[0][0])
