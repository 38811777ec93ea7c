"""`mypyc_attr` for the compiled classes, whether or not mypy is installed.

mypyc reads `@mypyc_attr(...)` on a class as it compiles it (acyclic,
free_list_len, native_class); at run time the decorator does nothing. It
comes from mypy_extensions, which comes with mypy: a requirement of the
compiled build and of type checking, not of running tofu. Where it is
missing (a pure Python install), a stand-in returns the class unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["mypyc_attr"]

try:
    from mypy_extensions import mypyc_attr
except ImportError:
    _C = TypeVar("_C")

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[_C], _C]:
        return lambda cls: cls
