"""Addresses as message headers (docs/protocol.md, docs/concepts.md)."""

from __future__ import annotations

import os
import re

import pytest
import tofu
from hypothesis import given, settings
from hypothesis import strategies as st
from tofu.addresses import parse_url

TIMEOUT = 10.0  # seconds any engine answer may take before the test fails


def formatted(addr) -> tofu.Message:
    return addr.format(tofu.Message())


@pytest.mark.parametrize(
    ("addr", "op_code", "header"),
    [
        (tofu.TCPClientAddress("127.0.0.1", 47413), tofu.OpCode.HelloRequest, ("~connect_to", "tcp|127.0.0.1|47413")),
        (tofu.TCPClientAddress("example.org", 1), tofu.OpCode.HelloRequest, ("~connect_to", "tcp|example.org|1")),
        (tofu.TCPServerAddress("127.0.0.1", 7099), tofu.OpCode.WelcomeRequest, ("~listen_on", "tcp|127.0.0.1|7099")),
        (tofu.TCPServerAddress("", 0), tofu.OpCode.WelcomeRequest, ("~listen_on", "tcp||0")),
        (tofu.TCPServerAddress("::1", 65535), tofu.OpCode.WelcomeRequest, ("~listen_on", "tcp|::1|65535")),
        (tofu.UDSClientAddress("/tmp/t.sock"), tofu.OpCode.HelloRequest, ("~connect_to", "uds|/tmp/t.sock")),
        (tofu.UDSServerAddress("/tmp/t.sock"), tofu.OpCode.WelcomeRequest, ("~listen_on", "uds|/tmp/t.sock")),
    ],
)
def test_format_sets_op_code_and_header(addr, op_code: tofu.OpCode, header: tuple[str, str]) -> None:
    m = tofu.Message()
    m.bhdr.channel_number = 9  # format makes a fresh request of it
    m.bhdr.message_id = 9
    m.bhdr.proto.origin = tofu.OriginFlag.engine
    assert addr.format(m) is m
    assert m.bhdr.proto.op_code is op_code
    assert m.bhdr.proto.origin is tofu.OriginFlag.application
    assert (m.bhdr.channel_number, m.bhdr.message_id, m.bhdr.status) == (0, 0, 0)
    assert list(m.thdrs) == [header]
    assert bytes(m.thdrs) == f"{header[0]}:{header[1]}\r\n".encode()
    assert addr.value == header[1]


def test_connect_to_header_is_the_golden_one() -> None:
    m = formatted(tofu.TCPClientAddress("127.0.0.1", 47413))
    assert bytes(m.thdrs) == b"~connect_to:tcp|127.0.0.1|47413\r\n"


ADDRESSES = [
    tofu.TCPClientAddress("127.0.0.1", 47413),
    tofu.TCPClientAddress("localhost", 0),
    tofu.TCPServerAddress("0.0.0.0", 8080),
    tofu.TCPServerAddress("", 0),
    tofu.TCPServerAddress("127.0.0.1", 8080, reuse_port=True),
    tofu.UDSClientAddress("/tmp/a b/c.sock"),
    tofu.UDSServerAddress("relative.sock"),
]


@pytest.mark.parametrize("addr", ADDRESSES, ids=repr)
def test_parse_address_round_trips(addr) -> None:
    back = tofu.parse_address(formatted(addr))
    assert back == addr and type(back) is type(addr)


@settings(max_examples=100, deadline=None)
@given(
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="|\r\n\x00"), min_size=1, max_size=30
    ).filter(lambda s: s.strip(" \t") == s),
    st.integers(0, 65535),
    st.booleans(),
)
def test_parse_address_round_trips_any_tcp(host: str, port: int, reuse: bool) -> None:
    for addr in (tofu.TCPClientAddress(host, port), tofu.TCPServerAddress(host, port, reuse)):
        assert tofu.parse_address(formatted(addr)) == addr
        # and through the wire
        (m,) = tofu.FrameDecoder().feed(tofu.encode(formatted(addr)))
        assert tofu.parse_address(m) == addr


def test_reuse_port_is_an_explicit_opt_in() -> None:
    plain = formatted(tofu.TCPServerAddress("127.0.0.1", 5000))
    assert [n for n, _ in plain.thdrs] == ["~listen_on"]
    assert tofu.parse_address(plain).reuse_port is False
    shared = formatted(tofu.TCPServerAddress("127.0.0.1", 5000, reuse_port=True))
    assert list(shared.thdrs) == [("~listen_on", "tcp|127.0.0.1|5000"), ("~reuse_port", "1")]
    back = tofu.parse_address(shared)
    assert back.reuse_port is True and back == tofu.TCPServerAddress("127.0.0.1", 5000, True)


def test_temp_uds_path_round_trips() -> None:
    path = tofu.temp_uds_path()
    assert not os.path.exists(path)
    assert len(path.encode()) < 108
    assert tofu.temp_uds_path() != path
    assert tofu.parse_address(formatted(tofu.UDSServerAddress(path))) == tofu.UDSServerAddress(path)


def test_find_free_tcp_port() -> None:
    port = tofu.find_free_tcp_port()
    assert 0 < port <= 65535


def test_parse_address_value_directly() -> None:
    assert tofu.parse_address_value("tcp|h|1", server=False) == tofu.TCPClientAddress("h", 1)
    assert tofu.parse_address_value("tcp|h|1", server=True) == tofu.TCPServerAddress("h", 1)
    assert tofu.parse_address_value("tcp|h|1", server=True, reuse_port=True).reuse_port
    assert tofu.parse_address_value("uds|/p", server=False) == tofu.UDSClientAddress("/p")
    assert tofu.parse_address_value("uds|/p", server=True) == tofu.UDSServerAddress("/p")


def test_first_address_header_counts() -> None:
    m = tofu.Message(tofu.OpCode.HelloRequest)
    m.thdrs.append("x-other", "1")
    m.thdrs.append("~connect_to", "tcp|first|1")
    m.thdrs.append("~connect_to", "tcp|second|2")
    assert tofu.parse_address(m) == tofu.TCPClientAddress("first", 1)


# ---------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("tcp|h", "neither"),
        ("tcp|h|1|2", "neither"),
        ("tcp|h|notaport", "not a number"),
        ("tcp|h|", "not a number"),
        ("tcp|h|-1", "not a number"),
        ("tcp|h|+5", "not a number"),
        ("tcp|h|²", "not a number"),  # str.isdigit() says yes, int() says no
        ("tcp|h|٣", "not a number"),  # Arabic-Indic digit three: not an ASCII port
        ("tcp|h|70000", "70000"),
        ("tcp|h|65536", "65536"),
        ("foo|x", "neither"),
        ("TCP|h|1", "neither"),
        ("", "neither"),
        ("uds|", "empty"),
        ("uds", "neither"),
        ("uds|a|b", "neither"),
    ],
)
@pytest.mark.parametrize("header", ["~connect_to", "~listen_on"])
def test_malformed_address_raises_wrong_address(value: str, reason: str, header: str) -> None:
    with pytest.raises(tofu.WrongAddress, match=reason):
        tofu.parse_address_value(value, server=header == "~listen_on")
    if value:  # an empty value cannot even be a header
        m = tofu.Message(tofu.OpCode.HelloRequest)
        m.thdrs.append(header, value)
        with pytest.raises(tofu.WrongAddress, match=reason) as info:
            tofu.parse_address(m)
        assert info.value.status is tofu.AmpeStatus.wrong_address


def test_client_needs_a_host() -> None:
    with pytest.raises(tofu.WrongAddress, match="host"):
        tofu.parse_address_value("tcp||1", server=False)
    assert tofu.parse_address_value("tcp||1", server=True) == tofu.TCPServerAddress("", 1)  # all interfaces


@pytest.mark.parametrize("headers", [[], [("x-seq", "1")], [("~reuse_port", "1")]])
def test_missing_address_header_raises_wrong_address(headers) -> None:
    m = tofu.Message(tofu.OpCode.HelloRequest)
    for n, v in headers:
        m.thdrs.append(n, v)
    with pytest.raises(tofu.WrongAddress, match="~connect_to"):
        tofu.parse_address(m)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: tofu.TCPClientAddress("", 1), "bad TCP host ''"),
        (lambda: tofu.TCPClientAddress("a|b", 1), "bad TCP host 'a|b'"),
        (lambda: tofu.TCPClientAddress("h", -1), "port -1 is not in 0..65535"),
        (lambda: tofu.TCPClientAddress("h", 65536), "port 65536 is not in 0..65535"),
        (lambda: tofu.TCPClientAddress("h", "80"), "port '80' is not in 0..65535"),
        (lambda: tofu.TCPServerAddress("a|b", 1), "bad TCP host 'a|b'"),
        (lambda: tofu.TCPServerAddress("h", 70000), "port 70000 is not in 0..65535"),
        (lambda: tofu.UDSClientAddress(""), "empty Unix domain socket path"),
        (lambda: tofu.UDSServerAddress(""), "empty Unix domain socket path"),
    ],
)
def test_bad_address_objects_raise_wrong_address(make, reason: str) -> None:
    with pytest.raises(tofu.WrongAddress) as info:
        make()
    assert str(info.value) == reason


# ---------------------------------------------------------------- from_message: the typed accessor


@pytest.mark.parametrize("addr", ADDRESSES, ids=repr)
def test_from_message_reads_back_what_format_wrote(addr) -> None:
    back = type(addr).from_message(formatted(addr))
    assert back == addr and type(back) is type(addr)


def test_from_message_on_a_tcp_listener_gives_the_real_port(rtr: tofu.Reactor) -> None:
    """Port 0 asked for, the WelcomeResponse's address is the bound port: a
    client connecting to it reaches the listener, and the HelloRequest the
    server receives tells the address the client dialled."""
    server, client = rtr.ampe().create(), rtr.ampe().create()
    server.post(tofu.TCPServerAddress("127.0.0.1", 0).format(tofu.Message()))
    welcome = server.wait_receive(TIMEOUT)
    assert welcome is not None and welcome.bhdr.proto.op_code == tofu.OpCode.WelcomeResponse
    assert welcome.bhdr.status == 0
    listening = tofu.TCPServerAddress.from_message(welcome)
    assert type(listening) is tofu.TCPServerAddress and listening.host == "127.0.0.1"
    assert 0 < listening.port <= 65535

    dialled = tofu.TCPClientAddress("127.0.0.1", listening.port)
    client.post(dialled.format(tofu.Message()))
    hello = server.wait_receive(TIMEOUT)
    assert hello is not None and hello.bhdr.proto.op_code == tofu.OpCode.HelloRequest, hello
    assert tofu.TCPClientAddress.from_message(hello) == dialled


def test_from_message_on_a_uds_listener(rtr: tofu.Reactor) -> None:
    path = tofu.temp_uds_path()
    server, client = rtr.ampe().create(), rtr.ampe().create()
    server.post(tofu.UDSServerAddress(path).format(tofu.Message()))
    welcome = server.wait_receive(TIMEOUT)
    assert welcome is not None and welcome.bhdr.status == 0, welcome
    assert tofu.UDSServerAddress.from_message(welcome) == tofu.UDSServerAddress(path)
    with pytest.raises(tofu.WrongAddress, match="Unix domain socket to listen on, not a TCP address to listen on"):
        tofu.TCPServerAddress.from_message(welcome)

    client.post(tofu.UDSClientAddress(path).format(tofu.Message()))
    hello = server.wait_receive(TIMEOUT)
    assert hello is not None and hello.bhdr.proto.op_code == tofu.OpCode.HelloRequest, hello
    assert tofu.UDSClientAddress.from_message(hello) == tofu.UDSClientAddress(path)
    with pytest.raises(tofu.WrongAddress, match="Unix domain socket to connect to, not a TCP address to connect to"):
        tofu.TCPClientAddress.from_message(hello)


def test_from_message_on_a_failed_connect_names_the_address(rtr: tofu.Reactor) -> None:
    """The HelloRequest the engine gives back says where it could not connect."""
    group = rtr.ampe().create()
    path = tofu.temp_uds_path()  # nothing listens there
    group.post(tofu.UDSClientAddress(path).format(tofu.Message()))
    back = group.wait_receive(TIMEOUT)
    assert back is not None and back.is_from_engine() and back.bhdr.status != 0, back
    assert tofu.UDSClientAddress.from_message(back).path == path


@pytest.mark.parametrize(
    ("reader", "addr", "reason"),
    [
        # the other kind of address in the right header
        (tofu.TCPServerAddress, tofu.UDSServerAddress("/x.sock"), "is a Unix domain socket to listen on, not a TCP"),
        (tofu.UDSServerAddress, tofu.TCPServerAddress("h", 1), "is a TCP address to listen on, not a Unix domain"),
        (tofu.TCPClientAddress, tofu.UDSClientAddress("/tmp/x.sock"), "is a Unix domain socket to connect to, not"),
        (tofu.UDSClientAddress, tofu.TCPClientAddress("h", 1), "is a TCP address to connect to, not a Unix domain"),
        # a listening address is not a connecting one, and the other way round
        (tofu.TCPServerAddress, tofu.TCPClientAddress("h", 1), "this HelloRequest has no ~listen_on header"),
        (tofu.UDSServerAddress, tofu.UDSClientAddress("/p"), "this HelloRequest has no ~listen_on header"),
        (tofu.TCPClientAddress, tofu.TCPServerAddress("h", 1), "this WelcomeRequest has no ~connect_to header"),
        (tofu.UDSClientAddress, tofu.UDSServerAddress("/p"), "this WelcomeRequest has no ~connect_to header"),
    ],
)
def test_from_message_rejects_other_kinds(reader, addr, reason: str) -> None:
    with pytest.raises(tofu.WrongAddress, match=reason) as info:
        reader.from_message(formatted(addr))
    assert info.value.status is tofu.AmpeStatus.wrong_address
    assert str(info.value).startswith(f"{reader.__name__}.from_message: ")


@pytest.mark.parametrize(
    "reader", [tofu.TCPClientAddress, tofu.TCPServerAddress, tofu.UDSClientAddress, tofu.UDSServerAddress]
)
def test_from_message_without_an_address(reader) -> None:
    request = tofu.Message(tofu.OpCode.Request)
    request.thdrs.append("x-seq", "1")
    with pytest.raises(tofu.WrongAddress, match="this Request has no ~"):
        reader.from_message(request)
    with pytest.raises(tofu.WrongAddress, match=r"no message \(did wait_receive time out\?\)"):
        reader.from_message(None)


def test_from_message_rejects_a_malformed_value_and_keeps_reuse_port() -> None:
    welcome = tofu.Message(tofu.OpCode.WelcomeResponse)
    welcome.thdrs.append("~listen_on", "tcp|h|notaport")
    with pytest.raises(tofu.WrongAddress, match="not a number"):
        tofu.TCPServerAddress.from_message(welcome)
    shared = tofu.TCPServerAddress("127.0.0.1", 5000, reuse_port=True)
    assert tofu.TCPServerAddress.from_message(formatted(shared)).reuse_port is True


@pytest.mark.parametrize("path", ["a|b", "a\rb", "a\nb", "\r", "/tmp/x.sock\r"])
@pytest.mark.parametrize("cls", [tofu.UDSClientAddress, tofu.UDSServerAddress])
def test_uds_path_with_a_separator_cr_or_lf_is_refused(cls, path: str) -> None:
    """Any of them would break the header line or its `uds|PATH` value."""
    with pytest.raises(tofu.WrongAddress, match=re.escape(f"Unix domain socket path {path!r} contains '|', CR or LF")):
        cls(path)


def test_tcp_ports_0_and_65535_are_the_bounds() -> None:
    for port in (0, 65535):
        assert tofu.TCPServerAddress("h", port).port == port
    assert tofu.TCPClientAddress("h", 65535).port == 65535


# ---------------------------------------------------------------- parse_url boundaries


@pytest.mark.parametrize("server", [False, True])
def test_parse_url_port_65535_is_the_last(server: bool) -> None:
    assert parse_url("tcp://h:65535", server).port == 65535
    assert parse_url("tcp://[::1]:65535", server).port == 65535
    with pytest.raises(tofu.WrongAddress, match=re.escape("address 'tcp://h:65536': port 65536 is not in 0..65535")):
        parse_url("tcp://h:65536", server)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty address: use tcp://HOST:PORT or uds:///PATH"),
        ("  ", "empty address: use tcp://HOST:PORT or uds:///PATH"),
        ("tcp://h:1X", "address 'tcp://h:1X': port '1X' is not a number"),
        ("tcp://h:1/X", "address 'tcp://h:1/X': a tcp:// address has no path"),
        ("tcp://h:1X/", "address 'tcp://h:1X/': port '1X' is not a number"),
        ("uds://", "address 'uds://' has no socket path: use uds:///PATH"),
    ],
)
def test_parse_url_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(tofu.WrongAddress) as info:
        parse_url(text, True)
    assert str(info.value) == reason


def test_parse_url_needs_a_string() -> None:
    with pytest.raises(tofu.WrongAddress) as info:
        parse_url(7099, True)  # type: ignore[arg-type]
    assert str(info.value) == "address 7099 is not a string"


@pytest.mark.parametrize("text", ["tcp://[a]b]:1", "tcp://[::1]]:1"])
def test_parse_url_an_ipv6_host_ends_at_its_first_bracket(text: str) -> None:
    with pytest.raises(tofu.WrongAddress, match=re.escape(f"address {text!r}: write an IPv6 host as [HOST]:PORT")):
        parse_url(text, False)
