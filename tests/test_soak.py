"""The soak (benchmarks/soak.py) runs and reports what it promises, in a few seconds.

Nothing here asserts a timing or a memory figure (the soak itself is run for
minutes by hand): only that every workload made progress, the table and the
per-phase summary are printed, and nothing was left behind (exit status 0).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def test_a_short_soak_runs_clean() -> None:
    cmd = [sys.executable, str(SOAK), "--seconds", "4", "--interval", "1", "--never-reader-from", "0.45"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert len(rows) == 4, out
    phases = [row[1] for row in rows]
    assert phases == ["mixed", "mixed", "+never", "+never"], out
    for column, name in [(5, "rr"), (6, "stream"), (7, "churn"), (8, "slow")]:
        assert sum(int(row[column]) for row in rows) > 0, f"{name} made no progress:\n{out}"
    assert int(rows[-1][9]) > 0, f"the never-reading peer wrote nothing:\n{out}"
    assert "phase  mixed:" in out and "phase +never:" in out, out
    assert "after both engines stopped" in out, out
