"""Profile tofu's per-message hot path, on every thread it runs on.

    .venv/bin/python benchmarks/profile_hot_path.py                  # oneway + rtt + pipeline, TCP
    .venv/bin/python benchmarks/profile_hot_path.py --scenario oneway --messages 200000
    .venv/bin/python benchmarks/profile_hot_path.py --transport uds --out /tmp/prof   # also .pstats files

One process, one Reactor, a server group and a client group on loopback:

  oneway    the main thread posts N 64-byte Signals; a receiver thread takes
            them with wait_receive and puts them back to the pool.
  rtt       one outstanding Request at a time; a server thread answers each
            with a Response (the received message, op code changed).
  pipeline  as rtt with 64 requests outstanding.

Each scenario runs twice: once without any profiler (the real rate), then
with one cProfile.Profile per thread: the application threads, and the
engine's I/O thread (Reactor._run is wrapped, in this process only, before
the Reactor is made). The report gives, per thread, each function's own time
per message (tottime / N) and calls per message, grouped into the stages of
the hot path; then microbenchmarks of the same steps in isolation (timeit, no
profiler), which are the trustworthy absolute costs: cProfile adds roughly
0.1-0.3 µs to every Python-level call it sees, so its per-message figures are
inflated where the call count is high.

Nothing in the engine is changed: the I/O thread's wrapper lives in this
script and only adds a profiler around the original Reactor._run.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import threading
import time
import timeit
from collections import defaultdict

import tofu
import tofu.reactor as reactor_mod

A = tofu.AllocationStrategy.always
OP = tofu.OpCode

# ------------------------------------------------------------- set-up helpers


def addresses(transport: str) -> tuple[tofu.Address, tofu.Address]:
    if transport == "tcp":
        port = tofu.find_free_tcp_port()
        return tofu.TCPServerAddress("127.0.0.1", port), tofu.TCPClientAddress("127.0.0.1", port)
    path = tofu.temp_uds_path("tofu-prof")
    return tofu.UDSServerAddress(path), tofu.UDSClientAddress(path)


def connect(ampe: tofu.Ampe, srv: tofu.ChannelGroup, cli: tofu.ChannelGroup, transport: str) -> int:
    """Listen on srv, connect from cli, answer the hello; the client's channel number."""
    saddr, caddr = addresses(transport)
    m = ampe.get(A)
    saddr.format(m)
    srv.post(m)
    r = srv.wait_receive(5)
    assert r is not None and r.bhdr.proto.op_code == OP.WelcomeResponse and not r.bhdr.status, r
    ampe.put(r)
    m = ampe.get(A)
    caddr.format(m)
    ch = cli.post(m).channel_number
    h = srv.wait_receive(5)
    assert h is not None and h.bhdr.proto.op_code == OP.HelloRequest, h
    h.bhdr.proto.op_code = OP.HelloResponse
    srv.post(h)
    r = cli.wait_receive(5)
    assert r is not None and r.bhdr.proto.op_code == OP.HelloResponse, r
    ampe.put(r)
    return ch


class Stall(RuntimeError):
    pass


# ------------------------------------------------------------- scenarios
# Each returns (seconds, messages, counters) and profiles the application
# threads into `profs` (thread name -> Profile) when it is given one.


def _enable(profs: dict | None, name: str) -> cProfile.Profile | None:
    if profs is None:
        return None
    p = cProfile.Profile()
    profs[name] = p
    p.enable()
    return p


def scenario_oneway(rtr: tofu.Reactor, n: int, transport: str, profs: dict | None, size: int = 64):
    ampe = rtr.ampe()
    srv, cli = ampe.create(), ampe.create()
    ch = connect(ampe, srv, cli, transport)
    payload = b"x" * size
    done = threading.Event()
    result: dict = {}

    def receiver() -> None:
        p = _enable(profs, "receiver (app thread: wait_receive + put)")
        get, put = srv.wait_receive, ampe.put
        count = 0
        try:
            t0 = time.perf_counter()
            while count < n:
                m = get(5.0)
                if m is None:
                    result["stall"] = f"receiver got {count} of {n}, then nothing for 5 s"
                    return
                count += 1
                put(m)
            result["seconds"] = time.perf_counter() - t0
        finally:
            if p:
                p.disable()
            done.set()

    t = threading.Thread(target=receiver, name="receiver")
    t.start()
    p = _enable(profs, "sender (app thread: get + fill + post)")
    get, post = ampe.get, cli.post
    Signal = OP.Signal
    for _ in range(n):
        m = get(A)
        bh = m.bhdr
        bh.proto.op_code = Signal
        bh.channel_number = ch
        m.body.append(payload)
        post(m)
    if p:
        p.disable()
    done.wait(120)
    t.join(5)
    if "stall" in result:
        raise Stall(result["stall"])
    return result["seconds"], n


def scenario_reqresp(rtr: tofu.Reactor, n: int, transport: str, profs: dict | None, window: int = 1):
    ampe = rtr.ampe()
    srv, cli = ampe.create(), ampe.create()
    ch = connect(ampe, srv, cli, transport)
    payload = b"x" * 64
    stop = threading.Event()

    def server() -> None:
        p = _enable(profs, "server (app thread: wait_receive + post Response)")
        get, post = srv.wait_receive, srv.post
        Response = OP.Response
        try:
            while not stop.is_set():
                m = get(0.2)
                if m is None:
                    continue
                m.bhdr.proto.op_code = Response
                post(m)
        finally:
            if p:
                p.disable()

    t = threading.Thread(target=server, name="server")
    t.start()
    p = _enable(profs, "client (app thread: post Request + wait_receive)")
    get, put, post, receive = ampe.get, ampe.put, cli.post, cli.wait_receive
    Request = OP.Request
    try:
        sent = 0

        def send_one() -> None:
            m = get(A)
            bh = m.bhdr
            bh.proto.op_code = Request
            bh.channel_number = ch
            m.body.append(payload)
            post(m)

        for _ in range(min(window, n)):
            send_one()
            sent += 1
        t0 = time.perf_counter()
        for i in range(n):
            r = receive(5.0)
            if r is None:
                raise Stall(f"client got {i} of {n} responses, then nothing for 5 s")
            put(r)
            if sent < n:
                send_one()
                sent += 1
        seconds = time.perf_counter() - t0
    finally:
        if p:
            p.disable()
        stop.set()
        t.join(5)
    return seconds, n


SCENARIOS = {
    "oneway": lambda rtr, n, tr, profs: scenario_oneway(rtr, n, tr, profs, size=BODY_SIZE),
    "rtt": lambda rtr, n, tr, profs: scenario_reqresp(rtr, n, tr, profs, window=1),
    "pipeline": lambda rtr, n, tr, profs: scenario_reqresp(rtr, n, tr, profs, window=64),
}

# ------------------------------------------------------------- the I/O thread's profiler

_IO_PROFILES: list[cProfile.Profile] = []
_ORIG_RUN = reactor_mod.Reactor._run


def _profiled_run(self: tofu.Reactor) -> None:
    prof = cProfile.Profile()
    _IO_PROFILES.append(prof)
    prof.enable()
    try:
        _ORIG_RUN(self)
    finally:
        prof.disable()


OPTIONS = tofu.Options()
BODY_SIZE = 64  # oneway's body; --size


def run_scenario(name: str, n: int, transport: str, profile: bool) -> tuple[float, int, dict]:
    profs: dict | None = {} if profile else None
    reactor_mod.Reactor._run = _profiled_run if profile else _ORIG_RUN  # type: ignore[method-assign]
    _IO_PROFILES.clear()
    try:
        rtr = tofu.Reactor(OPTIONS)
    finally:
        reactor_mod.Reactor._run = _ORIG_RUN  # type: ignore[method-assign]
    try:
        seconds, msgs = SCENARIOS[name](rtr, n, transport, profs)
    finally:
        rtr.destroy()
    if profile:
        profs["I/O thread (Reactor._run)"] = _IO_PROFILES[0]
    return seconds, msgs, profs or {}


# ------------------------------------------------------------- report

EPOLL_POLL = "<method 'poll' of 'select.epoll' objects>"
SOCK_SEND = "<method 'send' of '_socket.socket' objects>"
SOCK_RECV_INTO = "<method 'recv_into' of '_socket.socket' objects>"

# Stage of the hot path of each function, by (file suffix, function name).
STAGES: list[tuple[str, str, str]] = [
    # application side, sending
    ("reactor.py", "get", "get: Ampe.get/Pool.get"),
    ("pool.py", "get", "get: Ampe.get/Pool.get"),
    ("message.py", "append", "fill: body.append"),
    ("groups.py", "post", "post: validation (ChannelGroup.post own time)"),
    ("message.py", "take", "post: msg.take"),
    ("message.py", "copy", "post: bhdr.copy"),
    ("message.py", "__init__", "Message/BinaryHeader/ProtoFields.__init__ (copies, new messages)"),
    ("channels.py", "owner", "post: numbers.owner"),
    ("~", "<built-in method builtins.next>", "post: next(message id counter)"),
    ("reactor.py", "submit", "post: submit (inbox.append)"),
    ("reactor.py", "_wake", "post: _wake"),
    ("~", "<method 'send' of '_socket.socket' objects>", "socket.send (wake byte / frames)"),
    # I/O thread
    ("~", "<method 'poll' of 'select.epoll' objects>", "I/O: epoll.poll (idle/blocked)"),
    ("selectors.py", "select", "I/O: selectors.select overhead"),
    ("reactor.py", "_run", "I/O: loop (_run own time)"),
    ("reactor.py", "_on_wakeup", "I/O: _on_wakeup (inbox drain)"),
    ("~", "<method 'recv' of '_socket.socket' objects>", "I/O: wake socket recv"),
    ("reactor.py", "_on_posted", "I/O: _on_posted"),
    ("reactor.py", "_flush_dirty", "I/O: _flush_dirty"),
    ("reactor.py", "_flush", "I/O: _flush own time"),
    ("framing.py", "encode_into", "I/O: encode_into"),
    ("~", "<method 'pack' of '_struct.Struct' objects>", "I/O: Struct.pack"),
    ("pool.py", "put", "pool.put"),
    ("message.py", "reset", "pool.put: reset"),
    ("~", "<method 'clear' of 'bytearray' objects>", "pool.put: reset"),
    ("reactor.py", "_update_events", "I/O: _update_events/_set_events"),
    ("reactor.py", "_set_events", "I/O: _update_events/_set_events"),
    ("reactor.py", "_on_connection_event", "I/O: _on_connection_event"),
    ("reactor.py", "_read", "I/O: _read own time"),
    ("~", "<method 'recv_into' of '_socket.socket' objects>", "I/O: recv_into"),
    ("framing.py", "feed", "I/O: decoder.feed"),
    ("framing.py", "_decode", "I/O: decoder._decode own time"),
    ("~", "<method 'unpack_from' of '_struct.Struct' objects>", "I/O: Struct.unpack_from"),
    ("reactor.py", "_recycled", "I/O: _recycled/pool.get"),
    ("message.py", "set_byte", "I/O: proto.set_byte"),
    ("groups.py", "deliver", "deliver: group.deliver"),
    ("groups.py", "over_limit", "deliver: over_limit/qsize"),
    ("~", "<method 'qsize' of '_queue.SimpleQueue' objects>", "deliver: over_limit/qsize"),
    ("~", "<method 'put' of '_queue.SimpleQueue' objects>", "deliver: SimpleQueue.put"),
    # application side, receiving
    ("groups.py", "wait_receive", "receive: wait_receive own time"),
    ("~", "<method 'get' of '_queue.SimpleQueue' objects>", "receive: SimpleQueue.get (incl. blocking)"),
    ("reactor.py", "put", "put: Ampe.put"),
]


def stage_of(key: tuple[str, int, str]) -> str:
    filename, _, func = key
    for suffix, name, stage in STAGES:
        if name == func and (suffix == "~" and filename == "~" or filename.endswith(suffix)):
            return stage
    short = os.path.basename(filename) if filename != "~" else ""
    return f"other: {short}:{func}" if short else f"other: {func}"


def report_profile(title: str, prof: cProfile.Profile, n: int, top: int) -> dict[str, float]:
    st = pstats.Stats(prof)
    rows = []
    total_tt = 0.0
    for key, (cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, key))
        total_tt += tt
    rows.sort(reverse=True)
    print(f"\n### {title}: {total_tt * 1e6 / n:.2f} µs of profiled time per message")
    print(f"{'own µs/msg':>10} {'cum µs/msg':>10} {'calls/msg':>9}  function  [stage]")
    for tt, ct, nc, key in rows[:top]:
        filename, line, func = key
        where = f"{os.path.basename(filename)}:{line}:{func}" if filename != "~" else func
        print(f"{tt * 1e6 / n:10.3f} {ct * 1e6 / n:10.3f} {nc / n:9.3f}  {where}  [{stage_of(key)}]")
    stages: dict[str, float] = defaultdict(float)
    for tt, _, _, key in rows:
        stages[stage_of(key)] += tt * 1e6 / n
    return stages


def calls_per_message(prof: cProfile.Profile, n: int, func: str, suffix: str = "~") -> float:
    st = pstats.Stats(prof)
    total = 0
    for (filename, _, f), (cc, nc, *_rest) in st.stats.items():  # type: ignore[attr-defined]
        if f == func and (suffix == "~" and filename == "~" or filename.endswith(suffix)):
            total += nc
    return total / n


# ------------------------------------------------------------- microbenchmarks


def micro(number: int = 200_000) -> list[tuple[str, float]]:
    """Each hot-path step alone, µs per operation (best of 5, no profiler)."""
    from tofu.framing import FrameDecoder, encode_into
    from tofu.pool import Pool

    out: list[tuple[str, float]] = []

    def t(label: str, stmt, n: int = number, setup=None) -> None:
        if setup:
            setup()
        best = min(timeit.repeat(stmt, number=n, repeat=5))
        out.append((label, best / n * 1e6))

    payload = b"x" * 64
    rtr = tofu.Reactor()
    try:
        ampe = rtr.ampe()
        pool = rtr._pool
        grp = ampe.create()
        ch = rtr._numbers.allocate(grp)  # an owned number, so post() validates as for an open channel
        sink: list = []
        rtr._submit = lambda g, m: sink.append(m)  # this Reactor instance only: post() stops at the hand-over

        def build():
            m = ampe.get(A)
            bh = m.bhdr
            bh.proto.op_code = OP.Signal
            bh.channel_number = ch
            m.body.append(payload)
            return m

        msg = build()
        t("Ampe.get(always) from a non-empty pool + Pool.put back", lambda: pool.put(ampe.get(A)))
        t("Message() (what get(always) costs when the pool is empty)", tofu.Message)
        t("build: get + op_code + channel_number + body.append(64 B) + put", lambda: pool.put(build()))

        def post_one():
            grp.post(build())
            pool.put(sink.pop())

        t("build + post (validation, take, bhdr.copy, id; submit stubbed) + put", post_one)
        cell = [build()]

        def take_once():
            cell[0] = cell[0]._take()  # moves the parts into a new shell, empties the old one

        t("  msg._take()", take_once)
        t("  bhdr.copy()", msg.bhdr.copy)
        t("  numbers.owner(ch)", lambda: rtr._numbers.owner(ch))
        t("  Pool.put = reset + append (after a get)", lambda: pool.put(pool.get(A)))
        t("  Message.reset()", msg.reset)
        rtr.__dict__.pop("_submit", None)

        # _wake when the loop is already awake (the common case under load) vs a wake-up byte.
        rtr._woken = True
        t("Reactor._wake, loop already woken (flag test)", rtr._wake)
        a, b = __import__("socket").socketpair()
        b.setblocking(False)

        def wake_roundtrip():
            a.send(b"\0")
            b.recv(4096)

        t("wake-up byte: socket.send + recv (syscalls only)", wake_roundtrip, n=50_000)
        a.close()
        b.close()

        # The I/O thread's send side: encode_into for one 64 B Signal.
        buf = bytearray()
        m = build()

        def enc():
            encode_into(buf, m)
            if len(buf) > 1 << 20:
                buf.clear()

        t("encode_into(out, 64 B Signal)", enc)

        # The I/O thread's receive side: feed a 256 KiB chunk of 64 B frames.
        frame = tofu.encode(m)
        k = (256 * 1024) // len(frame)
        chunk = frame * k
        for label, factory in (
            ("pool factory, pool refilled", None),
            ("no recycling: message._from_wire", "from_wire"),
        ):
            if factory is None:
                p2 = Pool(k + 16, k + 16)

                def fac(p2=p2):
                    return p2.get(tofu.AllocationStrategy.poolOnly)

                dec = FrameDecoder(fac)

                def feed_pooled(dec=dec, p2=p2):
                    for x in dec.feed(chunk):
                        p2.put(x)

                reps = 20
                best = min(timeit.repeat(feed_pooled, number=reps, repeat=5))
                put_cost = min(timeit.repeat(lambda p2=p2: p2.put(p2.get(A)), number=k * 4, repeat=5)) / (k * 4)
                out.append(
                    (f"decoder.feed per 64 B frame ({label}), minus pool.put", best / reps / k * 1e6 - put_cost * 1e6)
                )
            else:
                dec = FrameDecoder()
                reps = 20
                best = min(timeit.repeat(lambda dec=dec: dec.feed(chunk), number=reps, repeat=5))
                out.append((f"decoder.feed per 64 B frame ({label})", best / reps / k * 1e6))

        # deliver / wait_receive: one SimpleQueue put and get per message.
        g2 = ampe.create()
        q = g2._queue
        t("SimpleQueue.put + get_nowait (no waiting)", lambda: (q.put(msg), q.get_nowait()))
        t("group.deliver + wait_receive(5.0) on a non-empty queue", lambda: (g2._deliver(msg), g2.wait_receive(5.0)))
        t("group.deliver + wait_receive(0)", lambda: (g2._deliver(msg), g2.wait_receive(0)))
    finally:
        rtr.destroy()
    return out


# ------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="oneway,rtt,pipeline", help="comma-separated: oneway,rtt,pipeline")
    ap.add_argument("--messages", type=int, default=200_000, help="messages for oneway (default 200000)")
    ap.add_argument("--requests", type=int, default=20_000, help="requests for rtt/pipeline (default 20000)")
    ap.add_argument("--transport", choices=("tcp", "uds"), default="tcp")
    ap.add_argument("--size", type=int, default=64, help="body bytes of the oneway Signals (default 64)")
    ap.add_argument("--top", type=int, default=22, help="functions listed per thread (default 22)")
    ap.add_argument("--no-micro", action="store_true", help="skip the microbenchmarks")
    ap.add_argument("--no-profile", action="store_true", help="only the unprofiled rate of each scenario")
    ap.add_argument("--runs", type=int, default=1, help="unprofiled runs per scenario, median reported (default 1)")
    ap.add_argument(
        "--initial-pool", type=int, default=tofu.Options().initial_pool_msgs, help="Options.initial_pool_msgs"
    )
    ap.add_argument("--max-pool", type=int, default=tofu.Options().max_pool_msgs, help="Options.max_pool_msgs")
    ap.add_argument("--max-queued", type=int, default=tofu.Options().max_queued_msgs, help="Options.max_queued_msgs")
    ap.add_argument("--out", help="directory for .pstats files (one per scenario and thread)")
    args = ap.parse_args(argv)

    global OPTIONS, BODY_SIZE
    BODY_SIZE = args.size
    OPTIONS = tofu.Options(
        initial_pool_msgs=args.initial_pool, max_pool_msgs=args.max_pool, max_queued_msgs=args.max_queued
    )
    print(
        f"tofu {tofu.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.transport}, {OPTIONS}"
    )
    for name in [s.strip() for s in args.scenario.split(",") if s.strip()]:
        n = args.messages if name == "oneway" else args.requests
        size = args.size if name == "oneway" else 64
        print(f"\n========== {name}: {n} messages of {size} B over {args.transport}, one process")
        try:
            times = []
            for _ in range(max(1, args.runs)):
                seconds, msgs, _ = run_scenario(name, n, args.transport, profile=False)
                times.append(seconds)
            seconds = sorted(times)[len(times) // 2]
            base = seconds / msgs * 1e6
            print(
                f"unprofiled: {msgs / seconds:,.0f} msg/s = {base:.2f} µs per message (all threads, one GIL; "
                f"median of {len(times)}: {', '.join(f'{msgs / t:,.0f}' for t in times)})"
            )
            if args.no_profile:
                continue
            seconds_p, msgs, profs = run_scenario(name, n, args.transport, profile=True)
        except Stall as exc:
            print(f"STALLED: {exc}")
            continue
        print(f"profiled:   {msgs / seconds_p:,.0f} msg/s = {seconds_p / msgs * 1e6:.2f} µs per message")
        io = profs["I/O thread (Reactor._run)"]
        per = {
            "wake-ups (_on_wakeup)": calls_per_message(io, msgs, "_on_wakeup", "reactor.py"),
            "epoll.poll": calls_per_message(io, msgs, EPOLL_POLL),
            "_flush": calls_per_message(io, msgs, "_flush", "reactor.py"),
            "socket.send (I/O thread)": calls_per_message(io, msgs, SOCK_SEND),
            "recv_into": calls_per_message(io, msgs, SOCK_RECV_INTO),
            "_read": calls_per_message(io, msgs, "_read", "reactor.py"),
        }
        print("I/O thread calls per message: " + ", ".join(f"{k} {v:.4f}" for k, v in per.items()))
        all_stages: dict[str, dict[str, float]] = {}
        for title, prof in profs.items():
            all_stages[title] = report_profile(title, prof, msgs, args.top)
            if args.out:
                os.makedirs(args.out, exist_ok=True)
                fname = f"{name}-{title.split()[0].strip('/:')}.pstats".replace("/", "_")
                prof.dump_stats(os.path.join(args.out, fname))
        print(f"\n### {name}: own time per message by stage (profiled µs; the I/O thread's epoll.poll is waiting)")
        for title, stages in all_stages.items():
            print(f"  {title}")
            for stage, us in sorted(stages.items(), key=lambda kv: -kv[1]):
                if us >= 0.01:
                    print(f"    {us:8.3f}  {stage}")
    if not args.no_micro:
        print("\n========== microbenchmarks: one step alone, µs per operation (best of 5, no profiler)")
        for label, us in micro():
            print(f"{us:8.3f}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
