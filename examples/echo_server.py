"""An echo server: answers every Request with a Response carrying the same
headers and body, and accepts every client (HelloRequest -> HelloResponse,
ByeRequest -> ByeResponse).

    python examples/echo_server.py                        # TCP on 127.0.0.1, a free port
    python examples/echo_server.py uds:///tmp/echo.sock --clients 3
    python examples/echo_server.py --idle 60              # give up after 60 s without a client

It listens on port 0 unless told otherwise: the engine picks a free port and
reports it. It prints `listening on ADDRESS` with the address it really
listens on, in the protocol's form (e.g. `tcp|127.0.0.1|40123`), then the
command that connects a client to it, then `channel N connected` and
`channel N closed` for each client, and `echo server done: N request(s)
answered` at the end. It exits 0 once --clients clients (default 1) have come
and gone, or after --idle seconds with no client connected (by default it
waits for its clients as long as it takes; Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import sys
import time

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


def serve(address: tofu.Address, clients: int = 1, idle: float | None = None, ready=None) -> int:
    """Echo until `clients` connections have closed (or `idle` seconds with none
    open; None waits as long as it takes).

    `ready(actual_address)` is called once the listener is up. Returns the
    number of requests answered."""
    answered = 0
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        group = ampe.create()
        actual = listen(ampe, group, address)
        print(f"listening on {actual}", flush=True)
        print(f"connect a client with: python examples/echo_client.py '{actual}'", flush=True)
        if ready is not None:
            ready(actual)
        open_channels: set[int] = set()
        finished = 0
        idle_since = time.monotonic()  # when the last client left (or the server started)
        while finished < clients:
            # Short waits keep Ctrl-C responsive: Python handles it between waits.
            msg = group.wait_receive(1.0)
            if msg is None:
                if idle is not None and not open_channels and time.monotonic() - idle_since >= idle:
                    print(f"nobody connected for {idle:g} s: stopping")
                    break
                continue
            ch = msg.bhdr.channel_number
            if msg.is_from_engine():  # the engine tells us something
                if msg.is_close_notice() and ch in open_channels:
                    open_channels.discard(ch)
                    finished += 1
                    idle_since = time.monotonic()
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("address", nargs="?", default="tcp://127.0.0.1:0", help="where to listen (default %(default)s)")
    parser.add_argument("--clients", type=int, default=1, help="stop after this many clients (default 1)")
    parser.add_argument(
        "--idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long with no client (default: wait)",
    )
    args = parser.parse_args()
    try:
        serve(parse_url(args.address, server=True), args.clients, args.idle)
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
