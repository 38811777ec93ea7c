"""The state diagrams as pictures: Graphviz's `dot` renders each generated
docs/machine-<role>.dot into the docs/machine-<role>.svg that docs/protocol.md
shows.

What `dot` writes differs between Graphviz versions, so an SVG is never
compared byte for byte. Instead the render step writes the sha256 of the DOT
source it rendered into the SVG, as an XML comment: an SVG is current when
that hash is the hash of the DOT the spec renders now.

    python -m codegen --render-diagrams   regenerate, then render every diagram
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

__all__ = [
    "INSTALL_HINT",
    "RENDER_COMMAND",
    "DotMissing",
    "embedded_hash",
    "find_dot",
    "render_svg",
    "source_hash",
    "stale_svgs",
    "svg_name",
]

RENDER_COMMAND = "python -m codegen --render-diagrams"
INSTALL_HINT = "install Graphviz: apt-get install -y graphviz (Debian, Ubuntu), brew install graphviz (macOS)"
_HASH = re.compile(r"<!-- source sha256: ([0-9a-f]{64}) -->")
TIMEOUT = 60.0  # seconds: `dot` takes well under one for these graphs


class DotMissing(RuntimeError):
    """Graphviz's `dot` is not on PATH."""


def svg_name(dot_name: str) -> str:
    """machine-connector.dot -> machine-connector.svg"""
    return dot_name.removesuffix(".dot") + ".svg"


def source_hash(dot_source: str) -> str:
    return hashlib.sha256(dot_source.encode("utf-8")).hexdigest()


def embedded_hash(svg: str) -> str | None:
    """The hash of the DOT source an SVG was rendered from, None if it has none."""
    found = _HASH.search(svg)
    return found[1] if found else None


def find_dot() -> str:
    dot = shutil.which("dot")
    if dot is None:
        raise DotMissing(f"Graphviz's dot is not on PATH; {INSTALL_HINT}")
    return dot


def render_svg(dot_source: str, dot: str | None = None) -> str:
    """The SVG `dot` makes of `dot_source`, with the source's hash in a comment
    right after the XML declaration. (An XML comment may not hold two hyphens
    in a row, so it names no command line option.)"""
    result = subprocess.run(
        [dot or find_dot(), "-Tsvg"],
        input=dot_source,
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
        timeout=TIMEOUT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dot failed ({result.returncode}): {result.stderr.strip()}")
    svg = result.stdout
    comment = (
        f"<!-- source sha256: {source_hash(dot_source)} -->\n"
        "<!-- Rendered by codegen from the DOT source of the same name. -->\n"
    )
    if svg.startswith("<?xml"):
        end = svg.index("?>") + 2
        return svg[:end] + "\n" + comment + svg[end:].lstrip("\n")
    return comment + svg


def stale_svgs(dot_sources: dict[str, str], out_dir: Path, label: str = "docs") -> list[str]:
    """The SVGs of `dot_sources` ({name.dot: source}) that `out_dir` lacks, or
    holds rendered from another source, as `label/name.svg`."""
    stale = []
    for name, source in dot_sources.items():
        path = out_dir / svg_name(name)
        if not path.exists() or embedded_hash(path.read_text(encoding="utf-8")) != source_hash(source):
            stale.append(f"{label}/{svg_name(name)}")
    return stale
