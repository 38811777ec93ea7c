"""Ampe: the engine's interface an application holds (Reactor.ampe())."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, overload

from .generated import ShutdownStarted
from .groups import ChannelGroup
from .message import Message
from .pool import AllocationStrategy

if TYPE_CHECKING:
    from .reactor import Reactor

__all__ = ["Ampe"]


class Ampe:
    """The engine's interface: channel groups and the message pool."""

    def __init__(self, reactor: Reactor) -> None:
        self._reactor = reactor

    @overload
    def get(self, strategy: Literal[AllocationStrategy.always] = ...) -> Message: ...
    @overload
    def get(self, strategy: AllocationStrategy) -> Message | None: ...

    def get(self, strategy: AllocationStrategy = AllocationStrategy.always) -> Message | None:
        """A message from the pool. `poolOnly` returns None when the pool is
        empty; `always` makes a new message then."""
        if self._reactor._closing:
            raise ShutdownStarted("the engine is shutting down")
        return self._reactor._pool.get(strategy)

    def put(self, msg: Message | None) -> None:
        """Give a message back to the pool (None, or a posted message, is a no-op)."""
        self._reactor._pool.put(msg)

    def create(self) -> ChannelGroup:
        """A new channel group."""
        return self._reactor._new_group()

    def destroy(self, group: ChannelGroup) -> None:
        """Close every channel of `group` and retire it. Messages still queued
        for it are dropped; a receiver blocked on it gets ShutdownStarted."""
        self._reactor._retire_group(group)
