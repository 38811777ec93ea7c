"""The message pool: reuse Message objects instead of making new ones."""

from __future__ import annotations

import itertools
from enum import Enum
from typing import Final, Literal, overload

from .inbox import CATCH_UP_AT
from .message import Message, recycle
from .options import Options

__all__ = ["STREAM_BATCHES", "AllocationStrategy", "Pool", "pool_capacity"]


class AllocationStrategy(Enum):
    """How `Ampe.get` behaves when the pool is empty."""

    poolOnly = "poolOnly"  # return None
    always = "always"  # make a new message


class Pool:
    """A bounded stack of reset messages, safe to use from any thread.

    It keeps at most `maximum` messages, and counts the messages it has made
    (up front, and whenever it was empty) minus those it dropped because it was
    full: `in_use()` is about how many are out of the pool, in the application
    or in the engine. The engine reports a shortage (`pool_empty`) once, with
    `begin_shortage()`; it ends when at most half of `maximum` are in use again.

    No lock is taken: list.append/pop are atomic in CPython, and so is
    next() of an itertools.count, which keeps the two tallies (a tally read a
    moment late is corrected by the next one). Two threads putting at once may
    leave the pool a message or two over its maximum, which is harmless.
    """

    __slots__ = ("_dropped", "_drops", "_free", "_made", "_makes", "_max", "_short", "ran_dry")

    def __init__(self, initial: int, maximum: int) -> None:
        # A list used as a stack (append/pop at its end): the compiled build
        # calls list operations directly, where deque's are method lookups.
        self._free: list[Message] = [Message() for _ in range(initial)]
        self._max = maximum
        # Bound __next__ of counters: a call is the tally after one more.
        self._makes = itertools.count(initial + 1).__next__
        self._made = initial
        self._drops = itertools.count(1).__next__
        self._dropped = 0
        self._short = False  # a shortage was reported and has not ended
        self.ran_dry = False  # for_frame() found it empty with all its messages in use

    def __len__(self) -> int:
        return len(self._free)

    @property
    def maximum(self) -> int:
        """The most messages the pool keeps."""
        return self._max

    @overload
    def get(self, strategy: Literal[AllocationStrategy.always] = ...) -> Message: ...
    @overload
    def get(self, strategy: AllocationStrategy) -> Message | None: ...

    def get(self, strategy: AllocationStrategy = AllocationStrategy.always) -> Message | None:
        """A message from the pool; when it is empty, None (`poolOnly`) or a new one (`always`)."""
        free = self._free
        if free:  # checked first: an empty pool is common, and a raised IndexError is slow
            try:
                return free.pop()
            except IndexError:
                pass  # another thread took the last one
        if strategy is AllocationStrategy.poolOnly:
            return None
        self._made = self._makes()
        return Message()

    def for_frame(self) -> Message | None:
        """A pooled message for a decoded frame, or None (the decoder then
        makes one); sets `ran_dry` when the pool is empty with all its
        messages in use (the engine may warn the application: pool_empty)."""
        free = self._free
        if free:
            try:
                return free.pop()
            except IndexError:
                pass  # another thread took the last one
        if self.made_one():
            self.ran_dry = True
        return None

    def made_one(self) -> bool:
        """Count a message the caller made because get(poolOnly) found the pool
        empty. True when all `maximum` messages are in use and no shortage is
        being reported: the caller may then look closer (see begin_shortage)."""
        self._made = self._makes()
        return self._made - self._dropped > self._max and not self._short

    def in_use(self) -> int:
        """About how many of the pool's messages are out of it."""
        return max(self._made - self._dropped - len(self._free), 0)

    def begin_shortage(self) -> bool:
        """Mark a shortage as reported; True unless one already was."""
        if self._short:
            return False
        self._short = True
        return True

    def put(self, msg: Message | None) -> None:
        """Reset `msg` and keep it, or drop it when the pool is full.

        None and messages already handed to post() are ignored."""
        if msg is None or msg.is_posted:
            return  # an emptied (posted) message: nothing to keep
        free = self._free
        if len(free) < self._max:
            recycle(msg)
            free.append(msg)
        elif self._made - self._dropped > len(free):  # full: dropped; not one made elsewhere, as far as we know
            self._dropped = self._drops()
        if self._short and self._made - self._dropped - len(free) <= self._max // 2:
            self._short = False  # half of them are back: the shortage is over

    def clear(self) -> None:
        self._free.clear()


# What a stream holds beyond its receive queue and send window, in the engine's
# own batches: the posts the I/O thread has not taken yet (a post waits once
# CATCH_UP_AT are queued), the batch it took and is writing, and the read it
# is decoding (256 KiB: ~3,000 frames of 64 B). Counted in the one-way
# benchmark (one engine, no send window): 3,000-4,200 messages in use at the
# peaks, whatever max_queued_msgs (64 to 4096); with the pool keeping 1024,
# 0.6-0.9 messages were made per message sent (the pool refilled by a
# drained receive queue or a written batch, dropping what did not fit, then
# emptied by the next read), with it keeping 4096 none once warm.
STREAM_BATCHES: Final = 3 * CATCH_UP_AT


def pool_capacity(options: Options) -> int:
    """How many messages an engine's pool keeps: Options.max_pool_msgs, and
    never fewer than the engine itself may hold for one channel group and one
    connection (a full receive queue and a full send window), so ordinary
    traffic reuses its messages instead of making new ones. An engine with a
    receive queue at least a batch deep (the default 1024, or more) keeps
    STREAM_BATCHES more, for a stream's batches in flight; one configured
    with a smaller receive queue keeps the small pool it asked for."""
    holds = options.max_queued_msgs + options.max_unsent_msgs
    if options.max_queued_msgs >= CATCH_UP_AT:
        holds += STREAM_BATCHES
    return max(options.max_pool_msgs, holds)
