"""`tofu serve`: an echo server."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass

from .. import (
    CLOSE_REASON_HEADER,
    CONNECT_TO_HEADER,
    Ampe,
    AmpeError,
    AmpeStatus,
    ChannelGroup,
    Message,
    OpCode,
    raw_to_status,
)
from ._signals import _SignalWatcher
from .console import EXIT_OK, CLIError, _out
from .session import _listen, _reactor

log = logging.getLogger("tofu.cli")


@dataclass
class _ServeState:
    stop: bool = False
    force: bool = False
    signals: int = 0


def _cmd_serve(args: argparse.Namespace) -> int:
    state = _ServeState()
    group_ref: list[ChannelGroup] = []

    def on_signal(signum: int) -> None:  # on the watcher thread
        state.signals += 1
        state.stop = True
        if state.signals > 1:
            state.force = True
        if group_ref:
            group_ref[0].update_receiver(None)  # wakes wait_receive in the main thread

    watcher = _SignalWatcher(on_signal)
    try:
        with _reactor() as rtr:
            ampe = rtr.ampe()
            group = ampe.create()
            group_ref.append(group)
            listeners: dict[int, str] = {}
            for address in args.address:
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


def _serve_loop(ampe: Ampe, group: ChannelGroup, listeners: dict[int, str], state: _ServeState, grace: float) -> None:
    clients: dict[int, int] = {}  # channel -> requests served
    total_clients = 0
    total_requests = 0
    deadline: float | None = None
    post = group.post
    put = ampe.put

    def reply(msg: Message, op: OpCode) -> None:
        msg.bhdr.proto.op_code = op
        try:
            post(msg)
        except AmpeError as exc:  # the channel closed since the message arrived
            log.debug("channel %d: reply not sent: %s", msg.bhdr.channel_number, exc)
            put(msg)

    while True:
        if state.stop and deadline is None:
            deadline = time.monotonic() + grace
            _out(f"stopping: saying bye to {len(clients)} client(s), waiting up to {grace:g} s")
            for number in list(listeners):
                bye = Message(OpCode.ByeSignal)
                bye.bhdr.channel_number = number
                try:
                    post(bye)
                except AmpeError:
                    pass
            listeners.clear()
            for number in clients:
                bye = Message(OpCode.ByeRequest)
                bye.bhdr.channel_number = number
                bye.thdrs.append("reason", "server shutting down")
                try:
                    post(bye)
                except AmpeError:
                    pass
        if deadline is not None:
            if state.force:
                _out("stopping now")
                break
            if not clients:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _out(f"grace period over: closing {len(clients)} channel(s)")
                break
            msg = group.wait_receive(remaining)
            if msg is None:
                continue
        else:
            msg = group.wait_receive(None)
            if msg is None:
                continue
        bh = msg.bhdr
        number = bh.channel_number
        if msg.is_from_engine():
            status = raw_to_status(bh.status)
            if status is AmpeStatus.channel_closed and bh.proto.op_code == OpCode.Signal:
                if number in clients:
                    served = clients.pop(number)
                    reason = msg.thdrs.get(CLOSE_REASON_HEADER)
                    _out(f"channel {number}: closed after {served} request(s)" + (f" ({reason})" if reason else ""))
                elif number in listeners:
                    _out(f"listener {listeners.pop(number)} closed")
                    if not listeners and not state.stop:
                        raise CLIError("every listener closed")
            elif status not in (AmpeStatus.receiver_update, AmpeStatus.pool_empty):
                log.info("channel %d: %s returned: %s", number, bh.proto.op_code, status.name)
            put(msg)
            continue

        op = bh.proto.op_code
        if op == OpCode.Request:
            total_requests += 1
            if number in clients:
                clients[number] += 1
            reply(msg, OpCode.Response)
        elif op == OpCode.Signal:
            reply(msg, OpCode.Signal)
        elif op == OpCode.HelloRequest:
            total_clients += 1
            clients[number] = 0
            _out(f"channel {number}: connected ({msg.thdrs.get(CONNECT_TO_HEADER, '?')})")
            if state.stop:  # too late to join: accept and say bye at once
                reply(msg, OpCode.HelloResponse)
                bye = Message(OpCode.ByeRequest)
                bye.bhdr.channel_number = number
                try:
                    post(bye)
                except AmpeError:
                    pass
            else:
                reply(msg, OpCode.HelloResponse)
        elif op == OpCode.ByeRequest:
            _out(f"channel {number}: bye")
            reply(msg, OpCode.ByeResponse)
        else:  # HelloResponse, Response, ByeResponse: nothing to answer
            put(msg)
    _out(f"served {total_requests} request(s) on {total_clients} connection(s)")
