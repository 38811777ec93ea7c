"""The service layer's exceptions, and the text headers that carry a handler's
error to the client.

The engine clears the status byte of every message an application posts (as
the reference does), so a server cannot answer with a status: a failed
request travels as an ordinary Response carrying two text headers, the
status's name in `tofu-error` (ERROR_HEADER) and the failure in words in
`tofu-error-detail` (ERROR_DETAIL_HEADER). tofu.Client turns such a Response
into a Reply whose `status` is that status.
"""

from __future__ import annotations

from ..generated import AmpeError, AmpeStatus, ConnectFailed

__all__ = [
    "ERROR_DETAIL_HEADER",
    "ERROR_HEADER",
    "ConnectError",
    "ConnectionLost",
    "ConnectionRefused",
    "RequestTimeout",
    "hello_failed",
    "status_named",
]

ERROR_HEADER = "tofu-error"
"""Text header of a Response that reports a failure: the name of an
AmpeStatus (e.g. `processing_failed` when the server's handler raised)."""

ERROR_DETAIL_HEADER = "tofu-error-detail"
"""Text header beside ERROR_HEADER: the failure in words (for a handler that
raised, the exception's type and message)."""


def status_named(name: str | None, default: AmpeStatus = AmpeStatus.unknown_error) -> AmpeStatus:
    """The AmpeStatus called `name` (as in `~close_reason` or ERROR_HEADER);
    `default` for None, and unknown_error for a name no status has."""
    if name is None:
        return default
    member = AmpeStatus.__members__.get(name.strip())
    return member if member is not None else AmpeStatus.unknown_error


class RequestTimeout(TimeoutError):
    """A request (or the next frame of a stream) got no answer within its
    timeout. The request stays sent: an answer that comes later is dropped,
    never handed to another caller. A TimeoutError, so `except TimeoutError`
    catches it. `timeout` is the time waited, in seconds."""

    def __init__(self, message: str, timeout: float | None = None) -> None:
        super().__init__(message)
        self.timeout = timeout


class ConnectionLost(AmpeError, ConnectionError):
    """The channel closed before the answer came: every request in flight on
    it fails with this at once (a client that reconnects fails only those).

    `reason` is why the channel closed: the status named in the engine's
    `~close_reason` header (peer_disconnected, communication_failed, ...), or
    channel_closed for a graceful close (either side said Bye). `detail` is
    the failure in words, when there is one (`~close_detail`, or what this
    side knows, e.g. "the client was closed"). Also a ConnectionError.
    """

    status = AmpeStatus.channel_closed

    def __init__(self, reason: AmpeStatus = AmpeStatus.channel_closed, detail: str | None = None) -> None:
        text = "the channel closed" if reason is AmpeStatus.channel_closed else f"the channel closed: {reason.name}"
        super().__init__(text + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.detail = detail


class ConnectError(ConnectFailed, ConnectionError):
    """connect() could not open the channel. `status` is the engine's word for
    it: connect_failed (nothing listens there, the TLS handshake failed, no
    HelloResponse in time), invalid_address, uds_path_not_found, ...;
    `reason` and `detail` are the channel's close reason and the failure in
    words, when the engine gave them (e.g. why a TLS handshake failed).
    A tofu.ConnectFailed, and a ConnectionError."""

    def __init__(
        self,
        message: str,
        status: AmpeStatus = AmpeStatus.connect_failed,
        reason: AmpeStatus | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.detail = detail


class _ConnectTimeout(ConnectError, TimeoutError):
    """connect() got no HelloResponse within its `timeout`: a ConnectError
    (status connect_failed) that is also a TimeoutError."""


class ConnectionRefused(ConnectError, ConnectionRefusedError):
    """The server closed the connection instead of answering the HelloRequest:
    it refused the hello (a tofu.Server's `on_hello` said no; any tofu peer
    refuses by closing), or it went away during the handshake. `reason` is the
    close reason the engine saw (usually peer_disconnected). A ConnectError
    with status connect_failed, and a ConnectionRefusedError."""


def hello_failed(
    url: str, returned: AmpeStatus | None, reason: AmpeStatus, detail: str | None, timed_out: float | None
) -> ConnectError:
    """Why a HelloRequest to `url` got no HelloResponse, its channel closed
    with `reason` (and `detail`): the engine gave it back with the status
    `returned` (connect_failed, ...: the connection could not be made), or
    the server closed the connection (peer_disconnected, or nothing given
    back: a refused hello), or it was given up after `timed_out` seconds."""
    words = f": {detail}" if detail else ""
    if timed_out is not None:
        late = f"no HelloResponse within {timed_out:g} s"
        return _ConnectTimeout(f"cannot connect to {url}: {late}", AmpeStatus.connect_failed, reason, detail or late)
    if returned is not None and returned is not AmpeStatus.peer_disconnected:
        status = f"{returned.name} ({returned.meaning})"
        return ConnectError(f"cannot connect to {url}: {status}{words}", returned, reason, detail)
    # The server closed the connection before answering (the engine gives the
    # HelloRequest back with peer_disconnected): a refused hello.
    why = f" ({reason.name})" if reason is not AmpeStatus.channel_closed else ""
    message = f"{url} closed the connection without a HelloResponse{why}{words}"
    return ConnectionRefused(message, reason=reason, detail=detail)
