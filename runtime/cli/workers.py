"""`tofu serve --workers N`: N echo-server processes sharing one TCP port.

Each worker is `python -m tofu serve ADDRESS... --as-worker`: its own
interpreter and its own engine, its TCP listeners opened with reuse_port=True
(SO_REUSEPORT), so the kernel spreads incoming connections over the workers.
This process (the parent) only supervises:

- It starts worker 1 first. When an ADDRESS asks for port 0, worker 1's
  `listening on URL` line says which port the kernel chose, and the other
  workers are given that port: all of them share the one real port.
- It prints `listening on URL (N workers)` once per address, when every
  worker listens; then every line a worker prints, prefixed `worker PID: `.
- SIGINT / SIGTERM are forwarded to every worker, which stops gracefully
  (ByeRequest to its clients, as `tofu serve` does); a second signal is
  forwarded too and stops them at once. The workers run in their own process
  group, so Ctrl-C in a terminal reaches them once, through the parent.
- A worker that ends while the others serve (a crash, a kill) is reported
  and the others are stopped gracefully: the parent exits 1. It does not
  restart workers: a supervisor (systemd, a container runtime) restarts the
  whole server, and a worker that dies at once would otherwise be restarted
  in a loop.
- Each worker's stdin is a pipe from the parent: if the parent dies without
  stopping them, the workers see end of file and stop gracefully.

Exit status: 0 when every worker ended with 0; 1 otherwise, with the first
failure on stderr (`tofu serve: worker PID exited with status 1`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from .. import TCPServerAddress, parse_url
from ..service.signals import StopSignals
from .console import EXIT_OK, EXIT_USAGE, CLIError, out
from .session import format_url

log = logging.getLogger("tofu.cli")

_LISTENING = "listening on "
# How a worker ends when a second signal reaches it after its graceful stop began.
_FORCED = (-signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM)
_SERVED = re.compile(r"served (\d+) request\(s\) on (\d+) connection\(s\)")


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    urls: list[str] = field(default_factory=list)  # what it said it listens on
    served: tuple[int, int] | None = None  # (requests, connections) from its last line
    ended: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid


# Events for the parent's main thread: ("line", worker, text), ("eof", worker, ""), ("signal", None, signum).
_Event = tuple[str, "_Worker | None", "str | int"]


class _Supervisor:
    def __init__(self, args: argparse.Namespace, listeners: int) -> None:
        self.args = args
        self.listeners = listeners  # addresses each worker listens on
        self.events: queue.Queue[_Event] = queue.Queue()
        self.workers: list[_Worker] = []
        self.stopping = False
        self.signals = 0  # SIGINT / SIGTERM received (and forwarded)
        self.failure: str | None = None  # the first worker that failed, and how

    # ------------------------------------------------------------ processes

    def start(self, addresses: list[TCPServerAddress]) -> _Worker:
        cmd = [sys.executable, "-m", "tofu"]
        if self.args.verbose:
            cmd.append("-" + "v" * self.args.verbose)
        cmd += ["serve", *(format_url(a) for a in addresses), "--grace", repr(self.args.grace), "--as-worker"]
        for flag in ("cert", "key", "ca"):  # TLS: every worker serves with the same files
            value = getattr(self.args, flag, None)
            if value is not None:
                cmd += [f"--{flag}", str(value)]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,  # the lifeline: closed when this process ends
            stdout=subprocess.PIPE,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            start_new_session=True,  # Ctrl-C in a terminal reaches the workers through the parent only
        )
        worker = _Worker(proc)
        self.workers.append(worker)
        threading.Thread(target=self._read, args=(worker,), name=f"tofu-worker-{proc.pid}", daemon=True).start()
        return worker

    def _read(self, worker: _Worker) -> None:
        assert worker.proc.stdout is not None
        for raw in worker.proc.stdout:
            self.events.put(("line", worker, raw.decode("utf-8", "replace").rstrip("\r\n")))
        self.events.put(("eof", worker, ""))

    def signal_all(self, signum: int) -> None:
        for w in self.workers:
            if not w.ended:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signum)

    # ------------------------------------------------------------ events

    def handle(self, kind: str, worker: _Worker | None, value: str | int) -> None:
        """One event: print a worker's line, note its end, forward a signal."""
        if kind == "signal":
            assert isinstance(value, int)
            self.signals += 1
            if not self.stopping:
                self.stopping = True
                out(f"stopping: signalling {self._running()} worker(s)")
            self.signal_all(value)
            return
        assert worker is not None and isinstance(value, str)
        if kind == "line":
            if value.startswith(_LISTENING) and len(worker.urls) < self.listeners:
                worker.urls.append(value[len(_LISTENING) :])
                return
            if m := _SERVED.fullmatch(value):
                worker.served = (int(m.group(1)), int(m.group(2)))
            out(f"worker {worker.pid}: {value}")
            return
        worker.ended = True
        status = worker.proc.wait()
        if self.signals > 1 and status in _FORCED:
            out(f"worker {worker.pid} stopped at once")
        elif status != 0 or not self.stopping:
            how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
            self.failure = self.failure or f"worker {worker.pid} {how}"
            out(f"worker {worker.pid} {how}" + ("" if self.stopping else ": stopping the others"))
            if not self.stopping:
                self.stopping = True
                self.signal_all(signal.SIGTERM)

    def _running(self) -> int:
        return sum(1 for w in self.workers if not w.ended)

    def wait_for(self, done: list[_Worker]) -> bool:
        """Handle events until every worker in `done` listens on every address
        (True) or stopping began (False)."""
        while not all(len(w.urls) == self.listeners for w in done):
            if self.stopping:
                return False
            self.handle(*self.events.get())
        return not self.stopping

    def run_until_all_ended(self) -> None:
        while self._running():
            self.handle(*self.events.get())


def _check(args: argparse.Namespace) -> list[TCPServerAddress]:
    tcp = []
    for a in args.address:
        if not isinstance(a, TCPServerAddress):
            raise CLIError(
                f"--workers {args.workers}: {format_url(a)} cannot be shared by several processes "
                "(only a TCP port can); run one 'tofu serve' per socket path, or use --workers 1",
                EXIT_USAGE,
            )
        tcp.append(a)
    return tcp


def serve_with_workers(args: argparse.Namespace) -> int:
    """`tofu serve ADDRESS... --workers N` (N > 1): see the module's docstring."""
    addresses = _check(args)
    sup = _Supervisor(args, len(addresses))
    watcher = StopSignals(lambda signum: sup.events.put(("signal", None, signum)))
    try:
        first = sup.start(addresses)
        if sup.wait_for([first]):
            # Port 0 becomes the port worker 1 was given; the host stays as written.
            shared = [
                dataclasses.replace(a, port=_port_of(url)) if a.port == 0 else a
                for a, url in zip(addresses, first.urls)
            ]
            others = [sup.start(shared) for _ in range(args.workers - 1)]
            if sup.wait_for(others):
                for url in first.urls:
                    out(f"listening on {url} ({args.workers} workers)")
                out("workers: " + ", ".join(str(w.pid) for w in sup.workers))
        sup.run_until_all_ended()
    finally:
        watcher.close()
        for w in sup.workers:
            if w.proc.poll() is None:  # only after an error in this process: do not leave them running
                w.proc.kill()
                w.proc.wait()
            if w.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    w.proc.stdin.close()
            if w.proc.stdout is not None:
                w.proc.stdout.close()
    served = [w.served for w in sup.workers if w.served is not None]
    if served:
        out(
            f"served {sum(r for r, _ in served)} request(s) on {sum(c for _, c in served)} connection(s) "
            f"in {len(sup.workers)} worker(s)"
        )
    out("stopped")
    if sup.failure is not None:
        raise CLIError(sup.failure)  # one line on stderr, exit status 1
    return EXIT_OK


def _port_of(url: str) -> int:
    address = parse_url(url, server=True)
    assert isinstance(address, TCPServerAddress)
    return address.port
