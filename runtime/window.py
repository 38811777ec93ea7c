"""The send window of one connection (Options.max_unsent_msgs)."""

from __future__ import annotations

import threading

__all__ = ["SendWindow"]


class SendWindow:
    """How many more messages may be posted on one connection before post()
    waits (Options.max_unsent_msgs). post() takes a permit per message on an
    application thread; the I/O thread gives permits back once messages are
    written, and closes the window when the channel closes, which lets every
    waiting post go on (the engine then returns its message as undeliverable).

    One lock and no Condition: an idle connection costs a few dozen bytes; a
    waiting post blocks on a lock of its own, handed a permit by release().
    """

    __slots__ = ("_free", "_lock", "_open", "_waiters")

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._free = size
        self._open = True
        self._waiters: list[threading.Lock] = []  # few: the posting threads of one channel

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a permit, waiting at most `timeout` seconds (None: no limit;
        0: not at all). False when the time ran out first (no permit taken)."""
        with self._lock:
            if self._free > 0 or not self._open:
                self._free -= 1
                return True
            if timeout is not None and timeout <= 0:
                return False
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        # Until release() hands this post a permit, or close(), or the time is up.
        if waiter.acquire(timeout=-1 if timeout is None else timeout):
            return True
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return False
        return True  # a permit was handed over just as the time ran out

    def release(self, n: int = 1) -> None:
        """Give back `n` permits, waking waiting posts first."""
        with self._lock:
            self._free += n
            while self._waiters and self._free > 0:
                self._free -= 1
                self._waiters.pop(0).release()

    def close(self) -> None:
        """The channel is closed: every waiting post, and every later one, goes on."""
        with self._lock:
            self._open = False
            while self._waiters:
                self._waiters.pop(0).release()
