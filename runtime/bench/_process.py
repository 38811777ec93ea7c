"""What every bench process needs: memory figures, limits, the link to the parent."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import signal
import sys
import time
from typing import Any

PREFIX = "@@"  # a child's event lines on stdout start with this


def _rss() -> int:
    """Resident set size of this process now, in bytes."""
    try:
        import psutil  # type: ignore[import-untyped]

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """Peak resident set size of this process, in bytes.

    Linux: VmHWM, the high-water mark of this address space. Not ru_maxrss:
    Linux keeps that across exec, so a child would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def settled_rss() -> int:
    """Resident set size once garbage is collected and the process has settled a moment."""
    gc.collect()
    time.sleep(0.2)
    gc.collect()
    return _rss()


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so no child outlives a killed bench."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001, S110 - best effort: the watchdog still bounds the child
        pass
    if os.getppid() == 1:  # the parent is already gone
        os._exit(4)


class ParentLink:
    """The child's line to the parent: events out on stdout, `go` lines in on stdin."""

    def __init__(self, role: str) -> None:
        self.role = role

    def emit(self, ev: str, **data: Any) -> None:
        data["ev"] = ev
        sys.stdout.write(PREFIX + json.dumps(data) + "\n")
        sys.stdout.flush()

    def sync(self, phase: str) -> None:
        """Tell the peer (through the parent) that `phase` is done."""
        self.emit("sync", phase=phase)

    def wait_go(self) -> None:
        """Block until the peer has signalled its phase."""
        line = sys.stdin.readline()
        if not line:
            raise RuntimeError("the parent closed stdin")


class BenchError(RuntimeError):
    pass


def _deadline_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise BenchError("timed out")
    return left
