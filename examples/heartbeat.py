"""Heartbeat: detect a peer that is connected but no longer alive.

The client sends an empty Signal every 100 ms. The server expects to hear
from each client at least every 500 ms. After five beats the client "hangs"
(it keeps its connection but sends nothing); the server notices the missed
heartbeats and aborts the channel with ByeSignal; the client gets
`channel_closed`.

The receive timeout doubles as the timer on both sides: no extra thread.

    python examples/heartbeat.py
"""

from __future__ import annotations

import sys
import threading
import time

import tofu

OP = tofu.OpCode
_print_lock = threading.Lock()


def say(text: str) -> None:
    """print() from several threads, one whole line at a time."""
    with _print_lock:
        print(text, flush=True)


INTERVAL = 0.1  # seconds between heartbeats
DEAD_AFTER = 5 * INTERVAL  # silence that means "dead"
BEATS = 5


def server(ampe: tofu.Ampe, group: tofu.ChannelGroup) -> list[str]:
    events: list[str] = []
    last_seen: dict[int, float] = {}
    start = time.monotonic()
    while time.monotonic() - start < 10:
        now = time.monotonic()
        for channel, seen in list(last_seen.items()):
            if now - seen > DEAD_AFTER:
                events.append(f"server: channel {channel} silent for {now - seen:.2f} s: closing it")
                say(events[-1])
                bye = tofu.Message(OP.ByeSignal)  # abort: no goodbye from a dead peer
                bye.bhdr.channel_number = channel
                group.post(bye)
                del last_seen[channel]
        # Wait no longer than until the next client could be declared dead.
        timeout = min((seen + DEAD_AFTER for seen in last_seen.values()), default=now + 1.0) - now
        msg = group.wait_receive(max(timeout, 0.0) + 0.01)
        if msg is None:
            continue
        channel = msg.bhdr.channel_number
        if msg.is_from_engine():
            if msg.is_close_notice():
                events.append(f"server: channel {channel} closed")
                say(events[-1])
                ampe.put(msg)
                return events
            ampe.put(msg)
            continue
        last_seen[channel] = time.monotonic()  # any message counts as a sign of life
        if msg.bhdr.proto.op_code == OP.HelloRequest:
            msg.bhdr.proto.op_code = OP.HelloResponse
            group.post(msg)
        else:
            ampe.put(msg)
    return events


def client(ampe: tofu.Ampe, group: tofu.ChannelGroup, port: int, result: list[str]) -> None:
    channel = group.post(tofu.TCPClientAddress("127.0.0.1", port).format(tofu.Message())).channel_number
    resp = group.wait_receive(5.0)
    assert resp is not None and resp.bhdr.proto.op_code == OP.HelloResponse, "connect failed"

    def closed(msg: tofu.Message | None) -> bool:
        if msg is not None and msg.is_close_notice():
            result.append("client: the server closed the channel")
            say(result[-1])
            return True
        return False

    for beat in range(1, BEATS + 1):
        hb = tofu.Message(OP.Signal)  # an empty Signal is the heartbeat
        hb.bhdr.channel_number = channel
        try:
            group.post(hb)
        except tofu.AmpeError:  # the channel is already gone
            break
        say(f"client: heartbeat {beat}")
        if closed(group.wait_receive(INTERVAL)):  # the receive timeout is the timer
            return
    say("client: hanging (connected, but no more heartbeats)")
    while (msg := group.wait_receive(5.0)) is not None:
        if closed(msg):
            return


def main() -> int:
    with tofu.Reactor() as srv_rtr, tofu.Reactor() as cli_rtr:
        srv_ampe = srv_rtr.ampe()
        srv = srv_ampe.create()
        srv.post(tofu.TCPServerAddress("127.0.0.1", 0).format(tofu.Message()))
        resp = srv.wait_receive(5.0)
        assert resp is not None and resp.bhdr.status == 0, "listen failed"
        port = tofu.TCPServerAddress.from_message(resp).port  # port 0: the engine picked a free one
        result: list[str] = []
        cli_ampe = cli_rtr.ampe()
        t = threading.Thread(target=client, args=(cli_ampe, cli_ampe.create(), port, result))
        t.start()
        events = server(srv_ampe, srv)
        t.join(10)
    dead = any("silent" in e for e in events)
    return 0 if dead and result else 1


if __name__ == "__main__":
    sys.exit(main())
