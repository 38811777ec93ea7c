"""tofu: asynchronous, message-based, peer-to-peer messaging, wire-compatible
with the Zig reference g41797/tofu.

A service in a few lines (tofu.Server, tofu.connect; tofu.aio for asyncio):

    import tofu
    with tofu.Server("tcp://127.0.0.1:0", lambda request: request.body) as server:
        with tofu.connect(server.urls[0]) as client:
            reply = client.request(b"hello")

The engine under it (Reactor, channel groups, pooled messages):

    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        chnls = ampe.create()
        ...

See README.md for a quickstart, docs/client-server.md for the service layer
and docs/protocol.md for the wire format.
"""

import logging as _logging

from . import generated
from ._build import is_compiled as _is_compiled
from .addresses import (
    Address,
    TCPClientAddress,
    TCPServerAddress,
    TLSClientAddress,
    TLSServerAddress,
    UDSClientAddress,
    UDSServerAddress,
    parse_address,
    parse_address_value,
    parse_url,
)
from .ampe import Ampe
from .framing import MAX_FRAME_SIZE, FrameDecoder, encode, encode_into
from .generated import *
from .groups import WAIT_RECEIVE_INFINITE_TIMEOUT, WAIT_RECEIVE_SEC_TIMEOUT, ChannelGroup, PostTimeout
from .message import BinaryHeader, Body, Message, ProtoFields, TextHeaders
from .options import Options
from .pool import AllocationStrategy
from .reactor import Reactor
from .service import (
    ERROR_DETAIL_HEADER,
    ERROR_HEADER,
    Client,
    ConnectError,
    ConnectionLost,
    ConnectionRefused,
    Headers,
    Peer,
    Reconnect,
    Reply,
    ReplyStream,
    Request,
    RequestTimeout,
    Server,
    connect,
)
from .testing import find_free_tcp_port, temp_uds_path
from .tls_contexts import client_tls_context, server_tls_context
from .transport import peer_credentials

_logging.getLogger(__name__).addHandler(_logging.NullHandler())

COMPILED: bool = _is_compiled()
"""True when this is the compiled build: the per-message modules compiled
with mypyc (`pip install .` with a C compiler and the Python headers);
False for pure Python (no compiler, TOFU_PURE=1, or an editable install).
Both behave the same; the compiled one is faster."""

__version__ = "0.1.0"

__all__ = [
    "COMPILED",
    "ERROR_DETAIL_HEADER",
    "ERROR_HEADER",
    "MAX_FRAME_SIZE",
    "WAIT_RECEIVE_INFINITE_TIMEOUT",
    "WAIT_RECEIVE_SEC_TIMEOUT",
    "Address",
    "AllocationStrategy",
    "Ampe",
    "BinaryHeader",
    "Body",
    "ChannelGroup",
    "Client",
    "ConnectError",
    "ConnectionLost",
    "ConnectionRefused",
    "FrameDecoder",
    "Headers",
    "Message",
    "Options",
    "Peer",
    "PostTimeout",
    "ProtoFields",
    "Reactor",
    "Reconnect",
    "Reply",
    "ReplyStream",
    "Request",
    "RequestTimeout",
    "Server",
    "TCPClientAddress",
    "TCPServerAddress",
    "TLSClientAddress",
    "TLSServerAddress",
    "TextHeaders",
    "UDSClientAddress",
    "UDSServerAddress",
    "client_tls_context",
    "connect",
    "encode",
    "encode_into",
    "find_free_tcp_port",
    "parse_address",
    "parse_address_value",
    "parse_url",
    "peer_credentials",
    "server_tls_context",
    "temp_uds_path",
]
__all__ += generated.__all__  # the protocol's names; type checkers follow this form
