"""tofu bench --instructions: the in-process workloads it counts, and the
count itself (callgrind), tofu against pyzmq in one harness."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from tofu.bench.instructions import Count, table


@pytest.mark.parametrize(
    ("impl", "workload", "n", "connections"),
    [("tofu", "oneway", 300, 3), ("tofu", "rtt", 50, 1), ("pyzmq", "oneway", 300, 2), ("pyzmq", "rtt", 50, 1)],
)
def test_each_in_process_workload_runs_to_the_end(impl, workload, n, connections):
    done = subprocess.run(
        [sys.executable, "-m", "tofu.bench.inprocess", impl, workload, str(n), str(connections)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_table_gives_per_message_counts_and_the_ratio():
    rows = [
        (
            "one-way 64 B",
            {
                "tofu": Count("tofu", "oneway", 1, 100, 600, 1_000_000, 11_000_000),
                "pyzmq": Count("pyzmq", "oneway", 1, 100, 600, 500_000, 2_500_000),
            },
        )
    ]
    lines = table(rows, ["tofu", "pyzmq"])
    assert lines[0].split() == ["workload", "tofu", "pyzmq", "tofu/pyzmq"]
    assert lines[2].split() == ["one-way", "64", "B", "20,000", "4,000", "5.00x"]


@pytest.mark.valgrind
def test_bench_instructions_counts_tofu_and_pyzmq_with_callgrind(tmp_path):
    out = tmp_path / "counts.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tofu.bench",
            "--instructions",
            "--workloads",
            "rtt",
            "--impls",
            "tofu,pyzmq",
            "--messages",
            "240",
            "--json",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "N = 40 and 240" in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("round trip"))
    tofu, pyzmq, ratio = re.findall(r"[\d,.]+x?", row.split(")", 1)[1])
    assert int(tofu.replace(",", "")) > 0 and int(pyzmq.replace(",", "")) > 0
    assert ratio.endswith("x")
    assert '"per_message"' in out.read_text()
