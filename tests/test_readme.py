"""The README says true things: the quickstart's server and client print
what the README shows,
and the sentence about testing in an environment of your own holds (the
`tshark`, `valgrind` and `chromium` markers deselect exactly the tests that need those tools, and .ci/run
runs everything). Every code block also runs in test_docs.py; the install
command runs in test_install.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from docs_support import run_served

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TIMEOUT = 60.0


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    assert f"\n## {title}\n" in text, f"README.md has no '## {title}' section"
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_quickstart_prints_what_the_readme_shows(tmp_path: Path) -> None:
    quickstart = section("Quickstart")
    programs = re.findall(r"```python( [^\n]*)?\n(.*?)```", quickstart, re.DOTALL)
    shown = re.search(r"It prints.*?```text\n(.*?)```", quickstart, re.DOTALL)
    assert len(programs) == 2 and shown, "the Quickstart has a server, a client and, after them, the ```text it prints"
    (server_fence, server), (client_fence, client) = programs
    assert 'title="echo_server.py"' in server_fence and 'title="echo_client.py"' in client_fence
    assert len(server.splitlines()) <= 12 and len(client.splitlines()) <= 12  # a service in about ten lines
    served = run_served(server, client, tmp_path)
    assert served.server_out.startswith("echo server on tcp://127.0.0.1:"), served.server_out
    printed, expected = served.client_out.splitlines(), shown[1].splitlines()
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


@pytest.mark.parametrize(
    ("marker", "needs", "files", "needed"),
    [
        ("tshark", r"\b(tshark|dumpcap)\b", ["tests/test_wireshark.py"], ["tests/test_wireshark.py"]),
        (
            "valgrind",
            r"--instructions",  # tofu bench --instructions runs valgrind
            ["tests/test_bench_instructions.py"],
            ["tests/test_bench_instructions.py::test_bench_instructions_counts_tofu_and_pyzmq_with_callgrind"],
        ),
        (
            "chromium",
            r"\bchromium\b",
            ["tests/test_site.py"],
            ["tests/test_site.py::test_the_start_page_and_the_api_page_render_in_chromium"],
        ),
    ],
)
def test_each_marker_leaves_out_exactly_the_tests_that_need_its_tool(
    marker: str, needs: str, files: list[str], needed: list[str]
) -> None:
    install = " ".join(section("Install and try it").split())
    assert (
        "`pip install -e '.[test,bench]' && pytest -m \"not tshark and not valgrind and not chromium\"` does the same"
        " minus those three" in install
    )
    # A test file needs the tool when it runs it; a test can only carry the marker when
    # its file (or a conftest.py) names it. So collecting the files that name it is enough.
    naming = {
        p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8")
        for p in (ROOT / "tests").glob("*.py")
        if marker in p.read_text(encoding="utf-8") and p.name != Path(__file__).name
    }
    needing = sorted(name for name, text in naming.items() if re.search(needs, text))
    assert needing == files
    assert "tests/conftest.py" not in naming  # no marker is added behind the files' backs
    tests = [name for name in naming if Path(name).name.startswith("test_")]
    marked = collected("-m", marker, *tests)  # what -m "not MARKER" leaves out
    assert marked == collected(*needed)
    assert len(marked) >= 1


def test_ci_runs_every_test() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    runs = re.findall(r"^\s*\S*python\"? -m pytest\b(.*)$", script, re.MULTILINE)
    assert runs, ".ci/run does not run pytest"
    assert all("-m" not in args.split() for args in runs), runs  # no marker deselects anything in CI
    assert re.search(r"python\"? -m codegen --check", script)
    # and it installs what the marked tests need
    assert "tshark" in script and "valgrind" in script and "apt-get install -y -qq chromium" in script
