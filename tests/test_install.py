"""The README's first command works as written, on a fresh copy of the
repository: it makes a virtual environment, installs the package into it
and `tofu demo` plays its conversation.

The command is read from the README itself (the first line of the first
block under "Install and try it"), so the two cannot drift apart. It runs
with bash in a temporary copy of the repository's files (the ones git
tracks, plus new ones not ignored: never .venv/ or build output), with the
interpreter running the tests as `python3`. pip's cache is shared with the
rest of the machine, so only the first run downloads the build backend.
pip runs verbose, so the build's own warnings can be checked too.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600.0  # seconds: a cold pip cache on a loaded machine; bounds a hang, never paces a success


def readme_install_command() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    install = text.split("\n## Install and try it\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", install, re.DOTALL)
    assert block, "README.md's 'Install and try it' has no ```sh block"
    first = block[1].splitlines()[0]
    return re.sub(r"\s+#.*$", "", first).strip()  # without its comment


def repository_files() -> list[str]:
    """The repository's files as a fresh clone has them, plus new files not yet committed.

    git says which (tracked, or new and not ignored); without git (an unpacked
    archive), every file but those .gitignore names."""
    if shutil.which("git") is not None and (ROOT / ".git").exists():
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            check=True,
            capture_output=True,
            cwd=ROOT,
            timeout=60,
        ).stdout.decode()
        return [name for name in out.split("\0") if name and (ROOT / name).is_file()]
    ignored = [".git"] + [
        line.strip().rstrip("/")
        for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return [
        path.relative_to(ROOT).as_posix()
        for path in ROOT.rglob("*")
        if path.is_file()
        and not any(fnmatch.fnmatch(part, pattern) for part in path.relative_to(ROOT).parts for pattern in ignored)
    ]


def fresh_copy(dest: Path) -> Path:
    for name in repository_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return dest


def test_the_readme_install_command(tmp_path: Path) -> None:
    command = readme_install_command()
    assert command == "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/tofu demo"

    repo = fresh_copy(tmp_path / "tofu")
    assert not (repo / ".venv").exists() and (repo / "pyproject.toml").exists() and (repo / "LICENSE").exists()
    # `python3` is this interpreter, as on a machine whose python3 is the one the tests run on
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(_base_python())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_VERBOSE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # Pure Python: compiling with mypyc takes a minute; .ci/run builds and
    # tests the compiled wheel on its own.
    env["TOFU_PURE"] = "1"

    proc = subprocess.run(
        ["bash", "-c", command], check=False, capture_output=True, text=True, timeout=TIMEOUT, cwd=repo, env=env
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{out[-6000:]}"

    # installed under its distribution name, and importable as tofu
    assert "Successfully installed" in out and "tofu-messaging-0" in out.replace("tofu_messaging-0", "tofu-messaging-0")
    # the build says which it made
    assert "tofu build: pure Python (TOFU_PURE is set)" in out
    # the build has no license (or other) deprecation warning from setuptools
    assert not re.search(r"(?i)deprecat", out), [line for line in out.splitlines() if "eprecat" in line]
    # and tofu demo played the whole conversation
    for step in ("HelloRequest", "JobTicket", "Progress:[", "ByeRequest", "ByeResponse", "channel_closed"):
        assert step in proc.stdout, f"tofu demo did not show {step}:\n{proc.stdout}"


def _base_python() -> str:
    """The interpreter this virtual environment was made from (`python3` on a fresh machine)."""
    candidate = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(candidate if candidate.exists() else Path(sys.base_prefix) / "bin" / "python3")
