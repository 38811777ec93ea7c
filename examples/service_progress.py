"""Progress signals on tofu.Server and tofu.connect: a long job reports its
progress with Signals about the request, then answers.
(examples/progress.py is the same against the engine.)

    python examples/service_progress.py
"""

from __future__ import annotations

import hashlib
import sys

import tofu

PAGES = 10


def render(request: tofu.Request) -> str:
    for page in range(1, PAGES + 1):
        data = str(page).encode()
        for _ in range(2000):  # stand-in for real work
            data = hashlib.sha256(data).digest()
        request.signal(b"", {"Progress": f"{page}:{PAGES}"})  # carries the request's message id
    return f"rendered {PAGES} pages"


def show(signal: tofu.Reply) -> None:
    done, total = (int(x) for x in signal.headers["Progress"].split(":"))
    print(f"progress [{'#' * done}{'.' * (total - done)}] {done}/{total}")


def main() -> int:
    signals: list[tofu.Reply] = []

    def on_signal(signal: tofu.Reply) -> None:
        signals.append(signal)
        show(signal)

    with tofu.Server("tcp://127.0.0.1:0", render) as server:
        with tofu.connect(server.urls[0], on_signal=on_signal) as client:
            reply = client.request(b"render", timeout=30.0)
    print(f"client: {reply.body.decode()} ({len(signals)} progress signals)")
    return 0 if len(signals) == PAGES and all(s.message_id == reply.message_id for s in signals) else 1


if __name__ == "__main__":
    sys.exit(main())
