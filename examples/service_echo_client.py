"""An echo client on tofu.connect: sends requests, checks each echo, says bye.
(examples/echo_client.py is the same, written against the engine.)

    python examples/service_echo_client.py tcp://127.0.0.1:7099 -n 10

Run examples/service_echo_server.py (or `tofu serve`) first and pass the
address it prints.
"""

from __future__ import annotations

import argparse
import sys

import tofu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="the echo server: tcp://HOST:PORT, uds:///PATH, ...")
    parser.add_argument("-n", "--count", type=int, default=5, help="requests to send (default 5)")
    args = parser.parse_args()
    ok = 0
    try:
        client = tofu.connect(args.address)
    except (tofu.WrongAddress, tofu.ConnectError) as exc:
        parser.error(str(exc))
    with client:  # leaving the block says bye
        print(f"connected to {client.url}")
        for i in range(1, args.count + 1):
            reply = client.request(f"hello #{i}", {"x-seq": i}, timeout=5.0)
            if reply.body == f"hello #{i}".encode():
                ok += 1
                print(f"echo {i}: {reply.body.decode()} (x-seq {reply.headers['x-seq']})")
    print(f"echo ok: {ok}/{args.count}")
    return 0 if ok == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
