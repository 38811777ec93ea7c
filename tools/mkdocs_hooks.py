"""The documentation site's build steps that mkdocs cannot do from mkdocs.yml
alone (mkdocs.yml names this file under `hooks:`). Not part of the package.

- **Pages from files outside docs/.** The start page (index.md) is README.md
  and the Benchmarks page is benchmarks/README.md, read at every build: never
  copied into docs/, so the site cannot drift from them.
- **Links.** The pages link each other the way they are read in the
  repository (README.md links docs/concepts.md, docs/*.md link ../README.md
  and ../examples). On the site each link is rewritten to the page it points
  to, and a link to a file or folder outside docs/ (examples/, spec/tofu.toml,
  LICENSE, ...) becomes a page of the site that shows it (source/...), so the
  site stands on its own. A link to nothing is left as written: strict mode
  then fails on it.
- **The package.** mkdocstrings reads `tofu` from the source, laid out as the
  package installs (runtime/ as tofu/, generated/ as tofu/generated/) in a
  temporary directory: the same reference whichever build is installed (a
  compiled build keeps no docstrings).
- **Docstrings.** Every object an API page documents (`::: NAME`) has a
  docstring, and so does every public method and property of a documented
  class; and every name in the `__all__` of a module the pages document, in
  whole or in part, is on them. Anything missing is a warning, which
  `mkdocs build --strict` turns into a failure.
"""

from __future__ import annotations

import logging
import posixpath
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import griffe
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.livereload import LiveReloadServer
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.plugins.tofu_site")

# Site page <- the repository file it is made from (outside docs/).
PAGES_FROM_FILES = {"index.md": "README.md", "benchmarks.md": "benchmarks/README.md"}
SOURCE_PAGES = "source"  # a page showing a file or folder outside docs/: source/<path>.md
PACKAGE = {"tofu": "runtime", "tofu/generated": "generated"}  # as it installs <- the source folders
LANGUAGES = {".py": "python", ".toml": "toml", ".lua": "lua", ".md": "markdown", ".sh": "bash", ".json": "json"}

FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
# [text](target) or ![alt](target), the target without spaces, an optional "title" after it
LINK = re.compile(r"(!?\[(?:[^\[\]]|\[[^\]]*\])*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
DIRECTIVE = re.compile(r"^:::[ \t]+([\w.]+)", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][\w+.-]*:")


@dataclass
class _Build:
    root: Path
    docs: Path
    package: Path  # the temporary directory holding tofu/
    stage: tempfile.TemporaryDirectory[str]
    sources: dict[str, str] = field(default_factory=dict)  # site page -> repository path it shows


_build: _Build | None = None


def _cleanup() -> None:
    global _build
    if _build is not None:
        _build.stage.cleanup()
        _build = None


# ---------------------------------------------------------------- the package, for mkdocstrings


@event_priority(100)  # before mkdocstrings reads its handlers' configuration
def on_config(config: MkDocsConfig) -> MkDocsConfig:
    global _build
    _cleanup()  # `mkdocs serve` configures again on every change
    root = Path(config.config_file_path).resolve().parent
    stage = tempfile.TemporaryDirectory(prefix="tofu-site-")
    package = Path(stage.name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "*.c")
    for installed, source in PACKAGE.items():
        shutil.copytree(root / source, package / installed, ignore=ignore)
    _build = _Build(root=root, docs=Path(config.docs_dir).resolve(), package=package, stage=stage)
    python = config.plugins["mkdocstrings"].config["handlers"].setdefault("python", {})
    python["paths"] = [str(package)]
    return config


def on_shutdown() -> None:
    _cleanup()


def on_serve(server: LiveReloadServer, config: MkDocsConfig, builder: Callable[..., Any]) -> LiveReloadServer:
    """`mkdocs serve` rebuilds on a change to the files outside docs/ that the site shows too."""
    root = _state().root
    for watched in [*PAGES_FROM_FILES.values(), *PACKAGE.values()]:
        server.watch(str(root / watched))
    return server


def _state() -> _Build:
    assert _build is not None, "on_config has not run"
    return _build


# ---------------------------------------------------------------- pages and links


def _repo_path_of(page_uri: str) -> str:
    """The repository path a site page is read from."""
    build = _state()
    if page_uri in PAGES_FROM_FILES:
        return PAGES_FROM_FILES[page_uri]
    if page_uri in build.sources:
        return build.sources[page_uri]
    return (build.docs.relative_to(build.root) / page_uri).as_posix()


def _site_uri_of(repo_path: str) -> str:
    """The site page or file that shows a repository path (a file or a folder)."""
    build = _state()
    for page, source in PAGES_FROM_FILES.items():
        if source == repo_path:
            return page
    docs = build.docs.relative_to(build.root).as_posix()
    if repo_path.startswith(docs + "/"):
        return repo_path[len(docs) + 1 :]
    return f"{SOURCE_PAGES}/{repo_path}.md"


def _rewrite(markdown: str, page_uri: str, needed: set[str]) -> str:
    """`markdown` with every relative link pointed at the site page for its target.

    A target outside docs/ (and not a page of its own) is added to `needed`:
    it gets a page under source/.
    """
    build = _state()
    here = posixpath.dirname(_repo_path_of(page_uri))

    def replace(match: re.Match[str]) -> str:
        target = match[2]
        if SCHEME.match(target) or target.startswith(("#", "/")):
            return match[0]
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(here, path))
        if repo_path.startswith("../") or repo_path == ".." or not (build.root / repo_path).exists():
            return match[0]  # nothing there: strict mode reports the link as written
        site_uri = _site_uri_of(repo_path)
        if site_uri.startswith(SOURCE_PAGES + "/"):
            needed.add(repo_path)
            anchor = ""
        link = posixpath.relpath(site_uri, posixpath.dirname(page_uri) or ".")
        return match[1] + link + (f"#{anchor}" if anchor else "") + match[3]

    out, fence = [], ""  # fence: the opening fence of the code block we are in
    for line in markdown.splitlines(keepends=True):
        marker = FENCE.match(line)
        if not fence:
            fence = marker[1] if marker else ""
            out.append(line if marker else LINK.sub(replace, line))
            continue
        if marker and marker[1][0] == fence[0] and len(marker[1]) >= len(fence) and line.strip() == marker[1]:
            fence = ""  # the block closes
        out.append(line)
    return "".join(out)


def _fenced(text: str, language: str) -> str:
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}\n"


def _text_of(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _source_page(repo_path: str) -> str:
    """A page showing a repository file, or each file of a folder."""
    path = _state().root / repo_path
    if path.is_file():
        text = _text_of(path)
        shown = _fenced(text, LANGUAGES.get(path.suffix, "text")) if text is not None else "(binary)\n"
        return f"# `{repo_path}`\n\nThe file `{repo_path}` of the repository.\n\n{shown}"
    parts = [f"# `{repo_path}/`\n\nThe files of the folder `{repo_path}/` in the repository.\n"]
    for child in sorted(path.iterdir()):
        if child.name.startswith((".", "__pycache__")) or child.suffix in (".pyc", ".so"):
            continue
        if child.is_dir():
            parts.append(f"## `{child.name}/`\n\nA folder.\n")
            continue
        text = _text_of(child)
        if text is None:
            parts.append(f"## `{child.name}`\n\nBinary, {child.stat().st_size} bytes.\n")
        else:
            parts.append(f"## `{child.name}`\n\n{_fenced(text, LANGUAGES.get(child.suffix, 'text'))}")
    return "\n".join(parts)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    build = _state()
    for page, source in PAGES_FROM_FILES.items():
        if files.get_file_from_path(page) is not None:
            log.warning(f"docs/{page} exists, but the site makes {page} from {source}: remove one")
            continue
        files.append(File.generated(config, page, abs_src_path=str(build.root / source)))
    # Every file or folder outside docs/ that a page links to gets a page of its own.
    needed: set[str] = set()
    for file in files.documentation_pages():
        _rewrite(file.content_string, file.src_uri, needed)
    for repo_path in sorted(needed):
        uri = _site_uri_of(repo_path)
        build.sources[uri] = repo_path
        files.append(File.generated(config, uri, content=_source_page(repo_path)))
    _check_api_pages(files)
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri in _state().sources:
        return markdown  # a file shown as it is
    return _rewrite(markdown, page.file.src_uri, set())


# ---------------------------------------------------------------- docstrings


def _has_docstring(obj: griffe.Object | griffe.Alias) -> bool:
    return bool(obj.docstring and obj.docstring.value.strip())


def _missing_docstrings(obj: griffe.Object | griffe.Alias, path: str) -> list[str]:
    """`path` when `obj` has no docstring, and its class's undocumented public methods and properties."""
    target = obj.final_target if isinstance(obj, griffe.Alias) else obj
    missing = [] if _has_docstring(target) else [path]
    if isinstance(target, griffe.Class):
        for name, member in target.members.items():
            if name.startswith("_") or isinstance(member, griffe.Alias):
                continue
            if (member.is_function or "property" in member.labels) and not _has_docstring(member):
                missing.append(f"{path}.{name}")
    return missing


def _check_api_pages(files: Files) -> None:
    """Warn about every undocumented object the API pages show, and every
    public name of a module they document that they leave out."""
    documented: set[str] = set()
    for file in files.documentation_pages():
        documented.update(DIRECTIVE.findall(file.content_string))
    if not documented:
        return
    loader = griffe.GriffeLoader(search_paths=[str(_state().package)])
    for top in sorted({identifier.split(".", 1)[0] for identifier in documented}):
        try:
            loader.load(top)
        except ImportError:
            pass  # mkdocstrings itself reports what it cannot find
    loader.resolve_aliases(external=False)
    collection = loader.modules_collection
    modules: dict[str, griffe.Module] = {}  # each module the pages document, in whole or in part
    missing: list[str] = []
    for identifier in sorted(documented):
        try:
            obj = collection[identifier]
        except KeyError:
            continue  # mkdocstrings reports it
        target = obj.final_target if isinstance(obj, griffe.Alias) else obj
        if isinstance(target, griffe.Module) and target.path == identifier:
            modules[identifier] = target
            missing += [] if _has_docstring(target) else [identifier]
            for name in map(str, target.exports or []):
                missing += _missing_docstrings(target[name], f"{identifier}.{name}")
        else:
            parent = collection[identifier.rsplit(".", 1)[0]] if "." in identifier else None
            if isinstance(parent, griffe.Module):
                modules.setdefault(parent.path, parent)
            missing += _missing_docstrings(obj, identifier)
    for path in missing:
        log.warning(f"{path} has no docstring: the API reference would show it bare (write one)")
    for module_path, module in sorted(modules.items()):
        if module_path in documented:
            continue  # documented whole
        for name in map(str, module.exports or []):
            if f"{module_path}.{name}" not in documented:
                log.warning(
                    f"{module_path}.{name} is in {module_path}.__all__ but on no API page: "
                    f"add `::: {module_path}.{name}`"
                )
