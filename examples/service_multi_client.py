"""Many clients of one tofu.Server, each known by the name in its hello.
(examples/multi_client.py is the same against the engine.)

    python examples/service_multi_client.py
"""

from __future__ import annotations

import sys
import threading

import tofu

online: dict[int, str] = {}  # channel -> name: changed by the hooks, on the server's dispatcher thread
everyone_left = threading.Event()
NAMES = ("alice", "bob", "carol", "dave")
joined: list[str] = []


def on_hello(peer: tofu.Peer) -> bool:
    name = peer.headers.get("x-name")
    if not name:
        return False  # no name, no entry
    online[peer.channel] = name
    joined.append(name)
    print(f"+ {name} joined on channel {peer.channel}")
    return True


def on_close(peer: tofu.Peer) -> None:
    name = online.pop(peer.channel)
    print(f"- {name} left (channel {peer.channel})")
    if len(joined) == len(NAMES) and not online:
        everyone_left.set()


def who(request: tofu.Request) -> str:
    return ", ".join(sorted(online.values()))


def main() -> int:
    with tofu.Server("tcp://127.0.0.1:0", who, on_hello=on_hello, on_close=on_close) as server:
        clients = [tofu.connect(server.urls[0], headers={"x-name": name}) for name in NAMES]
        print("online:", clients[0].request(timeout=5.0).body.decode())
        for client in clients:
            client.close()
        everyone_left.wait(5.0)
    print(f"all {len(NAMES)} clients came and went; {'none' if not online else len(online)} left online")
    return 0 if not online else 1


if __name__ == "__main__":
    sys.exit(main())
