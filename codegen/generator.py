"""Turn the declarative protocol spec into Python (and Lua) source.

The spec (spec/tofu.toml) is read with the standard library's tomllib, checked
for consistency, reshaped into a small context and rendered through the jinja2
templates in codegen/templates/. Output is deterministic: same spec, same bytes.

The same spec also renders docs/protocol.md, the protocol's reference page,
and the state diagrams of its channels (docs/machine-<role>.dot, which
Graphviz renders to the .svg beside it: codegen/diagrams.py), so the page
cannot drift from the code.

    python -m codegen                    rewrite generated/ and docs/ from the spec
    python -m codegen --render-diagrams  the same, then render every diagram to SVG (needs Graphviz's dot)
    python -m codegen --check            exit 1, naming the stale files, if any of them differs
"""

from __future__ import annotations

import argparse
import ast
import tomllib
from pathlib import Path
from typing import Any

import jinja2

from codegen import diagrams
from codegen.machine import MachineError, build_machine, table_context
from codegen.machine_doc import doc_context

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec" / "tofu.toml"
OUT = ROOT / "generated"
DOCS = ROOT / "docs"
TEMPLATES = Path(__file__).resolve().parent / "templates"

# template name -> file written under generated/
OUTPUTS = {
    "__init__.py.j2": "__init__.py",
    "enums.py.j2": "enums.py",
    "errors.py.j2": "errors.py",
    "constants.py.j2": "constants.py",
    "codec.py.j2": "codec.py",
    "structs.py.j2": "structs.py",
    "tofu.lua.j2": "tofu.lua",
    "machine.py.j2": "machine.py",
}
# template name -> file written under docs/
DOC_OUTPUTS = {
    "protocol.md.j2": "protocol.md",
}
# rendered once per role of the channel state machine, as docs/machine-<role>.dot
DIAGRAM_TEMPLATE = "machine.dot.j2"
# The modules whose public names the generated package re-exports.
PACKAGE_EXPORTS = ("constants", "enums", "errors")

# struct format letter and construct class of an unsigned integer, by width in bytes
STRUCT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
# (a single byte has no byte order: Int8ub either way)
CONSTRUCT_INTS = {
    "big": {1: "Int8ub", 2: "Int16ub", 4: "Int32ub", 8: "Int64ub"},
    "little": {1: "Int8ub", 2: "Int16ul", 4: "Int32ul", 8: "Int64ul"},
}


class SpecError(ValueError):
    """The spec contradicts itself."""


def load_spec(path: Path = SPEC) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def _split_docs(table: dict[str, Any], section: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A `[section]` table's values and its `[section.doc]` meanings, apart."""
    values = {name: value for name, value in table.items() if name != "doc"}
    docs = dict(table.get("doc", {}))
    unknown = sorted(docs.keys() - values.keys())
    if unknown:
        raise SpecError(f"[{section}.doc] describes {', '.join(unknown)}, which [{section}] does not declare")
    return values, docs


def build_context(spec: dict[str, Any], spec_name: str) -> dict[str, Any]:
    """Check the spec and derive what the templates need."""
    header = spec["header"]
    fields = sorted(header["fields"], key=lambda f: f["offset"])
    offset = 0
    for field in fields:
        if field["offset"] != offset:
            raise SpecError(f"header field {field['name']} at {field['offset']}, expected {offset}")
        if field["width"] not in STRUCT_CODES:
            raise SpecError(f"header field {field['name']} has unsupported width {field['width']}")
        field["struct_code"] = STRUCT_CODES[field["width"]]
        field["max"] = (1 << (8 * field["width"])) - 1
        offset += field["width"]
    if offset != header["size"]:
        raise SpecError(f"header fields cover {offset} bytes, header size is {header['size']}")
    order = {"big": ">", "little": "<"}[header["byte_order"]]

    proto = sorted(spec["proto"], key=lambda b: b["bit"])
    used = 0
    for bit in proto:
        bit["mask"] = (1 << bit["width"]) - 1
        span = bit["mask"] << bit["bit"]
        if used & span:
            raise SpecError(f"proto bit field {bit['name']} overlaps another")
        used |= span
    if used != 0xFF:
        raise SpecError("proto bit fields must cover the whole byte")

    enums = {name: dict(e) for name, e in spec["enums"].items()}
    op_codes = sorted(spec["op_codes"], key=lambda o: o["code"])
    op_names = {o["name"] for o in op_codes}
    for op in op_codes:
        if op["type"] not in enums["MessageType"]["members"]:
            raise SpecError(f"op code {op['name']} has unknown type {op['type']}")
        if op["role"] not in enums["MessageRole"]["members"]:
            raise SpecError(f"op code {op['name']} has unknown role {op['role']}")
        if op.get("echo") and op["echo"] not in op_names:
            raise SpecError(f"op code {op['name']} echoes unknown {op['echo']}")
    op_field = next(b for b in proto if b.get("enum") == "OpCode")
    if [o["code"] for o in op_codes] != list(range(len(op_codes))):
        raise SpecError("op codes must be numbered 0..N-1")
    if len(op_codes) > op_field["mask"] + 1:
        raise SpecError("more op codes than the op_code bit field can hold")

    statuses = sorted(spec["statuses"], key=lambda s: s["value"])
    if [s["value"] for s in statuses] != list(range(len(statuses))):
        raise SpecError("statuses must be numbered 0..N-1")
    for status in statuses[1:]:
        if "error" not in status:
            raise SpecError(f"status {status['name']} has no error class")

    limits, limit_docs = _split_docs(spec["limits"], "limits")
    engine_headers, engine_header_docs = _split_docs(spec["engine_headers"], "engine_headers")
    addresses = dict(spec["addresses"])
    _, address_docs = _split_docs({k: v for k, v in addresses.items() if k != "schemes"}, "addresses")
    addresses.pop("doc", None)
    address_headers, address_header_docs = _split_docs(spec.get("address_headers", {}), "address_headers")
    try:
        machine = build_machine(spec, [o["name"] for o in op_codes], [s["name"] for s in statuses])
    except MachineError as exc:
        raise SpecError(f"[machine]: {exc}") from exc

    return {
        "spec_name": spec_name,
        "protocol": spec["protocol"],
        "header": header,
        "fields": fields,
        "construct_int": CONSTRUCT_INTS[header["byte_order"]],
        # the status byte is always an Int8ub enum
        "construct_ints": sorted({CONSTRUCT_INTS[header["byte_order"]][f["width"]] for f in fields} | {"Int8ub"}),
        "struct_format": order + "".join(f["struct_code"] for f in fields),
        "proto": proto,
        "enums": enums,
        "op_codes": op_codes,
        "op_field": op_field,
        "statuses": statuses,
        "unknown_status": statuses[-1],
        "limits": limits,
        "limit_docs": limit_docs,
        "addresses": addresses,
        "address_docs": address_docs,
        "engine_headers": engine_headers,
        "engine_header_docs": engine_header_docs,
        "address_headers": address_headers,
        "address_header_docs": address_header_docs,
        **table_context(machine, [o["name"] for o in op_codes], {s["name"]: s["value"] for s in statuses}),
        **doc_context(machine),
    }


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pystr"] = repr  # a Python string literal
    return env


def _context(spec_path: Path) -> dict[str, Any]:
    try:
        spec_name = spec_path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        spec_name = spec_path.name
    return build_context(load_spec(spec_path), spec_name)


def render_all(spec_path: Path = SPEC) -> dict[str, str]:
    """Return {file name under generated/: text} for the given spec."""
    env = _environment()
    context = _context(spec_path)
    rendered = {out: env.get_template(tpl).render(context) for tpl, out in OUTPUTS.items() if out != "__init__.py"}
    # The package re-exports each module's public names, listed one by one so
    # that type checkers see them (they do not follow a computed __all__).
    context["exports"] = {module: public_names(rendered[f"{module}.py"]) for module in PACKAGE_EXPORTS}
    return {"__init__.py": env.get_template("__init__.py.j2").render(context), **rendered}


def render_docs(spec_path: Path = SPEC) -> dict[str, str]:
    """Return {file name under docs/: text} for the given spec.

    A reference page explains every name it lists: a limit, engine header,
    address header or op code without a meaning in the spec is a SpecError."""
    context = _context(spec_path)
    missing = (
        [f"[limits.doc] {name}" for name in context["limits"] if name not in context["limit_docs"]]
        + [f"[engine_headers.doc] {n}" for n in context["engine_headers"] if n not in context["engine_header_docs"]]
        + [
            f"[addresses.doc] {n}"
            for n in ("connect_to", "listen_on", "reuse_port")
            if n not in context["address_docs"]
        ]
        + [f"[address_headers.doc] {n}" for n in context["address_headers"] if n not in context["address_header_docs"]]
        + [f"doc of op code {op['name']}" for op in context["op_codes"] if not op.get("doc")]
    )
    if missing:
        raise SpecError("docs/protocol.md needs a meaning for each of: " + ", ".join(missing))
    env = _environment()
    rendered = {out: env.get_template(tpl).render(context) for tpl, out in DOC_OUTPUTS.items()}
    for diagram in context["diagrams"]:
        rendered[f"{diagram.file}.dot"] = env.get_template(DIAGRAM_TEMPLATE).render(context, diagram=diagram)
    return rendered


def dot_sources(rendered_docs: dict[str, str]) -> dict[str, str]:
    """The diagrams' DOT sources among render_docs()'s files."""
    return {name: text for name, text in rendered_docs.items() if name.endswith(".dot")}


def render_diagrams(rendered_docs: dict[str, str], out_dir: Path = DOCS) -> list[str]:
    """Render each DOT source of `rendered_docs` to its SVG in `out_dir`; the names written."""
    dot = diagrams.find_dot()
    written = []
    for name, source in dot_sources(rendered_docs).items():
        svg = diagrams.svg_name(name)
        (out_dir / svg).write_text(diagrams.render_svg(source, dot), encoding="utf-8")
        written.append(svg)
    return written


def public_names(source: str) -> list[str]:
    """The literal `__all__` list of a rendered module."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise ValueError("the rendered module has no literal __all__")


def stale_files(rendered: dict[str, str], out_dir: Path = OUT, label: str = "generated") -> list[str]:
    """The files of `rendered` that `out_dir` lacks or holds otherwise, as `label/name`."""
    stale = []
    for name, text in rendered.items():
        path = out_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(f"{label}/{name}")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codegen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if generated/ or docs/ is stale, naming the files")
    parser.add_argument(
        "--render-diagrams",
        action="store_true",
        help="after writing, render docs/machine-*.dot to SVG with Graphviz's dot",
    )
    parser.add_argument("--spec", type=Path, default=SPEC, help="spec file (default: spec/tofu.toml)")
    args = parser.parse_args(argv)

    docs = render_docs(args.spec)
    outputs = [(render_all(args.spec), OUT, "generated"), (docs, DOCS, "docs")]
    stale = [path for rendered, out_dir, label in outputs for path in stale_files(rendered, out_dir, label)]
    if args.check:
        stale_svgs = diagrams.stale_svgs(dot_sources(docs), DOCS)
        if stale:
            print("stale generated files (run `python -m codegen`): " + ", ".join(stale))
        if stale_svgs:
            print(f"stale diagrams (run `{diagrams.RENDER_COMMAND}`, which needs Graphviz): " + ", ".join(stale_svgs))
        return 1 if stale or stale_svgs else 0
    for rendered, out_dir, _ in outputs:
        out_dir.mkdir(exist_ok=True)
        for name, text in rendered.items():
            (out_dir / name).write_text(text, encoding="utf-8")
    written = ", ".join(f"{len(rendered)} to {label}/" for rendered, _, label in outputs)
    print(f"wrote {written} ({len(stale)} changed)")
    if args.render_diagrams:
        try:
            svgs = render_diagrams(docs)
        except diagrams.DotMissing as exc:
            print(exc)
            return 1
        print(f"rendered {len(svgs)} diagrams: " + ", ".join(f"docs/{name}" for name in svgs))
    else:
        stale_svgs = diagrams.stale_svgs(dot_sources(docs), DOCS)
        if stale_svgs:
            print(f"the diagrams are stale: run `{diagrams.RENDER_COMMAND}` (needs Graphviz): " + ", ".join(stale_svgs))
    return 0
