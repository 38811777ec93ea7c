"""Every ```python block of docs/security.md runs as a complete program."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_block_runs(index: int, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]], check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, f"block {index + 1} of {DOC.name} failed:\n{proc.stderr}"
    assert proc.stdout.strip(), "each example prints what it shows"
