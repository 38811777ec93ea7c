"""Streaming in both directions with the `more` flag.

The client uploads 300 KB as a stream of Requests that share one message id:
every frame but the last has `more` set. The server reassembles it, then
streams back the bytes reversed as Responses with the same message id, the
first carrying a `sha256` header of what it received, `more` on all but the
last. The client checks the digest and the data.

    python examples/streaming.py
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading

import tofu

OP = tofu.OpCode
MORE, LAST = tofu.MoreMessagesFlag.more, tofu.MoreMessagesFlag.last
CHUNK = 32 * 1024  # a frame's body holds at most 65535 bytes


def send_stream(
    group: tofu.ChannelGroup,
    op: tofu.OpCode,
    channel: int,
    mid: int | None,
    data: bytes,
    headers: dict[str, str] | None = None,
) -> int:
    """Post `data` as frames of one message id; return that id."""
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    for i, chunk in enumerate(chunks):
        msg = tofu.Message(op)
        msg.bhdr.channel_number = channel
        if mid is not None:
            msg.bhdr.message_id = mid  # every frame of the stream has the same id
        msg.bhdr.proto.more = MORE if i < len(chunks) - 1 else LAST
        if i == 0:
            for name, value in (headers or {}).items():
                msg.thdrs.append(name, value)
        msg.body.append(chunk)
        mid = group.post(msg).message_id  # the first post assigns the id when we gave none
    return mid  # type: ignore[return-value]


def server(ampe: tofu.Ampe, group: tofu.ChannelGroup) -> None:
    streams: dict[tuple[int, int], list[bytes]] = {}  # (channel, message id) -> frames so far
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
            group.post(msg)
            continue
        if op == OP.ByeRequest:
            bh.proto.op_code = OP.ByeResponse
            group.post(msg)
            continue
        if op == OP.Request:
            key = (bh.channel_number, bh.message_id)
            streams.setdefault(key, []).append(bytes(msg.body))
            if not msg.has_more():  # the last frame: the upload is complete
                frames = streams.pop(key)
                data, count = b"".join(frames), len(frames)
                digest = hashlib.sha256(data).hexdigest()
                print(f"server: received {len(data)} bytes in {count} frames, sha256 {digest[:16]}...")
                send_stream(group, OP.Response, bh.channel_number, bh.message_id, data[::-1], {"sha256": digest})
        ampe.put(msg)


def main() -> int:
    payload = os.urandom(300_000)
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

        mid = send_stream(cli, OP.Request, channel, None, payload)
        print(f"client: uploaded {len(payload)} bytes as message {mid}")

        received = bytearray()
        frames = 0
        digest = None
        while True:
            resp = cli.wait_receive(5.0)
            if resp is None:
                raise SystemExit("client: the download stalled")
            if resp.bhdr.message_id == mid and resp.bhdr.proto.op_code == OP.Response:
                frames += 1
                digest = digest or resp.thdrs.get("sha256")
                received += bytes(resp.body)
                if not resp.has_more():
                    ampe.put(resp)
                    break
            ampe.put(resp)
        ok = bytes(received) == payload[::-1] and digest == hashlib.sha256(payload).hexdigest()
        print(
            f"client: downloaded {len(received)} bytes in {frames} frames; digest and data {'match' if ok else 'DIFFER'}"
        )

        bye = tofu.Message(OP.ByeRequest)
        bye.bhdr.channel_number = channel
        cli.post(bye)
        t.join(10)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
