"""A server with several clients, tracking them by channel number.

Four clients, each with its own engine (as if they were four processes),
connect with a `name` header, send one request, and leave in different ways:

    alice  ByeRequest    graceful close: the server answers ByeResponse
    bob    ByeSignal     abort: the client's engine just closes the socket
    carol  engine gone   the client's engine is destroyed without a word
    dave   ByeRequest    graceful close

However a channel ends, the server gets one `channel_closed` Signal from its
engine for it, and forgets that client. Channel numbers are reused after a
close: never keep one past its `channel_closed`.

    python examples/multi_client.py
"""

from __future__ import annotations

import sys
import threading

import tofu

OP = tofu.OpCode
CLIENTS = {"alice": "bye", "bob": "abort", "carol": "vanish", "dave": "bye"}


def client(name: str, how: str, port: int) -> None:
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        group = ampe.create()
        hello = tofu.TCPClientAddress("127.0.0.1", port).format(tofu.Message())
        hello.thdrs.append("name", name)
        channel = group.post(hello).channel_number
        resp = group.wait_receive(5.0)
        assert resp is not None and resp.bhdr.proto.op_code == OP.HelloResponse, f"{name}: connect failed"
        req = tofu.Message(OP.Request)
        req.bhdr.channel_number = channel
        req.body.append(f"hello from {name}")
        group.post(req)
        resp = group.wait_receive(5.0)
        assert resp is not None and resp.bhdr.proto.op_code == OP.Response, f"{name}: no response"
        if how == "vanish":
            return  # leaving the `with` destroys the engine: the socket just closes
        leave = tofu.Message(OP.ByeRequest if how == "bye" else OP.ByeSignal)
        leave.bhdr.channel_number = channel
        group.post(leave)
        while (msg := group.wait_receive(5.0)) is not None:  # wait for our own channel_closed
            if msg.is_close_notice():
                break


def main() -> int:
    clients: dict[int, str] = {}  # channel number -> client name: valid until channel_closed
    seen: list[str] = []
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        group = ampe.create()
        group.post(tofu.TCPServerAddress("127.0.0.1", 0).format(tofu.Message()))
        resp = group.wait_receive(5.0)
        assert resp is not None and resp.bhdr.status == 0, "listen failed"
        port = tofu.TCPServerAddress.from_message(resp).port  # port 0: the engine picked a free one
        listener = resp.bhdr.channel_number

        threads = [threading.Thread(target=client, args=(n, how, port)) for n, how in CLIENTS.items()]
        for t in threads:
            t.start()

        while len(seen) < len(CLIENTS) or clients:
            msg = group.wait_receive(10.0)
            if msg is None:
                raise SystemExit(f"server: stuck with {clients}")
            ch = msg.bhdr.channel_number
            if msg.is_from_engine():
                if msg.is_close_notice() and ch in clients:
                    name = clients.pop(ch)
                    print(f"- {name} left (channel {ch}); online: {sorted(clients.values())}")
                ampe.put(msg)
                continue
            op = msg.bhdr.proto.op_code
            if op == OP.HelloRequest:
                name = msg.thdrs.get("name", "?")
                clients[ch] = name
                seen.append(name)
                print(f"+ {name} joined on channel {ch}; online: {sorted(clients.values())}")
                msg.bhdr.proto.op_code = OP.HelloResponse
                group.post(msg)
            elif op == OP.Request:
                print(f"  {clients[ch]}: {bytes(msg.body).decode()}")
                msg.bhdr.proto.op_code = OP.Response
                msg.body.clear()
                msg.body.append(f"hi {clients[ch]}")
                group.post(msg)
            elif op == OP.ByeRequest:
                msg.bhdr.proto.op_code = OP.ByeResponse
                group.post(msg)
            else:
                ampe.put(msg)

        for t in threads:
            t.join(10)
        stop = tofu.Message(OP.ByeSignal)  # close the listener too
        stop.bhdr.channel_number = listener
        group.post(stop)
    print(f"all {len(seen)} clients came and went; none left online")
    return 0 if sorted(seen) == sorted(CLIENTS) and not clients else 1


if __name__ == "__main__":
    sys.exit(main())
