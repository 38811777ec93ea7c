"""The TLS options of `tofu serve` and `tofu ping`: the flags, their checks,
and the engine Options they make."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .. import (
    PEER_SUBJECT_HEADER,
    Address,
    Options,
    TLSClientAddress,
    TLSServerAddress,
    WrongAddress,
    client_tls_context,
    server_tls_context,
)
from .console import EXIT_USAGE, CLIError, out, printable

if TYPE_CHECKING:
    import ssl


def add_serve_tls_flags(p: argparse.ArgumentParser) -> None:
    """--cert, --key, --ca of `tofu serve`."""
    g = p.add_argument_group("TLS (for tls:// addresses)")
    g.add_argument(
        "--cert", metavar="FILE", help="PEM file with the server's certificate (and chain); needed for tls://"
    )
    g.add_argument("--key", metavar="FILE", help="PEM file with its private key (omit it when the key is in --cert)")
    g.add_argument(
        "--ca",
        metavar="FILE",
        help="PEM file of the CAs that sign client certificates: given, every client MUST present one (mutual TLS)",
    )


def add_ping_tls_flags(p: argparse.ArgumentParser) -> None:
    """--ca, --cert, --key, --server-name of `tofu ping`."""
    g = p.add_argument_group("TLS (for tls:// addresses)")
    g.add_argument("--ca", metavar="FILE", help="PEM file of the CAs to trust (default: the system's)")
    g.add_argument("--cert", metavar="FILE", help="PEM file with a client certificate, for servers that require one")
    g.add_argument("--key", metavar="FILE", help="PEM file with its private key (omit it when the key is in --cert)")
    g.add_argument(
        "--server-name",
        metavar="NAME",
        help="the name the server's certificate must be valid for (default: the address's host)",
    )


def _usage(prog: str, message: str) -> CLIError:
    return CLIError(f"error: {message} (see '{prog} --help')", EXIT_USAGE)


def _is_tls(address: Address) -> bool:
    return isinstance(address, (TLSServerAddress, TLSClientAddress))


def _load(what: str, make: Callable[..., ssl.SSLContext], *files: str | None) -> ssl.SSLContext:
    """Call make(*files); a file that cannot be read is one clear line."""
    try:
        return make(*files)
    except OSError as exc:  # ssl.SSLError is an OSError too
        names = ", ".join(f for f in files if f)
        raise CLIError(f"cannot load the TLS {what} ({names}): {exc.strerror or exc}") from None


def serve_options(args: argparse.Namespace, addresses: Sequence[Address]) -> Options | None:
    """The engine Options for `tofu serve`'s TLS flags; None without TLS.

    A tls:// address without --cert, or --cert/--key/--ca without a tls://
    address, is a usage error."""
    prog = "tofu serve"
    tls = [a for a in addresses if _is_tls(a)]
    cert, key, ca = getattr(args, "cert", None), getattr(args, "key", None), getattr(args, "ca", None)
    if not tls:
        given = [flag for flag, v in (("--cert", cert), ("--key", key), ("--ca", ca)) if v]
        if given:
            raise _usage(prog, f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} a tls://HOST:PORT address")
        return None
    if not cert:
        raise _usage(prog, "a tls:// address needs --cert FILE (and --key FILE unless the key is in it)")
    ctx = _load("certificate", server_tls_context, cert, key, ca)
    return Options(tls_server_context=ctx)


def ping_target(args: argparse.Namespace) -> tuple[Address, Options | None]:
    """The address `tofu ping` dials (with --server-name) and its engine Options.

    TLS flags with a non-TLS address, or --key without --cert, are usage errors.
    The connect timeout follows --timeout."""
    prog = "tofu ping"
    address: Address = args.address
    ca, cert, key, name = args.ca, args.cert, args.key, args.server_name
    if not _is_tls(address):
        given = [f for f, v in (("--ca", ca), ("--cert", cert), ("--key", key), ("--server-name", name)) if v]
        if given:
            raise _usage(prog, f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} a tls://HOST:PORT address")
        return address, Options(connect_timeout=args.timeout)
    if key and not cert:
        raise _usage(prog, "--key needs --cert")
    if name is not None:
        try:
            address = dataclasses.replace(address, server_hostname=name)
        except WrongAddress as exc:
            raise _usage(prog, str(exc)) from None
    ctx = _load("files", client_tls_context, ca, cert, key)
    return address, Options(connect_timeout=args.timeout, tls_client_context=ctx)


def peer_text(headers: Sequence[tuple[str, str]]) -> str:
    """The text serve adds to a "connected" line: ", peer certificate SUBJECT"
    when the engine verified one (`~peer_subject`), escaped for a terminal;
    "" otherwise."""
    subject = next((v for n, v in headers if n == PEER_SUBJECT_HEADER), None)
    return "" if subject is None else f", peer certificate {printable(subject)}"


class _EngineWarnings(logging.Handler):
    """The engine's warnings as serve's own output lines ("warning: ...")."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            out(f"warning: {printable(record.getMessage())}")
        except Exception:  # noqa: BLE001 (output gone: logging must never raise)
            self.handleError(record)


def show_engine_warnings(options: Options | None, verbose: int) -> logging.Handler | None:
    """With TLS and without -v (which logs them already): print the engine's
    warnings, so a client whose TLS handshake failed (the application never
    hears of it) shows as one line, e.g. "warning: channel 2: dropped an
    incoming connection: TLS handshake failed: peer did not return a
    certificate". Returns the handler to remove (logging.getLogger("tofu"))."""
    if options is None or options.tls_server_context is None or verbose:
        return None
    handler = _EngineWarnings()
    logging.getLogger("tofu").addHandler(handler)
    return handler
