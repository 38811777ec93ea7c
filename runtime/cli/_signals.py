"""SIGINT and SIGTERM for a command: a watcher thread woken by set_wakeup_fd
(for a command blocked in wait_receive), and the engine's threads made to
leave those signals to the main thread."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("tofu.cli")

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def signals_to_main_thread() -> Iterator[None]:
    """Threads started inside this block (the engine's I/O thread among them)
    block SIGINT and SIGTERM, so the kernel delivers those to the main thread.

    CPython runs signal handlers in the main thread, but a signal the kernel
    hands to another thread does not interrupt the main thread's blocking
    wait_receive(): the handler would run only when that wait ends by itself.
    Threads inherit the signal mask of the thread that starts them."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class SignalWatcher:
    """Calls `on_signal(signum)` on a thread for every SIGINT / SIGTERM.

    Why not just a Python signal handler calling update_receiver()? CPython
    runs those in the main thread between bytecodes; a signal that lands just
    before the main thread blocks in wait_receive(), or on another thread,
    does not interrupt that wait, so the handler would run only when the wait
    ends by itself. `signal.set_wakeup_fd` makes the interpreter's C-level
    handler write the signal number to a socket at once, whatever thread it
    runs on; this watcher reads it and can wake the receiver right away.
    Only usable from the main thread (`active` is False elsewhere)."""

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self._on_signal = on_signal
        self.active = threading.current_thread() is threading.main_thread()
        if not self.active:
            return
        self._r, self._w = socket.socketpair()
        self._w.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        self._old_handlers = {sig: signal.signal(sig, self._python_handler) for sig in STOP_SIGNALS}
        self._thread = threading.Thread(target=self._run, name="tofu-signals", daemon=True)
        self._thread.start()

    @staticmethod
    def _python_handler(signum: int, frame: FrameType | None) -> None:
        pass  # it must exist (SIGTERM would kill, SIGINT raise); the watcher thread does the work

    def _run(self) -> None:
        while True:
            try:
                data = self._r.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in STOP_SIGNALS:
                    self._on_signal(signum)

    def close(self) -> None:
        """Restore the previous handlers and wake-up fd; stop the thread."""
        if not self.active:
            return
        self.active = False
        signal.set_wakeup_fd(self._old_fd)
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._w.close()  # the watcher's recv() returns b"": it ends
        self._thread.join(5)
        self._r.close()
