"""The engine's poller: which sockets are ready, and what to call for each.

The I/O loop needs little of a selector: register, modify and unregister a
socket with an object of the caller's, and select() returning those objects with
the READ/WRITE events that are ready. On Linux that is epoll, driven here
directly (the standard library's selectors module does the same in
interpreted Python, which costs more per wake-up than the rest of a round
trip's work on the I/O thread); elsewhere selectors.DefaultSelector.
"""

from __future__ import annotations

import select
import selectors
import socket
from typing import Final

__all__ = ["READ", "WRITE", "Poller", "make_poller"]

READ: Final = selectors.EVENT_READ
WRITE: Final = selectors.EVENT_WRITE


# What the loop gets back for a ready socket: the object registered with it
# (the engine registers each channel, and its inbox for the wake-up socket).
_Entry = object


class Poller:
    """What the loop needs of a selector: register, modify and unregister a
    socket with an object of the caller's, and select() -> a list of
    (that object, ready READ/WRITE events)."""

    def register(self, sock: socket.socket, events: int, data: _Entry) -> None:
        raise NotImplementedError

    def modify(self, sock: socket.socket, events: int) -> None:
        raise NotImplementedError

    def unregister(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def select(self, timeout: float | None) -> list[tuple[_Entry, int]]:
        """Wait at most `timeout` seconds (None: no limit) for registered sockets."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SelectorPoller(Poller):
    """A Poller over selectors.DefaultSelector, where there is no epoll."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    def register(self, sock: socket.socket, events: int, data: _Entry) -> None:
        self._selector.register(sock, events, data)

    def modify(self, sock: socket.socket, events: int) -> None:
        self._selector.modify(sock, events, self._selector.get_key(sock).data)

    def unregister(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)

    def select(self, timeout: float | None) -> list[tuple[_Entry, int]]:
        return [(key.data, mask) for key, mask in self._selector.select(timeout)]

    def close(self) -> None:
        self._selector.close()


class _EpollPoller(Poller):
    """The Poller on Linux: selectors.EpollSelector's register, modify,
    unregister and select, with the same events and the same results, but
    compiled with the engine (selectors' select() is interpreted Python that
    costs more than the rest of a round trip's I/O-thread work)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        # fd -> (the registered READ/WRITE events, the object registered)
        self._fds: dict[int, tuple[int, _Entry]] = {}

    def register(self, sock: socket.socket, events: int, data: _Entry) -> None:
        fd = sock.fileno()
        if fd in self._fds:
            raise KeyError(f"{sock!r} (FD {fd}) is already registered")
        self._epoll.register(fd, _epoll_mask(events))
        self._fds[fd] = (events, data)

    def modify(self, sock: socket.socket, events: int) -> None:
        fd = sock.fileno()
        old, data = self._fds[fd]
        if events != old:
            self._epoll.modify(fd, _epoll_mask(events))
            self._fds[fd] = (events, data)

    def unregister(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        del self._fds[fd]
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # already closed, as selectors tolerates

    def select(self, timeout: float | None) -> list[tuple[_Entry, int]]:
        fds = self._fds
        try:
            ready = self._epoll.poll(-1.0 if timeout is None else max(timeout, 0.0), max(len(fds), 1))
        except InterruptedError:
            return []
        result: list[tuple[_Entry, int]] = []
        for fd, event in ready:
            entry = fds.get(fd)
            if entry is not None:
                events = 0
                if event & _NOT_EPOLLIN:
                    events |= WRITE
                if event & _NOT_EPOLLOUT:
                    events |= READ
                registered, data = entry
                result.append((data, events & registered))
        return result

    def close(self) -> None:
        self._epoll.close()
        self._fds.clear()


_EPOLLIN: Final[int] = getattr(select, "EPOLLIN", 1)  # (no epoll: _EpollPoller is never made)
_EPOLLOUT: Final[int] = getattr(select, "EPOLLOUT", 4)
_NOT_EPOLLIN: Final = ~_EPOLLIN
_NOT_EPOLLOUT: Final = ~_EPOLLOUT


def _epoll_mask(events: int) -> int:
    mask = 0
    if events & READ:
        mask |= _EPOLLIN
    if events & WRITE:
        mask |= _EPOLLOUT
    return mask


def make_poller() -> Poller:
    """epoll where there is one (as selectors.DefaultSelector would choose), else a selector."""
    return _EpollPoller() if hasattr(select, "epoll") else _SelectorPoller()
