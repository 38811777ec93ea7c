"""SIGINT and SIGTERM for a command: the engine's threads made to leave
those signals to the main thread. (A command that must act on them while
blocked in wait_receive() uses the service layer's StopSignals: a watcher
thread woken by set_wakeup_fd.)"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..service.signals import STOP_SIGNALS


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
