"""`tofu bench --instructions`: instructions per message, counted by callgrind.

Seconds on a shared machine move by ~25% from one run to the next; the number
of instructions a process executes does not (callgrind counts them within
1%). Each workload of tofu.bench.inprocess runs in one process under
`valgrind --tool=callgrind`, every thread counted, twice: with N = SMALL and
N = LARGE messages. Then

    instructions per message = (I(LARGE) - I(SMALL)) / (LARGE - SMALL)

(per round trip for the round-trip workload), which cancels the start-up,
the connection set-up and the teardown. pyzmq runs the same workloads in the
same harness, so the ratio compares like with like.

    tofu bench --instructions                      # one-way, round trip and fan-in; tofu and pyzmq
    tofu bench --instructions --workloads rtt --impls tofu
    tofu bench --instructions --check              # exit 1 when an instruction target is missed
    python -m tofu.bench.instructions --impl tofu --workload oneway --connections 100

Needs valgrind on PATH (Debian: apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .metrics import BENCH_WORKLOADS

if TYPE_CHECKING:
    from .targets import Scope

SMALL, LARGE = 2000, 12000  # messages in the two runs
QUICK_SMALL, QUICK_LARGE = 500, 2500



class InstructionsError(Exception):
    """valgrind is missing, or a counted run failed."""


@dataclass
class Count:
    """One workload of one implementation, counted at two sizes."""

    impl: str
    workload: str
    connections: int
    small: int
    large: int
    i_small: int
    i_large: int

    @property
    def per_message(self) -> float:
        return (self.i_large - self.i_small) / (self.large - self.small)


def count(impl: str, workload: str, n: int, connections: int = 1) -> int:
    """Instructions (callgrind's Ir, all threads) of one process running the
    in-process `workload` of `impl` ("tofu" or "pyzmq") for `n` messages."""
    if shutil.which("valgrind") is None:
        raise InstructionsError("valgrind is not installed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            "--dump-instr=no",
            "--collect-jumps=no",
            sys.executable,
            "-m",
            "tofu.bench.inprocess",
            impl,
            workload,
            str(n),
            str(connections),
        ]
        env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts in every run
        done = subprocess.run(cmd, check=False, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise InstructionsError(f"{impl} {workload} with N={n} failed (exit {done.returncode}):\n{tail}")
        match = re.search(r"^(?:totals|summary):\s*(\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise InstructionsError(f"callgrind wrote no instruction total for {impl} {workload}")
        return int(match.group(1))


def measure(impl: str, workload: str, small: int, large: int, connections: int = 1) -> Count:
    """`impl`'s `workload` counted with `small` and with `large` messages."""
    if large <= small:
        raise ValueError("the large run needs more messages than the small one")
    return Count(
        impl,
        workload,
        connections,
        small,
        large,
        count(impl, workload, small, connections),
        count(impl, workload, large, connections),
    )


def table(rows: list[tuple[str, dict[str, Count]]], impls: list[str]) -> list[str]:
    """Lines of a table: one row per workload, instructions per message of
    each implementation, and tofu over pyzmq when both ran."""
    ratio = "tofu" in impls and "pyzmq" in impls
    head = f"{'workload':<40}" + "".join(f"{impl:>12}" for impl in impls) + (f"{'tofu/pyzmq':>12}" if ratio else "")
    lines = [head, "─" * len(head)]
    for title, counts in rows:
        line = f"{title:<40}" + "".join(f"{counts[impl].per_message:>12,.0f}" for impl in impls)
        if ratio:
            line += f"{counts['tofu'].per_message / counts['pyzmq'].per_message:>11.2f}x"
        lines.append(line)
    return lines


def run_bench(
    workloads: list[str],
    impls: list[str],
    clients: int,
    small: int,
    large: int,
    json_path: str | None,
    scope: Scope | None = None,
    check: bool = False,
) -> int:
    """`tofu bench --instructions`: count the bench workloads that have an
    in-process form, print the table (and write JSON), then a line per
    instruction target (tofu.bench.targets; `scope`: what the user asked for,
    by default what is counted). 0 on success, 2 when nothing could be
    counted; with `check`, 1 when a target the run was asked for is missed or
    could not be judged."""
    from .targets import Scope, judge_instructions, report_lines
    from .targets import check as check_verdicts

    chosen = [w for w in workloads if w in BENCH_WORKLOADS]
    impls = [i for i in impls if i in ("tofu", "pyzmq")]
    if scope is None:
        scope = Scope(tuple(workloads), ("tcp",), tuple(impls))
    if not chosen or not impls:
        print(
            f"--instructions counts {', '.join(BENCH_WORKLOADS)} of tofu and pyzmq; nothing to count",
            file=sys.stderr,
        )
        return 2
    rows: list[tuple[str, dict[str, Count]]] = []
    ratios: dict[str, float | None] = {}
    try:
        for name in chosen:
            workload, title = BENCH_WORKLOADS[name]
            connections = clients if name == "fanin" else 1
            print(f"counting {name} ...", file=sys.stderr, flush=True)
            counts = {impl: measure(impl, workload, small, large, connections) for impl in impls}
            rows.append((title.format(clients=clients), counts))
            if "tofu" in counts and "pyzmq" in counts:
                ratios[name] = counts["tofu"].per_message / counts["pyzmq"].per_message
    except InstructionsError as exc:
        print(f"tofu bench --instructions: {exc}", file=sys.stderr)
        return 2
    print(f"instructions per message (callgrind, one process, every thread); N = {small} and {large}; {_build()}")
    for line in table(rows, impls):
        print(line)
    verdicts = judge_instructions(ratios, scope, impls)
    for mark, text in report_lines(verdicts):
        print(f"target {mark:<4} {text}")
    status, line = check_verdicts(verdicts)
    if check:
        print(line)
    if json_path:
        doc = [
            {"title": title, **{impl: asdict(c) | {"per_message": c.per_message} for impl, c in counts.items()}}
            for title, counts in rows
        ]
        Path(json_path).write_text(json.dumps(doc, indent=1) + "\n")
    return status if check else 0


def _build() -> str:
    """Which build of tofu the counted processes run."""
    import tofu

    return f"tofu {'compiled' if tofu.COMPILED else 'pure Python'}"


def main(argv: list[str] | None = None) -> int:
    """`python -m tofu.bench.instructions`: one workload, with every knob."""
    parser = argparse.ArgumentParser(prog="python -m tofu.bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=["tofu", "pyzmq", "both"], default="both")
    parser.add_argument("--workload", choices=["oneway", "rtt"], default="oneway")
    parser.add_argument("--small", type=int, default=SMALL, help=f"messages in the short run (default {SMALL})")
    parser.add_argument("--large", type=int, default=LARGE, help=f"messages in the long run (default {LARGE})")
    parser.add_argument(
        "--connections",
        type=int,
        default=1,
        help="one-way: client connections, messages sent round-robin over them (fan-in; default 1)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.large <= args.small:
        parser.error("--large must be greater than --small")
    if args.connections < 1 or (args.connections > 1 and args.workload != "oneway"):
        parser.error("--connections: at least 1, and more than 1 only for --workload oneway")
    impls = ["tofu", "pyzmq"] if args.impl == "both" else [args.impl]
    try:
        counts = {impl: measure(impl, args.workload, args.small, args.large, args.connections) for impl in impls}
    except InstructionsError as exc:
        print(exc, file=sys.stderr)
        return 2
    title = "one-way 64 B" if args.workload == "oneway" else "round trip 64 B (per round trip)"
    if args.connections > 1:
        title += f", {args.connections} connections"
    print(
        f"instructions per message (callgrind, one process, every thread); "
        f"N = {args.small} and {args.large}; {_build()}"
    )
    print(f"{'impl':<8}{'I(small)':>16}{'I(large)':>16}{'per message':>14}")
    for impl, c in counts.items():
        print(f"{impl:<8}{c.i_small:>16,}{c.i_large:>16,}{c.per_message:>14,.0f}")
    if len(counts) == 2:
        print(f"tofu / pyzmq: {counts['tofu'].per_message / counts['pyzmq'].per_message:.2f}x")
    if args.json:
        Path(args.json).write_text(
            json.dumps({i: asdict(c) | {"per_message": c.per_message} for i, c in counts.items()}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
