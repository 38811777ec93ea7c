"""What every command does with the engine: addresses as URLs, a reactor that leaves
SIGINT/SIGTERM to the main thread, listening, waiting for one channel's messages."""

from __future__ import annotations

import logging
import time

from .. import (
    LISTEN_ON_HEADER,
    Address,
    AllocationStrategy,
    Ampe,
    ChannelGroup,
    Message,
    Options,
    Reactor,
    TCPClientAddress,
    TCPServerAddress,
    TLSClientAddress,
    TLSServerAddress,
    parse_address_value,
    raw_to_status,
)
from ._signals import signals_to_main_thread
from .console import CLIError

log = logging.getLogger("tofu.cli")


def format_url(address: Address) -> str:
    """`address` as a URL that `parse_url` reads back: tcp://HOST:PORT,
    tls://HOST:PORT or uds:///PATH (a TLS client's server_hostname is not in it)."""
    if isinstance(address, (TCPClientAddress, TCPServerAddress)):
        host = f"[{address.host}]" if ":" in address.host else address.host
        scheme = "tls" if isinstance(address, (TLSClientAddress, TLSServerAddress)) else "tcp"
        return f"{scheme}://{host}:{address.port}"
    return f"uds://{address.path}"


def status_text(raw: int) -> str:
    status = raw_to_status(raw)
    return f"{status.name} ({status.meaning})"


def new_reactor(options: Options | None = None) -> Reactor:
    """A Reactor whose I/O thread leaves SIGINT and SIGTERM to the main thread."""
    with signals_to_main_thread():
        return Reactor(options)


def listen(ampe: Ampe, group: ChannelGroup, address: Address, timeout: float = 10.0) -> tuple[int, str]:
    """Open a listener; return its channel number and the URL it really listens on."""
    msg = ampe.get(AllocationStrategy.always)
    assert msg is not None
    address.format(msg)
    bhdr = group.post(msg)
    resp = _receive_for(group, bhdr.channel_number, timeout)
    if resp is None:
        raise CLIError(f"no WelcomeResponse for {format_url(address)} within {timeout:g} s")
    try:
        if resp.bhdr.status != 0:
            raise CLIError(f"cannot listen on {format_url(address)}: {status_text(resp.bhdr.status)}")
        value = resp.thdrs.get(LISTEN_ON_HEADER)
        actual = parse_address_value(value, server=True) if value else address
    finally:
        ampe.put(resp)
    return bhdr.channel_number, format_url(actual)


def _receive_for(group: ChannelGroup, channel: int, timeout: float) -> Message | None:
    """The next message of `channel`; others are dropped (used before anything else runs)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        msg = group.wait_receive(remaining)
        if msg is None:
            return None
        if msg.bhdr.channel_number == channel:
            return msg
