"""A client that sends many small Requests to `tofu serve` and never reads
the Responses: how much does the server's memory grow?

    .venv/bin/python benchmarks/unread_responses.py [--requests 300000] [--python PY]

Starts `PY -m tofu serve tcp://127.0.0.1:0` (PY: this interpreter unless
given; PYTHONPATH passes through, so another tofu can be measured), connects
a plain socket, sends a HelloRequest and the Requests as fast as the kernel
takes them (never reading), and reports the server's resident memory
(/proc/PID/statm) before and after. With flow control (Options.max_unsent_bytes)
the server stops reading this client once its unsent answers pass the bound,
so the sender stalls and the server's memory stays flat; without it the
server reads everything and queues every answer. Linux only.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

import tofu

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def settled_rss(pid: int, quiet: float = 1.0, limit: float = 60.0) -> int:
    """The RSS once it has not changed for `quiet` seconds (or after `limit`)."""
    start = time.monotonic()
    last, since = rss(pid), time.monotonic()
    while time.monotonic() - start < limit:
        time.sleep(0.1)
        now = rss(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300_000)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--stall", type=float, default=3.0, help="seconds without progress that count as stalled")
    args = parser.parse_args()

    server = subprocess.Popen(
        [args.python, "-m", "tofu", "serve", "tcp://127.0.0.1:0"], stdout=subprocess.PIPE, text=True
    )
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        port = int(line.strip().rsplit(":", 1)[1].rstrip("/"))
        sock = socket.create_connection(("127.0.0.1", port))
        hello = tofu.Message(tofu.OpCode.HelloRequest)
        hello.thdrs.append(tofu.CONNECT_TO_HEADER, f"tcp|127.0.0.1|{port}")
        sock.sendall(tofu.encode(hello))
        before = settled_rss(server.pid)

        req = tofu.Message(tofu.OpCode.Request)
        req.bhdr.message_id = 1
        req.body.append(b"12345678")
        frame = tofu.encode(req)
        data = memoryview(frame * args.requests)
        sock.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_WRITE)
        sent = 0
        started = time.monotonic()
        while sent < len(data):
            if not sel.select(args.stall):
                break  # no room for args.stall seconds: the server stopped reading
            try:
                sent += sock.send(data[sent : sent + 1 << 20])
            except BlockingIOError:
                pass
        elapsed = time.monotonic() - started
        after = settled_rss(server.pid)
        mib = 1024 * 1024
        print(f"requests offered     {args.requests}")
        print(f"requests sent        {sent // len(frame)} ({'all' if sent == len(data) else 'sender stalled'})")
        print(f"send phase           {elapsed:.1f} s")
        print(f"server RSS before    {before / mib:.1f} MiB")
        print(f"server RSS after     {after / mib:.1f} MiB")
        print(f"growth               {(after - before) / mib:.1f} MiB")
        sock.close()
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()


if __name__ == "__main__":
    main()
