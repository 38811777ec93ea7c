"""Name lookups off the I/O thread.

A TCP address whose host is a name (not an IP literal) may block on DNS: it
is resolved on a small thread pool and the result handed back to the I/O
thread with `call_soon`. Everything else is resolved at once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .addresses import Address
from .generated import AmpeError, AmpeStatus
from .sockets import Resolved, needs_resolving, resolve

__all__ = ["Resolver", "block_signals"]

log = logging.getLogger("tofu")


def block_signals() -> None:
    """Keep SIGINT and SIGTERM off the engine's threads: the kernel then
    delivers them to a thread that can run the application's handlers, and a
    main thread blocked in wait_receive() is interrupted as it should be."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def _settle(then: Callable[[Resolved], None], resolved: Resolved, fail: Callable[[AmpeStatus, str], None]) -> None:
    """then(resolved); an engine bug in it fails the channel it was for
    (processing_failed), never the I/O thread."""
    try:
        then(resolved)
    except Exception as exc:
        log.exception("tofu: internal error after resolving an address")
        fail(AmpeStatus.processing_failed, f"internal error after the name lookup: {type(exc).__name__}: {exc}")


class Resolver:
    """Resolves addresses for one engine; `call_soon` runs a function on its I/O thread."""

    def __init__(self, call_soon: Callable[[Callable[[], None]], None]) -> None:
        self._call_soon = call_soon
        self._pool: ThreadPoolExecutor | None = None

    def resolve_then(
        self, address: Address, then: Callable[[Resolved], None], fail: Callable[[AmpeStatus, str], None]
    ) -> None:
        """Call `then(resolved)` or `fail(status, detail)` on the I/O thread:
        at once when `address` needs no lookup, else once a pool thread has
        resolved it."""
        if not needs_resolving(address):
            try:
                resolved = resolve(address)
            except AmpeError as exc:
                fail(exc.status, str(exc))
                return
            _settle(then, resolved, fail)
            return

        def work() -> None:
            try:
                resolved = resolve(address)
            except AmpeError as exc:
                status, detail = exc.status, str(exc)
                self._call_soon(lambda: fail(status, detail))
                return
            self._call_soon(lambda: _settle(then, resolved, fail))

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tofu-resolver", initializer=block_signals)
        self._pool.submit(work)

    def shutdown(self) -> None:
        """Stop the pool's threads (lookups under way are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
