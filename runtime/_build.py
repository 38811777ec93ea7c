"""Which build of tofu is running: compiled with mypyc, or pure Python.

setup.py reads COMPILED_MODULES from this file (it is the one list of what a
compiled build compiles) and compiles them all or none.
"""

from __future__ import annotations

import importlib
import importlib.machinery

# The per-message path: what a compiled build compiles with mypyc.
COMPILED_MODULES = (
    "tofu.message",
    "tofu.framing",
    "tofu.protocol",
    "tofu.pool",
    "tofu.mailbox",
    "tofu.inbox",
    "tofu.window",
    "tofu.groups",
    "tofu.channels",
    "tofu.transfer",
    "tofu.transport",
    "tofu.reactor",
    "tofu.options",
    "tofu.ampe",
    "tofu.direct",
    "tofu.direct_receive",
    "tofu.poller",
    "tofu.timers",
    "tofu.generated.codec",
    "tofu.generated.machine",
)


def is_compiled() -> bool:
    """True when every module of COMPILED_MODULES is a compiled extension."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return all(
        str(getattr(importlib.import_module(name), "__file__", "")).endswith(suffixes) for name in COMPILED_MODULES
    )
