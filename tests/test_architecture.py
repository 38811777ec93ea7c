"""docs/architecture.md stays true: every module of runtime/ is in its layers
table, every import in runtime/ and generated/ keeps the rules the page
states, and no module of runtime/ reads or writes another module's private
names (read from the code with ast, so an import inside a function or under
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


# ---------------------------------------------------------------- a module's privates are its own
#
# docs/architecture.md, "What never imports what": no module reads or writes
# another module's private (underscore) names, and a module whose name starts
# with an underscore belongs to its package. Read from each module's text
# with ast; the heuristics are in privates_of_other_modules' docstring.


def is_private(name: str) -> bool:
    """`_name` and `__name` are private; `__dunder__` names are not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_name(path: Path) -> tuple[str, list[str]]:
    """A file of runtime/ as (its dotted name, its package's parts):
    runtime/service/dispatch.py is ("tofu.service.dispatch", ["tofu", "service"]),
    runtime/cli/__init__.py ("tofu.cli", ["tofu", "cli"])."""
    parts = ["tofu", *path.relative_to(RUNTIME).with_suffix("").parts]
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), parts[:-1]
    return ".".join(parts), parts[:-1]


def is_package_module(dotted: str) -> bool:
    """True when `dotted` names a module or package of tofu (runtime/, or generated/ as tofu.generated)."""
    parts = dotted.split(".")
    if parts[0] != "tofu":
        return False
    base, rest = (GENERATED, parts[2:]) if parts[1:2] == ["generated"] else (RUNTIME, parts[1:])
    path = base.joinpath(*rest)
    return path.is_dir() or path.with_suffix(".py").is_file()


@dataclass(frozen=True)
class Kind:
    """What an expression is an object of, as far as its module says: a class
    of this module (`local`, named by `cls`), something of the package's
    other modules (`foreign`: a class, a module, a name imported from one;
    `desc` says which), or of anything outside the package (`other`)."""

    what: str
    cls: str = ""
    desc: str = ""


OTHER = Kind("other")


@dataclass
class ClassFacts:
    """What a module says of one of its classes."""

    attrs: set[str]  # class-level names and methods, slots, what its methods assign to self./cls.
    types: dict[str, ast.expr]  # attribute -> its annotation, or the class called to make it
    local_bases: list[str]  # its bases that are classes of this module
    foreign_base: bool  # a base (or a local base's) is a class of another module of the package


class ModuleReader(ast.NodeVisitor):
    """One module of runtime/, read for the names of other modules it uses
    (see privates_of_other_modules and private_module_imports)."""

    def __init__(self, source: str, module: str, package: list[str], file: str) -> None:
        self.module, self.package, self.file = module, package, file
        self.tree = ast.parse(source)
        self.found: list[str] = []
        self.bindings: dict[str, Kind] = {}  # what the module's imports bind
        self.modules: set[str] = set()  # the names of those that bind a module
        self.classes: dict[str, ClassFacts] = {}
        self.defined: set[str] = set()  # every name the module defines: its classes' attrs, its module-level names
        # while walking: the method's (self name, class) and the scopes' names (None: bound, kind unknown)
        self.selfs: list[tuple[str, ClassFacts] | None] = [None]
        self.scopes: list[dict[str, Kind | None]] = []
        self._read_imports()
        self._read_definitions()

    @classmethod
    def of(cls, path: Path) -> ModuleReader:
        module, package = module_name(path)
        return cls(path.read_text(encoding="utf-8"), module, package, path.relative_to(ROOT).as_posix())

    # ---------------------------------------------------------- what the module binds and defines

    def source_of(self, node: ast.ImportFrom) -> str:
        """The dotted module a `from ... import` imports from."""
        if not node.level:
            return node.module or ""
        base = self.package[: len(self.package) - node.level + 1]
        return ".".join(base + (node.module.split(".") if node.module else []))

    def _read_imports(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    name = alias.name if alias.asname else alias.name.split(".")[0]
                    ours = name.split(".")[0] == "tofu"
                    self.bindings[alias.asname or name] = Kind("foreign", desc=name) if ours else OTHER
                    self.modules.add(alias.asname or name)
            elif isinstance(node, ast.ImportFrom):
                source = self.source_of(node)
                for alias in node.names:
                    if alias.name != "*":
                        ours = source.split(".")[0] == "tofu"
                        kind = Kind("foreign", desc=f"{source}.{alias.name}") if ours else OTHER
                        self.bindings[alias.asname or alias.name] = kind
                        if is_package_module(f"{source}.{alias.name}"):
                            self.modules.add(alias.asname or alias.name)

    def _read_definitions(self) -> None:
        def top(body: list[ast.stmt]) -> None:
            for st in body:
                if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    self.defined.add(st.name)
                elif isinstance(st, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                    targets = st.targets if isinstance(st, ast.Assign) else [st.target]
                    self.defined |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
                elif isinstance(st, (ast.If, ast.Try, ast.With)):
                    top(st.body + getattr(st, "orelse", []) + getattr(st, "finalbody", []))
                    for handler in getattr(st, "handlers", []):
                        top(handler.body)

        top(self.tree.body)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ClassDef):
                self.classes[node.name] = self._class_facts(node)
                self.defined |= self.classes[node.name].attrs
        changed = True
        while changed:  # what a local base inherits from another module, its subclasses inherit too
            changed = False
            for facts in self.classes.values():
                bases = [self.classes[b] for b in facts.local_bases if b in self.classes]
                if not facts.foreign_base and any(base.foreign_base for base in bases):
                    facts.foreign_base = changed = True

    def _class_facts(self, node: ast.ClassDef) -> ClassFacts:
        facts = ClassFacts(set(), {}, [], False)
        for base in node.bases:
            root = base.value if isinstance(base, ast.Subscript) else base
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and self.bindings.get(root.id, OTHER).what == "foreign":
                facts.foreign_base = True
            elif isinstance(base, ast.Name) and base.id != node.name:
                facts.local_bases.append(base.id)  # kept if the module defines it (see _own)
        for st in node.body:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                facts.attrs.add(st.name)
            elif isinstance(st, ast.Assign):
                for target in st.targets:
                    facts.attrs |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
                    if isinstance(target, ast.Name) and target.id == "__slots__":
                        facts.attrs |= {c.value for c in ast.walk(st.value) if isinstance(c, ast.Constant)}
            elif isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
                facts.attrs.add(st.target.id)
                facts.types[st.target.id] = st.annotation
        for method in node.body:
            if isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)) and (me := first_arg(method)):
                self._method_facts(method, me, facts)
        return facts

    def _method_facts(self, method: ast.FunctionDef | ast.AsyncFunctionDef, me: str, facts: ClassFacts) -> None:
        """What a method assigns to `me.attr` (and, for one target, what it holds)."""
        params = {a.arg: a.annotation for a in all_args(method) if a.annotation is not None}
        for sub in ast.walk(method):
            value: ast.expr | None = None
            if isinstance(sub, ast.Assign):
                targets, value = sub.targets, sub.value
            elif isinstance(sub, (ast.AnnAssign, ast.AugAssign)):
                targets, value = [sub.target], sub.value
            elif isinstance(sub, (ast.For, ast.AsyncFor)):
                targets = [sub.target]
            elif isinstance(sub, ast.withitem) and sub.optional_vars is not None:
                targets = [sub.optional_vars]
            else:
                continue
            for t in (n for target in targets for n in ast.walk(target)):
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == me:
                    facts.attrs.add(t.attr)
            target = targets[0]
            if len(targets) != 1 or not isinstance(target, ast.Attribute) or not is_name(target.value, me):
                continue
            if isinstance(sub, ast.AnnAssign):
                facts.types[target.attr] = sub.annotation
            elif isinstance(value, ast.Name) and value.id in params:
                facts.types.setdefault(target.attr, params[value.id])
            elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id[:1].isupper():
                facts.types.setdefault(target.attr, value.func)

    def _own(self, facts: ClassFacts, name: str) -> bool:
        """`name` is defined by the class, or by one of its bases in this module."""
        todo, seen = [facts], set()
        while todo:
            f = todo.pop()
            if name in f.attrs:
                return True
            seen.add(id(f))
            todo += [self.classes[b] for b in f.local_bases if b in self.classes and id(self.classes[b]) not in seen]
        return False

    # ---------------------------------------------------------- what an expression is

    def kind_of_annotation(self, ann: ast.expr | None) -> Kind | None:
        """The Kind an annotation (or a class's name) says; None when it says none."""
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            try:
                ann = ast.parse(ann.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):  # X | None: X
            kinds = [k for k in (self.kind_of_annotation(ann.left), self.kind_of_annotation(ann.right)) if k]
            return next((k for k in kinds if k.what == "foreign"), kinds[0] if kinds else None)
        if isinstance(ann, ast.Subscript):
            if is_name(ann.value, "Optional"):
                return self.kind_of_annotation(ann.slice)
            return None  # list[Peer]: a container's items are not the container
        if isinstance(ann, ast.Attribute):  # module.Class
            root: ast.expr = ann
            while isinstance(root, ast.Attribute):
                root = root.value
            binding = self.bindings.get(root.id) if isinstance(root, ast.Name) else None
            return None if binding is None else Kind(binding.what, desc=ast.unparse(ann))
        if isinstance(ann, ast.Name):
            if ann.id in self.classes:
                return Kind("local", ann.id)
            return self.bindings.get(ann.id)
        return None

    def made_by(self, callee: str) -> Kind | None:
        """What `callee(...)` makes, when the module says: an object of its
        class, or of a class imported from the package (a capitalized name)."""
        if callee in self.classes:
            return Kind("local", callee)
        binding = self.bindings.get(callee)
        if binding is not None and binding.what == "foreign" and callee[:1].isupper():
            return binding
        return None

    def kind_of(self, expr: ast.expr) -> Kind | None:
        """What `expr` is an object of, when the module says; None when it does not."""
        if isinstance(expr, ast.Name):
            for scope in reversed(self.scopes):
                if expr.id in scope:
                    return scope[expr.id]
            if expr.id in self.classes:
                return Kind("local", expr.id)
            return self.bindings.get(expr.id)
        root = expr
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(expr, ast.Attribute) and isinstance(root, ast.Name) and root.id in self.modules:
            kind = self.kind_of(root)  # tofu.reactor, os.path: what a module (or a module's module) holds
            if kind is not None and kind.what != "local":
                return Kind(kind.what, desc=ast.unparse(expr)) if kind.what == "foreign" else kind
        me = self.selfs[-1]
        if isinstance(expr, ast.Attribute) and me is not None and is_name(expr.value, me[0]):
            todo = [me[1]]
            while todo:  # self.attr: the class's (or a local base's) annotation of attr
                facts = todo.pop(0)
                if expr.attr in facts.types:
                    return self.kind_of_annotation(facts.types[expr.attr])
                todo += [self.classes[b] for b in facts.local_bases if b in self.classes]
        return None

    # ---------------------------------------------------------- the walk: rules (a) and (b)

    def report(self, node: ast.AST, text: str) -> None:
        self.found.append(f"{self.file}:{getattr(node, 'lineno', 0)}: {text}")

    def check(self, node: ast.AST, value: ast.expr, name: str) -> None:
        """`value.name`: another module's private name?"""
        if not is_private(name):
            return
        me = self.selfs[-1]
        what = f"{ast.unparse(value)}.{name}"
        if (me is not None and is_name(value, me[0])) or (isinstance(value, ast.Call) and is_name(value.func, "super")):
            if me is not None and me[1].foreign_base and not self._own(me[1], name):
                self.report(node, f"{what}: inherited from another module")
            return
        kind = self.kind_of(value)
        if kind is None:
            if name not in self.defined:
                self.report(node, f"{what}: this module defines no {name}")
        elif kind.what == "foreign":
            self.report(node, f"{what}: of {kind.desc}")
        elif kind.what == "local" and kind.cls in self.classes:
            facts = self.classes[kind.cls]
            if facts.foreign_base and not self._own(facts, name):
                self.report(node, f"{what}: inherited from another module")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.check(node, node.value, node.attr)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Name)
            and func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) > 1
        ):
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                self.check(node, node.args[0], name.value)
        callee = func if isinstance(func, ast.Name) else func.value if isinstance(func, ast.Attribute) else None
        kind = self.kind_of(callee) if callee is not None else None
        if kind is not None and kind.what == "foreign":  # Message(_bhdr=...) from another module
            for keyword in node.keywords:
                if keyword.arg is not None and is_private(keyword.arg):
                    self.report(node, f"{ast.unparse(func)}({keyword.arg}=...): a parameter of {kind.desc}")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        source = self.source_of(node)
        if source.split(".")[0] == "tofu":
            for alias in node.names:
                if is_private(alias.name) and not is_package_module(f"{source}.{alias.name}"):
                    self.report(node, f"imports {alias.name} from {source}")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(expr)
        facts = self.classes[node.name]
        for st in node.body:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
                me = first_arg(st)
                self.selfs.append((me, facts) if me else None)
                self.visit_function(st)
                self.selfs.pop()
            else:
                self.visit(st)

    def visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        for expr in [*getattr(node, "decorator_list", []), *node.args.defaults, *node.args.kw_defaults]:
            if expr is not None:
                self.visit(expr)
        args = all_args(node)
        for arg in args:
            if arg.annotation is not None:
                self.visit(arg.annotation)
        scope: dict[str, Kind | None] = {
            n.id: None for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
        scope |= {arg.arg: self.kind_of_annotation(arg.annotation) for arg in args}
        for sub in ast.walk(node):  # what the body says a name holds, wherever it says it
            if isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
                scope[sub.target.id] = self.kind_of_annotation(sub.annotation) or scope[sub.target.id]
            elif (
                isinstance(sub, ast.Assign)
                and len(sub.targets) == 1
                and isinstance(sub.targets[0], ast.Name)
                and isinstance(sub.value, ast.Call)
                and isinstance(sub.value.func, ast.Name)
            ):
                scope[sub.targets[0].id] = scope[sub.targets[0].id] or self.made_by(sub.value.func.id)
        self.scopes.append(scope)
        for st in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(st)
        self.scopes.pop()
        if getattr(node, "returns", None) is not None:
            self.visit(node.returns)  # type: ignore[union-attr]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.selfs.append(self.selfs[-1])
        self.visit_function(node)
        self.selfs.pop()

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.visit_FunctionDef(node)  # type: ignore[arg-type]

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit_function(node)

    def privates_read(self) -> list[str]:
        self.found = []
        self.visit(self.tree)
        return self.found

    # ---------------------------------------------------------- rule (c)

    def private_modules_imported(self) -> list[str]:
        found = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = self.source_of(node)
                targets = [
                    source,
                    *(f"{source}.{a.name}" for a in node.names if is_package_module(f"{source}.{a.name}")),
                ]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                for i, part in enumerate(parts[1:], 1):
                    home = parts[:i]
                    if parts[0] == "tofu" and is_private(part) and self.package[:i] != home:
                        found.append(f"{self.file}:{node.lineno}: imports {target}, which is {'.'.join(home)}'s")
        return found


def first_arg(method: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The name a method calls its object (or class) by; "" for a staticmethod."""
    if any(is_name(d, "staticmethod") for d in method.decorator_list):
        return ""
    args = method.args.posonlyargs + method.args.args
    return args[0].arg if args else ""


def all_args(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[ast.arg]:
    a = node.args
    return [*a.posonlyargs, *a.args, *([a.vararg] if a.vararg else []), *a.kwonlyargs, *([a.kwarg] if a.kwarg else [])]


def is_name(expr: ast.expr, name: str) -> bool:
    return isinstance(expr, ast.Name) and expr.id == name


def privates_of_other_modules(path: Path) -> list[str]:
    """Where the module at `path` reads or writes another module's private
    names, as "file:line: what". Read from the module's text alone (ast), so
    by these rules and heuristics:

    (a) An import of an underscore name from another module of the package
    (`from .x import _name`, `from ..x import _name`, `from tofu.x import
    _name`). Dunder names (`__version__`) are public, and a module is not a
    name here: `from . import _build` and `from ._build import is_compiled`
    are rule (c)'s business.

    (b) An attribute `expr._name`, read, written or deleted (and
    getattr/setattr/hasattr/delattr(expr, "_name"); and a keyword argument
    `_name=` to a callable of another module), judged by what `expr` is, as
    far as the module says:

    - `self` or `cls` (a method's first parameter, also inside functions
      nested in the method) and `super()`: the object's own, unless the
      class has a base imported from another module of the package; then
      `_name` must be one the class, or a base of it in this module,
      defines (a slot, a class-level name or method, an attribute its
      methods assign on self/cls), or it is the other module's, inherited.
    - A name whose type the module states: a parameter's or a variable's
      annotation (`peer: Peer`, `x: "Peer | None"`, `Optional[Peer]`; a
      container's annotation says nothing of its items), a variable assigned
      a class's call (`x = Peer(...)`: a class of this module, or an
      imported name that is capitalized, as classes are), and `self.attr`
      when the class annotates `attr` or assigns it from an annotated
      parameter or a class's call. An object of a class imported from the
      package, or a module or name imported from it (`console._out`), is
      another module's: any `_name` on it is a violation, even when this
      module defines a `_name` of its own. An object of a class of this
      module is its own (but for what the class inherits from another
      module, as for `self`). Anything imported from outside the package
      (`os._exit`, `sys._getframe`) is not the package's business.
    - Anything else (a loop variable, a call's result, an unannotated
      parameter): by name alone. `_name` is fine when this module defines a
      `_name` somewhere (any class's attribute as above, or a module-level
      name), else it is a violation. This never flags a module that reads
      only its own names; it misses a read of another module's `_name` when
      this module happens to define one too, which is why the rules above
      use the types the module states first.

    Tests are not checked: they may look inside.
    """
    return ModuleReader.of(path).privates_read()


def private_module_imports(path: Path) -> list[str]:
    """(c) Where the module at `path` imports a module whose own name starts
    with an underscore (`tofu._build`, `tofu.cli._parser`) from outside that
    module's package (tofu, tofu.cli): only the modules of its package, and
    of the packages below it, may import it; its names may be plain."""
    return ModuleReader.of(path).private_modules_imported()


def test_no_module_reads_another_modules_private_names() -> None:
    """docs/architecture.md: a module's privates are its own. A name several
    modules share is a plain one, hidden by where it lives (not in
    tofu.__all__, or in a module whose name starts with an underscore)."""
    found = [line for path in runtime_files() for line in privates_of_other_modules(path)]
    assert found == [], "\n".join(found)


def test_a_private_module_is_imported_only_by_its_own_package() -> None:
    found = [line for path in runtime_files() for line in private_module_imports(path)]
    assert found == [], "\n".join(found)


def read(source: str, module: str = "tofu.service.dispatch") -> list[str]:
    """The violations of rules (a) and (b) in `source`, as the module `module`."""
    package = module.split(".")[:-1]
    return [line.split(": ", 1)[1] for line in ModuleReader(source, module, package, "x.py").privates_read()]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # (a) imports
        ("from .requests import _Partial", ["imports _Partial from tofu.service.requests"]),
        ("from ..reactor import _Loop", ["imports _Loop from tofu.reactor"]),
        ("from tofu.service.requests import _Partial", ["imports _Partial from tofu.service.requests"]),
        ("from .. import __version__", []),
        ("from .. import _build", []),  # a module: rule (c)
        ("from .._build import is_compiled", []),
        ("from os import _exit", []),
        # (b) by the type the module states
        (
            "from .requests import Peer\ndef f(peer: Peer):\n    peer._bye = None",
            ["peer._bye: of tofu.service.requests.Peer"],
        ),
        (
            "from .requests import Peer\nclass D:\n    def _bye(self): pass\n    def f(self, peer: 'Peer | None'):\n"
            "        return peer._bye",
            ["peer._bye: of tofu.service.requests.Peer"],
        ),  # this module's own _bye is another
        (
            "from .requests import Peer\ndef f():\n    p = Peer(1)\n    return p._x",
            ["p._x: of tofu.service.requests.Peer"],
        ),
        ("from .requests import make\ndef f():\n    p = make()\n    return p._x", ["p._x: this module defines no _x"]),
        (
            "from .requests import Peer\nclass D:\n    def __init__(self, peer: Peer):\n        self.peer = peer\n"
            "    def f(self):\n        return self.peer._x",
            ["self.peer._x: of tofu.service.requests.Peer"],
        ),
        ("from . import console\nconsole._out()", ["console._out: of tofu.service.console"]),
        ("import tofu.reactor\ntofu.reactor._Loop", ["tofu.reactor._Loop: of tofu.reactor"]),
        ("import os, sys\nos._exit(sys._getframe())", []),
        ("class A:\n    __slots__ = ('_x',)\ndef f(a: A):\n    return a._x", []),
        ("class A:\n    def __init__(self):\n        self._x = 1\ndef f(a):\n    return a._x", []),
        ("def f(a):\n    return a._x", ["a._x: this module defines no _x"]),
        ("def f(a):\n    return getattr(a, '_x')", ["a._x: this module defines no _x"]),
        (
            "from .message import Message\nMessage(_bhdr=None)",
            ["Message(_bhdr=...): a parameter of tofu.service.message.Message"],
        ),
        # (b) self and inheritance
        ("class A:\n    def f(self):\n        return self._anything", []),
        (
            "from .connection import Base\nclass C(Base):\n    def f(self):\n        return self._session",
            ["self._session: inherited from another module"],
        ),
        (
            "from .connection import Base\nclass C(Base):\n    def __init__(self):\n        self._mine = 1\n"
            "    def f(self):\n        return self._mine",
            [],
        ),
        (
            "from .connection import Base\nclass C(Base):\n    pass\nclass S:\n    def __init__(self, c: C):\n"
            "        self._c = c\n    def f(self):\n        return self._c._session",
            ["self._c._session: inherited from another module"],
        ),
    ],
)
def test_private_names_are_read_right(source: str, expected: list[str]) -> None:
    assert read(source) == expected


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from ._parser import build_parser", "tofu.cli.serve", []),
        ("from . import _parser", "tofu.cli", []),  # tofu/cli/__init__.py
        ("from .cli._parser import build_parser", "tofu.__main__", ["tofu.cli._parser, which is tofu.cli's"]),
        ("from ..cli import _parser", "tofu.bench.command", ["tofu.cli._parser, which is tofu.cli's"]),
        ("import tofu.cli._tls", "tofu.bench.command", ["tofu.cli._tls, which is tofu.cli's"]),
        ("from .._build import is_compiled", "tofu.cli.serve", []),  # tofu._build is tofu's: tofu.cli is in it
    ],
)
def test_private_modules_are_read_right(source: str, module: str, expected: list[str]) -> None:
    package = module.split(".") if module == "tofu.cli" else module.split(".")[:-1]
    found = ModuleReader(source, module, package, "x.py").private_modules_imported()
    assert [line.split(": imports ", 1)[1] for line in found] == expected
