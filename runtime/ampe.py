"""Ampe: the engine's interface an application holds (Reactor.ampe())."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, overload

from .generated import ShutdownStarted
from .groups import ChannelGroup
from .inbox import Inbox
from .message import Message
from .pool import AllocationStrategy, Pool

__all__ = ["Ampe"]


class Ampe:
    """The engine's interface: channel groups and the message pool."""

    def __init__(
        self,
        pool: Pool,
        inbox: Inbox,
        create: Callable[[], ChannelGroup],
        destroy: Callable[[ChannelGroup], None],
    ) -> None:
        # The engine's parts (runtime/reactor.py makes them): its pool, its
        # inbox (whose `closing` says the engine is shutting down), and how
        # it makes and retires groups.
        self._pool = pool
        self._inbox = inbox
        self._create = create
        self._destroy = destroy

    @overload
    def get(self, strategy: Literal[AllocationStrategy.always] = ...) -> Message: ...
    @overload
    def get(self, strategy: AllocationStrategy) -> Message | None: ...

    def get(self, strategy: AllocationStrategy = AllocationStrategy.always) -> Message | None:
        """A message from the pool. `poolOnly` returns None when the pool is
        empty; `always` makes a new message then."""
        if self._inbox.closing:
            raise ShutdownStarted("the engine is shutting down")
        return self._pool.get(strategy)

    def put(self, msg: Message | None) -> None:
        """Give a message back to the pool (None, or a posted message, is a no-op)."""
        self._pool.put(msg)

    def create(self) -> ChannelGroup:
        """A new channel group."""
        return self._create()

    def destroy(self, group: ChannelGroup) -> None:
        """Close every channel of `group` and retire it. Messages still queued
        for it are dropped; a receiver blocked on it gets ShutdownStarted."""
        self._destroy(group)
