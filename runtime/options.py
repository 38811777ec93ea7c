"""Engine options, with the reference's defaults and fallbacks."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_INITIAL_POOL_MSGS", "DEFAULT_MAX_POOL_MSGS", "DEFAULT_MAX_QUEUED_MSGS", "Options"]

DEFAULT_INITIAL_POOL_MSGS = 16
DEFAULT_MAX_POOL_MSGS = 64
DEFAULT_MAX_QUEUED_MSGS = 1024


@dataclass(frozen=True)
class Options:
    """How a Reactor sizes its message pool and bounds its receive queues.

    initial_pool_msgs: messages made up front (default 16).
    max_pool_msgs: most messages the pool keeps (default 64), but never fewer
        than the engine itself may hold: the pool keeps up to
        max(max_pool_msgs, max_queued_msgs + max_unsent_msgs) messages, so
        ordinary traffic reuses them (1024 with every default).
        A zero, or max below initial, falls back to the defaults (16, 64).
        The application hears `pool_empty` only under real pressure: when it
        holds more messages than the pool keeps, beyond those the engine
        holds itself; once per shortage (docs/concepts.md).
    max_queued_msgs: backpressure bound. While a channel group holds more
        unconsumed messages than this, the engine stops reading the sockets of
        that group's channels (TCP then slows the sender); it reads again once
        the application has drained the queue to half of it. Default 1024.
    max_unsent_msgs: send window per channel. With N > 0, post() blocks while
        N of the channel's messages are posted and not yet written to its
        socket, so a sender faster than the network or the peer waits instead
        of filling memory. 0 (the default, as in the reference) is no limit.
        Do not post and receive on one thread with a window: a blocked post
        cannot receive what would unblock the peer.
    """

    initial_pool_msgs: int = DEFAULT_INITIAL_POOL_MSGS
    max_pool_msgs: int = DEFAULT_MAX_POOL_MSGS
    max_queued_msgs: int = DEFAULT_MAX_QUEUED_MSGS
    max_unsent_msgs: int = 0

    def __post_init__(self) -> None:
        initial = self.initial_pool_msgs or DEFAULT_INITIAL_POOL_MSGS
        maximum = self.max_pool_msgs or DEFAULT_MAX_POOL_MSGS
        if initial < 0 or maximum < initial:
            initial, maximum = DEFAULT_INITIAL_POOL_MSGS, DEFAULT_MAX_POOL_MSGS
        object.__setattr__(self, "initial_pool_msgs", initial)
        object.__setattr__(self, "max_pool_msgs", maximum)
        if self.max_queued_msgs <= 0:
            object.__setattr__(self, "max_queued_msgs", DEFAULT_MAX_QUEUED_MSGS)
        if self.max_unsent_msgs < 0:
            object.__setattr__(self, "max_unsent_msgs", 0)
