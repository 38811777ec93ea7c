"""Addresses as the URLs the service layer shows (and parse_url reads back)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

from ..addresses import (
    Address,
    TCPClientAddress,
    TCPServerAddress,
    TLSClientAddress,
    TLSServerAddress,
    UDSClientAddress,
    UDSServerAddress,
    parse_url,
)

__all__ = ["client_address", "server_addresses", "url_of"]

ADDRESS_TYPES: Final = (TCPClientAddress, TCPServerAddress, UDSClientAddress, UDSServerAddress)


def url_of(address: Address) -> str:
    """`address` as tcp://HOST:PORT, tls://HOST:PORT or uds://PATH (an IPv6
    host in brackets; a TLS client's server_hostname is not in it)."""
    if isinstance(address, (TCPClientAddress, TCPServerAddress)):
        host = f"[{address.host}]" if ":" in address.host else address.host
        scheme = "tls" if isinstance(address, (TLSClientAddress, TLSServerAddress)) else "tcp"
        return f"{scheme}://{host}:{address.port}"
    return f"uds://{address.path}"


def client_address(url: str | Address, server_name: str | None = None) -> Address:
    """The address a client dials: `url` parsed (a tofu.Address as it is),
    with `server_name` as a TLS address's server_hostname."""
    address = parse_url(url, server=False) if isinstance(url, str) else url
    if server_name is None:
        return address
    if not isinstance(address, TLSClientAddress):
        raise ValueError("server_name is for a tls:// address")
    return dataclasses.replace(address, server_hostname=server_name)


def server_addresses(urls: str | Address | Sequence[str | Address]) -> list[Address]:
    """The addresses a server listens on: one URL (or tofu.Address) or a list of them."""
    items = [urls] if isinstance(urls, (str, *ADDRESS_TYPES)) else list(urls)
    if not items:
        raise ValueError("a server needs at least one address to listen on")
    return [parse_url(u, server=True) if isinstance(u, str) else u for u in items]
