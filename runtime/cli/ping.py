"""`tofu ping`: round-trip times against a server, through tofu.connect."""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time

from .. import (
    Address,
    AmpeStatus,
    Client,
    ConnectError,
    ConnectionLost,
    ConnectionRefused,
    Options,
    RequestTimeout,
    connect,
)
from ._tls import ping_target
from .console import EXIT_FAILURE, EXIT_OK, CLIError, out, plural, printable, progress_bar
from .session import format_url, status_text

log = logging.getLogger("tofu.cli")


# The engine gives up a connect after --timeout (Options.connect_timeout) and
# says why; ping waits this much longer for that word before it gives up itself.
_CONNECT_MARGIN = 2.0


def run(args: argparse.Namespace) -> int:
    """`tofu ping ADDRESS`: round-trip times of sequential requests to a server."""
    address: Address
    address, options = ping_target(args)
    url = format_url(address)
    count: int = args.count
    payload = bytes(i & 0xFF for i in range(args.size))
    timeout: float = args.timeout

    started = time.perf_counter()
    client = _connect(address, url, options, timeout)
    with client:
        connect_ms = (time.perf_counter() - started) * 1000
        out(f"PING {url}: {plural(count, 'request')} of {plural(args.size, 'byte')}; connected in {connect_ms:.3f} ms")
        rtts: list[float] = []
        mismatched = 0
        sent = 0
        interrupted = False
        try:
            with progress_bar(count, f"ping {url}", args.progress) as advance:
                for _ in range(count):
                    sent += 1  # counted first: Ctrl-C may come while the request goes
                    where = f"after {len(rtts)} of {count}"
                    t0 = time.perf_counter()
                    try:
                        reply = client.request(payload, timeout=timeout)
                    except RequestTimeout:
                        raise CLIError(f"no reply from {url} within {timeout:g} s ({where})") from None
                    except ConnectionLost as exc:
                        lost = status_text(exc.reason)
                        raise CLIError(f"connection to {url} lost {where} replies: {lost}") from None
                    rtts.append(time.perf_counter() - t0)
                    if reply.body != payload:
                        mismatched += 1
                    advance(1)
        except KeyboardInterrupt:  # Ctrl-C: like ping(8), say what was measured so far
            interrupted = True
            out(f"interrupted after {plural(sent, 'request')}")
        client.close(min(timeout, 1.0) if interrupted else timeout)  # ByeRequest, ByeResponse, closed

    out(f"{plural(len(rtts), 'reply', 'replies')} to {plural(sent, 'request')}, {mismatched} with a different body")
    if not rtts:
        return EXIT_FAILURE
    ms = sorted(t * 1000 for t in rtts)
    p99 = ms[max(math.ceil(0.99 * len(ms)) - 1, 0)]
    out(f"round trip: min {ms[0]:.3f} ms, median {statistics.median(ms):.3f} ms, p99 {p99:.3f} ms, max {ms[-1]:.3f} ms")
    return EXIT_OK if mismatched == 0 else EXIT_FAILURE


def _connect(address: Address, url: str, options: Options | None, timeout: float) -> Client:
    """tofu.connect, its failures as one line each."""
    try:
        return connect(address, options=options, timeout=timeout + _CONNECT_MARGIN)
    except ConnectionRefused as exc:
        why = f" ({exc.reason.name})" if exc.reason is not None and exc.reason is not AmpeStatus.channel_closed else ""
        raise CLIError(f"{url} closed the connection without a HelloResponse{why}{_detail(exc.detail)}") from None
    except ConnectError as exc:
        if isinstance(exc, TimeoutError):
            raise CLIError(f"no HelloResponse from {url} within {timeout:g} s") from None
        raise CLIError(f"cannot connect to {url}: {status_text(exc.status)}{_detail(exc.detail)}") from None


def _detail(detail: str | None) -> str:
    return f": {printable(detail)}" if detail else ""
