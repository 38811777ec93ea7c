"""The documentation site builds, strictly.

`mkdocs build --strict` (mkdocs.yml; pip install -e '.[docs]') fails on any
warning: a link to a page or file that is not there, a public name without a
docstring, a name of `tofu.__all__` left off the API page (the checks are in
tools/mkdocs_hooks.py). These tests build the site, the repository's and a
copy with such mistakes made on purpose."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300.0  # seconds: bounds a hung build, never paces a working one
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's notice about MkDocs 2.0


def build(root: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of the repository (or a copy of it) at `root`, into `out`."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"), "-d", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=root,
        env=ENV,
    )


def complaints(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stdout + result.stderr).splitlines()
    return "\n".join(line for line in lines if line.startswith(("WARNING", "ERROR", "Aborted"))) or result.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = build(ROOT, out)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{complaints(result)}"
    return out


def page(site: Path, uri: str) -> str:
    return (site / uri / "index.html").read_text(encoding="utf-8")


def test_the_site_builds_strictly(site: Path) -> None:
    # The start page is README.md, made at build time (no copy in docs/ to drift).
    assert not (ROOT / "docs" / "index.md").exists()
    home = page(site, "")
    assert '<h1 id="tofu-for-python">tofu for Python' in home
    assert 'id="quickstart"' in home and "Save this as <code>quickstart.py</code>" in home
    # README's links to docs/ point at the site's pages, and the ones to files
    # outside docs/ at the pages that show them.
    assert 'href="concepts/"' in home and 'href="docs/' not in home
    assert 'href="source/examples/"' in home and 'href="source/spec/tofu.toml/"' in home
    assert 'href="../source/spec/tofu.toml/"' in page(site, "protocol")
    assert 'href=".."' in page(site, "architecture")  # its link to ../README.md
    examples = page(site, "source/examples")
    for example in sorted((ROOT / "examples").glob("*.py")):
        assert f'id="{example.stem}py"' in examples, example.name
    assert '<h1 id="benchmarks">Benchmarks' in page(site, "benchmarks")  # benchmarks/README.md
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert (site / doc.stem / "index.html").is_file(), f"docs/{doc.name} is not on the site"

    # The API reference, from the docstrings of the source.
    api = page(site, "api")
    for name in ("Reactor", "ChannelGroup", "Message", "TCPServerAddress", "AmpeStatus", "ConnectFailed", "COMPILED"):
        assert f'id="tofu.{name}"' in api, f"tofu.{name} is missing from the reference"
    assert 'id="tofu.TCPServerAddress.from_message"' in api
    assert "address actually bound, with the real port" in api  # from_message's docstring, rendered
    assert "The longest body of a frame, in bytes." in api  # a generated constant's, from the spec
    assert 'id="tofu._' not in api and 'id="tofu.Message._' not in api  # only public names
    aio = page(site, "api-aio")
    assert 'id="tofu.aio.AsyncChannelGroup"' in aio and 'id="tofu.aio.AsyncChannelGroup.receive"' in aio


def _sources(folder: str, names: list[str]) -> set[str]:
    """What a copy of the repository leaves out: environments, caches, builds."""
    skipped = {".git", ".venv", "venv", "build", "dist", "site", "__pycache__", ".mutation"}
    return {n for n in names if n in skipped or n.startswith((".ci-venv", ".mypy", ".pytest", ".hypo", ".ruff"))}


MISTAKES = '''

class Extra:
    """A class with an undocumented method and property."""

    def method(self) -> None:
        pass

    @property
    def size(self) -> int:
        return 0


def undocumented() -> None:
    pass


class Forgotten:
    """Documented, and in __all__, but on no API page."""


__all__ += ["Extra", "undocumented", "Forgotten"]
'''


def test_a_missing_docstring_or_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    """The strict build above is not vacuous: each mistake below fails it, named."""
    tree = tmp_path / "repo"
    shutil.copytree(ROOT, tree, ignore=_sources)
    with (tree / "runtime" / "__init__.py").open("a", encoding="utf-8") as package:
        package.write(MISTAKES)
    with (tree / "docs" / "api.md").open("a", encoding="utf-8") as api:
        api.write("\n::: tofu.Extra\n\n::: tofu.undocumented\n")
    with (tree / "docs" / "concepts.md").open("a", encoding="utf-8") as concepts:
        concepts.write("\nSee [a page that is not there](nowhere.md).\n")
    with (tree / "README.md").open("a", encoding="utf-8") as readme:
        readme.write("\nAnd [another](docs/gone.md).\n")
    result = build(tree, tmp_path / "site")
    said = complaints(result)
    assert result.returncode != 0, said
    for expected in (
        "tofu.Extra.method has no docstring",
        "tofu.Extra.size has no docstring",
        "tofu.undocumented has no docstring",
        "tofu.Forgotten is in tofu.__all__ but on no API page",
        "'concepts.md' contains a link 'nowhere.md'",
        "'index.md' contains a link 'docs/gone.md'",  # the start page: README.md
    ):
        assert expected in said, f"{expected!r} not in:\n{said}"
    assert "Aborted with 6 warnings in strict mode" in said, said
