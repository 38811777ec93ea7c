"""Every code block in README.md and docs/*.md does what it shows.

Found automatically: a new page under docs/ is covered as soon as it exists.
A block's info string (the word after the opening fence) says what it is:

- ```python: a complete program. It runs by itself in a subprocess (in a
  temporary directory, with a timeout) and must exit 0 without a traceback.
  A fragment has no place in a python block: make it a program, or tag it
  ```text. A server that runs until it is stopped has a title naming a
  server file (```python title="echo_server.py"): it runs with the python
  block after it, its client, as docs_support.py says.
- ```sh, ```bash, ```shell, ```console: commands. Each `tofu ...` (or
  `python -m tofu ...`) line must parse with the `tofu` command's own
  argument parser, so a renamed option or a bad address in the docs fails
  here; nothing is run (`tofu demo` runs in test_install.py, and every
  command is exercised in test_cli.py). Each `pip install` of the package
  names only extras that pyproject.toml declares.
- anything else (```text, no info string, ...): shown, never run.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from tofu import cli

from docs_support import is_server, run_served

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 60.0  # seconds: bounds a hung program, never paces a working one
SHELLS = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    server: bool = False  # a server block (see the module's docstring)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order."""
    found = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body = []
        j = i + 1
        while j < len(lines) and not re.fullmatch(rf"[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*", lines[j]):
            body.append(lines[j].removeprefix(indent))
            j += 1
        assert j < len(lines), f"{page.name}:{i + 1}: a code block that never closes"
        found.append(Block(page, i + 1, opening["info"].lower(), "\n".join(body) + "\n", is_server(lines[i])))
        i = j + 1
    return found


BLOCKS = [block for page in PAGES for block in blocks_of(page)]
ALL_PYTHON = [b for b in BLOCKS if b.lang in ("python", "py")]
SERVED = [(s, c) for s, c in zip(ALL_PYTHON, ALL_PYTHON[1:]) if s.server and c.page == s.page]  # server, client
PYTHON = [b for b in ALL_PYTHON if not any(b in pair for pair in SERVED)]
SHELL = [b for b in BLOCKS if b.lang in SHELLS]


def test_the_pages_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/concepts.md", "docs/asyncio.md", "docs/protocol.md", "docs/architecture.md"} <= names
    assert {b.page.name for b in PYTHON} >= {"README.md", "concepts.md", "asyncio.md", "client-server.md"}
    assert [s.id for s in ALL_PYTHON if s.server] == [s.id for s, _ in SERVED]  # every server has its client
    assert "README.md" in {s.page.name for s, _ in SERVED}


@pytest.mark.parametrize(("server", "client"), SERVED, ids=[s.id for s, _ in SERVED])
def test_python_server_block_serves_its_client(server: Block, client: Block, tmp_path: Path) -> None:
    served = run_served(server.text, client.text, tmp_path)
    assert served.client_out.strip(), f"the client at {client.id} printed nothing"


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block_is_a_program_that_runs(block: Block, tmp_path: Path) -> None:
    program = tmp_path / "block.py"
    program.write_text(block.text, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(program)], check=False, capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path
    )
    where = f"the python block at {block.id}"
    assert proc.returncode == 0, f"{where} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, f"{where}:\n{proc.stderr}"
    assert proc.stdout.strip(), f"{where} printed nothing: a reader cannot tell it worked"


def commands(block: Block) -> list[tuple[int, list[str]]]:
    """(line, words) of each command in a shell block, comments and `$ ` prompts removed."""
    out = []
    pending, first = "", 0
    for n, line in enumerate(block.text.splitlines(), start=block.line + 1):
        line = line.strip().removeprefix("$ ")
        if line.endswith("\\"):  # continued on the next line, as the shell reads it
            pending, first = pending + line[:-1] + " ", first or n
            continue
        line, start, pending, first = pending + line, first or n, "", 0
        words = shlex.split(line, comments=True) if line else []
        if words:
            out.append((start, words))
    return out


def tofu_args(words: list[str]) -> list[str] | None:
    """The arguments of a `tofu` command line, or None when the line runs something else."""
    separators = ("&&", "||", ";", "|", "&")  # "&": a command sent to the background
    for i, word in enumerate(words):
        if i and words[i - 1] not in separators:
            continue  # not the start of a command
        if Path(word).name == "tofu":
            rest = words[i + 1 :]
        elif re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", word) and words[i + 1 : i + 3] == ["-m", "tofu"]:
            rest = words[i + 3 :]
        else:
            continue
        return rest[: next((k for k, w in enumerate(rest) if w in separators), len(rest))]
    return None


@pytest.mark.parametrize(
    ("line", "args"),
    [
        ("tofu demo --uds  # a comment", ["demo", "--uds"]),
        ("$ tofu ping tcp://127.0.0.1:7099 -n 3", ["ping", "tcp://127.0.0.1:7099", "-n", "3"]),
        ("python3 -m venv .venv && .venv/bin/tofu demo", ["demo"]),
        ("python -m tofu decode x.bin --hex | head", ["decode", "x.bin", "--hex"]),
        (".venv/bin/python3.12 -m tofu demo", ["demo"]),
        ("pip install tofu-messaging", None),
        ("bash .ci/run", None),
    ],
)
def test_tofu_lines_are_recognised(line: str, args: list[str] | None) -> None:
    ((_, words),) = commands(Block(ROOT / "README.md", 0, "sh", line + "\n"))
    assert tofu_args(words) == args


TOFU_LINES = [(b, n, args) for b in SHELL for n, words in commands(b) if (args := tofu_args(words)) is not None]


def test_the_shell_blocks_show_tofu_commands() -> None:
    assert len(TOFU_LINES) >= 5, [f"{b.id} line {n}" for b, n, _ in TOFU_LINES]


@pytest.mark.parametrize(("block", "line", "args"), TOFU_LINES, ids=[f"{b.id}+{n - b.line}" for b, n, _ in TOFU_LINES])
def test_tofu_command_parses(block: Block, line: int, args: list[str]) -> None:
    parser = cli.build_parser()
    try:
        parsed = parser.parse_args(args)
    except Exception as exc:  # noqa: BLE001 - the CLI's parser raises its own usage error
        pytest.fail(f"{block.page.name}:{line}: `tofu {shlex.join(args)}` does not parse: {exc}")
    except SystemExit as exc:  # --help, --version
        assert exc.code == 0, f"{block.page.name}:{line}: `tofu {shlex.join(args)}` exits {exc.code}"
        return
    assert callable(getattr(parsed, "func", None)), parsed


def test_pip_installs_name_declared_extras() -> None:
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    seen = 0
    for block in SHELL:
        for words in (w for _, w in commands(block)):
            for word in words:
                match = re.fullmatch(r"(?:\.|tofu-messaging)\[([\w,-]+)\]", word)
                if match:
                    seen += 1
                    unknown = set(match[1].split(",")) - declared
                    assert not unknown, f"{block.id}: extras {sorted(unknown)} are not in pyproject.toml"
    # the README's own install lines are in prose: check them there too
    for page in PAGES:
        for extras in re.findall(r"pip install (?:-e )?'\.\[([\w,-]+)\]'", page.read_text(encoding="utf-8")):
            seen += 1
            assert set(extras.split(",")) <= declared, f"{page.name}: pip install '.[{extras}]'"
    assert seen
