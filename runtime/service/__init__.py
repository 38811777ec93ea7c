"""The service layer: a client and a server in a few lines, on the public
engine API (a face over Reactor, ChannelGroup and Message).

    with tofu.Server("tcp://127.0.0.1:0", lambda request: request.body) as server:
        with tofu.connect(server.urls[0]) as client:
            print(client.request(b"hello").body)

tofu.connect / tofu.Client and tofu.Server use threads; tofu.aio.connect /
tofu.aio.Client and tofu.aio.Server are the same for asyncio. On the wire
it is the protocol as any tofu peer speaks it: HelloRequest / HelloResponse,
Requests answered by Responses with the same message id (`more` streams for
bodies and answers of several frames), Signals, ByeRequest / ByeResponse. A
handler's error travels in the `tofu-error` and `tofu-error-detail` text
headers of its Response (ERROR_HEADER, ERROR_DETAIL_HEADER). See
docs/client-server.md.
"""

from .client import Client, ReplyStream, connect
from .errors import (
    ERROR_DETAIL_HEADER,
    ERROR_HEADER,
    ConnectError,
    ConnectionLost,
    ConnectionRefused,
    RequestTimeout,
)
from .headers import Headers
from .reconnect import Reconnect
from .replies import Reply
from .requests import Peer, Request
from .server import Server

__all__ = [
    "ERROR_DETAIL_HEADER",
    "ERROR_HEADER",
    "Client",
    "ConnectError",
    "ConnectionLost",
    "ConnectionRefused",
    "Headers",
    "Peer",
    "Reconnect",
    "Reply",
    "ReplyStream",
    "Request",
    "RequestTimeout",
    "Server",
    "connect",
]
