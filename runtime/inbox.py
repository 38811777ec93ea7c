"""Application threads -> the engine's I/O thread: posted messages and calls.

post() appends (channel, message) and a call_soon() appends (None, function);
the I/O thread takes them in order. A socket pair wakes the I/O thread: one
byte per burst, not per post (posts made while it is awake see `woken` set
and write nothing; the I/O thread looks at the queue again after clearing
the flag, so no post is missed).

A thread that posts faster than the I/O thread writes would keep the GIL
from it: a post that finds CATCH_UP_AT items still queued waits (at most
CATCH_UP_WAIT seconds, never on the I/O thread) for the end of the I/O
thread's next round.

Shutting down: once `closing` is set, a post that still got its message in
takes it back if the I/O thread has not taken it (submit() returns False and
the caller keeps the message); the I/O thread gives back everything it takes
after it stopped. So nothing post() accepted vanishes.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from .message import Message

if TYPE_CHECKING:
    from .channels import Channel

__all__ = ["CATCH_UP_AT", "CATCH_UP_WAIT", "Inbox", "Item"]

CATCH_UP_AT: Final = 1024
CATCH_UP_WAIT: Final = 0.02

# (the channel a message was posted on, the message), or (None, a call for the I/O thread)
Item = tuple["Channel | None", "Message | Callable[[], None]"]


class Inbox:
    """The queue from application threads to one engine's I/O thread.

    items: the queue (the I/O thread pops from its left).
    woken: a wake-up byte is on its way or the I/O thread is awake.
    closing: the engine is shutting down (set once, by destroy()).
    io_thread: the I/O thread, which never waits here.
    reader: the socket the I/O thread watches for wake-ups.
    """

    __slots__ = ("_behind", "_caught_up", "_writer", "catch_up_wait", "closing", "io_thread", "items", "reader", "woken")

    def __init__(self) -> None:
        self.items: deque[Item] = deque()
        self.woken = False
        self.closing = False
        self.io_thread: threading.Thread | None = None
        self.catch_up_wait = CATCH_UP_WAIT
        self._caught_up = threading.Event()
        self._behind = False  # a post waits in _catch_up
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    # ------------------------------------------------ application threads

    def submit(self, channel: Channel, msg: Message) -> bool:
        """Queue a posted message. False when the engine is shutting down and
        the message was taken back, not queued (the caller keeps it)."""
        items = self.items
        item: Item = (channel, msg)
        items.append(item)
        if self.closing:
            try:
                items.remove(item)
            except ValueError:
                return True  # the I/O thread took it: it gives it back with shutdown_started
            return False
        if not self.woken:  # checked here too: most posts need no wake-up call
            self._wake()
        elif len(items) >= CATCH_UP_AT:
            self._catch_up()
        return True

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the I/O thread."""
        self.items.append((None, fn))
        self._wake()

    def _wake(self) -> None:
        if not self.woken:
            self.woken = True
            try:
                self._writer.send(b"\0")
            except OSError:
                pass  # the pipe is full (the loop will wake anyway) or closed

    def _catch_up(self) -> None:
        """Wait (at most catch_up_wait s) until the I/O thread has taken the
        queue and written what it could: the end of its loop's next round.

        Without this, a posting thread that never blocks holds the GIL while
        the I/O thread waits for it after every send() (each send releases
        the GIL and takes up to the interpreter's switch interval, 5 ms, to
        get it back); with many connections the I/O thread makes one send()
        per connection, falls far behind, and every message posted meanwhile
        stays alive (memory, garbage collection)."""
        if self.closing or threading.current_thread() is self.io_thread:
            return
        caught_up = self._caught_up
        caught_up.clear()
        self._behind = True
        if len(self.items) >= CATCH_UP_AT:  # the I/O thread may have emptied it meanwhile
            caught_up.wait(self.catch_up_wait)

    # ------------------------------------------------ the I/O thread

    def clear_wakeup(self) -> None:
        """Read the wake-up bytes."""
        try:
            while self.reader.recv(4096):
                pass
        except BlockingIOError:
            pass

    def round_done(self) -> None:
        """The I/O thread's round ended: a post waiting in _catch_up goes on."""
        if self._behind:
            self._behind = False
            self._caught_up.set()

    def close(self) -> None:
        """The engine stopped: wake any waiting post and close the socket pair."""
        self.closing = True
        self._caught_up.set()
        self.reader.close()
        self._writer.close()
