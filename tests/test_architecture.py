"""docs/architecture.md stays true: every module of runtime/ is in its layers
table, and every import in runtime/ and generated/ keeps the rules the page
states (read from the code with ast, so an import inside a function or under
TYPE_CHECKING counts too)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime"
GENERATED = ROOT / "generated"
PAGE = ROOT / "docs" / "architecture.md"

ORDER = ["generated", "wire", "engine", "face", "tools"]
# what the wire layer never touches: it is sans-IO
IO_MODULES = {"socket", "selectors", "threading", "asyncio"}


def layers_table() -> dict[str, str]:
    """{module or package name: layer}, from the page's `## The layers` table."""
    section = PAGE.read_text(encoding="utf-8").split("\n## The layers\n", 1)[1].split("\n## ", 1)[0]
    table: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] not in ORDER:
            continue
        for name in re.findall(r"`([^`]+)`", cells[1]):
            table[name.removesuffix(".py").removesuffix("/")] = cells[0]
    return table


def unit_of(path: Path) -> str:
    """The table's name for a file under runtime/: its module, or its top-level package."""
    rel = path.relative_to(RUNTIME)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


@dataclass(frozen=True)
class Import:
    file: str
    line: int
    target: str  # a runtime unit ("reactor", "__init__", "generated", ...) or a top-level module ("socket")
    full: str  # the dotted name imported, for messages


def imports_in(source: str, file: str, package: list[str]) -> list[Import]:
    """Every import in `source`, a module of the package `package` (e.g. ["tofu"])."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [_classify(file, node.lineno, alias.name.split("."), None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            parts = base + (node.module.split(".") if node.module else [])
            found += [_classify(file, node.lineno, parts, alias.name) for alias in node.names]
    return found


def imports_of(path: Path, package: list[str]) -> list[Import]:
    return imports_in(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix(), package)


def _classify(file: str, line: int, parts: list[str], name: str | None) -> Import:
    full = ".".join(parts + ([name] if name else []))
    if parts[0] != "tofu":
        return Import(file, line, parts[0], full)
    if len(parts) > 1:
        return Import(file, line, parts[1], full)
    # `from . import x` / `import tofu`: a submodule if there is one, else the package's __init__
    if name and ((RUNTIME / f"{name}.py").exists() or (RUNTIME / name).is_dir() or name == "generated"):
        return Import(file, line, name, full)
    return Import(file, line, "__init__", full)


def runtime_files() -> list[Path]:
    return sorted(p for p in RUNTIME.rglob("*.py") if "__pycache__" not in p.parts)


def runtime_imports() -> list[tuple[str, Import]]:
    """(the importing unit, the import) for every import in runtime/."""
    out = []
    for path in runtime_files():
        package = ["tofu", *path.relative_to(RUNTIME).parts[:-1]]
        out += [(unit_of(path), imp) for imp in imports_of(path, package)]
    return out


def layer_of(unit: str, table: dict[str, str]) -> str | None:
    return "generated" if unit == "generated" else table.get(unit)


def test_every_runtime_module_is_in_the_layers_table() -> None:
    table = layers_table()
    assert set(table.values()) == set(ORDER), table
    units = {unit_of(p) for p in runtime_files()}
    missing = sorted(units - table.keys())
    assert not missing, f"docs/architecture.md's layers table does not place: {', '.join(missing)}"
    gone = sorted(n for n in table.keys() - units if n != "generated")
    assert not gone, f"docs/architecture.md's layers table names modules that do not exist: {', '.join(gone)}"


def test_each_layer_imports_only_the_layers_below_it() -> None:
    table = layers_table()
    wrong = []
    for unit, imp in runtime_imports():
        mine, theirs = layer_of(unit, table), layer_of(imp.target, table)
        if theirs is None or mine is None or theirs == mine:
            continue
        if mine == "face" and imp.target == "testing":
            continue  # the face re-exports the reference's two test helpers
        if ORDER.index(theirs) > ORDER.index(mine):
            wrong.append(f"{imp.file}:{imp.line}: {mine} imports {theirs} ({imp.full})")
    assert wrong == []


def test_the_wire_layer_is_sans_io() -> None:
    table = layers_table()
    wrong = [
        f"{imp.file}:{imp.line}: {imp.full}"
        for unit, imp in runtime_imports()
        if table.get(unit) == "wire" and imp.target in IO_MODULES
    ]
    assert wrong == []


def test_generated_imports_nothing_of_runtime() -> None:
    wrong = []
    for path in sorted(GENERATED.glob("*.py")):
        for imp in imports_of(path, ["tofu", "generated"]):
            if imp.target == "tofu" or (imp.full.startswith("tofu.") and not imp.full.startswith("tofu.generated")):
                wrong.append(f"{imp.file}:{imp.line}: {imp.full}")
    assert wrong == []


def test_construct_stays_off_the_message_path() -> None:
    """Only generated/structs.py imports construct, and only tools import it."""
    table = layers_table()
    wrong = [
        f"{imp.file}:{imp.line}: {imp.full}"
        for unit, imp in runtime_imports()
        if (imp.target == "construct" or imp.full.startswith("tofu.generated.structs")) and table.get(unit) != "tools"
    ]
    assert wrong == []
    users = [p.name for p in GENERATED.glob("*.py") if any(i.target == "construct" for i in imports_of(p, ["tofu"]))]
    assert users == ["structs.py"]


def test_the_service_layer_uses_only_public_names() -> None:
    """runtime/service/ builds on what tofu and tofu.aio publish, like any
    application: every name it imports from the rest of the package is in
    tofu.__all__ or tofu.aio.__all__ (docs/client-server.md)."""
    import tofu
    import tofu.aio

    public = set(tofu.__all__) | set(tofu.aio.__all__)
    wrong = []
    for path in sorted((RUNTIME / "service").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 2:  # from ..module import name
                wrong += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name not in public]
    assert wrong == []


@pytest.mark.parametrize(
    ("source", "package", "expected"),
    [
        ("from .reactor import Reactor", ["tofu"], "reactor"),
        ("from . import __version__", ["tofu"], "__init__"),
        ("from . import generated", ["tofu"], "generated"),
        ("from .generated.codec import pack_header", ["tofu"], "generated"),
        ("from ..groups import ChannelGroup", ["tofu", "cli"], "groups"),
        ("import tofu.aio", ["tofu"], "aio"),
        ("import socket", ["tofu"], "socket"),
    ],
)
def test_imports_are_read_right(source: str, package: list[str], expected: str) -> None:
    (imp,) = imports_in(source, "probe.py", package)
    assert imp.target == expected
