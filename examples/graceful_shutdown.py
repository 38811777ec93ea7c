"""Graceful shutdown of a server with connected clients, on SIGTERM.

The server's main thread blocks in `wait_receive()`. On SIGTERM (or SIGINT)
a flag is set and `update_receiver()` wakes that receive with a
`receiver_update` message. The server then stops accepting (ByeSignal
to its listener), says ByeRequest to every client, waits (bounded) for each
`channel_closed`, and only then destroys its engine. Each client answers the
server's ByeRequest with ByeResponse.

Here an "operator" thread sends SIGTERM to the process once three clients
are connected, standing in for `kill` or a service manager.

One CPython detail matters. A Python signal handler runs in the main thread
between two bytecodes; a signal that arrives just before the main thread
blocks in wait_receive() (or that the kernel hands to another thread) does
not interrupt that wait, so a handler calling update_receiver() could run
only when the wait times out. `signal.set_wakeup_fd` closes the gap: the
interpreter's C-level handler writes the signal number to a socket at once,
whatever thread it runs on, and a small thread blocked on that socket sets
the flag and calls `update_receiver()`.

    python examples/graceful_shutdown.py
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

import tofu

OP = tofu.OpCode
_print_lock = threading.Lock()


def say(text: str) -> None:
    """print() from several threads, one whole line at a time."""
    with _print_lock:
        print(text, flush=True)


CLIENTS = 3
GRACE = 5.0  # seconds the server waits for its clients to say goodbye
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def client(number: int, port: int, farewells: list[str]) -> None:
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        group = ampe.create()
        channel = group.post(tofu.TCPClientAddress("127.0.0.1", port).format(tofu.Message())).channel_number
        while (msg := group.wait_receive(10.0)) is not None:
            if msg.is_from_engine():
                if msg.is_close_notice():
                    return
                continue
            if msg.bhdr.proto.op_code == OP.ByeRequest:
                farewells.append(f"client {number}: server says '{msg.thdrs.get('reason')}', answering ByeResponse")
                say(farewells[-1])
                msg.bhdr.proto.op_code = OP.ByeResponse
                group.post(msg)
        say(f"client {number}: channel {channel} never closed")


def stop_on_signals(group: tofu.ChannelGroup, stopping: threading.Event) -> tuple[socket.socket, socket.socket]:
    """On SIGINT/SIGTERM: set `stopping` and wake `group`'s receiver. Call from the main thread.

    Returns the socket pair: keep it referenced for as long as the signals matter."""
    r, w = socket.socketpair()
    w.setblocking(False)
    signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)  # the C handler writes here
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: None)  # a Python handler must exist; the thread does the work

    def watch() -> None:
        while r.recv(1):  # one byte per signal received
            stopping.set()
            group.update_receiver()  # thread-safe: wakes wait_receive() in the main thread

    threading.Thread(target=watch, name="signals", daemon=True).start()
    return r, w


def main() -> int:
    stopping = threading.Event()
    farewells: list[str] = []
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        group = ampe.create()
        wakeup = stop_on_signals(group, stopping)  # noqa: F841 (kept alive on purpose)

        group.post(tofu.TCPServerAddress("127.0.0.1", 0).format(tofu.Message()))
        resp = group.wait_receive(5.0)
        assert resp is not None and resp.bhdr.status == 0, "listen failed"
        port = tofu.TCPServerAddress.from_message(resp).port  # port 0: the engine picked a free one
        listener = resp.bhdr.channel_number

        threads = [threading.Thread(target=client, args=(i, port, farewells)) for i in range(1, CLIENTS + 1)]
        for t in threads:
            t.start()

        all_connected = threading.Event()

        def operator() -> None:
            if all_connected.wait(10):
                say(f"operator: {CLIENTS} clients connected; sending SIGTERM")
                os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=operator, daemon=True).start()

        clients: set[int] = set()
        while True:
            msg = group.wait_receive(10.0)
            if msg is None:
                raise SystemExit("server: stuck")
            if msg.is_from_engine():
                if msg.bhdr.status == tofu.AmpeStatus.receiver_update and stopping.is_set():
                    say("server: woken by update_receiver()")
                    break
                continue
            if msg.bhdr.proto.op_code == OP.HelloRequest:
                clients.add(msg.bhdr.channel_number)
                msg.bhdr.proto.op_code = OP.HelloResponse
                group.post(msg)
                if len(clients) == CLIENTS:
                    all_connected.set()

        say(f"server: shutting down with {len(clients)} clients connected")
        stop = tofu.Message(OP.ByeSignal)  # stop accepting first
        stop.bhdr.channel_number = listener
        group.post(stop)
        for ch in list(clients):
            bye = tofu.Message(OP.ByeRequest)
            bye.bhdr.channel_number = ch
            bye.thdrs.append("reason", "server shutting down")
            try:
                group.post(bye)
            except tofu.AmpeError:  # that client is gone already
                clients.discard(ch)
        deadline = time.monotonic() + GRACE
        while clients and (left := deadline - time.monotonic()) > 0:
            msg = group.wait_receive(left)
            if msg is None:
                break
            if msg.is_close_notice():
                clients.discard(msg.bhdr.channel_number)
        say(f"server: {CLIENTS - len(clients)} of {CLIENTS} clients said goodbye; destroying the engine")
        for t in threads:
            t.join(10)
    return 0 if not clients and len(farewells) == CLIENTS else 1


if __name__ == "__main__":
    sys.exit(main())
