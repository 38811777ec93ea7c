"""Graceful shutdown of a tofu.Server: SIGTERM while clients are connected
and a request is in flight. (examples/graceful_shutdown.py is the same
against the engine.)

serve_forever() stops on SIGTERM: the server closes its listener, lets the
request in flight finish, says Bye to every client and waits for them.
Each client answers the Bye; its next request raises tofu.ConnectionLost.

    python examples/service_shutdown.py
"""

from __future__ import annotations

import signal
import sys
import threading

import tofu

CLIENTS = 3
working, signalled = threading.Event(), threading.Event()


def slow(request: tofu.Request) -> bytes:
    if request.body == b"work":
        working.set()
        signalled.wait(5.0)  # still running when SIGTERM comes
    return b"finished"


def main() -> int:
    server = tofu.Server("tcp://127.0.0.1:0", slow).start()
    clients = [tofu.connect(server.urls[0]) for _ in range(CLIENTS)]
    for client in clients:
        client.request(b"hello", timeout=5.0)
    in_flight = threading.Thread(target=lambda: print("client 0:", clients[0].request(b"work", timeout=5.0).body))
    in_flight.start()

    def operator() -> None:
        working.wait(5.0)  # the request is in the server's hands
        print(f"operator: {len(server.peers)} clients connected; sending SIGTERM")
        signal.raise_signal(signal.SIGTERM)  # as `kill PID` would
        signalled.set()

    # The operator starts once the server serves (and so stops on SIGTERM, not dies of it).
    server.serve_forever(grace=5.0, ready=threading.Thread(target=operator).start)  # returns when the stop is over
    in_flight.join()
    print(f"server: stopped, {len(server.peers)} client(s) left")
    gone = 0
    for i, client in enumerate(clients):
        try:
            client.request(b"again")
        except tofu.ConnectionLost as exc:
            gone += 1
            print(f"client {i}: {exc.detail}")
        client.close()
    print(f"{gone} of {CLIENTS} clients were told goodbye")
    return 0 if gone == CLIENTS else 1


if __name__ == "__main__":
    sys.exit(main())
