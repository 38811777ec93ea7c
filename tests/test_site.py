"""The documentation site builds, strictly, and a browser shows it.

`mkdocs build --strict` (mkdocs.yml; pip install -e '.[docs]') fails on any
warning: a link to a page or file that is not there, a public name without a
docstring, a name of `tofu.__all__` left off the API page (the checks are in
tools/mkdocs_hooks.py). The first two tests build the site, the repository's
and a copy with such mistakes made on purpose; they need no browser.

The last one (marked `chromium`: Debian's chromium package, which .ci/run
installs) serves the built site on 127.0.0.1 and opens the start page and the
API page in headless Chromium: their DOM has the navigation and the expected
headings, and their screenshots (left in the test's temporary directory) are
a rendered page, not a blank one.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300.0  # seconds: bounds a hung build or browser, never paces a working one
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
    assert 'id="quickstart"' in home and "Save the server as\n<code>echo_server.py</code>" in home
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


# ---------------------------------------------------------------- in a browser


class _Outline(HTMLParser):
    """The text of a page's headings (h1-h3) and of the links of its site
    navigation (the primary one, not the page's table of contents)."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[tuple[str, str]] = []  # (tag, text)
        self.nav: list[str] = []
        self.active: list[str] = []  # the navigation's links marked as the current page
        self._open: list[tuple[str, list[str], bool]] = []  # (tag, text so far, active)
        self._navs: list[str] = []  # the <nav> elements we are in: primary, secondary or other

    def _in_site_nav(self) -> bool:
        return "primary" in self._navs and "secondary" not in self._navs

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "nav":
            kinds = [k for k in ("primary", "secondary") if f"md-nav--{k}" in classes]
            self._navs.append(kinds[0] if kinds else "other")
        elif tag in ("h1", "h2", "h3"):
            self._open.append((tag, [], False))
        elif tag in ("a", "label", "span") and "md-nav__link" in classes and self._in_site_nav():
            self._open.append((tag, [], "md-nav__link--active" in classes))

    def handle_endtag(self, tag: str) -> None:
        if tag == "nav" and self._navs:
            self._navs.pop()
        elif self._open and self._open[-1][0] == tag:
            _, parts, active = self._open.pop()
            text = " ".join("".join(parts).replace("\u00b6", "").split())  # without the headings' permalink
            if tag.startswith("h"):
                self.headings.append((tag, text))
            else:
                self.nav.append(text)
                if active:
                    self.active.append(text)

    def handle_data(self, data: str) -> None:
        for _, parts, _ in self._open:
            parts.append(data)


def outline(html: str) -> _Outline:
    parsed = _Outline()
    parsed.feed(html)
    return parsed


def nav_titles(entries: list[object]) -> list[str]:
    """Every title in mkdocs.yml's nav, sections and pages."""
    titles = []
    for entry in entries:
        for title, target in entry.items() if isinstance(entry, dict) else []:
            titles.append(title)
            if isinstance(target, list):
                titles += nav_titles(target)
    return titles


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    """The built site over HTTP on 127.0.0.1 (a free port), in a thread."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # the base class names it `format`
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def chromium(profiles: Path, *args: str) -> str:
    """Run headless Chromium once (as root too), with a profile of its own; its standard output."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail(
            "chromium is required for the browser test and was not found on PATH; install it with\n"
            "  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium\n"
            'or deselect the test with -m "not chromium"',
            pytrace=False,
        )
    profile = tempfile.mkdtemp(prefix="profile-", dir=profiles)
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",  # a container's /dev/shm may be too small for it
        f"--user-data-dir={profile}",
        *args,
    ]
    proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


WIDTH, HEIGHT = 1280, 900
INDIGO = (0x3F, 0x51, 0xB5)  # the header bar: mkdocs.yml's primary colour, so the theme's CSS applied


def check_screenshot(png: Path) -> None:
    """A rendered mkdocs-material page: the coloured header bar, text in the
    navigation on the left and in the content beside it, many colours."""
    import matplotlib.image  # the test extra has it (the bench's plots)
    import numpy as np

    assert png.is_file() and png.stat().st_size > 10_000, f"{png}: no screenshot, or an empty one"
    pixels = np.asarray(matplotlib.image.imread(str(png)))[:, :, :3]
    pixels = np.rint(pixels * 255).astype(np.int16) if pixels.dtype.kind == "f" else pixels.astype(np.int16)
    assert pixels.shape == (HEIGHT, WIDTH, 3), pixels.shape
    header = pixels[10:40, 300:900].reshape(-1, 3)
    assert (np.abs(header - INDIGO).max(axis=1) <= 16).mean() > 0.9, f"{png}: no indigo header bar"

    def inked(top: int, bottom: int, left: int, right: int) -> float:
        """The share of the area's pixels that are not (nearly) white."""
        return float((pixels[top:bottom, left:right].min(axis=2) < 200).mean())

    nav, content = inked(100, 560, 30, 240), inked(100, 880, 280, 980)
    assert nav > 0.01, f"{png}: the navigation on the left is blank ({nav:.1%} inked)"
    assert 0.02 < content < 0.6, f"{png}: the content is blank or a solid block ({content:.1%} inked)"
    colours = len(np.unique(pixels[100:880, 280:980].reshape(-1, 3), axis=0))
    assert colours > 100, f"{png}: {colours} colours: not a rendered page"


def headings_of(markdown: Path) -> list[str]:
    """The `#` and `##` headings of a Markdown page, outside code blocks."""
    text = re.sub(r"^```.*?^```", "", markdown.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    return [" ".join(h.replace("`", "").split()) for h in re.findall(r"^#{1,2} (.+)$", text, re.MULTILINE)]


@pytest.mark.chromium
def test_the_start_page_and_the_api_page_render_in_chromium(site: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = nav_titles(config["nav"])
    pages = {
        "": ("Home", headings_of(ROOT / "README.md")),
        "api/": ("tofu", [*headings_of(ROOT / "docs" / "api.md"), "Reactor", "Message", "AmpeError"]),
    }
    with serving(site) as base:
        for uri, (current, headings) in pages.items():
            url = base + uri
            shown = outline(chromium(tmp_path, "--dump-dom", url))
            assert set(nav) <= set(shown.nav), f"{url}: the navigation lacks {sorted(set(nav) - set(shown.nav))}"
            assert set(shown.active) == {current}, f"{url}: the navigation marks {shown.active} as the current page"
            texts = [text for _, text in shown.headings]
            assert shown.headings[0] == ("h1", headings[0]), f"{url}: the title is {shown.headings[:1]}"
            missing = [h for h in headings if h not in texts]
            assert not missing, f"{url}: the headings {missing} are not on the page ({texts[:20]}...)"
            png = tmp_path / f"{uri.strip('/') or 'index'}.png"
            chromium(tmp_path, "--hide-scrollbars", f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}", url)
            check_screenshot(png)
