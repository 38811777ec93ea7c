"""`tofu serve`: an echo server."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import (
    CLOSE_REASON_HEADER,
    CONNECT_TO_HEADER,
    Ampe,
    AmpeError,
    AmpeStatus,
    ChannelGroup,
    InvalidMessage,
    Message,
    OpCode,
    TCPServerAddress,
    raw_to_status,
)
from ._signals import _SignalWatcher
from ._tls import peer_text, serve_options, show_engine_warnings
from .console import EXIT_OK, EXIT_USAGE, CLIError, _out, _printable
from .session import _listen, _reactor
from .workers import _serve_with_workers

log = logging.getLogger("tofu.cli")


@dataclass
class _ServeState:
    stop: bool = False
    force: bool = False
    signals: int = 0


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.workers > 1:
        if args.as_worker:
            raise CLIError("--workers and --as-worker do not go together", EXIT_USAGE)
        return _serve_with_workers(args)
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
        except Exception:  # the engine may be gone already: nothing left to stop
            log.debug("stopping after the parent ended", exc_info=True)

    threading.Thread(target=run, name="tofu-parent-watch", daemon=True).start()


def _serve_here(args: argparse.Namespace) -> int:
    """Today's `tofu serve`: one engine in this process. With --as-worker (one
    of the processes of `--workers N`), TCP listeners share their port
    (SO_REUSEPORT) and the end of stdin stops the server gracefully."""
    addresses = list(args.address)
    if args.as_worker:
        addresses = [
            dataclasses.replace(a, reuse_port=True) if isinstance(a, TCPServerAddress) else a for a in addresses
        ]
    state = _ServeState()
    group_ref: list[ChannelGroup] = []

    def on_signal(signum: int) -> None:  # on the watcher thread
        state.signals += 1
        state.stop = True
        if state.signals > 1:
            state.force = True
        if group_ref:
            group_ref[0].update_receiver(None)  # wakes wait_receive in the main thread

    options = serve_options(args, args.address)  # TLS flags checked before anything starts
    warnings = show_engine_warnings(options, args.verbose)
    watcher = _SignalWatcher(on_signal)
    if args.as_worker:
        _watch_parent(lambda: on_signal(signal.SIGTERM))
    try:
        with _reactor(options) as rtr:
            ampe = rtr.ampe()
            group = ampe.create()
            group_ref.append(group)
            listeners: dict[int, str] = {}
            for address in addresses:
                number, url = _listen(ampe, group, address)
                listeners[number] = url
                _out(f"listening on {url}")
            if state.stop:
                return EXIT_OK
            _serve_loop(ampe, group, listeners, state, args.grace)
        _out("stopped")
        return EXIT_OK
    finally:
        watcher.close()
        if warnings is not None:
            logging.getLogger("tofu").removeHandler(warnings)


def _serve_loop(ampe: Ampe, group: ChannelGroup, listeners: dict[int, str], state: _ServeState, grace: float) -> None:
    server = _EchoServer(ampe, group, listeners, state)
    deadline: float | None = None
    while True:
        if state.stop and deadline is None:
            deadline = time.monotonic() + grace
            _out(f"stopping: saying bye to {len(server.clients)} client(s), waiting up to {grace:g} s")
            server.say_bye()
        if deadline is not None:
            if state.force:
                _out("stopping now")
                break
            if not server.clients:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _out(f"grace period over: closing {len(server.clients)} channel(s)")
                break
            msg = group.wait_receive(remaining)
        else:
            msg = group.wait_receive(None)
        if msg is None:
            continue
        try:
            server.handle(msg)
        except CLIError:
            raise
        except Exception as exc:
            number = msg.bhdr.channel_number
            log.warning("channel %d: dropped a message that could not be handled: %s", number, exc, exc_info=True)
            _out(f"channel {number}: dropped a message: {_printable(f'{type(exc).__name__}: {exc}')}")
            # Not put back: handle() may have posted it already; an unreturned message is only garbage.
    _out(f"served {server.total_requests} request(s) on {server.total_clients} connection(s)")


class _EchoServer:
    """What `tofu serve` does with each message it receives."""

    def __init__(self, ampe: Ampe, group: ChannelGroup, listeners: dict[int, str], state: _ServeState) -> None:
        self.ampe, self.group, self.listeners, self.state = ampe, group, listeners, state
        self.clients: dict[int, int] = {}  # channel -> requests served
        self.total_clients = 0
        self.total_requests = 0

    def _post(self, msg: Message) -> None:
        try:
            self.group.post(msg)
        except AmpeError as exc:  # the channel closed since the message arrived
            log.debug("channel %d: %s not sent: %s", msg.bhdr.channel_number, msg.bhdr.proto.op_code, exc)
            self.ampe.put(msg)

    def _reply(self, msg: Message, op: OpCode) -> None:
        msg.bhdr.proto.op_code = op
        self._post(msg)

    def _close(self, number: int) -> None:
        bye = Message(OpCode.ByeSignal)
        bye.bhdr.channel_number = number
        self._post(bye)

    def say_bye(self) -> None:
        """Close the listeners and ask every client to leave."""
        for number in list(self.listeners):
            self._close(number)
        self.listeners.clear()
        for number in self.clients:
            bye = Message(OpCode.ByeRequest)
            bye.bhdr.channel_number = number
            bye.thdrs.append("reason", "server shutting down")
            self._post(bye)

    def handle(self, msg: Message) -> None:
        """Answer one message; it is posted back or put back to the pool."""
        if msg.is_from_engine():
            self._engine_says(msg)
            return
        bh = msg.bhdr
        number = bh.channel_number
        op = bh.proto.op_code
        try:
            headers = list(msg.thdrs)
        except InvalidMessage as exc:  # what a peer sent is never trusted, least of all printed
            _out(f"channel {number}: {op.name} with malformed text headers ({_printable(str(exc))}): closing it")
            self.ampe.put(msg)
            self._close(number)
            return
        if op == OpCode.Request:
            self.total_requests += 1
            if number in self.clients:
                self.clients[number] += 1
            self._reply(msg, OpCode.Response)
        elif op == OpCode.Signal:
            self._reply(msg, OpCode.Signal)
        elif op == OpCode.HelloRequest:
            self.total_clients += 1
            self.clients[number] = 0
            peer = next((v for n, v in headers if n == CONNECT_TO_HEADER), "?")
            _out(f"channel {number}: connected ({_printable(peer)}){peer_text(headers)}")
            self._reply(msg, OpCode.HelloResponse)
            if self.state.stop:  # too late to join: accepted, and asked to leave at once
                bye = Message(OpCode.ByeRequest)
                bye.bhdr.channel_number = number
                self._post(bye)
        elif op == OpCode.ByeRequest:
            _out(f"channel {number}: bye")
            self._reply(msg, OpCode.ByeResponse)
        else:  # HelloResponse, Response, ByeResponse: nothing to answer
            self.ampe.put(msg)

    def _engine_says(self, msg: Message) -> None:
        bh = msg.bhdr
        number = bh.channel_number
        status = raw_to_status(bh.status)
        try:
            if status is AmpeStatus.channel_closed and bh.proto.op_code == OpCode.Signal:
                if number in self.clients:
                    served = self.clients.pop(number)
                    reason = msg.thdrs.get(CLOSE_REASON_HEADER)
                    _out(
                        f"channel {number}: closed after {served} request(s)"
                        + (f" ({_printable(reason)})" if reason else "")
                    )
                elif number in self.listeners:
                    _out(f"listener {self.listeners.pop(number)} closed")
                    if not self.listeners and not self.state.stop:
                        raise CLIError("every listener closed")
            elif status not in (AmpeStatus.receiver_update, AmpeStatus.pool_empty):
                log.info("channel %d: %s returned: %s", number, bh.proto.op_code, status.name)
        finally:
            self.ampe.put(msg)
