"""tls:// addresses and the Unix domain socket listener's options, as headers and URLs."""

from __future__ import annotations

import pytest
import tofu
from tofu import Message, OpCode, WrongAddress


def test_tls_addresses_as_headers_and_back() -> None:
    server = tofu.TLSServerAddress("127.0.0.1", 7099, reuse_port=True)
    msg = server.format(Message())
    assert msg.bhdr.proto.op_code == OpCode.WelcomeRequest
    assert msg.thdrs.get(tofu.LISTEN_ON_HEADER) == "tls|127.0.0.1|7099"
    assert tofu.parse_address(msg) == server

    client = tofu.TLSClientAddress("10.0.0.1", 7099, server_hostname="tofu.example")
    msg = client.format(Message())
    assert msg.bhdr.proto.op_code == OpCode.HelloRequest
    assert list(msg.thdrs) == [(tofu.CONNECT_TO_HEADER, "tls|10.0.0.1|7099"), (tofu.SERVER_NAME_HEADER, "tofu.example")]
    assert tofu.parse_address(msg) == client
    assert tofu.parse_address(tofu.TLSClientAddress("h", 1).format(Message())) == tofu.TLSClientAddress("h", 1)


def test_tls_is_not_plain_tcp() -> None:
    assert tofu.TLSClientAddress("h", 1) != tofu.TCPClientAddress("h", 1)
    assert tofu.TLSServerAddress("h", 1) != tofu.TCPServerAddress("h", 1)
    assert tofu.parse_address_value("tcp|h|1", server=False) == tofu.TCPClientAddress("h", 1)


@pytest.mark.parametrize(
    ("text", "server", "expected"),
    [
        ("tls://127.0.0.1:7099", False, tofu.TLSClientAddress("127.0.0.1", 7099)),
        ("TLS://[::1]:7099", False, tofu.TLSClientAddress("::1", 7099)),
        ("tls://:0", True, tofu.TLSServerAddress("", 0)),
        ("tls://localhost:7099", True, tofu.TLSServerAddress("localhost", 7099)),
        ("tls|localhost|7099", False, tofu.TLSClientAddress("localhost", 7099)),
        ("tls|localhost|7099", True, tofu.TLSServerAddress("localhost", 7099)),
    ],
)
def test_parse_tls_urls(text: str, server: bool, expected: tofu.Address) -> None:
    assert tofu.parse_url(text, server) == expected


@pytest.mark.parametrize(
    ("text", "server"), [("tls://host", False), ("tls://:7099", False), ("tls://h:0", False), ("tls|h|0", False)]
)
def test_bad_tls_urls(text: str, server: bool) -> None:
    with pytest.raises(WrongAddress):
        tofu.parse_url(text, server)


def test_bad_server_hostname() -> None:
    for name in ("", " ", "a\r\nb", "x:1"):
        with pytest.raises(WrongAddress):
            tofu.TLSClientAddress("h", 1, server_hostname=name)


def test_uds_listener_options_as_headers_and_back() -> None:
    default = tofu.UDSServerAddress("/tmp/x.sock")
    assert default.mode == 0o600 and default.allow_uids is None
    assert list(default.format(Message()).thdrs) == [(tofu.LISTEN_ON_HEADER, "uds|/tmp/x.sock")]
    assert tofu.parse_address(default.format(Message())) == default

    wide = tofu.UDSServerAddress("/tmp/x.sock", mode=0o660, allow_uids=[1000, 0, 1000])
    assert wide.allow_uids == (0, 1000)
    msg = wide.format(Message())
    assert msg.thdrs.get(tofu.UDS_MODE_HEADER) == "660"
    assert msg.thdrs.get(tofu.ALLOW_UIDS_HEADER) == "0,1000"
    assert tofu.parse_address(msg) == wide

    nobody = tofu.UDSServerAddress("/tmp/x.sock", allow_uids=())
    assert tofu.parse_address(nobody.format(Message())) == nobody


@pytest.mark.parametrize("mode", [-1, 0o1000, "600"])
def test_bad_uds_mode(mode: object) -> None:
    with pytest.raises(WrongAddress):
        tofu.UDSServerAddress("/tmp/x.sock", mode=mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("uids", [(-1,), ("0",), (1.5,)])
def test_bad_allow_uids(uids: tuple[object, ...]) -> None:
    with pytest.raises(WrongAddress):
        tofu.UDSServerAddress("/tmp/x.sock", allow_uids=uids)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"), [(tofu.UDS_MODE_HEADER, "9"), (tofu.UDS_MODE_HEADER, "rw"), (tofu.ALLOW_UIDS_HEADER, "0,x")]
)
def test_bad_uds_option_headers(name: str, value: str) -> None:
    msg = tofu.UDSServerAddress("/tmp/x.sock").format(Message())
    msg.thdrs.append(name, value)
    with pytest.raises(WrongAddress):
        tofu.parse_address(msg)


@pytest.mark.parametrize("path", ["\0abstract", "/tmp/a\0b"])
def test_a_uds_path_with_a_nul_byte_is_refused_where_it_is_made(path: str) -> None:
    """An abstract socket name has no file: its mode cannot be set nor its
    stale file removed, so it is refused as an address, before the engine
    would be left with a WelcomeRequest it cannot answer."""
    for cls in (tofu.UDSServerAddress, tofu.UDSClientAddress):
        with pytest.raises(tofu.WrongAddress, match="NUL byte"):
            cls(path)
    with pytest.raises(tofu.WrongAddress, match="NUL byte"):
        tofu.parse_address_value("uds|" + path, server=True)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (tofu.UDS_MODE_HEADER, "17777"),  # past 0o7777
        (tofu.UDS_MODE_HEADER, "7" * 5000),
        (tofu.ALLOW_UIDS_HEADER, "1" * 5000),  # int() would raise ValueError past 4300 digits
        (tofu.ALLOW_UIDS_HEADER, "4294967296"),  # 2**32
    ],
)
def test_uds_option_headers_out_of_range_are_wrong_addresses(header: str, value: str) -> None:
    msg = tofu.UDSServerAddress(tofu.temp_uds_path()).format(Message())
    msg.thdrs.append(header, value)
    with pytest.raises(WrongAddress, match="is not"):
        tofu.parse_address(msg)
