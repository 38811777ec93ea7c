"""An echo server on tofu.Server: answers every Request with its own headers
and body, on every address given, until Ctrl-C or SIGTERM.
(examples/echo_server.py is the same, written against the engine.)

    python examples/service_echo_server.py                              # TCP on 127.0.0.1, a free port
    python examples/service_echo_server.py tcp://127.0.0.1:7099 uds:///tmp/echo.sock

It prints `listening on URL` for each address (the real port for port 0),
a line when a client comes and goes, and at the end how many requests it
answered. Connect examples/service_echo_client.py (or `tofu ping`) to it.
"""

from __future__ import annotations

import sys

import tofu

answered = 0


def echo(request: tofu.Request) -> tuple[tofu.Headers, bytes]:
    global answered
    answered += 1  # one worker (workers=1): no lock needed
    return request.headers, request.body


def on_hello(peer: tofu.Peer) -> None:
    print(f"channel {peer.channel} connected", flush=True)


def on_close(peer: tofu.Peer) -> None:
    print(f"channel {peer.channel} closed after {peer.requests} request(s)", flush=True)


def main() -> int:
    urls = sys.argv[1:] or ["tcp://127.0.0.1:0"]
    server = tofu.Server(urls, echo, workers=1, on_hello=on_hello, on_close=on_close)

    def ready() -> None:  # it listens, and Ctrl-C or SIGTERM will stop it gracefully
        for url in server.urls:
            print(f"listening on {url}", flush=True)

    server.serve_forever(ready=ready)
    print(f"echo server done: {answered} request(s) answered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
