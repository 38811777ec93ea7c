"""tofu: asynchronous, message-based, peer-to-peer messaging, wire-compatible
with the Zig reference g41797/tofu.

    import tofu
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        chnls = ampe.create()
        ...

See README.md for a quickstart and PROTOCOL.md for the wire format.
"""

import logging

from .addresses import (
    Address,
    TCPClientAddress,
    TCPServerAddress,
    UDSClientAddress,
    UDSServerAddress,
    parse_address,
    parse_address_value,
    parse_url,
)
from .framing import MAX_FRAME_SIZE, FrameDecoder, encode, encode_into
from .generated import *
from .generated import __all__ as _generated_all
from .groups import ChannelGroup
from .message import BinaryHeader, Body, Message, ProtoFields, TextHeaders
from .options import Options
from .pool import AllocationStrategy
from .reactor import Ampe, Reactor
from .testing import find_free_tcp_port, temp_uds_path

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [  # noqa: PLE0604 - the generated names are listed in tofu.generated.__all__
    *_generated_all,
    "Reactor",
    "Ampe",
    "ChannelGroup",
    "Options",
    "AllocationStrategy",
    "Address",
    "TCPClientAddress",
    "TCPServerAddress",
    "UDSClientAddress",
    "UDSServerAddress",
    "parse_address",
    "parse_address_value",
    "parse_url",
    "MAX_FRAME_SIZE",
    "FrameDecoder",
    "encode",
    "encode_into",
    "BinaryHeader",
    "Body",
    "Message",
    "ProtoFields",
    "TextHeaders",
    "find_free_tcp_port",
    "temp_uds_path",
]
