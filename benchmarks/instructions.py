"""Instructions per message, counted by callgrind: a measure that does not wobble.

Seconds on a shared machine move by ~25% from one run to the next; the number
of instructions a process executes does not (callgrind counts them within 1%).
This script runs a workload in ONE process, both ends and every thread
counted. `oneway` (the default): a sender posts N messages of 64 bytes over
TCP loopback and a receiver takes them all. `rtt`: a client sends N requests
of 64 bytes, one at a time, each answered before the next, to a server in its
own engine (two engines, as two processes would have). It runs the workload
twice, with N = SMALL and N = LARGE, and reports

    instructions per message = (I(LARGE) - I(SMALL)) / (LARGE - SMALL)

(per round trip for `rtt`), which cancels the start-up, the connection
set-up and the teardown.

    python benchmarks/instructions.py                 # tofu and pyzmq (if installed)
    python benchmarks/instructions.py --impl tofu     # tofu only
    python benchmarks/instructions.py --impl tofu --workload rtt
    python benchmarks/instructions.py --small 1000 --large 6000 --json out.json
    python benchmarks/instructions.py --connections 100   # one-way from 100 client connections (fan-in)

pyzmq is measured with the same harness (PUSH -> PULL in one process), so the
ratio compares like with like. Needs valgrind on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tofu

BODY = b"x" * 64
TIMEOUT = 60.0


# ------------------------------------------------------------------ workloads


def _tofu_oneway(n: int, connections: int) -> None:
    import tofu
    from tofu import AllocationStrategy, OpCode

    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        server, client = ampe.create(), ampe.create()
        server.post(tofu.TCPServerAddress("127.0.0.1", 0).format(ampe.get(AllocationStrategy.always)))
        welcome = server.wait_receive(TIMEOUT)
        assert welcome is not None and welcome.bhdr.status == 0, "listen failed"
        value = dict(welcome.thdrs)[tofu.LISTEN_ON_HEADER]
        port = int(value.rsplit("|", 1)[1])
        channels = []
        for _ in range(connections):
            hello = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(ampe.get(AllocationStrategy.always)))
            channels.append(hello.channel_number)
        for _ in range(connections):
            req = server.wait_receive(TIMEOUT)
            assert req is not None and req.bhdr.proto.op_code == OpCode.HelloRequest
            req.bhdr.proto.op_code = OpCode.HelloResponse
            server.post(req)
        for _ in range(connections):
            resp = client.wait_receive(TIMEOUT)
            assert resp is not None and resp.bhdr.proto.op_code == OpCode.HelloResponse
            ampe.put(resp)

        def send() -> None:
            nch = len(channels)
            for i in range(n):
                msg = ampe.get(AllocationStrategy.always)
                msg.bhdr.proto.op_code = OpCode.Signal
                msg.bhdr.channel_number = channels[i % nch]
                msg.body.append(BODY)
                client.post(msg)

        sender = threading.Thread(target=send)
        sender.start()
        got = 0
        while got < n:
            msg = server.wait_receive(TIMEOUT)
            assert msg is not None, f"timed out after {got} of {n} messages"
            if msg.bhdr.proto.op_code == OpCode.Signal and msg.is_from_application():
                got += 1
            ampe.put(msg)
        sender.join()


def _tofu_connected(
    server_rtr: tofu.Reactor, client_rtr: tofu.Reactor
) -> tuple[tofu.ChannelGroup, tofu.ChannelGroup, tofu.Ampe, int]:
    """A listener in `server_rtr`, a connection to it from `client_rtr`:
    (server group, client group, client ampe, channel number)."""
    import tofu
    from tofu import AllocationStrategy, OpCode

    sampe, campe = server_rtr.ampe(), client_rtr.ampe()
    server, client = sampe.create(), campe.create()
    server.post(tofu.TCPServerAddress("127.0.0.1", 0).format(sampe.get(AllocationStrategy.always)))
    welcome = server.wait_receive(TIMEOUT)
    assert welcome is not None and welcome.bhdr.status == 0, "listen failed"
    port = int(dict(welcome.thdrs)[tofu.LISTEN_ON_HEADER].rsplit("|", 1)[1])
    hello = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(campe.get(AllocationStrategy.always)))
    req = server.wait_receive(TIMEOUT)
    assert req is not None and req.bhdr.proto.op_code == OpCode.HelloRequest
    req.bhdr.proto.op_code = OpCode.HelloResponse
    server.post(req)
    resp = client.wait_receive(TIMEOUT)
    assert resp is not None and resp.bhdr.proto.op_code == OpCode.HelloResponse
    campe.put(resp)
    return server, client, campe, hello.channel_number


def _tofu_rtt(n: int, connections: int) -> None:
    import tofu
    from tofu import AllocationStrategy, OpCode

    with tofu.Reactor() as srv, tofu.Reactor() as cli:
        server, client, ampe, channel = _tofu_connected(srv, cli)

        def echo() -> None:
            for _ in range(n):
                msg = server.wait_receive(TIMEOUT)
                assert msg is not None and msg.bhdr.proto.op_code == OpCode.Request, msg
                msg.bhdr.proto.op_code = OpCode.Response
                server.post(msg)

        echoer = threading.Thread(target=echo)
        echoer.start()
        for _ in range(n):
            msg = ampe.get(AllocationStrategy.always)
            msg.bhdr.proto.op_code = OpCode.Request
            msg.bhdr.channel_number = channel
            msg.body.append(BODY)
            client.post(msg)
            answer = client.wait_receive(TIMEOUT)
            assert answer is not None and answer.bhdr.proto.op_code == OpCode.Response, answer
            ampe.put(answer)
        echoer.join()


def _zmq_oneway(n: int, connections: int) -> None:
    import zmq

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    pushes = [ctx.socket(zmq.PUSH) for _ in range(connections)]
    for push in pushes:
        push.connect(f"tcp://127.0.0.1:{port}")
    sends = [push.send for push in pushes]

    def send() -> None:
        nch = len(sends)
        for i in range(n):
            sends[i % nch](BODY)

    sender = threading.Thread(target=send)
    sender.start()
    for _ in range(n):
        pull.recv()
    sender.join()
    for push in pushes:
        push.close(linger=0)
    pull.close(linger=0)
    ctx.term()


def _zmq_rtt(n: int, connections: int) -> None:
    import zmq

    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    req = ctx.socket(zmq.REQ)
    req.connect(f"tcp://127.0.0.1:{port}")

    def echo() -> None:
        for _ in range(n):
            rep.send(rep.recv())

    echoer = threading.Thread(target=echo)
    echoer.start()
    for _ in range(n):
        req.send(BODY)
        req.recv()
    echoer.join()
    req.close(linger=0)
    rep.close(linger=0)
    ctx.term()


WORKLOADS = {
    ("tofu", "oneway"): _tofu_oneway,
    ("zmq", "oneway"): _zmq_oneway,
    ("tofu", "rtt"): _tofu_rtt,
    ("zmq", "rtt"): _zmq_rtt,
}


# ------------------------------------------------------------------ counting


def count(impl: str, n: int, workload: str = "oneway", connections: int = 1) -> int:
    """Instructions (callgrind's Ir, all threads) of one process running `impl` for `n` messages
    (one-way: sent round-robin over `connections` client connections)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ, PYTHONHASHSEED="0")
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            "--dump-instr=no",
            "--collect-jumps=no",
            sys.executable,
            __file__,
            "--child",
            impl,
            str(n),
            "--workload",
            workload,
            "--connections",
            str(connections),
        ]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        match = re.search(r"^(?:totals|summary):\s*(\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no instruction total in {out}")
        return int(match.group(1))


def per_message(impl: str, small: int, large: int, workload: str = "oneway", connections: int = 1) -> dict[str, float]:
    low, high = count(impl, small, workload, connections), count(impl, large, workload, connections)
    return {"small": small, "large": large, "I_small": low, "I_large": high, "per_msg": (high - low) / (large - small)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=["tofu", "zmq", "both"], default="both")
    parser.add_argument("--workload", choices=["oneway", "rtt"], default="oneway")
    parser.add_argument("--small", type=int, default=2000, help="messages in the short run (default 2000)")
    parser.add_argument("--large", type=int, default=12000, help="messages in the long run (default 12000)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--connections",
        type=int,
        default=1,
        help="one-way: client connections, messages sent round-robin over them (fan-in; default 1)",
    )
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        WORKLOADS[args.child[0], args.workload](int(args.child[1]), args.connections)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    if args.large <= args.small:
        parser.error("--large must be greater than --small")
    if args.connections < 1 or (args.connections > 1 and args.workload != "oneway"):
        parser.error("--connections: at least 1, and more than 1 only for --workload oneway")

    impls = ["tofu", "zmq"] if args.impl == "both" else [args.impl]
    if "zmq" in impls:
        try:
            import zmq  # noqa: F401
        except ImportError:
            if args.impl == "zmq":
                print("pyzmq is not installed (pip install 'tofu-messaging[bench]')", file=sys.stderr)
                return 2
            impls.remove("zmq")
    results = {impl: per_message(impl, args.small, args.large, args.workload, args.connections) for impl in impls}

    what = "one-way 64 B" if args.workload == "oneway" else "round trips of 64 B (per round trip)"
    if args.connections > 1:
        what += f" from {args.connections} connections (fan-in)"
    print(f"{what} over TCP loopback, one process, all threads; N = {args.small} and {args.large}")
    print(f"{'impl':<6} {'I(small)':>14} {'I(large)':>14} {'instructions/msg':>18}")
    for impl, r in results.items():
        print(f"{impl:<6} {r['I_small']:>14,} {r['I_large']:>14,} {r['per_msg']:>18,.0f}")
    if "tofu" in results and "zmq" in results:
        print(f"tofu / pyzmq: {results['tofu']['per_msg'] / results['zmq']['per_msg']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
