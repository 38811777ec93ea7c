"""Which engine a client or a server runs on.

One engine per process is the norm: clients and servers made without
`options` share one Reactor, started the first time one needs it and
destroyed when the interpreter exits. Passing `options` (or TLS files, which
need options of their own) gives the client or server its own Reactor,
destroyed when it closes.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import threading
from dataclasses import dataclass

from ..addresses import Address, TLSClientAddress, TLSServerAddress
from ..generated import ShutdownStarted
from ..options import Options
from ..reactor import Reactor
from ..tls_contexts import client_tls_context, server_tls_context

__all__ = ["Engine", "client_engine", "server_engine", "shared_reactor"]

log = logging.getLogger("tofu.service")

_lock = threading.Lock()
_shared: Reactor | None = None
_exit_hook = False


def _stop_shared() -> None:
    global _shared
    with _lock:
        rtr, _shared = _shared, None
    if rtr is not None:
        rtr.destroy()


def shared_reactor() -> Reactor:
    """The process's shared Reactor, started on first use (and again if it was destroyed)."""
    global _shared, _exit_hook
    with _lock:
        if _shared is not None:
            try:
                _shared.ampe()
                return _shared
            except ShutdownStarted:
                _shared = None
        _shared = Reactor()
        if not _exit_hook:
            atexit.register(_stop_shared)
            _exit_hook = True
        return _shared


@dataclass
class Engine:
    """A Reactor and whether it is ours alone (then `release()` destroys it)."""

    reactor: Reactor
    owned: bool

    def release(self) -> None:
        """Destroy the Reactor if it is ours alone."""
        if self.owned:
            self.reactor.destroy()


def client_engine(
    address: Address, options: Options | None, ca: str | None, cert: str | None, key: str | None
) -> Engine:
    """The engine a client dials `address` on. A tls address needs a TLS client
    context: from `options`, else made from the files (none: the system's CAs)."""
    if isinstance(address, TLSClientAddress):
        if ca or cert or key or options is None or options.tls_client_context is None:
            ctx = client_tls_context(ca, cert, key)
            options = dataclasses.replace(options or Options(), tls_client_context=ctx)
    elif ca or cert or key:
        raise ValueError("ca, cert and key are for a tls:// address")
    return _engine(options)


def server_engine(
    addresses: list[Address], options: Options | None, cert: str | None, key: str | None, ca: str | None
) -> Engine:
    """The engine a server listens on. A tls address needs a TLS server context:
    from `options`, else made from `cert` (and `key`, `ca`)."""
    if any(isinstance(a, TLSServerAddress) for a in addresses):
        if cert:
            ctx = server_tls_context(cert, key, ca)
            options = dataclasses.replace(options or Options(), tls_server_context=ctx)
        elif options is None or options.tls_server_context is None:
            raise ValueError("a tls:// address needs cert= (the server's certificate) or options with a TLS context")
    elif cert or key or ca:
        raise ValueError("cert, key and ca are for a tls:// address")
    return _engine(options)


def _engine(options: Options | None) -> Engine:
    if options is None:
        return Engine(shared_reactor(), owned=False)
    return Engine(Reactor(options), owned=True)
