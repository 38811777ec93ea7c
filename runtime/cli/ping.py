"""`tofu ping`: round-trip times against a server."""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time

from .. import (
    CLOSE_DETAIL_HEADER,
    CLOSE_REASON_HEADER,
    Address,
    AllocationStrategy,
    Ampe,
    AmpeError,
    AmpeStatus,
    ChannelGroup,
    Message,
    OpCode,
)
from ._tls import ping_target
from .console import EXIT_FAILURE, EXIT_OK, CLIError, _out, _plural, _printable, _progress
from .session import _reactor, _receive_for, _status_text, format_url

log = logging.getLogger("tofu.cli")


# The engine gives up a connect after --timeout (Options.connect_timeout) and
# says why; ping waits this much longer for that word before it gives up itself.
_CONNECT_MARGIN = 2.0


def _cmd_ping(args: argparse.Namespace) -> int:
    address: Address
    address, options = ping_target(args)
    url = format_url(address)
    count: int = args.count
    payload = bytes(i & 0xFF for i in range(args.size))
    timeout: float = args.timeout

    with _reactor(options) as rtr:
        ampe = rtr.ampe()
        group = ampe.create()
        hello = ampe.get(AllocationStrategy.always)
        assert hello is not None
        address.format(hello)
        started = time.perf_counter()
        channel = group.post(hello).channel_number
        resp = _receive_for(group, channel, timeout + _CONNECT_MARGIN)
        if resp is None:
            raise CLIError(f"no HelloResponse from {url} within {timeout:g} s")
        connect_ms = (time.perf_counter() - started) * 1000
        try:
            if resp.is_from_engine():
                why = _why_closed(ampe, group, channel, resp, timeout)
                if resp.bhdr.status == AmpeStatus.channel_closed:
                    raise CLIError(f"{url} closed the connection without a HelloResponse{why}")
                raise CLIError(f"cannot connect to {url}: {_status_text(resp.bhdr.status)}{why}")
            if resp.bhdr.proto.op_code != OpCode.HelloResponse:
                raise CLIError(f"{url} answered the HelloRequest with {resp.bhdr.proto.op_code.name}")
        finally:
            ampe.put(resp)
        _out(
            f"PING {url}: {_plural(count, 'request')} of {_plural(args.size, 'byte')}; connected in {connect_ms:.3f} ms"
        )

        rtts: list[float] = []
        mismatched = 0
        sent = 0
        interrupted = False
        try:
            with _progress(count, f"ping {url}", args.progress) as advance:
                for _ in range(count):
                    req = ampe.get(AllocationStrategy.always)
                    assert req is not None
                    req.bhdr.channel_number = channel
                    req.body.append(payload)
                    sent += 1  # counted first: Ctrl-C may come while post() hands it over
                    t0 = time.perf_counter()
                    mid = group.post(req).message_id
                    got = _reply_to(ampe, group, channel, mid, timeout, url, f"after {len(rtts)} of {count}")
                    rtts.append(time.perf_counter() - t0)
                    if got.body != payload:
                        mismatched += 1
                    ampe.put(got)
                    advance(1)
        except KeyboardInterrupt:  # Ctrl-C: like ping(8), say what was measured so far
            interrupted = True
            _out(f"interrupted after {_plural(sent, 'request')}")

        _say_bye(ampe, group, channel, min(timeout, 1.0) if interrupted else timeout)

    _out(f"{_plural(len(rtts), 'reply', 'replies')} to {_plural(sent, 'request')}, {mismatched} with a different body")
    if not rtts:
        return EXIT_FAILURE
    ms = sorted(t * 1000 for t in rtts)
    p99 = ms[max(math.ceil(0.99 * len(ms)) - 1, 0)]
    _out(
        f"round trip: min {ms[0]:.3f} ms, median {statistics.median(ms):.3f} ms, p99 {p99:.3f} ms, max {ms[-1]:.3f} ms"
    )
    return EXIT_OK if mismatched == 0 else EXIT_FAILURE


def _why_closed(ampe: Ampe, group: ChannelGroup, channel: int, first: Message, timeout: float) -> str:
    """Why a connect failed, from its channel_closed Signal (`first`, or the
    one after it: a failed HelloRequest comes back first): ": DETAIL" when
    the engine says more than the status, e.g. why a TLS handshake failed."""
    closed: Message | None = first
    while closed is not None and not (
        closed.is_from_engine()
        and closed.bhdr.status == AmpeStatus.channel_closed
        and closed.bhdr.proto.op_code == OpCode.Signal
    ):
        if closed is not first:
            ampe.put(closed)
        closed = _receive_for(group, channel, timeout)
    if closed is None:
        return ""
    reason, detail = closed.thdrs.get(CLOSE_REASON_HEADER), closed.thdrs.get(CLOSE_DETAIL_HEADER)
    if closed is not first:
        ampe.put(closed)
    if first.bhdr.status == AmpeStatus.channel_closed and reason:  # the status says nothing: the reason does
        return f" ({_printable(reason)})" + (f": {_printable(detail)}" if detail else "")
    return f": {_printable(detail)}" if detail else ""


def _reply_to(ampe: Ampe, group: ChannelGroup, channel: int, mid: int, timeout: float, url: str, where: str) -> Message:
    """The Response to request `mid`; anything else on the channel (a Signal, an old reply) is dropped."""
    while True:
        got = _receive_for(group, channel, timeout)
        if got is None:
            raise CLIError(f"no reply from {url} within {timeout:g} s ({where})")
        if got.is_from_engine():
            status = _status_text(got.bhdr.status)
            ampe.put(got)
            raise CLIError(f"connection to {url} lost {where} replies: {status}")
        if got.bhdr.proto.op_code == OpCode.Response and got.bhdr.message_id == mid:
            return got
        ampe.put(got)


def _say_bye(ampe: Ampe, group: ChannelGroup, channel: int, timeout: float) -> None:
    """ByeRequest, then wait (bounded) for the ByeResponse and channel_closed."""
    bye = Message(OpCode.ByeRequest)
    bye.bhdr.channel_number = channel
    try:
        group.post(bye)
    except AmpeError:
        return  # already closed
    while True:
        got = _receive_for(group, channel, timeout)
        if got is None:
            log.info("no channel_closed after ByeRequest within %g s", timeout)
            return
        closed = got.is_from_engine() and got.bhdr.status == AmpeStatus.channel_closed
        is_signal = got.bhdr.proto.op_code == OpCode.Signal
        ampe.put(got)
        if closed and is_signal:
            return
