"""The API reference builds from the docstrings with pdoc, without a warning,
and documents the public face: `tofu` and `tofu.aio`.

Build it yourself with `pdoc tofu tofu.aio` (a local web server) or
`pdoc tofu tofu.aio -o DIR` (HTML files); pdoc comes with the test extra.

The reference is made from the source (a copy laid out as the package
installs), whichever build the tests run on: a compiled build (mypyc) keeps
no docstrings, so pdoc of it would show empty pages.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tofu
import tofu.aio

MODULES = ["tofu", "tofu.aio"]  # the face (docs/architecture.md)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's source laid out as it installs (tofu/ with tofu/generated/ inside)."""
    tree = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "runtime", tree / "tofu", ignore=ignore)
    shutil.copytree(ROOT / "generated", tree / "tofu" / "generated", ignore=ignore)
    return tree


def pdoc(out: Path, *modules: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run pdoc with every warning shown (-W default), writing HTML to `out`."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-W", "default", "-m", "pdoc", *modules, "-o", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_the_reference_builds_without_warnings(tmp_path: Path, source_tree: Path) -> None:
    result = pdoc(tmp_path, *MODULES, pythonpath=source_tree)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"pdoc warned:\n{result.stderr}"
    page = (tmp_path / "tofu.html").read_text(encoding="utf-8")
    for name in ("Reactor", "ChannelGroup", "Message", "TCPServerAddress", "AmpeStatus", "ConnectFailed"):
        assert f'id="{name}"' in page, f"tofu.{name} is missing from the reference"
    assert 'id="TCPServerAddress.from_message"' in page
    assert "address actually bound, with the real port" in page  # from_message's docstring, rendered
    aio = (tmp_path / "tofu" / "aio.html").read_text(encoding="utf-8")
    assert 'id="AsyncChannelGroup"' in aio and 'id="AsyncChannelGroup.receive"' in aio


def test_the_warning_check_sees_a_warning(tmp_path: Path) -> None:
    """The check above is not vacuous: a module pdoc has to warn about fails it."""
    (tmp_path / "broken_doc.py").write_text('"""A module."""\n__all__ = ["missing"]\n')
    result = pdoc(tmp_path / "out", "broken_doc", pythonpath=tmp_path)
    assert "Found 'missing' in broken_doc.__all__" in result.stderr, result.stderr


def _undocumented(prefix: str, names: list[str], module: object) -> list[str]:
    missing = []
    for name in names:
        obj = getattr(module, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (obj.__doc__ or "").strip():
            missing.append(f"{prefix}{name}")
        if inspect.isclass(obj) and obj.__module__.startswith("tofu"):
            for attr, value in vars(obj).items():
                func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                if not attr.startswith("_") and inspect.isfunction(func) and not (func.__doc__ or "").strip():
                    missing.append(f"{prefix}{name}.{attr}")
    return missing


def test_every_public_class_function_and_method_has_a_docstring(source_tree: Path) -> None:
    if not tofu.COMPILED:  # the package under test is the source itself
        missing = _undocumented("tofu.", tofu.__all__, tofu) + _undocumented("tofu.aio.", tofu.aio.__all__, tofu.aio)
        assert missing == []
    # and the source, imported in a process of its own (a compiled build has no docstrings to check)
    check = (
        "import json, tofu, tofu.aio\n"
        "from test_apidoc import _undocumented\n"
        "print(json.dumps(_undocumented('tofu.', tofu.__all__, tofu)"
        " + _undocumented('tofu.aio.', tofu.aio.__all__, tofu.aio)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source_tree), str(Path(__file__).parent)])}
    proc = subprocess.run([sys.executable, "-c", check], check=True, capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(proc.stdout.splitlines()[-1]) == []
