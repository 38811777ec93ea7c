"""Fuzz target: address parsing, from a header value, a URL or a whole header block.

The input, decoded as the engine decodes text headers (UTF-8 with
surrogateescape, so every byte string is some str), is given to
`parse_address_value` and `parse_url`, as a server and as a client, and the raw
bytes are given to `parse_address` as a message's text headers. Seeded with
the addresses of the captured Zig session and the documented URL forms.

Invariants:
- `parse_address_value` and `parse_url` raise only WrongAddress;
  `parse_address` raises only AmpeError subclasses (WrongAddress, or
  InvalidMessage for a malformed header line);
- an address that parsed formats into a message that parses back to the
  same address (the wire can carry it) -- unless formatting refuses it with an
  AmpeError (a host with CR or LF cannot go into a header);
- a URL that parsed parses again, from its header value, to the same address.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import GOLDEN, main

if __name__ == "__main__" and importlib.util.find_spec("atheris"):  # instrument for coverage, not when imported
    import atheris

    with atheris.instrument_imports(include=["tofu"]):
        import tofu
        import tofu.addresses
        import tofu.message
else:
    import tofu

from tofu import AmpeError, Message, WrongAddress, parse_address, parse_address_value, parse_url


def _round_trip(address: tofu.Address) -> None:
    if address.value != address.value.strip(" \t"):
        return  # header values are trimmed on the wire: outer blanks cannot travel
    try:
        msg = address.format(Message())
    except AmpeError:
        return  # refused to build a header it could not write: documented
    back = parse_address(msg)
    assert back == address, f"{address!r} formats as {bytes(msg.thdrs)!r}, which parses as {back!r}"


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    for server in (False, True):
        try:
            address = parse_address_value(text, server)
        except WrongAddress:
            pass
        else:
            _round_trip(address)
        try:
            address = parse_url(text, server)
        except WrongAddress:
            pass
        else:
            _round_trip(address)
            again = parse_url(address.value, server)
            assert again == address or address.value != address.value.strip(), (text, address, again)
    msg = Message()
    msg.thdrs._buf[:] = data
    try:
        parse_address(msg)
    except AmpeError:
        pass


def seeds() -> list[bytes]:
    """Addresses the captured session carries, and one of each documented form."""
    found = []
    for path in sorted(GOLDEN.glob("*.bin")):
        for msg in tofu.FrameDecoder().feed(path.read_bytes()):
            for _, value in msg.thdrs:
                found.append(value.encode("utf-8", "surrogateescape"))
            if msg.thdrs:
                found.append(bytes(msg.thdrs))
    forms = [
        b"tcp://127.0.0.1:7099",
        b"tcp://[::1]:7099",
        b"tcp://:0",
        b"uds:///tmp/x.sock",
        b"uds|/tmp/x",
        b"tcp|localhost|80",
        b"~listen_on:tcp|0.0.0.0|0\r\n~reuse_port:1\r\n",
    ]
    return [*found, *forms]


if __name__ == "__main__":
    main(test_one_input, seeds)
