"""Helpers for the service layer's tests: a log record to wait for, and a
handler that holds requests until the test lets them go."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

TIMEOUT = 10.0  # seconds any single wait may take before the test fails


class LogWatch(logging.Handler):
    """Collects the records of `logger` (at `level` and above); `wait(text)`
    blocks until one whose message contains `text` came."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        with self._cond:
            return [r.getMessage() for r in self.records if r.levelno >= level]

    def wait(self, text: str, timeout: float = TIMEOUT) -> logging.LogRecord:
        with self._cond:
            found = self._cond.wait_for(
                lambda: next((r for r in self.records if text in r.getMessage()), None), timeout
            )
        assert found, f"no log record with {text!r} within {timeout} s: {self.messages()}"
        return found


@contextmanager
def watching(name: str, level: int = logging.DEBUG) -> Iterator[LogWatch]:
    """A LogWatch on logger `name` for the block (the logger's level lowered to `level`)."""
    logger = logging.getLogger(name)
    watch = LogWatch()
    old = logger.level
    logger.setLevel(level)
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(old)


class Gate:
    """Requests that wait at the gate until the test opens it: `entered`
    counts those that arrived (wait_entered(n) blocks until n did)."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._cond = threading.Condition()
        self.entered = 0

    def hold(self) -> None:
        with self._cond:
            self.entered += 1
            self._cond.notify_all()
        assert self._open.wait(TIMEOUT), "the gate was never opened"

    def wait_entered(self, n: int = 1) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.entered >= n, TIMEOUT), f"{self.entered} of {n} entered"

    def open(self) -> None:
        self._open.set()
