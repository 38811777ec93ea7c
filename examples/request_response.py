"""Request/response with correlation by message id.

The client sends eight requests without waiting for answers (pipelining),
remembering each one's message id. The server answers in batches of four, in
reverse order, so the responses come back out of order; the client matches
every response to its request by `message_id`, never by arrival order.

    python examples/request_response.py
"""

from __future__ import annotations

import sys
import threading

import tofu

OP = tofu.OpCode
BATCH = 4


def server(ampe: tofu.Ampe, group: tofu.ChannelGroup) -> None:
    batch: list[tofu.Message] = []
    while True:
        msg = group.wait_receive(10.0)
        if msg is None:
            raise SystemExit("server: nothing for 10 s")
        if msg.is_from_engine():
            closed = msg.is_close_notice()
            ampe.put(msg)
            if closed:
                return
            continue
        op = msg.bhdr.proto.op_code
        if op == OP.HelloRequest:
            msg.bhdr.proto.op_code = OP.HelloResponse
            group.post(msg)
        elif op == OP.Request:
            batch.append(msg)
            if len(batch) == BATCH:
                for req in reversed(batch):  # answer the last first
                    n = int(bytes(req.body))
                    req.bhdr.proto.op_code = OP.Response  # keeps channel and message id
                    req.body.clear()
                    req.body.append(str(n * n))
                    group.post(req)
                batch.clear()
        elif op == OP.ByeRequest:
            msg.bhdr.proto.op_code = OP.ByeResponse
            group.post(msg)


def main() -> int:
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        srv_group, cli_group = ampe.create(), ampe.create()  # two peers; could be two processes

        welcome = tofu.TCPServerAddress("127.0.0.1", 0).format(ampe.get(tofu.AllocationStrategy.always))
        srv_group.post(welcome)
        resp = srv_group.wait_receive(5.0)
        assert resp is not None and resp.bhdr.status == 0, "listen failed"
        port = tofu.TCPServerAddress.from_message(resp).port  # port 0: the engine picked a free one
        ampe.put(resp)
        t = threading.Thread(target=server, args=(ampe, srv_group))
        t.start()

        hello = tofu.TCPClientAddress("127.0.0.1", port).format(ampe.get(tofu.AllocationStrategy.always))
        channel = cli_group.post(hello).channel_number
        resp = cli_group.wait_receive(5.0)
        assert resp is not None and resp.bhdr.proto.op_code == OP.HelloResponse, "connect failed"
        ampe.put(resp)

        pending: dict[int, int] = {}  # message id -> the number we asked about
        for n in range(1, 9):
            req = ampe.get(tofu.AllocationStrategy.always)
            req.bhdr.channel_number = channel
            req.body.append(str(n))
            mid = cli_group.post(req).message_id  # the engine assigned a unique id
            pending[mid] = n
            print(f"sent request {mid}: {n}^2 ?")

        arrival: list[int] = []
        while pending:
            resp = cli_group.wait_receive(5.0)
            if resp is None:
                raise SystemExit("client: a response is missing")
            mid = resp.bhdr.message_id
            n = pending.pop(mid)  # correlation: this response answers that request
            answer = int(bytes(resp.body))
            assert answer == n * n
            arrival.append(n)
            print(f"response {mid}: {n}^2 = {answer}")
            ampe.put(resp)

        print(f"arrival order: {arrival}")
        print(f"out of order: {'yes' if arrival != sorted(arrival) else 'no'}, all 8 matched by message id")

        bye = tofu.Message(OP.ByeRequest)
        bye.bhdr.channel_number = channel
        cli_group.post(bye)
        t.join(10)
    return 0 if arrival != sorted(arrival) and not t.is_alive() else 1


if __name__ == "__main__":
    sys.exit(main())
