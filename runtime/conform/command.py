"""`tofu conform`: the arguments, the run, the exit status.

    tofu conform tcp://127.0.0.1:7099
    tofu conform uds:///tmp/tofu.sock --cases 'framing,5.*' --json out.json --html out.html
    tofu conform --list [--markdown]

Exit status: 0 when every must case passed, 1 when one failed (or the target
cannot be reached, or answers a HelloRequest with nothing at all: then no case
runs), 2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from tofu.generated import OpCode

from .casespec import Level
from .catalogue import catalogue, select
from .probe import Conn, ProbeError, ProbeTimeout, Target, TargetError, TLSOptions, frame, hello_headers, parse_target
from .report import LiveReport, catalogue_markdown, catalogue_table, dump_json, summary_lines, to_html, to_json
from .runner import Outcome, run_cases

__all__ = [
    "DESCRIPTION",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_arguments",
    "build_parser",
    "main",
    "run",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DESCRIPTION = (
    "Black-box conformance suite for a tofu peer: connects to the server under test over raw sockets and checks, "
    "case by case, the handshake, framing, streams, close, what the channel state machine refuses (a case per "
    "state and op code, from the spec's table), robustness to bad input and limits. The server must answer "
    "HelloRequest with HelloResponse, echo each Request as a Response (same message id, text headers, body and "
    "more flag) and answer ByeRequest with ByeResponse ('tofu serve' does). Levels: must (the protocol "
    "requires it), should (robustness the protocol leaves open), info (recorded only). Exit status 0 only when "
    "every must case passes."
)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0 and at most 3600")
    return value


def _preflight(target: Target, timeout: float) -> str | None:
    """None when the target accepts a connection and answers a HelloRequest
    with anything at all (a frame or a close); else what is wrong. Whether
    the answer is right is for the cases to say."""
    try:
        conn = Conn(target, timeout)
    except OSError as exc:  # ssl.SSLError (a failed TLS handshake) too
        return f"cannot connect: {exc.strerror or exc}"
    with conn:
        try:
            conn.send(frame(OpCode.HelloRequest, 1, hello_headers(target)))
            conn.recv_frames(1)
        except ProbeTimeout:
            return f"no answer to a HelloRequest within {timeout:g} s (is it a tofu server?)"
        except ProbeError:
            if conn.tls_error is not None:  # e.g. the server requires a client certificate
                return f"TLS: the server ended the connection: {conn.tls_error}"
            # closed, or bytes that are not frames: the cases will show it
    return None


def build_parser(prog: str = "tofu conform") -> argparse.ArgumentParser:
    """The parser of the `tofu conform` arguments."""
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the `tofu conform` arguments to `p` (the `tofu` command's subparser, or a parser of its own)."""
    p.add_argument(
        "target",
        nargs="?",
        metavar="URL",
        help="the server under test: tcp://HOST:PORT, tls://HOST:PORT or uds:///PATH",
    )
    p.add_argument("--list", action="store_true", help="print the catalogue of cases and exit")
    p.add_argument("--markdown", action="store_true", help="with --list: print it as a Markdown table")
    p.add_argument(
        "--cases",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only cases whose id or group matches the glob (repeatable, or comma-separated: '1.*,close')",
    )
    p.add_argument("--timeout", type=_seconds, default=5.0, help="seconds to wait for each answer (default 5)")
    p.add_argument(
        "--idle", type=_seconds, default=3.0, help="seconds a silent connection is watched (info cases; default 3)"
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    p.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--quiet", action="store_true", help="no table, only the summary lines")
    tls = p.add_argument_group("TLS (for tls:// targets)")
    tls.add_argument("--ca", metavar="FILE", help="CA certificates to verify the server with (default: the system's)")
    tls.add_argument("--cert", metavar="FILE", help="client certificate")
    tls.add_argument("--key", metavar="FILE", help="client private key")


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """Run `tofu conform` with `argv` (the arguments after `conform`;
    default sys.argv[1:]); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run(args, console)


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    """Run the suite as the parsed `args` say; return the exit status."""
    prog = "tofu conform"
    console = console or Console()
    cases = select(catalogue(), args.cases)
    if args.cases and not cases:
        print(f"{prog}: error: no case matches {', '.join(args.cases)} (see --list)", file=sys.stderr)
        return EXIT_USAGE
    if args.list:
        if args.markdown:
            sys.stdout.write(catalogue_markdown(cases))
        else:
            console.print(catalogue_table(cases))
        return EXIT_OK
    if not args.target:
        print(f"{prog}: error: give the URL of the server under test (or --list)", file=sys.stderr)
        return EXIT_USAGE
    try:
        target = parse_target(args.target, TLSOptions(args.ca, args.cert, args.key))
    except TargetError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problem = _preflight(target, args.timeout)
    if problem is not None:  # one clear line instead of every case failing, each after a full wait
        print(f"{prog}: {args.target}: {problem}", file=sys.stderr)
        return EXIT_FAILED

    started, t0 = time.time(), time.monotonic()
    title = f"tofu conform {args.target}"
    try:
        if args.quiet:
            results = run_cases(cases, target, args.timeout, args.idle)
        else:
            with LiveReport(console, title) as live:
                results = run_cases(cases, target, args.timeout, args.idle, live.add, live.starting)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    seconds = time.monotonic() - t0
    for line in summary_lines(results):
        console.print(line, highlight=False)
    if args.json:
        args.json.write_text(dump_json(to_json(results, args.target, started, seconds)), encoding="utf-8")
    if args.html:
        args.html.write_text(to_html(results, args.target, started, seconds), encoding="utf-8")
    failed = any(r.outcome is Outcome.failed and r.level is Level.must for r in results)
    return EXIT_FAILED if failed else EXIT_OK
