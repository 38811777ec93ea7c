"""An echo client: connects, sends requests, checks each echo, says bye.

    python examples/echo_client.py tcp://127.0.0.1:7099
    python examples/echo_client.py 'uds|/tmp/echo.sock' -n 10

Run examples/echo_server.py first and pass the address it prints.
"""

from __future__ import annotations

import argparse
import sys

import tofu
from tofu.addresses import parse_url


def run(address: tofu.Address, count: int = 5, timeout: float = 5.0) -> int:
    """Send `count` requests to an echo server at `address`; return how many came back intact."""
    ok = 0
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        group = ampe.create()

        hello = ampe.get(tofu.AllocationStrategy.always)
        address.format(hello)  # a HelloRequest with ~connect_to
        channel = group.post(hello).channel_number  # the engine picks our channel number
        resp = group.wait_receive(timeout)
        if resp is None or resp.is_from_engine():
            # A failed connect comes back as our own HelloRequest, from the engine, with a status.
            status = tofu.raw_to_status(resp.bhdr.status).name if resp else "timeout"
            raise SystemExit(f"cannot connect to {address.value}: {status}")
        ampe.put(resp)
        print(f"connected to {address.value} on channel {channel}")

        for i in range(1, count + 1):
            req = ampe.get(tofu.AllocationStrategy.always)
            req.bhdr.channel_number = channel
            req.thdrs.append("x-seq", i)
            req.body.append(f"hello #{i}")
            mid = group.post(req).message_id  # `req` belongs to the engine now
            resp = group.wait_receive(timeout)
            if resp is None:
                raise SystemExit(f"no echo for request {i}")
            if resp.bhdr.message_id == mid and bytes(resp.body) == f"hello #{i}".encode():
                ok += 1
                print(f"echo {i}: {bytes(resp.body).decode()} (x-seq {resp.thdrs.get('x-seq')})")
            ampe.put(resp)

        bye = ampe.get(tofu.AllocationStrategy.always)
        bye.bhdr.proto.op_code = tofu.OpCode.ByeRequest
        bye.bhdr.channel_number = channel
        group.post(bye)
        while (msg := group.wait_receive(timeout)) is not None:  # ByeResponse, then channel_closed
            closed = msg.is_close_notice()
            ampe.put(msg)
            if closed:
                break
    print(f"echo ok: {ok}/{count}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="the echo server: tcp://HOST:PORT, uds:///PATH, tcp|HOST|PORT or uds|PATH")
    parser.add_argument("-n", "--count", type=int, default=5, help="requests to send (default 5)")
    args = parser.parse_args()
    try:
        address = parse_url(args.address, server=False)
    except tofu.WrongAddress as exc:
        parser.error(str(exc))
    return 0 if run(address, args.count) == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
