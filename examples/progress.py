"""Progress signals: a long job reports progress with Signals, then answers.

The client posts one Request ("render 10 pages"). While working, the server
sends Signals with the request's message id and a `Progress:[N:M]` header
(N of M pages done); at the end it sends the Response. A Signal is a
notification, not an answer: the answer is the Response.

    python examples/progress.py
"""

from __future__ import annotations

import hashlib
import sys
import threading

import tofu

OP = tofu.OpCode


def render(page: int) -> bytes:
    """Stand-in for real work."""
    data = str(page).encode()
    for _ in range(2000):
        data = hashlib.sha256(data).digest()
    return data


def server(ampe: tofu.Ampe, group: tofu.ChannelGroup) -> None:
    while True:
        msg = group.wait_receive(10.0)
        if msg is None:
            raise SystemExit("server: nothing for 10 s")
        bh = msg.bhdr
        if msg.is_from_engine():
            closed = msg.is_close_notice()
            ampe.put(msg)
            if closed:
                return
            continue
        op = bh.proto.op_code
        if op == OP.HelloRequest:
            bh.proto.op_code = OP.HelloResponse
        elif op == OP.ByeRequest:
            bh.proto.op_code = OP.ByeResponse
        elif op == OP.Request:
            pages = int(msg.thdrs.get("pages", "1"))
            for page in range(1, pages + 1):
                render(page)
                sig = ampe.get(tofu.AllocationStrategy.always)
                sig.bhdr.proto.op_code = OP.Signal
                sig.bhdr.channel_number = bh.channel_number
                sig.bhdr.message_id = bh.message_id  # progress of *that* request
                sig.thdrs.append("Progress", f"[{page}:{pages}]")
                group.post(sig)
            bh.proto.op_code = OP.Response
            msg.thdrs.clear()
            msg.body.append(f"{pages} pages rendered")
        group.post(msg)


def main() -> int:
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        srv, cli = ampe.create(), ampe.create()
        srv.post(tofu.TCPServerAddress("127.0.0.1", 0).format(tofu.Message()))
        resp = srv.wait_receive(5.0)
        assert resp is not None and resp.bhdr.status == 0, "listen failed"
        port = tofu.TCPServerAddress.from_message(resp).port  # port 0: the engine picked a free one
        t = threading.Thread(target=server, args=(ampe, srv))
        t.start()

        channel = cli.post(tofu.TCPClientAddress("127.0.0.1", port).format(tofu.Message())).channel_number
        resp = cli.wait_receive(5.0)
        assert resp is not None and resp.bhdr.proto.op_code == OP.HelloResponse, "connect failed"

        job = tofu.Message(OP.Request)
        job.bhdr.channel_number = channel
        job.thdrs.append("pages", 10)
        job_id = cli.post(job).message_id

        signals = 0
        while True:
            msg = cli.wait_receive(5.0)
            if msg is None:
                raise SystemExit("client: the job went silent")
            if msg.bhdr.message_id != job_id:
                ampe.put(msg)
                continue
            op = msg.bhdr.proto.op_code
            if op == OP.Signal:
                signals += 1
                done, total = (int(x) for x in msg.thdrs.get("Progress").strip("[]").split(":"))
                bar = "#" * done + "." * (total - done)
                print(f"progress [{bar}] {done}/{total}")
            elif op == OP.Response:
                print(f"done: {bytes(msg.body).decode()} ({signals} progress signals)")
                ampe.put(msg)
                break
            ampe.put(msg)

        bye = tofu.Message(OP.ByeRequest)
        bye.bhdr.channel_number = channel
        cli.post(bye)
        t.join(10)
    return 0 if signals == 10 else 1


if __name__ == "__main__":
    sys.exit(main())
