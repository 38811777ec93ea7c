"""When a client connects again: exponential backoff with jitter, bounded."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Reconnect"]


@dataclass(frozen=True)
class Reconnect:
    """How a client (`tofu.connect(url, reconnect=...)`) connects again after
    its channel closed: `reconnect=True` is `Reconnect()`.

    The n-th attempt in a row (n = 0, 1, ...) waits
    `min(initial * factor**n, maximum)` seconds, spread at random by
    `jitter` (0.2: anywhere from 80% to 120% of it), so that many clients of
    a restarted server do not all come back at once. `attempts` bounds how
    many attempts in a row may fail before the client gives up (None: it
    never does); a success starts the count again. A client that gave up is
    closed: every request raises tofu.ConnectionLost.

    The first connect is never retried: `tofu.connect` raises at once, so a
    wrong address or a refused hello is seen at once.
    """

    initial: float = 0.1
    """Seconds before the first attempt."""
    maximum: float = 10.0
    """The longest wait between two attempts, in seconds."""
    factor: float = 2.0
    """Each wait is this many times the previous one, up to `maximum`."""
    jitter: float = 0.2
    """Each wait is spread at random by this fraction of it (0 for none)."""
    attempts: int | None = None
    """Attempts in a row that may fail before the client gives up; None: never."""

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.factor < 1:
            raise ValueError("Reconnect needs initial >= 0, maximum >= 0 and factor >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("Reconnect.jitter is a fraction from 0 to 1")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("Reconnect.attempts is None or at least 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (0 for the first in a row)."""
        base = min(self.initial * self.factor ** min(attempt, 64), self.maximum)
        if not self.jitter:
            return base
        return max(0.0, base * (1 + self.jitter * (2 * random.random() - 1)))

    def gives_up_after(self, failed: int) -> bool:
        """True once `failed` attempts in a row have failed and no more may be made."""
        return self.attempts is not None and failed >= self.attempts
