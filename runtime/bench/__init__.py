"""tofu bench: tofu against pyzmq and against a no-engine floor, side by side.

    tofu bench                      # every workload, TCP and UDS, 3 runs each
    tofu bench --quick              # a short run (a few seconds per workload)
    python -m tofu.bench --workloads oneway-64,rtt --transports tcp --json out.json

Every trial runs its server and its client in two separate processes
(`python -m tofu.bench --role server|client --spec JSON`), on loopback only:
TCP on 127.0.0.1 and Unix domain sockets (and, with `--transports ...,tls`,
TLS over TCP for tofu and the floor). The parent process starts them,
relays their phase signals, collects their results (one JSON line each on
stdout) and kills whatever has not exited by the trial's deadline; each child
also has its own watchdog and dies with its parent (PR_SET_PDEATHSIG).

The three implementations of every workload:

  tofu   the engine: Signals / Requests posted on a ChannelGroup, received
         with wait_receive, every received message put back to the pool.
  pyzmq  PUSH/PULL, REQ/REP, DEALER/ROUTER (optional: skipped when absent).
  floor  plain blocking Python sockets carrying the same 16-byte-header frames,
         built with the generated codec; the reader is a loop over recv_into
         and struct unpack that hands on each body. No engine, no threads: the
         best a Python program can do with the same wire format.

Figures are the median over --repeat runs; throughput is measured at the
receiver from the first message after the warm-up to the last one.

This module imports only the standard library at import time; pyzmq, rich and
psutil are used when installed (`pip install 'tofu-messaging[bench]'`).
"""

from .command import add_arguments, main, run
from .workloads import IMPLS, TRANSPORTS, WORKLOADS
from .zmq_peer import have_pyzmq

__all__ = ["IMPLS", "TRANSPORTS", "WORKLOADS", "add_arguments", "have_pyzmq", "main", "run"]
