"""SIGINT and SIGTERM stay with the main thread: the service's threads start
with them blocked, and a server run as a program (serve_forever on the main
thread) stops gracefully on them."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["STOP_SIGNALS", "StopSignals", "start_thread"]

log = logging.getLogger("tofu.service")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a daemon thread that never receives SIGINT or SIGTERM, so the
    kernel delivers them to the main thread, whose waits they interrupt."""

    def run() -> None:
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        target()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


class StopSignals:
    """While open, SIGINT and SIGTERM call `on_signal(signum)` on a thread of
    its own (the handlers do nothing else, so no KeyboardInterrupt). Only on
    the main thread (elsewhere `active` is False and nothing changes).

    Why a thread: a Python handler runs in the main thread between bytecodes,
    possibly while that thread holds a lock the stop needs. With
    `signal.set_wakeup_fd` the interpreter writes the signal's number to a
    socket at once; the watcher thread reads it and acts."""

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self._on_signal = on_signal
        self.active = threading.current_thread() is threading.main_thread()
        if not self.active:
            return
        self._r, self._w = socket.socketpair()
        self._w.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        self._old = {sig: signal.signal(sig, self._handler) for sig in STOP_SIGNALS}
        self._thread = start_thread(self._watch, "tofu-stop-signals")

    @staticmethod
    def _handler(signum: int, frame: FrameType | None) -> None:
        pass  # the watcher does the work; without a handler SIGTERM would kill, SIGINT raise

    def _watch(self) -> None:
        while True:
            try:
                data = self._r.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in STOP_SIGNALS:
                    try:
                        self._on_signal(signum)
                    except Exception:  # a failing stop must not end the watcher
                        log.exception("stopping on signal %d failed", signum)

    def close(self) -> None:
        """Give back the previous handlers and wake-up fd; end the watcher."""
        if not self.active:
            return
        self.active = False
        signal.set_wakeup_fd(self._old_fd)
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._w.close()  # the watcher's recv() returns b"": it ends
        self._thread.join(5)
        self._r.close()
