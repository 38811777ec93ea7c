"""The README says true things: the quickstart prints what the README shows,
and the sentence about testing in an environment of your own holds (the
`tshark` marker deselects exactly the tests that need tshark, and .ci/run
runs everything). Every code block also runs in test_docs.py; the install
command runs in test_install.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TIMEOUT = 60.0


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    assert f"\n## {title}\n" in text, f"README.md has no '## {title}' section"
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_quickstart_prints_what_the_readme_shows(tmp_path: Path) -> None:
    quickstart = section("Quickstart")
    program = re.search(r"```python\n(.*?)```", quickstart, re.DOTALL)
    shown = re.search(r"It prints.*?```text\n(.*?)```", quickstart, re.DOTALL)
    assert program and shown, "the Quickstart has a python block and, after it, the ```text it prints"
    (tmp_path / "quickstart.py").write_text(program[1], encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "quickstart.py"], check=False, capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    printed, expected = proc.stdout.splitlines(), shown[1].splitlines()
    assert len(printed) == len(expected), proc.stdout
    for got, want in zip(printed, expected):
        # ports, channel numbers and message ids vary from run to run
        pattern = re.sub(r"\d+", r"\\d+", re.escape(want))
        assert re.fullmatch(pattern, got), f"printed {got!r}, the README shows {want!r}"


def collected(*args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
    )
    assert proc.returncode in (0, 5), proc.stdout + proc.stderr  # 5: nothing selected
    return {line for line in proc.stdout.splitlines() if "::" in line}


def test_not_tshark_leaves_out_exactly_the_tests_that_need_tshark() -> None:
    install = " ".join(section("Install and try it").split())
    assert "`pip install -e '.[test,bench]' && pytest -m \"not tshark\"` does the same minus tshark" in install
    # A test file needs tshark when it runs it or dumpcap; a test can only carry the marker when
    # its file (or a conftest.py) names it. So collecting the files that name it is enough.
    naming = {
        p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8")
        for p in (ROOT / "tests").glob("*.py")
        if "tshark" in p.read_text(encoding="utf-8") and p.name != Path(__file__).name
    }
    needing = sorted(name for name, text in naming.items() if re.search(r"\b(tshark|dumpcap)\b", text))
    assert needing == ["tests/test_wireshark.py"]
    assert "tests/conftest.py" not in naming  # no marker is added behind the files' backs
    tests = [name for name in naming if Path(name).name.startswith("test_")]
    marked = collected("-m", "tshark", *tests)  # what -m "not tshark" leaves out
    assert marked == collected(*needing)
    assert len(marked) >= 2


def test_ci_runs_every_test() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    runs = re.findall(r"^\s*\S*python\"? -m pytest\b(.*)$", script, re.MULTILINE)
    assert runs, ".ci/run does not run pytest"
    assert all("-m" not in args.split() for args in runs), runs  # no marker deselects anything in CI
    assert re.search(r"python\"? -m codegen --check", script)
    assert "tshark" in script  # and it installs what the tshark tests need
