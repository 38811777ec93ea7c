"""A client that outlives its server: tofu.connect(..., reconnect=True).

The server stops and starts again on the same address; the client connects
again by itself (exponential backoff with jitter, tofu.Reconnect), and a
request made while it was away waits for the new channel.

    python examples/service_reconnect.py
"""

from __future__ import annotations

import sys
import threading

import tofu


def echo(request: tofu.Request) -> bytes:
    return request.body


def main() -> int:
    url = f"tcp://127.0.0.1:{tofu.find_free_tcp_port()}"
    down, up = threading.Event(), threading.Event()

    def on_disconnect(exc: tofu.ConnectionLost) -> None:
        print(f"client: disconnected ({exc.detail}); connecting again")
        down.set()

    def on_reconnect() -> None:
        print("client: connected again")
        up.set()

    policy = tofu.Reconnect(initial=0.05, maximum=0.5)
    with tofu.Server(url, echo):
        client = tofu.connect(url, reconnect=policy, on_disconnect=on_disconnect, on_reconnect=on_reconnect)
        print("client:", client.request(b"before the restart").body.decode())
    print("server: stopped")
    down.wait(5.0)
    def ask_while_away() -> None:
        print("client:", client.request(b"while away", timeout=10.0).body.decode())  # waits for the new channel

    waiting = threading.Thread(target=ask_while_away)
    waiting.start()
    with tofu.Server(url, echo):
        print("server: started again")
        up.wait(5.0)
        waiting.join()
        print("client:", client.request(b"after the restart").body.decode())
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
