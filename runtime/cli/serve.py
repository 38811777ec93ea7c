"""`tofu serve`: an echo server, on tofu.Server."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from .. import (
    CONNECT_TO_HEADER,
    AmpeError,
    AmpeStatus,
    Headers,
    Peer,
    Request,
    Server,
    TCPServerAddress,
)
from ..service.signals import StopSignals
from ._tls import peer_text, serve_options, show_engine_warnings
from .console import EXIT_OK, EXIT_USAGE, CLIError, out, printable
from .workers import serve_with_workers

log = logging.getLogger("tofu.cli")


def run(args: argparse.Namespace) -> int:
    """`tofu serve ADDRESS...`: an echo server, in this process or in --workers N processes."""
    if args.workers > 1:
        if args.as_worker:
            raise CLIError("--workers and --as-worker do not go together", EXIT_USAGE)
        return serve_with_workers(args)
    return _serve_here(args)


def _watch_parent(on_gone: Callable[[], None]) -> None:
    """A worker's lifeline: its stdin is a pipe from the `--workers` parent; end
    of file means the parent is gone (killed, crashed): stop as if signalled."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return

    def run() -> None:
        try:  # the raw fd: a daemon thread blocked in a buffered read would hang interpreter shutdown
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        try:
            on_gone()
        except Exception:  # the server may be gone already: nothing left to stop
            log.debug("stopping after the parent ended", exc_info=True)

    threading.Thread(target=run, name="tofu-parent-watch", daemon=True).start()


def _echo(request: Request) -> list[tuple[Headers, bytes]]:
    """Each frame of a Request back as a Response frame: the same headers, body and `more` flag."""
    return list(request.frames)


def _echo_signal(request: Request) -> None:
    request.signal(request.body, request.headers)


class _Echo:
    """What `tofu serve` says about its clients (the hooks of its tofu.Server)."""

    def __init__(self) -> None:
        self.total_clients = 0  # counted, as everything here, on the server's dispatcher thread
        self.total_requests = 0

    def handle(self, request: Request) -> list[tuple[Headers, bytes]]:
        self.total_requests += 1
        return _echo(request)

    def on_hello(self, peer: Peer) -> None:
        self.total_clients += 1
        where = peer.headers.get(CONNECT_TO_HEADER, "?")
        out(f"channel {peer.channel}: connected ({printable(where)}){peer_text(peer.headers.pairs)}")

    def on_close(self, peer: Peer) -> None:
        if peer.close_reason is AmpeStatus.shutdown_started:
            return  # closed at the end of the grace period: said so already
        if peer.said_bye:
            out(f"channel {peer.channel}: bye")
        reason = peer.close_reason
        why = f" ({reason.name})" if reason is not None and reason is not AmpeStatus.channel_closed else ""
        out(f"channel {peer.channel}: closed after {peer.requests} request(s){why}")


def _serve_here(args: argparse.Namespace) -> int:
    """One tofu.Server in this process. With --as-worker (one of the
    processes of `--workers N`), TCP listeners share their port
    (SO_REUSEPORT) and the end of stdin stops the server gracefully."""
    addresses = list(args.address)
    if args.as_worker:
        addresses = [
            dataclasses.replace(a, reuse_port=True) if isinstance(a, TCPServerAddress) else a for a in addresses
        ]
    stop = threading.Event()
    forced: list[bool] = []
    servers: list[Server] = []

    def on_signal(signum: int) -> None:  # on the watcher thread
        if stop.is_set():
            if not forced:
                forced.append(True)
                out("stopping now")
                if servers:
                    servers[0].shutdown(0)  # cuts the graceful stop short
            return
        stop.set()

    options = serve_options(args, args.address)  # TLS flags checked before anything starts
    warnings = show_engine_warnings(options, args.verbose)
    watcher = StopSignals(on_signal)
    if args.as_worker:
        _watch_parent(lambda: on_signal(signal.SIGTERM))
    echo = _Echo()
    server = Server(
        addresses,
        echo.handle,
        workers=0,  # the echo answers on the server's thread: no hop, and in the order the requests came
        on_hello=echo.on_hello,
        on_close=echo.on_close,
        on_signal=_echo_signal,
        options=options,
    )
    try:
        try:
            server.start()
        except AmpeError as exc:  # e.g. listen_failed: "cannot listen on URL: listen_failed (...)"
            raise CLIError(str(exc)) from None
        servers.append(server)
        for url in server.urls:
            out(f"listening on {url}")
        stop.wait()
        grace = args.grace
        out(f"stopping: saying bye to {len(server.peers)} client(s), waiting up to {grace:g} s")
        closed = server.shutdown(grace)
        if closed and not forced:
            out(f"grace period over: closing {closed} channel(s)")
        out(f"served {echo.total_requests} request(s) on {echo.total_clients} connection(s)")
        out("stopped")
        return EXIT_OK
    finally:
        server.shutdown(0)
        watcher.close()
        if warnings is not None:
            logging.getLogger("tofu").removeHandler(warnings)
