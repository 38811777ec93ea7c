"""The message pool: reuse Message objects instead of making new ones."""

from __future__ import annotations

from collections import deque
from enum import Enum

from .generated import NotAllowed
from .message import Message

__all__ = ["AllocationStrategy", "Pool"]


class AllocationStrategy(Enum):
    """How `Ampe.get` behaves when the pool is empty."""

    poolOnly = "poolOnly"  # return None
    always = "always"  # make a new message


class Pool:
    """A bounded stack of reset messages, safe to use from any thread.

    deque.append/pop are atomic in CPython, so no lock is taken per message;
    two threads putting at once may leave the pool a message or two over its
    maximum, which is harmless.
    """

    __slots__ = ("_free", "_max", "ran_empty")

    def __init__(self, initial: int, maximum: int) -> None:
        self._free: deque[Message] = deque(Message() for _ in range(initial))
        self._max = maximum
        # Set when a get found the pool empty; cleared by the next put. The
        # engine uses it to warn the application once per shortage.
        self.ran_empty = False

    def __len__(self) -> int:
        return len(self._free)

    def get(self, strategy: AllocationStrategy = AllocationStrategy.always) -> Message | None:
        free = self._free
        if free:  # checked first: an empty pool is common, and a raised IndexError is slow
            try:
                return free.pop()
            except IndexError:
                pass  # another thread took the last one
        if strategy is AllocationStrategy.poolOnly:
            return None
        return Message()

    def put(self, msg: Message | None) -> None:
        """Reset `msg` and keep it, or drop it when the pool is full.

        None and messages already handed to post() are ignored."""
        if msg is None:
            return
        try:
            if len(self._free) < self._max:
                msg.reset()
                self._free.append(msg)
            else:
                msg.bhdr  # noqa: B018 - full: dropped without a reset (a posted message raises here)
        except NotAllowed:
            return  # an emptied (posted) message: nothing to keep
        self.ran_empty = False

    def clear(self) -> None:
        self._free.clear()
