"""Request/response with correlation by message id, on tofu.Server and
tofu.connect. (examples/request_response.py is the same against the engine.)

Eight threads each ask one question at once. The server (8 workers, so all
eight are handled at once) answers in batches of four, in reverse order
(each answer waits until the client got the next one's), so the answers come
back out of order; every thread still gets its own, because the client
matches each Response to its Request by message id.

    python examples/service_request_response.py
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import tofu

BATCH = 4
received = {n: threading.Event() for n in range(1, 10)}  # n: the client got the answer to n
arrival: list[int] = []
say = threading.Lock()  # one line at a time from the client's threads


def square(request: tofu.Request) -> str:
    n = int(request.body)
    if n % BATCH:  # not the last of its batch: answer once the client got the next one's answer
        received[n + 1].wait(10.0)
    elif n > BATCH:  # the last of a later batch: once the batch before it is answered
        received[n - 2 * BATCH + 1].wait(10.0)
    return str(n * n)


def ask(client: tofu.Client, n: int) -> None:
    reply = client.request(str(n), timeout=10.0)
    assert int(reply.body) == n * n  # the answer to this request, whatever came first
    with say:
        arrival.append(n)
        print(f"response {reply.message_id}: {n}^2 = {int(reply.body)}")
    received[n].set()


def main() -> int:
    with tofu.Server("tcp://127.0.0.1:0", square, workers=8) as server, tofu.connect(server.urls[0]) as client:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: ask(client, n), range(1, 9)))
    print(f"arrival order: {arrival}")
    print(f"out of order: {'yes' if arrival != sorted(arrival) else 'no'}, all 8 matched by message id")
    return 0 if arrival != sorted(arrival) else 1


if __name__ == "__main__":
    sys.exit(main())
