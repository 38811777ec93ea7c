"""One server listening on TCP and on a Unix domain socket at once.

Two WelcomeRequests on one channel group: connections from either listener
arrive through the same `wait_receive()`. A client's HelloRequest carries
the address it dialled (`~connect_to`), so the server can tell which
transport each channel uses.

    python examples/multi_listener.py
"""

from __future__ import annotations

import os
import sys
import threading

import tofu

OP = tofu.OpCode


def client(address: tofu.Address, answers: list[str]) -> None:
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        group = ampe.create()
        channel = group.post(address.format(tofu.Message())).channel_number
        resp = group.wait_receive(5.0)
        assert resp is not None and resp.bhdr.proto.op_code == OP.HelloResponse, "connect failed"
        req = tofu.Message(OP.Request)
        req.bhdr.channel_number = channel
        req.body.append("which transport am I on?")
        group.post(req)
        resp = group.wait_receive(5.0)
        assert resp is not None and resp.bhdr.proto.op_code == OP.Response
        answers.append(bytes(resp.body).decode())
        bye = tofu.Message(OP.ByeRequest)
        bye.bhdr.channel_number = channel
        group.post(bye)
        while (msg := group.wait_receive(5.0)) is not None:
            if msg.is_close_notice():
                break


def main() -> int:
    path = tofu.temp_uds_path()
    answers: list[str] = []
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        group = ampe.create()
        for address in (tofu.TCPServerAddress("127.0.0.1", 0), tofu.UDSServerAddress(path)):
            group.post(address.format(tofu.Message()))
        port = 0
        for _ in range(2):  # both WelcomeResponses, in whichever order the engine answers
            resp = group.wait_receive(5.0)
            assert resp is not None and resp.bhdr.status == 0, "listen failed"
            listening = tofu.parse_address(resp)  # whichever kind it is; from_message reads one kind
            if isinstance(listening, tofu.TCPServerAddress):
                port = listening.port  # port 0 asked for: the engine picked a free one
            print(f"listening on {listening.value} (channel {resp.bhdr.channel_number})")

        threads = [
            threading.Thread(target=client, args=(tofu.TCPClientAddress("127.0.0.1", port), answers)),
            threading.Thread(target=client, args=(tofu.UDSClientAddress(path), answers)),
        ]
        for t in threads:
            t.start()

        transports: dict[int, str] = {}
        closed = 0
        while closed < 2:
            msg = group.wait_receive(10.0)
            if msg is None:
                raise SystemExit("server: stuck")
            ch = msg.bhdr.channel_number
            if msg.is_from_engine():
                if msg.is_close_notice() and ch in transports:
                    closed += 1
                ampe.put(msg)
                continue
            op = msg.bhdr.proto.op_code
            if op == OP.HelloRequest:
                transports[ch] = msg.thdrs.get(tofu.CONNECT_TO_HEADER, "?")
                print(f"channel {ch}: a client came in through {transports[ch]}")
                msg.bhdr.proto.op_code = OP.HelloResponse
            elif op == OP.Request:
                msg.bhdr.proto.op_code = OP.Response
                msg.body.clear()
                msg.body.append(f"you are on {transports[ch].split('|')[0]} ({transports[ch]})")
            elif op == OP.ByeRequest:
                msg.bhdr.proto.op_code = OP.ByeResponse
            else:
                ampe.put(msg)
                continue
            group.post(msg)
        for t in threads:
            t.join(10)
    for answer in sorted(answers):
        print(f"client heard: {answer}")
    kinds = sorted(a.split()[3] for a in answers)
    # the engine removes its UDS socket file when the listener closes
    return 0 if kinds == ["tcp", "uds"] and not os.path.exists(path) else 1


if __name__ == "__main__":
    sys.exit(main())
