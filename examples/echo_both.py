"""The echo server and the echo client in one process: the server runs in a
thread with its own engine, the client in the main thread with another.

    python examples/echo_both.py
"""

from __future__ import annotations

import sys
import threading

import echo_client  # the two examples next to this file
import echo_server
import tofu


def main() -> int:
    port = tofu.find_free_tcp_port()
    ready = threading.Event()
    server = threading.Thread(
        target=echo_server.serve,
        args=(tofu.TCPServerAddress("127.0.0.1", port),),
        kwargs={"clients": 1, "ready": lambda actual: ready.set()},
    )
    server.start()
    if not ready.wait(10):
        return 1
    ok = echo_client.run(tofu.TCPClientAddress("127.0.0.1", port), count=3)
    server.join(10)
    return 0 if ok == 3 and not server.is_alive() else 1


if __name__ == "__main__":
    sys.exit(main())
