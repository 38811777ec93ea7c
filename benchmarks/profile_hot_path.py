"""Profile tofu's per-message hot path, on every thread it runs on.

    .venv/bin/python benchmarks/profile_hot_path.py                  # oneway + rtt + pipeline, TCP
    .venv/bin/python benchmarks/profile_hot_path.py --scenario oneway --messages 200000
    .venv/bin/python benchmarks/profile_hot_path.py --transport uds --out /tmp/prof   # also .pstats files
    .venv/bin/python benchmarks/profile_hot_path.py --no-direct      # every message through the I/O thread

One process, one Reactor, a server group and a client group on loopback:

  oneway    the main thread posts N 64-byte Signals; a receiver thread takes
            them with wait_receive and puts them back to the pool.
  rtt       one outstanding Request at a time; a server thread answers each
            with a Response (the received message, op code changed).
  pipeline  as rtt with 64 requests outstanding.

Each scenario runs twice: once without any profiler (the real rate), then
with one cProfile.Profile per thread: the application threads, and the
engine's I/O thread (Reactor._run is wrapped, in this process only, while the
Reactor is made). The report gives, per thread, each function's own time per
message (tottime / N) and calls per message, then a table of the stages of
the hot path (rows) by thread (columns); then microbenchmarks of the same
steps in isolation (timeit, no profiler), which are the trustworthy absolute
costs: cProfile adds roughly 0.1-0.3 µs to every Python-level call it sees,
so its per-message figures are inflated where the call count is high.

By default post() may write an idle connection's frame itself and
wait_receive() may read its group's one connection itself (Options.direct_send,
direct_receive): then rtt hardly touches the I/O thread. --no-direct turns
both off, so every message goes through the I/O thread.

Python 3.12 and later: cProfile runs one profiler at a time for the whole
process, and it sees every thread. There the report has one column, "all
threads", instead of one per thread (own times are then approximate: the
threads' calls interleave in one profiler).

Needs the pure Python build (an editable install, or TOFU_PURE=1): compiled
classes cannot be wrapped or stood in for. With tofu.COMPILED the script says
so and exits with status 2. Nothing in the engine is changed: the wrapper
only adds a profiler around the original Reactor._run, and the
microbenchmarks call the engine's own parts.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import os
import pstats
import queue
import re
import sys
import threading
import time
import timeit
from collections import defaultdict
from collections.abc import Callable
from typing import Final

import tofu
from tofu.channels import Connection
from tofu.framing import FrameDecoder, encode_into
from tofu.generated.codec import pack_header_into, unpack_header
from tofu.generated.machine import ACCEPTOR_OPEN
from tofu.groups import mailbox_of
from tofu.inbox import Inbox
from tofu.message import Message, take
from tofu.pool import Pool
from tofu.protocol import ChannelProtocol
from tofu.reactor import Reactor
from tofu.transfer import RECV_BUFFER_SIZE

A: Final = tofu.AllocationStrategy.always  # (Final: ampe.get(A) is then typed as never None)
OP = tofu.OpCode

OPTIONS = tofu.Options()
BODY_SIZE = 64  # oneway's body; --size

# cProfile before Python 3.12 profiles the thread that enables it; from 3.12
# (sys.monitoring) one profiler at a time sees every thread.
PER_THREAD = sys.version_info < (3, 12)

# The profiled threads, in the order of the report's columns, with what each does.
IO_THREAD = "I/O thread"
ALL_THREADS = "all threads"
THREADS = {
    "sender": "app thread: get + fill + post",
    "receiver": "app thread: wait_receive + put",
    "client": "app thread: post Request + wait_receive + put",
    "server": "app thread: wait_receive + post Response",
    IO_THREAD: "the engine's: Reactor._run",
    ALL_THREADS: "one profiler for every thread, Python 3.12+",
}

COMPILED_MESSAGE = (
    "profile_hot_path.py needs the pure Python build of tofu, and this one is compiled (tofu.COMPILED is True):\n"
    "it wraps Reactor._run to profile the I/O thread, and compiled classes cannot be patched.\n"
    "Run it with an editable install (pip install -e .) or a build made with TOFU_PURE=1."
)

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


# ------------------------------------------------------------- the profilers


class Profiles:
    """The profilers of one run: none (`enabled` False), one per thread
    (PER_THREAD), or one for all threads, on while any thread's traffic runs."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.by_thread: dict[str, cProfile.Profile] = {}
        self._shared = cProfile.Profile()
        self._active = 0
        self._lock = threading.Lock()

    def start(self, thread: str) -> None:
        """The calling thread, `thread`, begins its traffic."""
        if not self.enabled:
            return
        if PER_THREAD:
            prof = self.by_thread[thread] = cProfile.Profile()
            prof.enable()
            return
        with self._lock:
            if not self._active:
                self.by_thread[ALL_THREADS] = self._shared
                self._shared.enable()
            self._active += 1

    def stop(self, thread: str) -> None:
        """The calling thread, `thread`, is done."""
        if not self.enabled:
            return
        if PER_THREAD:
            self.by_thread[thread].disable()
            return
        with self._lock:
            self._active -= 1
            if not self._active:
                self._shared.disable()

    def reactor(self) -> Reactor:
        """A Reactor; profiled per thread, its I/O thread runs under a profiler
        of its own from its first round to its last (Reactor._run wrapped in
        this process while the Reactor is made: its thread takes the bound
        method then)."""
        if not (self.enabled and PER_THREAD):
            return Reactor(OPTIONS)
        original = Reactor._run
        by_thread = self.by_thread

        def profiled_run(rtr: Reactor) -> None:
            prof = by_thread[IO_THREAD] = cProfile.Profile()
            prof.enable()
            try:
                original(rtr)
            finally:
                prof.disable()

        Reactor._run = profiled_run  # type: ignore[method-assign, assignment]
        try:
            return Reactor(OPTIONS)
        finally:
            Reactor._run = original  # type: ignore[method-assign]


# ------------------------------------------------------------- scenarios
# Each returns (seconds, messages) and profiles its threads into `profiles`.


def scenario_oneway(rtr: Reactor, n: int, transport: str, profiles: Profiles, size: int = 64) -> tuple[float, int]:
    ampe = rtr.ampe()
    srv, cli = ampe.create(), ampe.create()
    ch = connect(ampe, srv, cli, transport)
    payload = b"x" * size
    done = threading.Event()
    result: dict[str, object] = {}

    def receiver() -> None:
        profiles.start("receiver")
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
            profiles.stop("receiver")
            done.set()

    t = threading.Thread(target=receiver, name="receiver")
    t.start()
    profiles.start("sender")
    get, post = ampe.get, cli.post
    Signal = OP.Signal
    for _ in range(n):
        m = get(A)
        bh = m.bhdr
        bh.proto.op_code = Signal
        bh.channel_number = ch
        m.body.append(payload)
        post(m)
    profiles.stop("sender")
    done.wait(120)
    t.join(5)
    if "stall" in result:
        raise Stall(str(result["stall"]))
    return float(result["seconds"]), n  # type: ignore[arg-type]


def scenario_reqresp(rtr: Reactor, n: int, transport: str, profiles: Profiles, window: int = 1) -> tuple[float, int]:
    ampe = rtr.ampe()
    srv, cli = ampe.create(), ampe.create()
    ch = connect(ampe, srv, cli, transport)
    payload = b"x" * 64
    stop = threading.Event()

    def server() -> None:
        profiles.start("server")
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
            profiles.stop("server")

    t = threading.Thread(target=server, name="server")
    t.start()
    profiles.start("client")
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
        profiles.stop("client")
        stop.set()
        t.join(5)
    return seconds, n


Scenario = Callable[[Reactor, int, str, Profiles], tuple[float, int]]
SCENARIOS: dict[str, Scenario] = {
    "oneway": lambda rtr, n, tr, profiles: scenario_oneway(rtr, n, tr, profiles, size=BODY_SIZE),
    "rtt": lambda rtr, n, tr, profiles: scenario_reqresp(rtr, n, tr, profiles, window=1),
    "pipeline": lambda rtr, n, tr, profiles: scenario_reqresp(rtr, n, tr, profiles, window=64),
}


def run_scenario(name: str, n: int, transport: str, profile: bool) -> tuple[float, int, dict[str, cProfile.Profile]]:
    """One run of scenario `name`: its seconds, its messages and its profilers by thread (none unless `profile`)."""
    profiles = Profiles(profile)
    rtr = profiles.reactor()
    try:
        seconds, msgs = SCENARIOS[name](rtr, n, transport, profiles)
    finally:
        rtr.destroy()
    order = list(THREADS)
    return seconds, msgs, dict(sorted(profiles.by_thread.items(), key=lambda kv: order.index(kv[0])))


# ------------------------------------------------------------- report

EPOLL_POLL = "<method 'poll' of 'select.epoll' objects>"
SELECT_POLL = "<method 'poll' of 'select.poll' objects>"
SOCK_SEND = "<method 'send' of '_socket.socket' objects>"
SOCK_RECV = "<method 'recv' of '_socket.socket' objects>"
SOCK_RECV_INTO = "<method 'recv_into' of '_socket.socket' objects>"
PACK_INTO = "<method 'pack_into' of '_struct.Struct' objects>"
UNPACK_FROM = "<method 'unpack_from' of '_struct.Struct' objects>"
QUEUE_PUT = "<method 'put' of '_queue.SimpleQueue' objects>"
QUEUE_GET = "<method 'get' of '_queue.SimpleQueue' objects>"
QUEUE_QSIZE = "<method 'qsize' of '_queue.SimpleQueue' objects>"
LOCK_METHODS = ("acquire", "release", "__enter__", "__exit__")

Where = tuple[str, str]  # (file name, or "~" for a C function; function name)
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>$")  # in some C functions' names: "<built-in method ... at 0x7f...>"

# The stages of the hot path, in its order, each with its functions.
STAGES: list[tuple[str, tuple[Where, ...]]] = [
    # an application thread gets a message and fills it
    (
        "get: Ampe.get, Pool.get (a Message() if empty)",
        (("ampe.py", "get"), ("pool.py", "get"), ("message.py", "__init__")),
    ),
    ("fill: bhdr, body, Body.append", (("message.py", "bhdr"), ("message.py", "body"), ("message.py", "append"))),
    # post(), on the application thread
    ("post: checks (ChannelGroup.post own time)", (("groups.py", "post"),)),
    ("post: channel table lookup (ChannelTable.get)", (("channels.py", "get"),)),
    ("post: state check (ChannelProtocol.post)", (("protocol.py", "post"),)),
    ("post: header copy (BinaryHeader.copy)", (("message.py", "copy"),)),
    ("post: take (the parts to a new Message)", (("message.py", "take"), ("message.py", "_take"))),
    ("post: direct write (DirectWriter)", (("direct.py", "*"),)),
    ("post: inbox hand-over (Inbox.submit, _wake)", (("inbox.py", "submit"), ("inbox.py", "_wake"))),
    ("post: catch-up wait (Inbox._catch_up)", (("inbox.py", "_catch_up"),)),
    # the I/O thread's loop
    ("I/O: epoll.poll (waiting)", (("~", EPOLL_POLL),)),
    ("I/O: loop (Reactor._run, Poller.select)", (("reactor.py", "_run"), ("poller.py", "select"))),
    (
        "I/O: inbox drain (_on_wakeup, clear_wakeup, recv)",
        (("reactor.py", "_on_wakeup"), ("inbox.py", "clear_wakeup"), ("inbox.py", "round_done"), ("~", SOCK_RECV)),
    ),
    ("I/O: queue a post (_on_posted, Transfer.mark)", (("reactor.py", "_on_posted"), ("transfer.py", "mark"))),
    (
        "I/O: flush (flush_dirty, flush, _write_queued)",
        (("transfer.py", "flush_dirty"), ("transfer.py", "flush"), ("transfer.py", "_write_queued")),
    ),
    ("I/O: written, back to the pool (Transfer._written)", (("transfer.py", "_written"),)),
    (
        "I/O: registrations (update_events, set_events)",
        (
            ("transfer.py", "update_events"),
            ("transfer.py", "update_events_held"),
            ("transfer.py", "set_events"),
            ("channels.py", "over_unsent"),
        ),
    ),
    (
        "I/O: timers (_run_timers, timers.py, deadlines.py)",
        (("reactor.py", "_run_timers"), ("timers.py", "*"), ("deadlines.py", "*")),
    ),
    (
        "I/O: read (Transfer.on_event, read, _read)",
        (("transfer.py", "on_event"), ("transfer.py", "read"), ("transfer.py", "_read")),
    ),
    # encoding, on whichever thread writes (the I/O thread, or a direct write)
    (
        "encode: ChannelProtocol.write, encode_into, pack_into",
        (("protocol.py", "write"), ("framing.py", "encode_into"), ("framing.py", "_proto_byte"), ("~", PACK_INTO)),
    ),
    ("socket.send (frames, wake-up bytes)", (("~", SOCK_SEND),)),
    # decoding, on whichever thread reads (the I/O thread, or a direct receive)
    ("recv_into", (("~", SOCK_RECV_INTO),)),
    ("decode: ChannelProtocol.receive own time", (("protocol.py", "receive"),)),
    (
        "decode: FrameDecoder.feed, _decode, unpack_from",
        (("framing.py", "feed"), ("framing.py", "_decode"), ("framing.py", "pending"), ("~", UNPACK_FROM)),
    ),
    (
        "decode: a message per frame (for_frame, refill)",
        (("pool.py", "for_frame"), ("message.py", "refill"), ("message.py", "set_byte"), ("message.py", "from_wire")),
    ),
    ("deliver: Mailbox.deliver, SimpleQueue.put", (("mailbox.py", "deliver"), ("~", QUEUE_PUT))),
    ("deliver: over_limit, SimpleQueue.qsize", (("mailbox.py", "over_limit"), ("~", QUEUE_QSIZE))),
    # wait_receive(), on the application thread
    ("receive: wait_receive own time", (("groups.py", "wait_receive"),)),
    ("receive: SimpleQueue.get (with its waiting)", (("~", QUEUE_GET),)),
    (
        "receive: direct receive (DirectReceiver, its lease)",
        (("direct_receive.py", "*"),),
    ),
    ("receive: select.poll (waiting on the socket)", (("~", SELECT_POLL),)),
    # back to the pool, on any thread
    (
        "put: Ampe.put, Pool.put, recycle",
        (
            ("ampe.py", "put"),
            ("pool.py", "put"),
            ("message.py", "recycle"),
            ("message.py", "_reset"),
            ("message.py", "reset"),
            ("message.py", "is_posted"),
        ),
    ),
    # everywhere
    (
        "message internals (header_of, *_buffer, thdrs, __new__)",
        (
            ("message.py", "header_of"),
            ("message.py", "headers_buffer"),
            ("message.py", "body_buffer"),
            ("message.py", "thdrs"),
            ("~", "<built-in method __new__ of type object>"),
        ),
    ),
    (
        "locks and events (post's catch-up wait is here)",
        tuple(("~", f"<method '{m}' of '_thread.{lock}' objects>") for m in LOCK_METHODS for lock in ("lock", "RLock"))
        + (("threading.py", "*"),),
    ),
    ("this script (the scenarios' own code)", (("profile_hot_path.py", "*"),)),
]
OTHER = "other (in no stage: see the lists above)"
# (file, "*"): every function of that file not named elsewhere.
STAGE_OF: dict[Where, str] = {where: label for label, members in STAGES for where in members}

# What the report counts per message, on each thread.
COUNTED: list[tuple[str, Where]] = [
    ("epoll.poll", ("~", EPOLL_POLL)),
    ("wake-ups (Reactor._on_wakeup)", ("reactor.py", "_on_wakeup")),
    ("Transfer.flush", ("transfer.py", "flush")),
    ("Transfer._read", ("transfer.py", "_read")),
    ("direct writes tried (DirectWriter.write)", ("direct.py", "write")),
    ("direct receives tried (DirectReceiver.receive)", ("direct_receive.py", "receive")),
    ("socket.send", ("~", SOCK_SEND)),
    ("recv_into", ("~", SOCK_RECV_INTO)),
    ("select.poll", ("~", SELECT_POLL)),
]


def where_of(key: tuple[str, int, str]) -> Where:
    """A profiled function's (file, name); a C function's name without its object's address."""
    filename, _, func = key
    if filename == "~":
        return ("~", ADDRESS.sub(">", func))
    return (os.path.basename(filename), func)


def stage_of(key: tuple[str, int, str]) -> str:
    where = where_of(key)
    return STAGE_OF.get(where) or STAGE_OF.get((where[0], "*"), OTHER)


def stats_of(prof: cProfile.Profile) -> dict[tuple[str, int, str], tuple[int, int, float, float, object]]:
    return pstats.Stats(prof).stats  # type: ignore[attr-defined, no-any-return]


def report_functions(title: str, prof: cProfile.Profile, n: int, top: int) -> None:
    """The `top` functions of one thread by own time, per message."""
    rows = sorted(((tt, ct, nc, key) for key, (_cc, nc, tt, ct, _) in stats_of(prof).items()), reverse=True)
    total = sum(row[0] for row in rows)
    print(f"\n### {title} ({THREADS[title]}): {total * 1e6 / n:.2f} µs of profiled time per message")
    print(f"{'own µs/msg':>10} {'cum µs/msg':>10} {'calls/msg':>9}  function  [stage]")
    for tt, ct, nc, key in rows[:top]:
        filename, line, func = key
        where = f"{os.path.basename(filename)}:{line}:{func}" if filename != "~" else func
        print(f"{tt * 1e6 / n:10.3f} {ct * 1e6 / n:10.3f} {nc / n:9.3f}  {where}  [{stage_of(key)}]")


def stage_times(prof: cProfile.Profile, n: int) -> dict[str, float]:
    """Own time per message (µs) of each stage that ran, and of OTHER."""
    stages: dict[str, float] = defaultdict(float)
    for key, (_cc, _nc, tt, _ct, _) in stats_of(prof).items():
        stages[stage_of(key)] += tt * 1e6 / n
    return stages


def calls(prof: cProfile.Profile, n: int) -> dict[str, float]:
    """Calls per message of each COUNTED function that ran."""
    counts: dict[str, float] = defaultdict(float)
    wanted = {where: label for label, where in COUNTED}
    for key, (_cc, nc, *_rest) in stats_of(prof).items():
        label = wanted.get(where_of(key))
        if label is not None:
            counts[label] += nc / n
    return counts


def print_table(title: str, rows: list[str], columns: dict[str, dict[str, float]], fmt: str) -> None:
    """Rows by columns; "-" where a row's functions never ran on that column's thread."""
    width = max(len(r) for r in rows)
    print(f"\n### {title}")
    print(f"  {'':<{width}}" + "".join(f" {c:>12}" for c in columns))
    for row in rows:
        cells = "".join(f" {fmt % values[row]:>12}" if row in values else f" {'-':>12}" for values in columns.values())
        print(f"  {row:<{width}}{cells}")


def report_scenario(name: str, profs: dict[str, cProfile.Profile], msgs: int, top: int, out: str | None) -> None:
    """Each thread's top functions, then stages by thread, then calls by thread."""
    for title, prof in profs.items():
        report_functions(title, prof, msgs, top)
        if out:
            os.makedirs(out, exist_ok=True)
            prof.dump_stats(os.path.join(out, f"{name}-{title.replace('/', '').replace(' ', '-')}.pstats"))
    stages = {title: stage_times(prof, msgs) for title, prof in profs.items()}
    for per_stage in stages.values():
        per_stage["total"] = sum(per_stage.values())
    print_table(
        f"{name}: own time per message by stage (profiled µs; '-': not called; the poll stages are waiting)",
        [label for label, _ in STAGES] + [OTHER, "total"],
        stages,
        "%.3f",
    )
    print_table(
        f"{name}: calls per message",
        [label for label, _ in COUNTED],
        {t: calls(p, msgs) for t, p in profs.items()},
        "%.4f",
    )


# ------------------------------------------------------------- microbenchmarks


class Micro:
    """Timings of one step each: µs per operation, best of 5 runs, no profiler."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.rows: list[tuple[str, float]] = []

    def time(self, label: str, step: Callable[[], object], number: int | None = None) -> float:
        n = number or self.number
        us = min(timeit.repeat(step, number=n, repeat=5)) / n * 1e6
        self.rows.append((label, us))
        return us

    def add(self, label: str, us: float) -> None:
        self.rows.append((label, us))


class HandOverSink:
    """Stands in for the engine's Inbox in one channel group: its post() stops
    at the hand-over to the I/O thread, keeping the message here."""

    closing = False
    io_thread: threading.Thread | None = None

    def __init__(self) -> None:
        self.taken: list[Message] = []

    def submit(self, channel: object, msg: Message) -> bool:
        self.taken.append(msg)
        return True


def signal(ampe: tofu.Ampe, channel: int, payload: bytes) -> Message:
    """A message as the scenarios post it: a Signal with a body."""
    m = ampe.get(A)
    bh = m.bhdr
    bh.proto.op_code = OP.Signal
    bh.channel_number = channel
    m.body.append(payload)
    return m


def micro_pool(micro: Micro, ampe: tofu.Ampe, channel: int, payload: bytes) -> None:
    """get and put: the pool, and a message made when it is empty."""
    pool = Pool(64, 64)
    micro.time("Ampe.get(always) from a non-empty pool + Ampe.put back", lambda: ampe.put(ampe.get(A)))
    micro.time("  Pool.get + Pool.put (recycle + append)", lambda: pool.put(pool.get(A)))
    micro.time("Message() (what get(always) costs when the pool is empty)", Message)
    micro.time(
        f"build: get + op_code + channel_number + body.append({len(payload)} B) + put",
        lambda: ampe.put(signal(ampe, channel, payload)),
    )


def micro_post(
    micro: Micro, rtr: Reactor, ampe: tofu.Ampe, group: tofu.ChannelGroup, channel: int, payload: bytes
) -> None:
    """post() up to the hand-over, and its steps alone: the channel table
    lookup, the state machine's check, the header copy, the take."""
    real_inbox = group._inbox
    sink = HandOverSink()
    group._inbox = sink  # type: ignore[assignment]  # this group only
    try:

        def post_one() -> None:
            group.post(signal(ampe, channel, payload))
            ampe.put(sink.taken.pop())

        micro.time("build + post (checks, table lookup, state check, header copy, take; no hand-over) + put", post_one)
    finally:
        group._inbox = real_inbox
    table = rtr._table
    conn = table.get(channel)
    assert isinstance(conn, Connection), conn
    micro.time("  ChannelTable.get(channel)", lambda: table.get(channel))
    micro.time("  ChannelProtocol.post(Signal) on an open channel", lambda: conn.protocol.post(OP.Signal))
    msg = signal(ampe, channel, payload)
    micro.time("  bhdr.copy()", msg.bhdr.copy)
    cell = [msg]

    def take_once() -> None:
        cell[0] = take(cell[0])  # the parts to a new Message; the old one is left empty

    micro.time("  take(msg)", take_once)


def micro_inbox(micro: Micro, ampe: tofu.Ampe, channel: int, payload: bytes) -> None:
    """The hand-over to the I/O thread: Inbox.submit, with and without its wake-up byte."""
    inbox = Inbox()
    msg = signal(ampe, channel, payload)
    try:

        def awake() -> None:
            inbox.woken = True  # the I/O thread is awake: no byte to write
            inbox.submit(None, msg)  # type: ignore[arg-type]  # (the channel is only carried along)
            inbox.items.popleft()

        def asleep() -> None:
            inbox.woken = False
            inbox.submit(None, msg)  # type: ignore[arg-type]
            inbox.clear_wakeup()  # what the I/O thread does on the byte
            inbox.items.popleft()

        micro.time("Inbox.submit, I/O thread awake (append + flag test) + popleft", awake)
        micro.time(
            "Inbox.submit waking the I/O thread (send) + clear_wakeup (recv) + popleft", asleep, micro.number // 4 or 1
        )
    finally:
        inbox.close()


def micro_encode(micro: Micro, msg: Message) -> None:
    """The frame of one message: the generated codec's header, then the whole frame."""
    bh = msg.bhdr
    header = bytearray(16)
    fields = (bh.channel_number, bh.proto.to_byte(), 0, bh.message_id, 0, len(msg.body))
    micro.time("codec.pack_header_into (the 16-byte header)", lambda: pack_header_into(header, 0, *fields))
    micro.time("codec.unpack_header", lambda: unpack_header(header))
    out = bytearray()

    def encode() -> None:
        encode_into(out, msg)
        if len(out) > 1 << 20:
            out.clear()

    micro.time(f"encode_into(out, {len(msg.body)} B Signal)", encode)
    protocol = ChannelProtocol(ACCEPTOR_OPEN, bh.channel_number, 1)

    def write() -> None:
        protocol.write(msg, out)
        if len(out) > 1 << 20:
            out.clear()

    micro.time(f"ChannelProtocol.write(msg, out) ({len(msg.body)} B Signal: encode_into + last-frame check)", write)


def micro_decode(micro: Micro, frame: bytes) -> None:
    """A read's worth of frames (the engine's receive buffer) decoded, per frame:
    the decoder alone, with and without the pool, then the protocol's receive."""
    k = max(RECV_BUFFER_SIZE // len(frame), 1)
    chunk = frame * k
    reps = max(micro.number // k, 1)
    size = f"{len(frame) - 16} B"
    pool = Pool(k + 16, k + 16)
    put_us = min(timeit.repeat(lambda: pool.put(pool.get(A)), number=k, repeat=5)) / k * 1e6

    def per_frame(feed: Callable[[], object]) -> float:
        return min(timeit.repeat(feed, number=reps, repeat=5)) / reps / k * 1e6

    pooled = FrameDecoder(pool.for_frame)

    def feed_pooled() -> None:
        for m in pooled.feed(chunk):
            pool.put(m)

    micro.add(f"FrameDecoder.feed per {size} frame (pool.for_frame), minus Pool.put", per_frame(feed_pooled) - put_us)
    unpooled = FrameDecoder()
    micro.add(f"FrameDecoder.feed per {size} frame (no pool: from_wire)", per_frame(lambda: unpooled.feed(chunk)))
    protocol = ChannelProtocol(ACCEPTOR_OPEN, 1, 1, pool.for_frame, pool.put)

    def receive() -> None:
        for m in protocol.receive(chunk):
            pool.put(m)  # type: ignore[arg-type]  # (an open channel's events are its messages)

    micro.add(
        f"ChannelProtocol.receive per {size} frame (open channel, pooled), minus Pool.put", per_frame(receive) - put_us
    )


def micro_deliver(micro: Micro, ampe: tofu.Ampe, msg: Message) -> None:
    """The I/O thread's delivery to a group and the receiver's take, on one thread (no waiting)."""
    group = ampe.create()
    try:
        mailbox = mailbox_of(group)
        q: queue.SimpleQueue[Message] = queue.SimpleQueue()

        def queue_only() -> None:
            q.put(msg)
            q.get_nowait()

        def deliver_receive(timeout: float) -> Callable[[], None]:
            def step() -> None:
                mailbox.deliver(msg)
                group.wait_receive(timeout)

            return step

        micro.time("SimpleQueue.put + get_nowait (no waiting)", queue_only)
        micro.time("Mailbox.deliver + wait_receive(5.0) on a non-empty queue", deliver_receive(5.0))
        micro.time("Mailbox.deliver + wait_receive(0)", deliver_receive(0))
    finally:
        ampe.destroy(group)


def micro(number: int, transport: str) -> list[tuple[str, float]]:
    """Each hot-path step alone, µs per operation (best of 5, no profiler), on
    an engine with one open channel (no direct writes: post() always hands over)."""
    m = Micro(number)
    payload = b"x" * 64
    rtr = Reactor(dataclasses.replace(OPTIONS, direct_send=False))
    try:
        ampe = rtr.ampe()
        srv, cli = ampe.create(), ampe.create()
        ch = connect(ampe, srv, cli, transport)
        micro_pool(m, ampe, ch, payload)
        micro_post(m, rtr, ampe, cli, ch, payload)
        micro_inbox(m, ampe, ch, payload)
        msg = signal(ampe, ch, payload)
        msg.bhdr.message_id = 1  # as post() numbers it
        micro_encode(m, msg)
        micro_decode(m, tofu.encode(msg))
        micro_deliver(m, ampe, msg)
    finally:
        rtr.destroy()
    return m.rows


# ------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="oneway,rtt,pipeline", help="comma-separated: oneway,rtt,pipeline")
    ap.add_argument("--messages", type=int, default=200_000, help="messages for oneway (default 200000)")
    ap.add_argument("--requests", type=int, default=20_000, help="requests for rtt/pipeline (default 20000)")
    ap.add_argument("--transport", choices=("tcp", "uds"), default="tcp")
    ap.add_argument("--size", type=int, default=64, help="body bytes of the oneway Signals (default 64)")
    ap.add_argument("--top", type=int, default=22, help="functions listed per thread (default 22)")
    ap.add_argument("--no-micro", action="store_true", help="skip the microbenchmarks")
    ap.add_argument(
        "--micro-number", type=int, default=200_000, help="operations per microbenchmark run (default 200000)"
    )
    ap.add_argument("--no-profile", action="store_true", help="only the unprofiled rate of each scenario")
    ap.add_argument("--no-direct", action="store_true", help="Options.direct_send and direct_receive off")
    ap.add_argument("--runs", type=int, default=1, help="unprofiled runs per scenario, median reported (default 1)")
    defaults = tofu.Options()
    ap.add_argument("--initial-pool", type=int, default=defaults.initial_pool_msgs, help="Options.initial_pool_msgs")
    ap.add_argument("--max-pool", type=int, default=defaults.max_pool_msgs, help="Options.max_pool_msgs")
    ap.add_argument("--max-queued", type=int, default=defaults.max_queued_msgs, help="Options.max_queued_msgs")
    ap.add_argument("--out", help="directory for .pstats files (one per scenario and thread)")
    return ap.parse_args(argv)


def run(name: str, args: argparse.Namespace) -> None:
    """One scenario: its unprofiled rate, then (unless --no-profile) its profile."""
    n = args.messages if name == "oneway" else args.requests
    size = args.size if name == "oneway" else 64
    print(f"\n========== {name}: {n} messages of {size} B over {args.transport}, one process")
    try:
        times = [run_scenario(name, n, args.transport, profile=False)[0] for _ in range(max(1, args.runs))]
        seconds = sorted(times)[len(times) // 2]
        print(
            f"unprofiled: {n / seconds:,.0f} msg/s = {seconds / n * 1e6:.2f} µs per message (all threads, one GIL; "
            f"median of {len(times)}: {', '.join(f'{n / t:,.0f}' for t in times)})"
        )
        if args.no_profile:
            return
        seconds_p, msgs, profs = run_scenario(name, n, args.transport, profile=True)
    except Stall as exc:
        print(f"STALLED: {exc}")
        return
    print(f"profiled:   {msgs / seconds_p:,.0f} msg/s = {seconds_p / msgs * 1e6:.2f} µs per message")
    report_scenario(name, profs, msgs, args.top, args.out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if tofu.COMPILED:
        print(COMPILED_MESSAGE, file=sys.stderr)
        return 2
    global OPTIONS, BODY_SIZE
    BODY_SIZE = args.size
    OPTIONS = tofu.Options(
        initial_pool_msgs=args.initial_pool,
        max_pool_msgs=args.max_pool,
        max_queued_msgs=args.max_queued,
        direct_send=not args.no_direct,
        direct_receive=not args.no_direct,
    )
    print(
        f"tofu {tofu.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.transport}, {OPTIONS}"
    )
    if not PER_THREAD and not args.no_profile:
        print("Python 3.12+: one profiler sees every thread: one column, 'all threads' (own times approximate)")
    for name in [s.strip() for s in args.scenario.split(",") if s.strip()]:
        run(name, args)
    if not args.no_micro:
        print("\n========== microbenchmarks: one step alone, µs per operation (best of 5, no profiler)")
        for label, us in micro(args.micro_number, args.transport):
            print(f"{us:8.3f}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
