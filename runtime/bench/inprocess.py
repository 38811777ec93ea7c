"""The in-process workloads that `tofu bench --instructions` counts.

Each runs both ends in ONE process (every thread of it is counted), over TCP
loopback, with 64-byte bodies:

  oneway  a sender thread posts N Signals, round-robin over C client
          connections, and the main thread receives them all;
  rtt     a client sends N Requests, one at a time, each answered by a server
          thread in an engine of its own before the next (two engines, as two
          processes would have).

pyzmq does the same with PUSH -> PULL and REQ -> REP. The counting process
runs one of them as `python -m tofu.bench.inprocess IMPL WORKLOAD N C`.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import tofu

BODY = b"x" * 64
TIMEOUT = 60.0  # seconds any one receive may take before the workload fails


def _listen(group: tofu.ChannelGroup, ampe: tofu.Ampe) -> int:
    """Listen on 127.0.0.1, a free port; the port."""
    import tofu

    group.post(tofu.TCPServerAddress("127.0.0.1", 0).format(ampe.get(tofu.AllocationStrategy.always)))
    welcome = group.wait_receive(TIMEOUT)
    if welcome is None or welcome.bhdr.status:
        raise RuntimeError(f"listen failed: {welcome!r}")
    return tofu.TCPServerAddress.from_message(welcome).port


def _expect(group: tofu.ChannelGroup, op: tofu.OpCode) -> tofu.Message:
    """The next message of `group`, which must be an `op`."""
    msg = group.wait_receive(TIMEOUT)
    if msg is None or msg.bhdr.proto.op_code != op:
        raise RuntimeError(f"expected a {op.name}, got {msg!r}")
    return msg


def _connect(
    client: tofu.ChannelGroup, server: tofu.ChannelGroup, sampe: tofu.Ampe, campe: tofu.Ampe, port: int, n: int
) -> list[int]:
    """Open `n` connections from `client` to the listener of `server`, both
    sides answered; their channel numbers on the client side."""
    import tofu
    from tofu import OpCode

    channels = [
        client.post(
            tofu.TCPClientAddress("127.0.0.1", port).format(campe.get(tofu.AllocationStrategy.always))
        ).channel_number
        for _ in range(n)
    ]
    for _ in range(n):
        req = _expect(server, OpCode.HelloRequest)
        req.bhdr.proto.op_code = OpCode.HelloResponse
        server.post(req)
    for _ in range(n):
        campe.put(_expect(client, OpCode.HelloResponse))
    return channels


def tofu_oneway(n: int, connections: int) -> None:
    """One engine: `n` Signals from a sender thread over `connections` connections."""
    import tofu
    from tofu import OpCode

    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        server, client = ampe.create(), ampe.create()
        channels = _connect(client, server, ampe, ampe, _listen(server, ampe), connections)

        # Enum members in locals, as a careful loop has them: on CPython 3.11
        # each `OpCode.Signal` in a loop goes through EnumType.__getattr__
        # (about 880 instructions), more than some of the engine's steps.
        signal = OpCode.Signal
        always: Final = tofu.AllocationStrategy.always

        def send() -> None:
            nch = len(channels)
            for i in range(n):
                msg = ampe.get(always)
                msg.bhdr.proto.op_code = signal
                msg.bhdr.channel_number = channels[i % nch]
                msg.body.append(BODY)
                client.post(msg)

        sender = threading.Thread(target=send)
        sender.start()
        got = 0
        while got < n:
            msg = server.wait_receive(TIMEOUT)
            if msg is None:
                raise RuntimeError(f"timed out after {got} of {n} messages")
            if msg.bhdr.proto.op_code == signal and msg.is_from_application():
                got += 1
            ampe.put(msg)
        sender.join()


def tofu_rtt(n: int, connections: int) -> None:
    """Two engines: `n` Requests, each answered before the next."""
    import tofu
    from tofu import OpCode

    with tofu.Reactor() as srv, tofu.Reactor() as cli:
        sampe, campe = srv.ampe(), cli.ampe()
        server, client = sampe.create(), campe.create()
        (channel,) = _connect(client, server, sampe, campe, _listen(server, sampe), 1)
        # Enum members in locals (see tofu_oneway).
        request, response = OpCode.Request, OpCode.Response
        always: Final = tofu.AllocationStrategy.always

        def echo() -> None:
            for _ in range(n):  # (checked inline: a call per message would be counted too)
                msg = server.wait_receive(TIMEOUT)
                if msg is None or msg.bhdr.proto.op_code != request:
                    raise RuntimeError(f"expected a Request, got {msg!r}")
                msg.bhdr.proto.op_code = response
                server.post(msg)

        echoer = threading.Thread(target=echo)
        echoer.start()
        for _ in range(n):
            msg = campe.get(always)
            msg.bhdr.proto.op_code = request
            msg.bhdr.channel_number = channel
            msg.body.append(BODY)
            client.post(msg)
            answer = client.wait_receive(TIMEOUT)
            if answer is None or answer.bhdr.proto.op_code != response:
                raise RuntimeError(f"expected a Response, got {answer!r}")
            campe.put(answer)
        echoer.join()


def zmq_oneway(n: int, connections: int) -> None:
    """PUSH -> PULL: `n` messages from a sender thread over `connections` PUSH sockets."""
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


def zmq_rtt(n: int, connections: int) -> None:
    """REQ -> REP: `n` requests, each answered before the next."""
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


WORKLOADS: dict[tuple[str, str], Callable[[int, int], None]] = {
    ("tofu", "oneway"): tofu_oneway,
    ("pyzmq", "oneway"): zmq_oneway,
    ("tofu", "rtt"): tofu_rtt,
    ("pyzmq", "rtt"): zmq_rtt,
}


def main(argv: list[str] | None = None) -> int:
    """`python -m tofu.bench.inprocess IMPL WORKLOAD N CONNECTIONS`: run one workload."""
    impl, workload, n, connections = argv if argv is not None else sys.argv[1:]
    WORKLOADS[impl, workload](int(n), int(connections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
