"""Addresses: where to listen and where to connect, as message headers.

`TCPServerAddress("127.0.0.1", 7099).format(msg)` makes `msg` a WelcomeRequest
with `~listen_on:tcp|127.0.0.1|7099`; the client addresses make a HelloRequest
with `~connect_to`. `parse_address(msg)` reads such a message back, whatever
its kind; `TCPServerAddress.from_message(welcome)` (and the same classmethod
on the other three classes) reads one kind, typed:

    port = tofu.TCPServerAddress.from_message(welcome).port
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from .generated import (
    ADDRESS_SEPARATOR,
    ALLOW_UIDS_HEADER,
    CONNECT_TO_HEADER,
    LISTEN_ON_HEADER,
    REUSE_PORT_HEADER,
    SERVER_NAME_HEADER,
    TCP_SCHEME,
    TLS_SCHEME,
    UDS_MODE_HEADER,
    UDS_SCHEME,
    OpCode,
    WrongAddress,
)
from .message import Message

__all__ = [
    "Address",
    "TCPClientAddress",
    "TCPServerAddress",
    "TLSClientAddress",
    "TLSServerAddress",
    "UDSClientAddress",
    "UDSServerAddress",
    "parse_address",
    "parse_address_value",
    "parse_url",
]


def _prepare(msg: Message, op_code: OpCode) -> None:
    msg.bhdr.reset()
    msg.bhdr.proto.op_code = op_code


def _check_port(port: int) -> None:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise WrongAddress(f"port {port!r} is not in 0..65535")


def _check_path(path: str) -> None:
    if not path:
        raise WrongAddress("empty Unix domain socket path")
    if ADDRESS_SEPARATOR in path or "\r" in path or "\n" in path:
        raise WrongAddress(f"Unix domain socket path {path!r} contains '|', CR or LF")
    if "\0" in path:  # the kernel's abstract names: no file to set a mode on or to clean up
        raise WrongAddress(f"Unix domain socket path {path!r} contains a NUL byte (abstract names are not supported)")


@dataclass(frozen=True)
class TCPClientAddress:
    """Connect over TCP to `host` (name or IP) and `port`."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host or ADDRESS_SEPARATOR in self.host:
            raise WrongAddress(f"bad TCP host {self.host!r}")
        _check_port(self.port)

    @property
    def value(self) -> str:
        """The address header's value, as it goes on the wire."""
        return f"{TCP_SCHEME}{ADDRESS_SEPARATOR}{self.host}{ADDRESS_SEPARATOR}{self.port}"

    def format(self, msg: Message) -> Message:
        """Make `msg` a HelloRequest to this address."""
        _prepare(msg, OpCode.HelloRequest)
        msg.thdrs.append(CONNECT_TO_HEADER, self.value)
        return msg

    @classmethod
    def from_message(cls, msg: Message) -> TCPClientAddress:
        """The TCP address in `msg`'s `~connect_to` header.

        Reads a HelloRequest: yours, one the engine gave back (with status
        `connect_failed`, say), or one a server received (the address its
        client dialled). Raises WrongAddress, saying why, when `msg` is None,
        has no `~connect_to` header, or holds a Unix domain socket there. The
        status is not looked at: check `msg.bhdr.status` for that."""
        return _from_message(cls, msg, CONNECT_TO_HEADER)


@dataclass(frozen=True)
class TCPServerAddress:
    """Listen on TCP `host` ("" = all interfaces) and `port` (0 = any free port).

    `reuse_port=True` lets several listeners share the port (SO_REUSEPORT)."""

    host: str
    port: int
    reuse_port: bool = False

    def __post_init__(self) -> None:
        if ADDRESS_SEPARATOR in self.host:
            raise WrongAddress(f"bad TCP host {self.host!r}")
        _check_port(self.port)

    @property
    def value(self) -> str:
        """The address header's value, as it goes on the wire."""
        return f"{TCP_SCHEME}{ADDRESS_SEPARATOR}{self.host}{ADDRESS_SEPARATOR}{self.port}"

    def format(self, msg: Message) -> Message:
        """Make `msg` a WelcomeRequest for this address."""
        _prepare(msg, OpCode.WelcomeRequest)
        msg.thdrs.append(LISTEN_ON_HEADER, self.value)
        if self.reuse_port:
            msg.thdrs.append(REUSE_PORT_HEADER, "1")
        return msg

    @classmethod
    def from_message(cls, msg: Message) -> TCPServerAddress:
        """The TCP address in `msg`'s `~listen_on` header.

        Reads a WelcomeRequest, or the WelcomeResponse that answers it: the
        address actually bound, with the real port when port 0 was asked for.
        Raises WrongAddress, saying why, when `msg` is None, has no
        `~listen_on` header, or holds a Unix domain socket there. The status
        is not looked at: a WelcomeResponse with `listen_failed` carries the
        address that was asked for, so check `msg.bhdr.status` first."""
        return _from_message(cls, msg, LISTEN_ON_HEADER)


@dataclass(frozen=True)
class TLSClientAddress(TCPClientAddress):
    """Connect over TLS (on TCP) to `host` and `port`.

    The engine verifies the server's certificate with
    `Options.tls_client_context` and checks that it names `server_hostname`
    (default: `host`). A kind of TCPClientAddress: TCP with TLS on top. The
    reference (Zig) speaks plain TCP only."""

    server_hostname: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        name = self.server_hostname
        if name is not None and (not name.strip() or any(c in name for c in "\r\n:")):
            raise WrongAddress(f"bad TLS server name {name!r}")

    @property
    def value(self) -> str:
        """The address header's value, as it goes on the wire."""
        return f"{TLS_SCHEME}{ADDRESS_SEPARATOR}{self.host}{ADDRESS_SEPARATOR}{self.port}"

    def format(self, msg: Message) -> Message:
        """Make `msg` a HelloRequest to this address."""
        super().format(msg)
        if self.server_hostname is not None:
            msg.thdrs.append(SERVER_NAME_HEADER, self.server_hostname)
        return msg


@dataclass(frozen=True)
class TLSServerAddress(TCPServerAddress):
    """Listen for TLS (on TCP) on `host` ("" = all interfaces) and `port`.

    The engine's `Options.tls_server_context` holds the certificate, and
    whether clients must present one. `reuse_port` as for TCPServerAddress,
    of which this is a kind: TCP with TLS on top."""

    @property
    def value(self) -> str:
        """The address header's value, as it goes on the wire."""
        return f"{TLS_SCHEME}{ADDRESS_SEPARATOR}{self.host}{ADDRESS_SEPARATOR}{self.port}"


@dataclass(frozen=True)
class UDSClientAddress:
    """Connect to the Unix domain socket at `path`."""

    path: str

    def __post_init__(self) -> None:
        _check_path(self.path)

    @property
    def value(self) -> str:
        """The address header's value, as it goes on the wire."""
        return f"{UDS_SCHEME}{ADDRESS_SEPARATOR}{self.path}"

    def format(self, msg: Message) -> Message:
        """Make `msg` a HelloRequest to this socket."""
        _prepare(msg, OpCode.HelloRequest)
        msg.thdrs.append(CONNECT_TO_HEADER, self.value)
        return msg

    @classmethod
    def from_message(cls, msg: Message) -> UDSClientAddress:
        """The Unix domain socket in `msg`'s `~connect_to` header.

        Reads a HelloRequest: yours, one the engine gave back (with status
        `uds_path_not_found`, say), or one a server received. Raises
        WrongAddress, saying why, when `msg` is None, has no `~connect_to`
        header, or holds a TCP address there. The status is not looked at:
        check `msg.bhdr.status` for that."""
        return _from_message(cls, msg, CONNECT_TO_HEADER)


DEFAULT_UDS_MODE = 0o600


@dataclass(frozen=True)
class UDSServerAddress:
    """Listen on a Unix domain socket at `path`.

    - `mode`: the socket file's permission bits, set before the listener accepts
        anyone. The default 0o600 lets only processes of the same user (and
        root) connect; 0o660 adds the file's group, 0o666 everyone.
    - `allow_uids`: when given, only processes running as one of these user ids
        may connect; the engine closes any other connection at once, before
        the application hears of it (see docs/security.md).
    """

    path: str
    mode: int = DEFAULT_UDS_MODE
    allow_uids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _check_path(self.path)
        if not isinstance(self.mode, int) or not 0 <= self.mode <= 0o777:
            raise WrongAddress(f"socket file mode {self.mode!r} is not in 0o000..0o777")
        if self.allow_uids is not None:
            uids = tuple(sorted(set(self.allow_uids)))
            if not all(isinstance(uid, int) and uid >= 0 for uid in uids):
                raise WrongAddress(f"allow_uids {self.allow_uids!r}: user ids are integers >= 0")
            object.__setattr__(self, "allow_uids", uids)

    @property
    def value(self) -> str:
        """The address header's value, as it goes on the wire."""
        return f"{UDS_SCHEME}{ADDRESS_SEPARATOR}{self.path}"

    def format(self, msg: Message) -> Message:
        """Make `msg` a WelcomeRequest for this socket."""
        _prepare(msg, OpCode.WelcomeRequest)
        msg.thdrs.append(LISTEN_ON_HEADER, self.value)
        if self.mode != DEFAULT_UDS_MODE:
            msg.thdrs.append(UDS_MODE_HEADER, f"{self.mode:o}")
        if self.allow_uids is not None:
            msg.thdrs.append(ALLOW_UIDS_HEADER, ",".join(map(str, self.allow_uids)) or "none")
        return msg

    @classmethod
    def from_message(cls, msg: Message) -> UDSServerAddress:
        """The Unix domain socket in `msg`'s `~listen_on` header.

        Reads a WelcomeRequest or the WelcomeResponse that answers it. Raises
        WrongAddress, saying why, when `msg` is None, has no `~listen_on`
        header, or holds a TCP address there. The status is not looked at:
        check `msg.bhdr.status` to know whether the listener is up."""
        return _from_message(cls, msg, LISTEN_ON_HEADER)


Address = (
    TCPClientAddress | TCPServerAddress | TLSClientAddress | TLSServerAddress | UDSClientAddress | UDSServerAddress
)
"""Any of the six address classes: what `parse_url()`, `parse_address()` and `parse_address_value()` return."""

_A = TypeVar("_A", TCPClientAddress, TCPServerAddress, UDSClientAddress, UDSServerAddress)

# what a user calls each kind of address, in error messages
_KIND = {
    TCPClientAddress: "a TCP address to connect to",
    TCPServerAddress: "a TCP address to listen on",
    UDSClientAddress: "a Unix domain socket to connect to",
    UDSServerAddress: "a Unix domain socket to listen on",
}


def _from_message(kind: type[_A], msg: Message, header: str) -> _A:
    """The `kind` address in `msg`'s first `header` header (the from_message classmethods)."""
    reader = f"{kind.__name__}.from_message"
    if msg is None:
        raise WrongAddress(f"{reader}: no message (did wait_receive time out?)")
    reuse_port = False
    value: str | None = None
    for name, text in msg.thdrs:
        if name == REUSE_PORT_HEADER:
            reuse_port = text == "1"
        elif value is None and name == header:
            value = text
    op = msg.bhdr.proto.op_code
    if value is None:
        wanted = "a WelcomeRequest or WelcomeResponse" if header == LISTEN_ON_HEADER else "a HelloRequest"
        raise WrongAddress(f"{reader}: this {op.name} has no {header} header (it reads {wanted})")
    address = parse_address_value(value, server=header == LISTEN_ON_HEADER, reuse_port=reuse_port)
    if not isinstance(address, kind):
        raise WrongAddress(f"{reader}: {header}:{value} is {_KIND[type(address)]}, not {_KIND[kind]}")
    return address


def parse_address_value(
    value: str, server: bool, reuse_port: bool = False, options: dict[str, str] | None = None
) -> Address:
    """The address of a `~listen_on` (server=True) or `~connect_to` header value.

    `options` holds the address option headers that came with it
    (`~server_name`, `~uds_mode`, `~allow_uids`). Raises WrongAddress with the
    reason for a malformed value."""
    options = options or {}
    parts = value.split(ADDRESS_SEPARATOR)
    scheme = parts[0]
    if scheme == UDS_SCHEME and len(parts) == 2:
        if not server:
            return UDSClientAddress(parts[1])
        return UDSServerAddress(parts[1], _parse_mode(options), _parse_uids(options))
    if scheme in (TCP_SCHEME, TLS_SCHEME) and len(parts) == 3:
        host, port_text = parts[1], parts[2]
        if not (port_text.isascii() and port_text.isdigit()):  # ASCII only: int() fails on '²', accepts '٣'
            raise WrongAddress(f"address {value!r}: port {port_text!r} is not a number")
        port = int(port_text) if len(port_text) <= 5 else 65536  # int() raises ValueError past 4300 digits
        if scheme == TLS_SCHEME:
            if server:
                return TLSServerAddress(host, port, reuse_port)
            return TLSClientAddress(host, port, options.get(SERVER_NAME_HEADER))
        if server:
            return TCPServerAddress(host, port, reuse_port)
        return TCPClientAddress(host, port)
    raise WrongAddress(f"address {value!r} is neither tcp|HOST|PORT nor uds|PATH nor tls|HOST|PORT")


def _parse_mode(options: dict[str, str]) -> int:
    text = options.get(UDS_MODE_HEADER)
    if text is None:
        return DEFAULT_UDS_MODE
    if not (text.isascii() and text.isdigit() and set(text) <= set("01234567")) or int(text, 8) > 0o7777:
        raise WrongAddress(f"{UDS_MODE_HEADER} {text!r} is not an octal mode")
    return int(text, 8)


def _parse_uids(options: dict[str, str]) -> tuple[int, ...] | None:
    text = options.get(ALLOW_UIDS_HEADER)
    if text is None:
        return None
    if text == "none":
        return ()
    items = [item.strip() for item in text.split(",")]
    # A user id is below 2**32: at most 10 digits (and int() refuses more than 4300).
    if not all(item.isascii() and item.isdigit() and len(item) <= 10 and int(item) < 2**32 for item in items):
        raise WrongAddress(f"{ALLOW_UIDS_HEADER} {text!r} is not a list of user ids")
    return tuple(int(item) for item in items)


_OPTION_HEADERS = (SERVER_NAME_HEADER, UDS_MODE_HEADER, ALLOW_UIDS_HEADER)


def parse_address(msg: Message) -> Address:
    """The address a HelloRequest or WelcomeRequest carries.

    The first `~connect_to` or `~listen_on` header counts. Raises WrongAddress
    when there is none or it is malformed."""
    reuse_port = False
    found: tuple[str, str] | None = None
    options: dict[str, str] = {}
    for name, value in msg.thdrs:
        if name == REUSE_PORT_HEADER:
            reuse_port = value == "1"
        elif found is None and name in (CONNECT_TO_HEADER, LISTEN_ON_HEADER):
            found = (name, value)
        elif name in _OPTION_HEADERS:
            options.setdefault(name, value)
    if found is None:
        raise WrongAddress(f"no {CONNECT_TO_HEADER} or {LISTEN_ON_HEADER} header")
    name, value = found
    return parse_address_value(value, server=name == LISTEN_ON_HEADER, reuse_port=reuse_port, options=options)


_TCP_URL = "tcp://"
_TLS_URL = "tls://"
_UDS_URL = "uds://"


def parse_url(text: str, server: bool) -> Address:
    """The address written as a URL or as a protocol header value.

    Accepted forms:

    - ``tcp://HOST:PORT`` (an IPv6 host in brackets: ``tcp://[::1]:7099``);
      a server may leave HOST empty (``tcp://:7099``, all interfaces) and ask
      for port 0 (any free port); a client needs both.
    - ``tls://HOST:PORT``: the same, over TLS (TLSServerAddress / TLSClientAddress).
    - ``uds:///absolute/path`` or ``uds://relative/path``: a Unix domain socket.
    - ``tcp|HOST|PORT``, ``tls|HOST|PORT`` and ``uds|PATH``: the form the
      ``~listen_on`` and ``~connect_to`` headers use on the wire.

    `server` chooses TCPServerAddress / UDSServerAddress (to listen) or
    TCPClientAddress / UDSClientAddress (to connect). Raises WrongAddress,
    naming the problem, for anything else.
    """
    if not isinstance(text, str):
        raise WrongAddress(f"address {text!r} is not a string")
    raw = text.strip()
    if not raw:
        raise WrongAddress("empty address: use tcp://HOST:PORT or uds:///PATH")
    lowered = raw.lower()
    if lowered.startswith(_UDS_URL):
        path = raw[len(_UDS_URL) :]
        if not path:
            raise WrongAddress(f"address {text!r} has no socket path: use uds:///PATH")
        return UDSServerAddress(path) if server else UDSClientAddress(path)
    if lowered.startswith(_TCP_URL):
        return _parse_tcp_url(text, raw[len(_TCP_URL) :], server)
    if lowered.startswith(_TLS_URL):
        tcp = _parse_tcp_url(text, raw[len(_TLS_URL) :], server)
        if isinstance(tcp, TCPServerAddress):
            return TLSServerAddress(tcp.host, tcp.port)
        return TLSClientAddress(tcp.host, tcp.port)  # type: ignore[union-attr]
    if ADDRESS_SEPARATOR in raw:
        address = parse_address_value(raw, server)
        if isinstance(address, (TCPClientAddress, TLSClientAddress)) and address.port == 0:
            raise WrongAddress(f"address {text!r}: port 0 is only for listening")
        return address
    raise WrongAddress(
        f"address {text!r} is not tcp://HOST:PORT, tls://HOST:PORT, uds:///PATH, tcp|HOST|PORT, tls|HOST|PORT or uds|PATH"
    )


def _parse_tcp_url(text: str, rest: str, server: bool) -> Address:
    if "/" in rest.rstrip("/"):
        raise WrongAddress(f"address {text!r}: a tcp:// address has no path")
    rest = rest.rstrip("/")
    if rest.startswith("["):  # [IPv6]:PORT
        host, bracket, after = rest[1:].partition("]")
        if not bracket or not after.startswith(":"):
            raise WrongAddress(f"address {text!r}: write an IPv6 host as [HOST]:PORT")
        port_text = after[1:]
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise WrongAddress(f"address {text!r} has no port: use tcp://HOST:PORT")
        if ":" in host:
            raise WrongAddress(f"address {text!r}: write an IPv6 host in brackets, tcp://[HOST]:PORT")
    if not (port_text.isascii() and port_text.isdigit()):
        raise WrongAddress(f"address {text!r}: port {port_text!r} is not a number")
    port = int(port_text) if len(port_text) <= 5 else 65536  # int() raises ValueError past 4300 digits
    if port > 65535:
        raise WrongAddress(f"address {text!r}: port {port} is not in 0..65535")
    if server:
        return TCPServerAddress(host, port)
    if not host:
        raise WrongAddress(f"address {text!r} has no host: use tcp://HOST:PORT")
    if port == 0:
        raise WrongAddress(f"address {text!r}: port 0 is only for listening")
    return TCPClientAddress(host, port)
