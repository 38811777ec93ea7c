"""The argument parser of the `tofu` command and its argument types."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import math
from collections.abc import Callable
from types import ModuleType
from typing import NoReturn

from .. import (
    MAX_BODY_LEN,
    Address,
    AmpeError,
    __version__,
    parse_url,
)
from ..conform import command as conform_command
from . import decode, demo, ping, serve
from ._tls import add_ping_tls_flags, add_serve_tls_flags
from .console import CLIError

log = logging.getLogger("tofu.cli")


class UsageError(Exception):
    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, raised instead of printed."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


def _address_arg(server: bool) -> Callable[[str], Address]:
    def convert(text: str) -> Address:
        try:
            return parse_url(text, server)
        except AmpeError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = "address"
    return convert


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    convert.__name__ = "number"
    return convert


def _seconds_arg(zero_ok: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, above 0 (or also 0 with `zero_ok`)."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not (value >= 0 if zero_ok else value > 0) or math.isinf(value):
            what = "zero or a positive" if zero_ok else "a positive"
            raise argparse.ArgumentTypeError(f"{text} is not {what} number of seconds")
        return value

    convert.__name__ = "seconds"
    return convert


_seconds = _seconds_arg(zero_ok=False)
_seconds_or_zero = _seconds_arg(zero_ok=True)


_BENCH = "tofu.bench"


def _bench_module() -> tuple[ModuleType | None, str | None]:
    """`tofu.bench` if it provides the hook, else None; and an import error to report."""
    try:
        if importlib.util.find_spec(_BENCH) is None:
            return None, None
    except (ImportError, ValueError):
        return None, None
    try:
        module = importlib.import_module(_BENCH)
    except Exception as exc:  # noqa: BLE001 (a broken bench module must not break the others)
        return None, f"{type(exc).__name__}: {exc}"
    if callable(getattr(module, "add_arguments", None)) and callable(getattr(module, "run", None)):
        return module, None
    return None, None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `tofu` command, with every subcommand."""
    parser = _Parser(
        prog="tofu",
        description="tofu: asynchronous, message-based, peer-to-peer messaging (wire-compatible with Zig tofu).",
        epilog="ADDRESS: tcp://HOST:PORT, tls://HOST:PORT, uds:///PATH, tcp|HOST|PORT or uds|PATH. "
        "Run 'tofu COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"tofu {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log the engine's activity (-v), with every detail (-vv)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "demo",
        help="play the print-server conversation over loopback",
        description="Play the print-server conversation from the reference README in one process: "
        "a spool server and a RIP worker, each with its own engine, over loopback. Prints a transcript.",
    )
    p.add_argument("--pdl", choices=("PS", "PDF"), default="PS", help="what the worker rasterizes (default PS)")
    p.add_argument("--pages", type=_int_range(1, 10000), default=12, help="pages per job (default 12)")
    p.add_argument("--pages-per-chunk", type=_int_range(1, 15), default=3, help="pages in each PDL request (default 3)")
    p.add_argument("--jobs", type=_int_range(1, 16), default=1, help="jobs, one channel each (default 1)")
    p.add_argument("--uds", action="store_true", help="talk over a temporary Unix domain socket instead of TCP")
    p.add_argument("--timeout", type=_seconds, default=30.0, help="give up after this many seconds (default 30)")
    p.set_defaults(func=demo.run)

    p = sub.add_parser(
        "serve",
        help="run an echo server",
        description="Echo server: answers Request with Response (same headers and body), HelloRequest with "
        "HelloResponse, ByeRequest with ByeResponse, and echoes Signals. Prints 'listening on URL' for each "
        "address (with the real port when PORT is 0). SIGINT or SIGTERM stops it gracefully: it says "
        "ByeRequest to every client and waits for them; a second signal stops it at once.",
    )
    p.add_argument("address", nargs="+", type=_address_arg(server=True), metavar="ADDRESS", help="where to listen")
    p.add_argument(
        "--grace",
        type=_seconds_or_zero,
        default=3.0,
        help="seconds to wait for clients when stopping; 0 stops at once (default 3)",
    )
    p.add_argument(
        "--workers",
        type=_int_range(1, 256),
        default=1,
        metavar="N",
        help="serve from N processes sharing each TCP port (SO_REUSEPORT), each with its own engine; "
        "TCP addresses only (default 1: this process alone)",
    )
    p.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)  # one of --workers N's processes
    add_serve_tls_flags(p)
    p.set_defaults(func=serve.run)

    p = sub.add_parser(
        "ping",
        help="measure round trips to a server",
        description="Connect, send N sequential Requests and time each Response; print min / median / p99 / "
        "max round trip, then close with ByeRequest. Works against 'tofu serve' or any peer that answers "
        "Requests.",
    )
    p.add_argument("address", type=_address_arg(server=False), metavar="ADDRESS", help="where to connect")
    p.add_argument("-n", "--count", type=_int_range(1, 100_000_000), default=10, help="requests (default 10)")
    p.add_argument(
        "-s", "--size", type=_int_range(0, MAX_BODY_LEN), default=64, help="body bytes per request (default 64)"
    )
    p.add_argument(
        "--timeout", type=_seconds, default=5.0, help="seconds to wait for the connection and each reply (default 5)"
    )
    _progress_flags(p)
    add_ping_tls_flags(p)
    p.set_defaults(func=ping.run)

    p = sub.add_parser(
        "decode",
        help="print the frames of a captured byte stream",
        description="Read a raw tofu byte stream (one direction of a connection) and print every frame field "
        "by field. Stops with an error naming the offset where the stream breaks (invalid op code, truncated "
        "frame).",
    )
    p.add_argument("file", nargs="?", default="-", metavar="FILE", help="the stream; '-' or nothing for stdin")
    p.add_argument(
        "--hex", action="store_true", help="the input is hex text (whitespace, 0x, ':' and '#' comments ignored)"
    )
    p.add_argument("--body-bytes", type=_int_range(0, MAX_BODY_LEN), default=64, help="body bytes to show (default 64)")
    _progress_flags(p)
    p.set_defaults(func=decode.run)

    p = sub.add_parser(
        "conform",
        help="check a tofu server against the conformance suite",
        description=conform_command.DESCRIPTION,
    )
    conform_command.add_arguments(p)
    p.set_defaults(func=conform_command.run)

    bench, problem = _bench_module()
    if bench is not None:
        p = sub.add_parser(
            "bench",
            help="benchmarks",
            description=(bench.__doc__ or "Benchmarks.").strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        bench.add_arguments(p)
        p.set_defaults(func=bench.run)
    elif problem is not None:
        p = sub.add_parser("bench", help="benchmarks (unavailable)", description="tofu.bench failed to import.")

        def broken(args: argparse.Namespace) -> int:
            raise CLIError(f"tofu.bench cannot be imported: {problem}")

        p.set_defaults(func=broken)
    return parser


def _progress_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
