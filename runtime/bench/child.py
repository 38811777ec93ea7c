"""A server or client process of one trial (`python -m tofu.bench --role ... --spec ...`)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from ._process import ParentLink, die_with_parent, raise_nofile_limit
from .face_peer import face_client
from .floor import floor_client, floor_server
from .tofu_peer import tofu_client, tofu_server
from .zmq_peer import zmq_client, zmq_server

ROLES: dict[tuple[str, str], Callable[[dict[str, Any], ParentLink], dict[str, Any]]] = {
    ("tofu", "server"): tofu_server,
    ("tofu", "client"): tofu_client,
    ("pyzmq", "server"): zmq_server,
    ("pyzmq", "client"): zmq_client,
    ("floor", "server"): floor_server,
    ("floor", "client"): floor_client,
}


def _preload(impl: str) -> None:
    """Import what the implementation needs, while the server starts."""
    if impl == "tofu":
        import tofu  # noqa: F401
    elif impl == "pyzmq":
        import zmq  # noqa: F401


def _role(role: str, spec: dict[str, Any]) -> Callable[[dict[str, Any], ParentLink], dict[str, Any]]:
    """The function a process of this trial runs: a client through the
    service layer (Workload.face) or the implementation's own."""
    if role == "client" and spec.get("face"):
        return face_client
    return ROLES[(spec["impl"], role)]


def child_main(role: str, spec: dict[str, Any]) -> int:
    """Entry point of a server or client process."""
    die_with_parent()
    # The watchdog: whatever happens, this process ends by its deadline.
    timer = threading.Timer(spec["timeout"], lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    raise_nofile_limit()
    chan = ParentLink(role)
    try:
        if role == "client":  # started with the server: get ready, then wait for the server to be
            _preload(spec["impl"])
            chan.wait_go()
        result = _role(role, spec)(spec, chan)
    except Exception as exc:  # noqa: BLE001 - any failure is reported to the parent, then the child ends
        import traceback

        traceback.print_exc()
        chan.emit("error", message=f"{type(exc).__name__}: {exc}")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)
    chan.emit("result", **result)
    chan.emit("done")
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown (daemon threads of an engine that failed to stop
    # must not keep the process alive).
    os._exit(0)
