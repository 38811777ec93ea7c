"""An echo server: answers every Request with a Response carrying the same
headers and body.

    python examples/echo_server.py                        # tcp://127.0.0.1:<free port>
    python examples/echo_server.py uds:///tmp/echo.sock --clients 3

It prints `listening on ADDRESS`, serves until --clients clients have come
and gone (default 1), and exits 0. With nobody connected for --idle seconds
(default 5) it stops too, so running it alone never hangs.
"""

from __future__ import annotations

import argparse
import sys

import tofu
from tofu.addresses import parse_url


def listen(ampe: tofu.Ampe, group: tofu.ChannelGroup, address: tofu.Address) -> str:
    """Start a listener; return the address it really listens on (port 0 becomes a real port)."""
    msg = ampe.get(tofu.AllocationStrategy.always)
    address.format(msg)  # a WelcomeRequest with ~listen_on
    group.post(msg)
    resp = group.wait_receive(5.0)
    if resp is None or resp.bhdr.status != 0:
        status = tofu.raw_to_status(resp.bhdr.status).name if resp else "timeout"
        raise SystemExit(f"cannot listen on {address.value}: {status}")
    actual = resp.thdrs.get(tofu.LISTEN_ON_HEADER)  # e.g. tcp|127.0.0.1|40123
    ampe.put(resp)
    return actual


def serve(address: tofu.Address, clients: int = 1, idle: float = 5.0, ready=None) -> int:
    """Echo until `clients` connections have closed (or `idle` seconds with none open).

    `ready(actual_address)` is called once the listener is up. Returns the
    number of requests answered."""
    answered = 0
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        group = ampe.create()
        actual = listen(ampe, group, address)
        print(f"listening on {actual}", flush=True)
        if ready is not None:
            ready(actual)
        open_channels: set[int] = set()
        finished = 0
        while finished < clients:
            msg = group.wait_receive(None if open_channels else idle)
            if msg is None:
                print(f"nobody connected for {idle:g} s: stopping")
                break
            ch = msg.bhdr.channel_number
            if msg.is_from_engine():  # the engine tells us something
                if msg.bhdr.status == tofu.AmpeStatus.channel_closed and ch in open_channels:
                    open_channels.discard(ch)
                    finished += 1
                    print(f"channel {ch} closed")
                ampe.put(msg)
                continue
            op = msg.bhdr.proto.op_code
            if op == tofu.OpCode.HelloRequest:
                open_channels.add(ch)
                print(f"channel {ch} connected")
                msg.bhdr.proto.op_code = tofu.OpCode.HelloResponse
            elif op == tofu.OpCode.Request:
                answered += 1
                msg.bhdr.proto.op_code = tofu.OpCode.Response  # same channel, message id, headers, body
            elif op == tofu.OpCode.ByeRequest:
                msg.bhdr.proto.op_code = tofu.OpCode.ByeResponse
            else:
                ampe.put(msg)
                continue
            group.post(msg)  # reuse the received message as the answer
    print(f"echo server done: {answered} request(s) answered")
    return answered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", nargs="?", help="where to listen (default tcp://127.0.0.1:<free port>)")
    parser.add_argument("--clients", type=int, default=1, help="stop after this many clients (default 1)")
    parser.add_argument("--idle", type=float, default=5.0, help="stop after this long with no client (default 5)")
    args = parser.parse_args()
    text = args.address or f"tcp://127.0.0.1:{tofu.find_free_tcp_port()}"
    serve(parse_url(text, server=True), args.clients, args.idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
