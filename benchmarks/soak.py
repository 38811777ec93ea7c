"""Soak: a mixed workload for minutes, watching memory, descriptors and threads.

    .venv/bin/python benchmarks/soak.py --minutes 10
    .venv/bin/python benchmarks/soak.py --seconds 20 --interval 2
    .venv/bin/python benchmarks/soak.py --minutes 10 --never-reader-from 1   # without the never-reading peer

One process, two engines over loopback TCP: a server engine whose application
echoes every Request as a Response (and answers Hello and Bye), and a client
engine whose groups run these workloads side by side, each on its own thread:

- rr: request/response round trips on one connection (100-byte bodies);
- stream: `more` streams of 10 parts of 4 KB, each echoed part by part;
- churn: a new group connects, makes 3 round trips, says Bye, waits for
  channel_closed and is destroyed, again and again;
- slow: a reader that keeps 32 requests in flight and takes 20 ms per answer;
- never: a plain socket that says Hello, then pipelines 1 KB requests
  (100 a second) and never reads a byte. It joins when `--never-reader-from`
  of the run has passed (default 0.5: the run has two phases, without and
  with it).

Every `--interval` seconds (60 by default) it prints one row: resident memory,
open descriptors and threads of this process (from /proc/self), and what each
workload did in that interval (`never` shows KB written and whether its
writes are blocked, i.e. the server stopped reading it). At the end it prints,
per phase, how resident memory moved after the first interval (the warm-up)
and whether descriptors or threads grew. The exit status is 1 when a workload
failed or a descriptor or thread was left behind after the engines stopped.

`--server-window N` gives the server engine `Options(max_unsent_msgs=N)`; its
echo then posts with a short timeout, if this engine's post() takes one, and
drops answers that do not fit (a server protecting itself from a peer that
never reads).
"""

from __future__ import annotations

import argparse
import inspect
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import tofu
from tofu import AmpeStatus, Message, MoreMessagesFlag, OpCode

WAIT = 10.0  # longest any single wait may take before the soak reports a failure


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_mb() -> float:
    return _proc_status("VmRSS") / 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return _proc_status("Threads")


@dataclass
class Counter:
    name: str
    total: int = 0
    last: int = 0
    note: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, n: int = 1) -> None:
        with self.lock:
            self.total += n

    def take(self) -> int:
        with self.lock:
            delta, self.last = self.total - self.last, self.total
        return delta


class Soak:
    def __init__(self, seconds: float, interval: float, never_from: float, server_window: int) -> None:
        self.base_fds, self.base_threads = open_fds(), threads()  # before any engine exists
        self.seconds = seconds
        self.interval = interval
        self.never_from = never_from
        self.stop = threading.Event()  # the workloads stop
        self.echo_stop = threading.Event()  # then the server's application, which they need until the end
        self.failures: list[str] = []
        self.counters = {
            n: Counter(n) for n in ("rr", "stream", "churn", "slow", "never_kb", "echo_dropped", "echo_refused")
        }
        self.never_blocked = False
        self.server = tofu.Reactor(tofu.Options(max_unsent_msgs=server_window))
        self.client = tofu.Reactor()
        self.srv = self.server.ampe().create()
        header = self.srv.post(tofu.TCPServerAddress("127.0.0.1", 0).format(Message()))
        resp = self.srv.wait_receive(WAIT)
        assert resp is not None and resp.bhdr.status == AmpeStatus.success, resp
        self.listener = header.channel_number
        value = resp.thdrs.get(tofu.LISTEN_ON_HEADER)
        assert value is not None
        self.port = int(value.rsplit("|", 1)[1])
        self.address = tofu.TCPClientAddress("127.0.0.1", self.port)
        self.server_window = server_window
        takes_timeout = "timeout" in inspect.signature(self.srv.post).parameters
        self._echo_timeout = 0.05 if server_window and takes_timeout else None
        self.threads: list[threading.Thread] = []

    # ------------------------------------------------------------ server

    def _post_echo(self, msg: Message) -> None:
        if self._echo_timeout is None:
            self.srv.post(msg)
            return
        try:
            self.srv.post(msg, timeout=self._echo_timeout)  # type: ignore[call-arg]
        except tofu.InvalidChannelNumber:
            raise
        except tofu.AmpeError:
            self.counters["echo_dropped"].add()
            self.server.ampe().put(msg)

    def echo(self) -> None:
        while not self.echo_stop.is_set():
            try:
                msg = self.srv.wait_receive(0.2)
            except tofu.ShutdownStarted:
                return
            if msg is None:
                continue
            op = msg.bhdr.proto.op_code
            if msg.is_from_engine():
                self.server.ampe().put(msg)  # channel_closed, pool_empty, an answer that could not go out
                continue
            msg.bhdr.proto.op_code = {
                OpCode.HelloRequest: OpCode.HelloResponse,
                OpCode.Request: OpCode.Response,
                OpCode.ByeRequest: OpCode.ByeResponse,
            }.get(op, op)
            if msg.bhdr.proto.op_code == op:  # a Signal: nothing to answer
                self.server.ampe().put(msg)
                continue
            try:
                self._post_echo(msg)
            except tofu.InvalidChannelNumber:
                pass  # the client left meanwhile
            except tofu.AmpeError:
                self.counters["echo_refused"].add()  # post() refused the answer: counted, shown
                self.server.ampe().put(msg)

    # ------------------------------------------------------------ clients

    def _connect(self, group: tofu.ChannelGroup) -> int:
        header = group.post(self.address.format(Message()))
        resp = self._recv(group, "HelloResponse")
        assert resp.bhdr.proto.op_code == OpCode.HelloResponse, resp
        return header.channel_number

    def _recv(self, group: tofu.ChannelGroup, what: str) -> Message:
        while True:
            msg = group.wait_receive(WAIT)
            assert msg is not None, f"no {what} within {WAIT} s"
            if not (msg.is_from_engine() and msg.bhdr.status == AmpeStatus.pool_empty):
                return msg

    def _request(self, channel: int, body: bytes, more: bool = False, mid: int = 0) -> Message:
        msg = Message(OpCode.Request)
        msg.bhdr.channel_number = channel
        msg.bhdr.message_id = mid
        if more:
            msg.bhdr.proto.more = MoreMessagesFlag.more
        msg.body.append(body)
        return msg

    def _paced(self, per_second: float, step: Callable[[], None], counter: str) -> None:
        period = 1.0 / per_second
        next_at = time.monotonic()
        while not self.stop.is_set():
            step()
            self.counters[counter].add()
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)  # the workload's pace (an offered load), not synchronisation
            else:
                next_at = time.monotonic()

    def rr(self) -> None:
        group = self.client.ampe().create()
        channel = self._connect(group)
        body = b"r" * 100

        def step() -> None:
            group.post(self._request(channel, body))
            resp = self._recv(group, "Response")
            assert resp.bhdr.proto.op_code == OpCode.Response and bytes(resp.body) == body, resp
            self.client.ampe().put(resp)

        self._paced(1000, step, "rr")

    def stream(self) -> None:
        group = self.client.ampe().create()
        channel = self._connect(group)
        part = b"s" * 4096

        def step() -> None:
            mid = group.post(self._request(channel, part, more=True)).message_id
            for i in range(1, 10):
                group.post(self._request(channel, part, more=i < 9, mid=mid))
            for i in range(10):
                resp = self._recv(group, f"stream part {i}")
                assert resp.bhdr.message_id == mid and resp.has_more() == (i < 9), resp
                self.client.ampe().put(resp)

        self._paced(50, step, "stream")

    def churn(self) -> None:
        def step() -> None:
            group = self.client.ampe().create()
            try:
                channel = self._connect(group)
                for _ in range(3):
                    group.post(self._request(channel, b"c" * 200))
                    assert self._recv(group, "Response").bhdr.proto.op_code == OpCode.Response
                bye = Message(OpCode.ByeRequest)
                bye.bhdr.channel_number = channel
                group.post(bye)
                while True:
                    msg = self._recv(group, "channel_closed")
                    bh = msg.bhdr
                    if (
                        msg.is_from_engine()
                        and bh.status == AmpeStatus.channel_closed
                        and bh.proto.op_code == OpCode.Signal
                    ):
                        break
            finally:
                self.client.ampe().destroy(group)

        self._paced(20, step, "churn")

    def slow(self) -> None:
        group = self.client.ampe().create()
        channel = self._connect(group)
        body = b"w" * 1000
        for _ in range(32):
            group.post(self._request(channel, body))

        def step() -> None:
            resp = self._recv(group, "Response")
            assert resp.bhdr.proto.op_code == OpCode.Response, resp
            self.client.ampe().put(resp)
            group.post(self._request(channel, body))

        self._paced(50, step, "slow")  # 20 ms per answer: a slow reader

    def never(self) -> None:
        if not self.stop.wait(self.seconds * self.never_from):
            sock = socket.create_connection(("127.0.0.1", self.port))
            try:
                hello_msg = self.address.format(Message())
                hello_msg.bhdr.message_id = 1  # a peer numbers its messages; 0 cannot be answered
                hello = tofu.encode(hello_msg)
                sock.sendall(hello)
                req = self._request(1, b"n" * 1024)
                req.bhdr.message_id = 1
                frame = tofu.encode(req)
                sock.settimeout(0.5)

                def step() -> None:
                    sent = 0
                    while sent < len(frame) and not self.stop.is_set():
                        try:
                            sent += sock.send(frame[sent:])
                            self.never_blocked = False
                        except TimeoutError:
                            self.never_blocked = True  # the server stopped reading us
                    self.counters["never_kb"].add(len(frame))

                self._paced(100, step, "never_kb")
            finally:
                sock.close()

    # ------------------------------------------------------------ the run

    def _worker(self, name: str, body: Callable[[], None]) -> None:
        def run() -> None:
            try:
                body()
            except Exception as exc:  # noqa: BLE001 -- every failure is reported, none hidden
                if not self.stop.is_set():
                    self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
                    self.stop.set()

        thread = threading.Thread(target=run, name=f"soak-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def run(self) -> int:
        print(
            f"soak: {self.seconds:.0f} s, a row every {self.interval:g} s; the never-reading peer joins at "
            f"{self.seconds * self.never_from:.0f} s; server window {self.server_window or 'off'}",
            flush=True,
        )
        header = (
            f"{'t/s':>6} {'phase':>6} {'rss/MB':>8} {'fds':>5} {'thr':>4} {'rr':>7} {'stream':>7} "
            f"{'churn':>6} {'slow':>6} {'never/KB':>9} {'blocked':>7} {'dropped':>7}"
        )
        print(header, flush=True)
        self._worker("echo", self.echo)
        for name in ("rr", "stream", "churn", "slow", "never"):
            self._worker(name, getattr(self, name))
        rows: list[tuple[float, str, float, int, int]] = []
        never_at = self.seconds * self.never_from
        start = time.monotonic()
        previous = 0.0
        while not self.stop.is_set():
            now = time.monotonic() - start
            if now >= self.seconds:
                break
            self.stop.wait(min(self.interval, self.seconds - now))
            t = time.monotonic() - start
            phase = "mixed" if previous < never_at - 1e-3 else "+never"  # what ran in this interval
            previous = t
            row = (t, phase, rss_mb(), open_fds(), threads())
            rows.append(row)
            c = {n: self.counters[n].take() for n in self.counters}
            print(
                f"{t:6.0f} {phase:>6} {row[2]:8.1f} {row[3]:5d} {row[4]:4d} {c['rr']:7d} {c['stream']:7d} "
                f"{c['churn']:6d} {c['slow']:6d} {c['never_kb'] // 1024:9d} {'yes' if self.never_blocked else 'no':>7} "
                f"{c['echo_dropped']:7d}",
                flush=True,
            )
        self.stop.set()
        for thread in self.threads[1:]:
            thread.join(WAIT)
            if thread.is_alive():
                self.failures.append(f"{thread.name} did not stop within {WAIT} s")
        self.echo_stop.set()
        self.threads[0].join(WAIT)
        if self.threads[0].is_alive():
            self.failures.append(f"{self.threads[0].name} did not stop within {WAIT} s")
        self.client.destroy()
        self.server.destroy()
        # The engines' resolver threads end on their own shortly after destroy(): allow them a moment.
        deadline = time.monotonic() + WAIT
        while threads() > self.base_threads and time.monotonic() < deadline:
            for thread in threading.enumerate():
                if thread is not threading.current_thread() and thread not in self.threads:
                    thread.join(0.1)
        left_fds, left_threads = open_fds(), threads()
        if left_threads > self.base_threads:
            print("threads still running:", ", ".join(th.name for th in threading.enumerate()))
        self._summary(rows)
        print(
            f"after both engines stopped: fds {left_fds} (before they started {self.base_fds}), "
            f"threads {left_threads} (before {self.base_threads})"
        )
        if left_fds > self.base_fds:
            self.failures.append(f"{left_fds - self.base_fds} descriptors left open")
        if left_threads > self.base_threads:
            self.failures.append(f"{left_threads - self.base_threads} threads left running")
        if self.counters["echo_refused"].total:
            print(f"the server's post() refused {self.counters['echo_refused'].total} answers")
        for failure in self.failures:
            print(f"FAILED: {failure}")
        return 1 if self.failures else 0

    def _summary(self, rows: list[tuple[float, str, float, int, int]]) -> None:
        if len(rows) < 2:
            print("too short for a summary (fewer than two rows)")
            return
        warm = rows[0]
        print(f"warm-up ends at {warm[0]:.0f} s with RSS {warm[2]:.1f} MB")
        for phase in ("mixed", "+never"):
            in_phase = [r for r in rows[1:] if r[1] == phase]
            if not in_phase:
                continue
            first = max((r for r in rows if r[0] < in_phase[0][0]), key=lambda r: r[0])
            last = in_phase[-1]
            growth = (last[2] - first[2]) / first[2] * 100
            print(
                f"phase {phase:>6}: {first[0]:.0f}-{last[0]:.0f} s, RSS {first[2]:.1f} -> {last[2]:.1f} MB "
                f"({growth:+.1f} %), fds {min(r[3] for r in in_phase)}-{max(r[3] for r in in_phase)}, "
                f"threads {min(r[4] for r in in_phase)}-{max(r[4] for r in in_phase)}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="how long (default 10)")
    length.add_argument("--seconds", type=float, help="how long, in seconds (for a quick check)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between rows (default 60)")
    parser.add_argument(
        "--never-reader-from",
        type=float,
        default=0.5,
        help="fraction of the run after which the never-reading peer joins (1 = never)",
    )
    parser.add_argument("--server-window", type=int, default=0, help="the server engine's max_unsent_msgs")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else 60.0 * (args.minutes or 10.0)
    return Soak(seconds, args.interval, args.never_reader_from, args.server_window).run()


if __name__ == "__main__":
    sys.exit(main())
