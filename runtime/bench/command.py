"""`tofu bench` and `python -m tofu.bench`: the options and the run."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import time
from typing import Any

from ._process import raise_nofile_limit
from .child import child_main
from .metrics import TARGETS, figures
from .plot import PlotError, check_plot_target, write_plot
from .report import WIDTH, render, say, trial_warnings
from .shared_port import run_shared_trial
from .tls_certs import make_certificates
from .trials import fresh_address, plan, run_trial
from .workloads import IMPLS, MULTI_PROC_IMPLS, MULTI_PROC_TRANSPORTS, TRANSPORTS, WORKLOADS
from .zmq_peer import have_pyzmq


def _split(value: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    items = [x.strip() for x in value.split(",") if x.strip()]
    if items == ["all"]:
        return list(allowed)
    bad = [x for x in items if x not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


IDLE_CONNECTIONS = 1000
QUICK_IDLE_CONNECTIONS = 250
PYZMQ_SNDHWM = 1000  # zmq.SNDHWM's default: pyzmq blocks a sender past this many queued messages


def _tofu_options(text: str) -> dict[str, int | bool]:
    """`k=v,k=v` -> keyword arguments of tofu.Options (checked here, in the parent).

    Every value is an integer; a yes/no field (direct_send, direct_receive) takes 0 or 1."""
    import tofu

    fields = {f.name: f for f in dataclasses.fields(tofu.Options)}
    out: dict[str, int | bool] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, eq, value = item.partition("=")
        field = fields.get(key.strip())
        if not eq or field is None:
            raise SystemExit(f"--tofu-options: {item!r} is not NAME=INT with NAME in {', '.join(sorted(fields))}")
        try:
            number = int(value)
        except ValueError:
            raise SystemExit(f"--tofu-options: {item!r}: {value!r} is not an integer") from None
        # A compiled Options takes only a bool for a bool field.
        out[field.name] = bool(number) if field.type in ("bool", bool) else number
    checked: dict[str, Any] = dict(out)
    tofu.Options(**checked)  # refuses what Options refuses
    return out


def _tls_files(transports: list[str], notes: list[str]) -> dict[str, str] | None:
    """With the tls transport: certificates in a temporary directory (removed at
    exit) for every tls trial; without trustme, tls is dropped with a note."""
    if "tls" not in transports:
        return None
    import atexit
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(prefix="tofu-bench-tls-")
    atexit.register(shutil.rmtree, directory, True)
    try:
        files = make_certificates(directory)
    except ImportError:
        transports.remove("tls")
        notes.append("trustme is absent (pip install 'tofu-messaging[bench]'): no tls trials")
        return None
    notes.append(
        "tls: tofu over TLS, and the floor over blocking ssl sockets (one-connection workloads); "
        "trustme certificates, the server's only; pyzmq has no TLS (n/a)"
    )
    return files


def _count_instructions(args: argparse.Namespace) -> int:
    """`tofu bench --instructions` (see tofu.bench.instructions)."""
    from .instructions import LARGE, QUICK_LARGE, QUICK_SMALL, SMALL, run_bench
    from .targets import Scope

    if args.messages:
        small, large = max(args.messages // 6, 1), args.messages
    else:
        small, large = (QUICK_SMALL, QUICK_LARGE) if args.quick else (SMALL, LARGE)
    impls = _split(args.impls, IMPLS, "implementation")
    scope = Scope(tuple(args.workload_list), ("tcp",), tuple(impls))
    if "pyzmq" in impls and have_pyzmq() is None:
        impls.remove("pyzmq")
        print("pyzmq is absent (pip install 'tofu-messaging[bench]'): tofu only", file=sys.stderr)
    return run_bench(args.workload_list, impls, args.clients, small, large, args.json, scope=scope, check=args.check)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `tofu bench` (also used by `python -m tofu.bench`)."""
    parser.add_argument(
        "--quick", action="store_true", help="a short run: few messages per workload, one run each (under a minute)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per figure; the median is reported (default 3, 1 with --quick)",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=0,
        metavar="N",
        help="measured messages (requests for rtt/pipeline) per run of every workload, overriding the defaults",
    )
    parser.add_argument(
        "--workloads",
        default="all",
        help=f"comma-separated, or all (default): {','.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--transports",
        default="tcp,uds",
        help="comma-separated: tcp,uds,tls (default tcp,uds); tls is TLS on loopback TCP for tofu and the "
        "floor (certificates made with trustme; pyzmq has no TLS)",
    )
    parser.add_argument("--impls", default="tofu,pyzmq,floor", help="comma-separated: tofu,pyzmq,floor")
    parser.add_argument("--clients", type=int, default=100, help="fan-in: client connections (default 100)")
    parser.add_argument(
        "--idle",
        type=int,
        default=None,
        help=f"idle connections in the memory workload (default {IDLE_CONNECTIONS}, {QUICK_IDLE_CONNECTIONS} with --quick)",
    )
    parser.add_argument(
        "--window", type=int, default=64, help="outstanding requests in the pipeline workload (default 64)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a trial is killed (default 120)")
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="run a failed trial again up to this many times (every failure is still reported; default 2)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=5.0,
        help="seconds without progress after which a trial counts as stalled (default 5)",
    )
    parser.add_argument(
        "--tofu-options",
        default=f"max_unsent_msgs={PYZMQ_SNDHWM}",
        metavar="K=V,...",
        help="tofu.Options for the tofu processes, e.g. max_pool_msgs=4096,max_queued_msgs=8192. Default: "
        f"max_unsent_msgs={PYZMQ_SNDHWM}, a send window as large as pyzmq's default send high-water mark, "
        "so that both senders wait instead of queueing without bound; '' runs tofu's own defaults",
    )
    parser.add_argument("--json", metavar="FILE", help="write the raw figures and every run as JSON")
    parser.add_argument(
        "--plot",
        metavar="FILE",
        help="draw the figures, tofu, pyzmq and the floor side by side, to FILE (.svg or .png; needs matplotlib)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--check",
        action="store_true",
        help="judge the targets (benchmarks/README.md): exit 1 when one is missed, or when one the run was "
        "asked for could not be judged (pyzmq absent, its trials failed). Targets whose workload, transport "
        "or implementation --workloads, --transports or --impls leave out are not judged and do not fail it. "
        "With --instructions: the instruction-count targets",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per message with callgrind instead of timing (needs valgrind): "
        "oneway-64, rtt and fanin of tofu and pyzmq, each in one process; a figure that does not "
        "wobble with the machine's load",
    )


def run(args: argparse.Namespace) -> int:
    """Run the bench as `args` says; print the table; 0 when every trial ran
    (and, with --check, every target the run was asked for was met)."""
    # Imported here, as instructions is: `python -m tofu.bench.targets` must
    # not find the module already imported by the package.
    from .targets import Scope, check, judge_timed, report_lines

    args.workload_list = _split(args.workloads, list(WORKLOADS), "workload")
    if args.instructions:
        return _count_instructions(args)
    args.transport_list = _split(args.transports, TRANSPORTS, "transport")
    impls = _split(args.impls, IMPLS, "implementation")
    scope = Scope(tuple(args.workload_list), tuple(args.transport_list), tuple(impls))  # as asked
    zmq_version = have_pyzmq()
    notes = []
    if "pyzmq" in impls and zmq_version is None:
        impls.remove("pyzmq")
        notes.append("pyzmq is absent (pip install 'tofu-messaging[bench]'): only tofu and floor run")
    args.impl_list = impls
    args.tls_files = _tls_files(args.transport_list, notes)
    args.tofu_options_dict = _tofu_options(args.tofu_options)
    if args.tofu_options_dict:
        notes.append(f"tofu runs with Options({args.tofu_options})")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.idle is None:
        args.idle = QUICK_IDLE_CONNECTIONS if args.quick else IDLE_CONNECTIONS
    if args.plot:
        try:
            check_plot_target(args.plot)
        except PlotError as exc:
            raise SystemExit(str(exc)) from None
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    raise_nofile_limit()
    multi = [w for w in args.workload_list if WORKLOADS[w].procs > 1]
    if multi:
        notes.append(
            f"{', '.join(multi)}: N server processes share one port (SO_REUSEPORT) and N client processes "
            f"send to it; {' and '.join(MULTI_PROC_IMPLS)} over {' and '.join(MULTI_PROC_TRANSPORTS)} only "
            "(pyzmq's PULL cannot share a port, a Unix socket path cannot be shared, the floor has no such variant)"
        )
    face = [w for w in args.workload_list if WORKLOADS[w].face]
    if face:
        notes.append(
            f"{', '.join(face)}: tofu only, requests through the service layer (tofu.Client.request from "
            f"{args.window} threads, tofu.aio.Client.request from {args.window} tasks) to the pipeline workload's "
            "echo server; each is compared with the engine alone"
        )
    trials = plan(args)

    console = None
    try:
        from rich.console import Console

        console = Console(width=WIDTH if not sys.stdout.isatty() else min(WIDTH, Console().width))
    except ImportError:
        pass
    for note in notes:
        say(console, note)

    import tofu  # the parent needs it only for ports and paths

    progress_ctx: Any = contextlib.nullcontext()
    task = None
    if console is not None and not args.no_progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress_ctx = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
    started = time.monotonic()
    load_before = os.getloadavg()
    errors: list[str] = []
    with progress_ctx as progress:
        if progress is not None:
            task = progress.add_task("bench", total=len(trials))
        for i, trial in enumerate(trials):
            desc = f"{trial.workload.name} {trial.transport} {trial.impl} run {trial.run + 1}"
            if progress is not None:
                progress.update(task, description=desc)
            elif not args.no_progress:
                print(f"[{i + 1}/{len(trials)}] {desc}", file=sys.stderr, flush=True)
            for attempt in range(1 + max(0, args.retries)):
                trial.error = None
                trial.spec["address"] = fresh_address(trial.transport)
                (run_shared_trial if trial.spec["procs"] > 1 else run_trial)(trial)
                if not trial.error:
                    break
                trial.failures.append(trial.error)
                errors.append(f"{desc} (attempt {attempt + 1}): {trial.error}")
            if progress is not None:
                progress.advance(task)

    meta = {
        "tofu": tofu.__version__,
        "python": f"Python {platform.python_version()}",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pyzmq": zmq_version,
        "repeat": args.repeat,
        "quick": args.quick,
        "impls": impls,
        "transports": args.transport_list,
        "workloads": {
            w: {
                "size": t.spec["size"],
                "count": {x.impl: x.spec["count"] for x in trials if x.workload.name == w},
                "warmup": {x.impl: x.spec["warmup"] for x in trials if x.workload.name == w},
            }
            for w, t in {t.workload.name: t for t in trials}.items()
        },
        "clients": args.clients,
        "idle": args.idle,
        "window": args.window,
        "seconds": round(time.monotonic() - started, 1),
        # Other processes on the machine skew every figure: the 1-minute load
        # average before and after the run says how quiet it was.
        "loadavg_before": round(load_before[0], 2),
        "loadavg_after": round(os.getloadavg()[0], 2),
        "notes": notes,
        "tofu_options": args.tofu_options_dict,
        "failed_attempts": sum(len(t.failures) for t in trials),
        "failed_trials": sum(1 for t in trials if t.error),
    }
    warnings = trial_warnings(trials)
    meta["warnings"] = warnings
    figs = figures(trials, impls)
    verdicts = judge_timed(figs, scope, impls)
    render(figs, impls, meta, errors, console, report_lines(verdicts))
    for w in warnings:
        say(console, f"warning: {w}")
    check_status, check_line = check(verdicts)
    if args.check:
        say(console, check_line, "green" if check_status == 0 else "red")
    if args.plot:
        try:
            write_plot(figs, impls, args.plot, title=f"tofu bench, median of {args.repeat} run(s), loopback")
        except PlotError as exc:
            say(console, f"error {exc}")
        else:
            say(console, f"plot written to {args.plot}")
    if args.json:
        doc = {
            "meta": meta,
            "figures": figs,
            "targets": [dataclasses.asdict(t) | {"text": t.text} for t in TARGETS],
            "verdicts": [v.as_dict() for v in verdicts],
            "trials": [
                {
                    "workload": t.workload.name,
                    "impl": t.impl,
                    "transport": t.transport,
                    "run": t.run,
                    "spec": t.spec,
                    "server": t.server,
                    "client": {k: v for k, v in t.client.items() if k != "latencies_us"},
                    "error": t.error,
                    "failed_attempts": t.failures,
                    "wall_seconds": round(t.wall, 2),
                }
                for t in trials
            ],
            "errors": errors,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    if any(t.error for t in trials):
        return 1
    return check_status if args.check else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tofu.bench",
        description="Benchmark tofu against pyzmq and a plain-socket floor, over loopback TCP and UDS.",
    )
    add_arguments(parser)
    # Internal: how the bench starts its server and client processes.
    parser.add_argument("--role", choices=("server", "client"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        return child_main(args.role, json.loads(args.spec))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
