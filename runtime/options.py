"""Engine options, with the reference's defaults and fallbacks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl  # imported only by applications that use TLS

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_INITIAL_POOL_MSGS",
    "DEFAULT_MAX_POOL_MSGS",
    "DEFAULT_MAX_QUEUED_MSGS",
    "DEFAULT_MAX_UNSENT_BYTES",
    "Options",
]

DEFAULT_INITIAL_POOL_MSGS = 16
DEFAULT_MAX_POOL_MSGS = 64
DEFAULT_MAX_QUEUED_MSGS = 1024
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_UNSENT_BYTES = 1 << 20


@dataclass(frozen=True)
class Options:
    """How a Reactor sizes its message pool, bounds its queues and times out
    connections (docs/concepts.md, "Limits and timeouts").

    - `initial_pool_msgs`: messages made up front (default 16).
    - `max_pool_msgs`: most messages the pool keeps (default 64), but never fewer
        than the engine itself may hold: the pool keeps up to
        max(max_pool_msgs, max_queued_msgs + max_unsent_msgs) messages, plus
        3072 for a stream's batches in flight when max_queued_msgs is at
        least 1024, so ordinary traffic reuses them (4096 with every default).
        A zero, or max below initial, falls back to the defaults (16, 64).
        The application hears `pool_empty` only under real pressure: when it
        holds more messages than the pool keeps, beyond those the engine
        holds itself; once per shortage (docs/concepts.md).
    - `max_queued_msgs`: backpressure bound. While a channel group holds more
        unconsumed messages than this, the engine stops reading the sockets of
        that group's channels (TCP then slows the sender); it reads again once
        the application has drained the queue to half of it. Default 1024.
    - `max_unsent_msgs`: send window per channel. With N > 0, post() blocks while
        N of the channel's messages are posted and not yet written to its
        socket, so a sender faster than the network or the peer waits instead
        of filling memory. 0 (the default, as in the reference) is no limit.
        Do not post and receive on one thread with a window: a blocked post
        cannot receive what would unblock the peer. `post(msg, timeout=...)`
        bounds the wait (it then raises tofu.PostTimeout).
    - `max_unsent_bytes`: flow control per accepted connection. While the bytes
        waiting to be written to a connection (encoded, plus each queued
        message's encoded size and 256 bytes for its bookkeeping) exceed
        this, the engine stops reading that connection, until they drop to
        half of it: a peer that sends requests and never reads the answers
        cannot make the engine queue answers without bound. Other channels
        are not affected and post() never waits for it. Connections this
        engine opened are not throttled (only one side of a connection may
        do it, or two engines could stop reading each other). Default 1 MiB;
        None or 0 is no limit.
    - `handshake_timeout`: seconds an accepted connection has to complete its
        handshake: its HelloRequest received and the application's answer
        posted (a HelloResponse, or anything that accepts the channel: see
        docs/protocol.md, "Channel states"). Past it the engine closes the
        connection; an application that already received the HelloRequest
        gets channel_closed with `~close_reason: accept_failed` (one that
        never heard of the channel gets nothing). Default 10; None or 0
        disables it.
    - `connect_timeout`: seconds a HelloRequest has to be answered (name
        resolution, TCP connect and the peer's answer: its HelloResponse, or
        the first Request or Signal it sends). Past it the HelloRequest comes
        back with status connect_failed and the channel closes
        (channel_closed, `~close_reason: connect_failed`). Default 10; None
        or 0 disables it.
    - `idle_timeout`: seconds a connection may carry no bytes in either
        direction; past it the engine closes it (channel_closed,
        `~close_reason: communication_failed`). Default None (never).
    - `max_connections`: most connections each listener holds open at once; a
        connection past it is accepted and closed at once (the application
        hears nothing; a warning is logged once per episode of refusals).
        Default None (no limit).
    - `tls_server_context`: the ssl.SSLContext of TLS listeners (tls:// and
        TLSServerAddress): their certificate, and the CAs of the client
        certificates they require, if any. See tofu.server_tls_context().
    - `tls_client_context`: the ssl.SSLContext of TLS connects (TLSClientAddress):
        the CAs to trust and the client's own certificate, if any. See
        tofu.client_tls_context(). Without the matching context a TLS
        listen or connect fails (listen_failed / connect_failed).
    - `direct_send`: let post() write a Request, Response or Signal to an idle
        plain TCP or Unix domain socket connection itself, instead of waking
        the engine's I/O thread to do it, when the connection has read
        something since its last such write and the group has nothing left
        to receive (the request / response rhythm): a shorter round trip. Streams of posts still go through the I/O
        thread, which writes many messages per system call. Message order is
        the same either way. Default True; False always uses the I/O thread.
    - `direct_receive`: let wait_receive() read and decode a frame itself,
        instead of waiting for the engine's I/O thread to do it and wake it,
        when its group's queue is empty and the group has one plain TCP or
        Unix domain socket connection, open and read normally (listeners
        do not count): a shorter round trip. The connection stays with the
        receiving thread between its receives (an answer that comes before
        its next wait_receive() is read by it too), and goes back to the
        I/O thread when that thread stops receiving (within 40 ms); message
        order, backpressure, the timeouts and closes are the same either
        way. Groups wrapped by tofu.aio always receive through the I/O
        thread. Default True; False always uses the I/O thread.
    """

    initial_pool_msgs: int = DEFAULT_INITIAL_POOL_MSGS
    max_pool_msgs: int = DEFAULT_MAX_POOL_MSGS
    max_queued_msgs: int = DEFAULT_MAX_QUEUED_MSGS
    max_unsent_msgs: int = 0
    max_unsent_bytes: int | None = DEFAULT_MAX_UNSENT_BYTES
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT
    idle_timeout: float | None = None
    max_connections: int | None = None
    tls_server_context: ssl.SSLContext | None = None
    tls_client_context: ssl.SSLContext | None = None
    direct_send: bool = True
    direct_receive: bool = True

    def __post_init__(self) -> None:
        initial = self.initial_pool_msgs or DEFAULT_INITIAL_POOL_MSGS
        maximum = self.max_pool_msgs or DEFAULT_MAX_POOL_MSGS
        if initial < 0 or maximum < initial:
            initial, maximum = DEFAULT_INITIAL_POOL_MSGS, DEFAULT_MAX_POOL_MSGS
        object.__setattr__(self, "initial_pool_msgs", initial)
        object.__setattr__(self, "max_pool_msgs", maximum)
        if self.max_queued_msgs <= 0:
            object.__setattr__(self, "max_queued_msgs", DEFAULT_MAX_QUEUED_MSGS)
        if self.max_unsent_msgs < 0:
            object.__setattr__(self, "max_unsent_msgs", 0)
        for name in ("max_unsent_bytes", "handshake_timeout", "connect_timeout", "idle_timeout", "max_connections"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"Options.{name} must be None or at least 0, not {value!r}")
            if not value:
                object.__setattr__(self, name, None)  # 0 means off, as None does
