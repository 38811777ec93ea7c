"""A channel group's receive side: what the engine delivers to it.

The engine's I/O thread holds a Mailbox for each channel group and knows the
group only through it: it delivers into the mailbox's queue and reads its
backpressure flags (the channel table knows which channels are the group's).
ChannelGroup (the public object) receives from the same queue. An asyncio
wrapper installs a delivery hook (`on_delivery`), called on the I/O thread
after each delivery.

A receiver that reads its group's one connection itself
(runtime/direct_receive.py) blocks on that socket and on the group's wake-up
socket, with `waiting` set: then a delivery also writes a byte to the
wake-up socket, so nothing delivered meanwhile waits for the next frame on
that connection. While nobody reads that way, a delivery costs one flag
check more.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Final

from .generated import AmpeStatus, OriginFlag
from .message import Message, header_of

__all__ = ["SHUTDOWN", "Mailbox", "Shutdown"]


class Shutdown:
    """Queued last when the engine stops: wait_receive() then raises ShutdownStarted."""


SHUTDOWN: Final = Shutdown()
_ENGINE: Final = OriginFlag.engine


class Mailbox:
    """The receive queue of one channel group, and its backpressure.

    get / put / qsize: the queue's own bound methods (one lookup, not one per
    message). max_queued, resume_at: Options.max_queued_msgs and the level at
    which reading resumes. paused, resume_requested: the I/O thread stopped
    reading the group's channels / the receiver asked it to resume.
    destroyed: the group was destroyed (nothing more is delivered to it).
    sole: the group's one connection, None when it has none or several (the
    channel table keeps it). waiting, wake_send, reading: a receiver reads
    `sole` itself and waits for a wake-up byte too (runtime/direct_receive.py).
    The mailbox only holds `sole` and `reading` for their owners, who type
    them (a channels.Connection, a direct_receive.Reading): it names neither
    module, as the channels and the direct receiver both stand on it.
    """

    __slots__ = (
        "destroyed",
        "get",
        "max_queued",
        "on_delivery",
        "paused",
        "put",
        "qsize",
        "queue",
        "reading",
        "resume_at",
        "resume_requested",
        "sole",
        "waiting",
        "wake_send",
    )

    def __init__(self, max_queued: int) -> None:
        self.max_queued = max_queued
        self.resume_at = max(max_queued // 2, 1)
        self.paused = False
        self.resume_requested = False
        self.destroyed = False
        self.on_delivery: Callable[[], None] | None = None
        self.sole: object = None  # a Connection: see the docstring
        self.waiting = False
        self.wake_send: Callable[[bytes], int] | None = None
        self.reading: object = None  # a direct_receive.Reading
        self.use(queue.SimpleQueue())

    def use(self, q: queue.SimpleQueue[Message | Shutdown]) -> None:
        """Receive through `q` (a test may hand in a queue of its own)."""
        self.queue = q
        self.get = q.get
        self.put = q.put
        self.qsize = q.qsize

    def deliver(self, msg: Message | Shutdown) -> None:
        """Queue `msg` for the receiver (waking one that reads a socket
        itself), then call the delivery hook."""
        self.put(msg)
        if self.waiting:
            self.wake()
        if self.on_delivery is not None:
            self.on_delivery()

    def wake(self) -> None:
        """Wake a receiver that reads a socket itself (one byte per wait)."""
        self.waiting = False
        send = self.wake_send
        if send is not None:
            try:
                send(b"\0")
            except OSError:
                pass  # full (a byte is there already) or closed (nobody waits any more)

    def give_back(self, msg: Message, status: AmpeStatus) -> None:
        """Deliver `msg` as a message the engine gives back with `status`."""
        bh = header_of(msg)
        bh.proto.origin = _ENGINE
        bh.status = status
        self.deliver(msg)

    def over_limit(self) -> bool:
        """True when the receiver is Options.max_queued_msgs behind."""
        return self.qsize() >= self.max_queued
