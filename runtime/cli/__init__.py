"""The `tofu` command: try the engine, serve, ping, decode captured bytes.

    tofu demo                         the print-server conversation, over loopback
    tofu serve tcp://127.0.0.1:7099   an echo server (Ctrl-C stops it gracefully)
    tofu serve tcp://:7099 --workers 4   four echo-server processes sharing the port
    tofu ping  tcp://127.0.0.1:7099   round-trip times against a server
    tofu decode capture.bin           every frame of a byte stream, field by field

ADDRESS is `tcp://HOST:PORT`, `tls://HOST:PORT` (with `--cert`/`--ca` and
friends), `uds:///PATH`, or the protocol's own `tcp|HOST|PORT` / `uds|PATH`
(see `tofu.addresses.parse_url`). Every error is
one line on stderr and a non-zero exit status: 1 for a failure, 2 for a usage
error, 130 for Ctrl-C. `python -m tofu` is the same command.

If a module `tofu.bench` exists with `add_arguments(parser)` and
`run(args) -> int`, it becomes the `tofu bench` subcommand.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from .. import AmpeError, ShutdownStarted
from ._parser import UsageError, build_parser
from .console import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CLIError
from .session import format_url

log = logging.getLogger("tofu.cli")

__all__ = ["CLIError", "build_parser", "format_url", "main"]


class _EngineActivity(logging.Filter):
    """With -v: INFO and above from everyone, and the engine's own activity
    (channels listening, connecting, accepted, closed), which the engine logs
    on the `tofu` logger at DEBUG. Per-message detail needs -vv."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO or record.name == "tofu"


def _configure_logging(verbosity: int) -> None:
    """-v: the engine's activity and INFO; -vv: everything at DEBUG."""
    root = logging.getLogger()
    handler: logging.Handler | None = None
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        root.addHandler(handler)
    if verbosity >= 2:
        root.setLevel(logging.DEBUG)
        return
    root.setLevel(logging.INFO)
    logging.getLogger("tofu").setLevel(logging.DEBUG)
    if handler is not None:  # a host's own handlers (tests, an embedding program) are left alone
        handler.addFilter(_EngineActivity())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `tofu` command with `argv` (default: sys.argv[1:]); return the exit status."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"{exc.prog}: error: {exc} (see '{exc.prog} --help')", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    except KeyboardInterrupt:
        print("tofu: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED

    prog = f"tofu {args.command}"
    if args.verbose:
        _configure_logging(args.verbose)
    try:
        return int(args.func(args))
    except CLIError as exc:
        _error(prog, str(exc))
        return exc.code
    except KeyboardInterrupt:
        _error(prog, "interrupted")
        return EXIT_INTERRUPTED
    except ShutdownStarted:
        _error(prog, "stopped: the engine shut down")
        return EXIT_FAILURE
    except AmpeError as exc:
        _error(prog, f"{type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader of our output went away (`tofu decode x | head`): stop quietly.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_FAILURE
    except OSError as exc:
        _error(prog, exc.strerror or str(exc))
        return EXIT_FAILURE
    except Exception as exc:  # a bug: still one line, the traceback only with -vv
        log.debug("internal error", exc_info=True)
        _error(prog, f"internal error: {type(exc).__name__}: {exc} (run with -vv for the traceback)")
        return EXIT_FAILURE


def _error(prog: str, message: str) -> None:
    try:
        print(f"{prog}: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
