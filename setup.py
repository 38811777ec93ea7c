"""The build: compiled with mypyc where it can be, pure Python otherwise.

`pip install .` compiles the per-message modules (COMPILED_MODULES in
runtime/_build.py) with mypyc
when mypy/mypyc, a C compiler and the Python headers are all there; if any
step fails (mypyc's own type check, the C compiler, missing headers), the
wheel is pure Python. It is all or nothing: never some modules compiled and
others not. Either way the build prints one line saying which it made
(`pip install -v .` shows it):

    tofu build: compiled with mypyc (N modules: ...)
    tofu build: pure Python (<why>)

Pure Python always:
- TOFU_PURE=1 in the environment (e.g. `TOFU_PURE=1 pip install .`);
- an editable install (`pip install -e .`): the package is then runtime/ and
  generated/ themselves, so an edited .py file is what runs, never a stale
  compiled module.

The same source serves both builds. mypyc names a module from the folders
above it, and the source tree maps `tofu` onto runtime/ (and `tofu.generated`
onto generated/), so a compiled build first stages a copy laid out as the
package installs (build/stage/tofu/...) and builds everything from there.
At run time `tofu.COMPILED` says which build is running.
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
STAGE = Path("build") / "stage"  # relative: setuptools wants package dirs relative to setup.py


def _compiled_modules() -> list[str]:
    """runtime/_build.py's COMPILED_MODULES (the one list), as staged file paths."""
    tree = ast.parse((ROOT / "runtime" / "_build.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "COMPILED_MODULES" for t in node.targets):
            return [name.replace(".", "/") + ".py" for name in ast.literal_eval(node.value)]
    raise RuntimeError("runtime/_build.py has no COMPILED_MODULES")


COMPILED_MODULES = _compiled_modules()

PACKAGES = ["tofu", "tofu.bench", "tofu.cli", "tofu.conform", "tofu.generated", "tofu.service"]
PACKAGE_DATA = {"tofu": ["py.typed"], "tofu.generated": ["*.lua"]}
SOURCE_DIRS = {"tofu": "runtime", "tofu.generated": "generated"}


def _say(line: str) -> None:
    print(f"tofu build: {line}", file=sys.stderr, flush=True)


def _editable() -> bool:
    # setuptools runs this file with the `editable_wheel` command for `pip install -e .`
    return any(arg == "editable_wheel" for arg in sys.argv[1:])


def _wants_wheel() -> bool:
    # Only building a wheel (or build/install) compiles; metadata queries
    # (egg_info, dist_info, ...) must stay quick and never need mypyc.
    return any(arg in ("bdist_wheel", "build", "build_ext", "install") for arg in sys.argv[1:])


def _stage() -> None:
    """A copy of the sources laid out as the package installs."""
    stage = ROOT / STAGE
    shutil.rmtree(stage, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "*.c")
    shutil.copytree(ROOT / "runtime", stage / "tofu", ignore=ignore)
    shutil.copytree(ROOT / "generated", stage / "tofu" / "generated", ignore=ignore)


class _AllOrNothing(build_ext):
    """build_ext that leaves a pure Python build when any extension fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - no compiler, no headers, a compiler error: all the same
            for ext in self.extensions:
                for path in (Path(self.get_ext_fullpath(ext.name)), ROOT / self.get_ext_filename(ext.name)):
                    path.unlink(missing_ok=True)
            self.extensions = []
            self.distribution.ext_modules = []
            _say(f"pure Python (compiling the C failed: {type(exc).__name__}: {exc})")
            return
        if self.extensions:
            _say(f"compiled with mypyc ({len(COMPILED_MODULES)} modules: {', '.join(_names())})")


def _names() -> list[str]:
    return [m.removesuffix(".py").replace("/", ".") for m in COMPILED_MODULES]


def _compiled_extensions() -> list[object] | str:
    """mypyc's extensions for COMPILED_MODULES, or why there are none."""
    try:
        from mypyc.build import mypycify
    except Exception as exc:  # noqa: BLE001 - whatever stops the import: pure Python
        return f"mypyc is not available: {exc}"
    _stage()
    here = Path.cwd()
    try:
        os.chdir(ROOT)
        return list(
            mypycify(
                [str(STAGE / m) for m in COMPILED_MODULES],
                opt_level="3",
                group_name="tofu",
                target_dir=str(Path("build") / "mypyc"),
            )
        )
    except BaseException as exc:  # noqa: BLE001 - mypyc exits (SystemExit) on a type error
        return f"mypyc failed: {type(exc).__name__}: {exc}"
    finally:
        os.chdir(here)


def main() -> None:
    ext_modules: list[object] = []
    package_dir = SOURCE_DIRS
    if os.environ.get("TOFU_PURE", "") not in ("", "0"):
        why = "TOFU_PURE is set"
    elif _editable():
        why = "an editable install is always pure Python, so an edited .py file is what runs"
    elif not _wants_wheel():
        why = ""
    else:
        result = _compiled_extensions()
        if isinstance(result, str):
            why = result
        else:
            why, ext_modules = "", result
            package_dir = {"tofu": str(STAGE / "tofu"), "tofu.generated": str(STAGE / "tofu" / "generated")}
    if why:
        _say(f"pure Python ({why})")
    setup(
        packages=PACKAGES,
        package_dir=package_dir,
        package_data=PACKAGE_DATA,
        ext_modules=ext_modules,
        cmdclass={"build_ext": _AllOrNothing},
    )


if __name__ == "__main__":  # as setuptools runs it; tests import it
    main()
