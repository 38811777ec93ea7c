"""The `tofu` command: try the engine, serve, ping, decode captured bytes.

    tofu demo                         the print-server conversation, over loopback
    tofu serve tcp://127.0.0.1:7099   an echo server (Ctrl-C stops it gracefully)
    tofu ping  tcp://127.0.0.1:7099   round-trip times against a server
    tofu decode capture.bin           every frame of a byte stream, field by field

ADDRESS is `tcp://HOST:PORT`, `uds:///PATH`, or the protocol's own
`tcp|HOST|PORT` / `uds|PATH` (see `tofu.addresses.parse_url`). Every error is
one line on stderr and a non-zero exit status: 1 for a failure, 2 for a usage
error, 130 for Ctrl-C. `python -m tofu` is the same command.

If a module `tofu.bench` exists with `add_arguments(parser)` and
`run(args) -> int`, it becomes the `tofu bench` subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import math
import os
import signal
import socket
import statistics
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import Any, NoReturn, TextIO

from . import __version__
from .addresses import (
    Address,
    TCPClientAddress,
    TCPServerAddress,
    UDSServerAddress,
    parse_address_value,
    parse_url,
)
from .generated import (
    CLOSE_REASON_HEADER,
    CONNECT_TO_HEADER,
    HEADER_SIZE,
    LISTEN_ON_HEADER,
    MAX_BODY_LEN,
    AmpeError,
    AmpeStatus,
    InvalidMessage,
    MoreMessagesFlag,
    OpCode,
    ShutdownStarted,
    raw_to_status,
)
from .groups import ChannelGroup
from .message import Message, TextHeaders
from .pool import AllocationStrategy
from .reactor import Ampe, Reactor

__all__ = ["CLIError", "build_parser", "format_url", "main"]

log = logging.getLogger("tofu.cli")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A failure to report as one line on stderr, with exit status `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class _UsageError(Exception):
    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, raised instead of printed."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self.prog, message)


# ---------------------------------------------------------------- addresses


def format_url(address: Address) -> str:
    """`address` as a URL that `parse_url` reads back: tcp://HOST:PORT or uds:///PATH."""
    if isinstance(address, (TCPClientAddress, TCPServerAddress)):
        host = f"[{address.host}]" if ":" in address.host else address.host
        return f"tcp://{host}:{address.port}"
    return f"uds://{address.path}"


def _address_arg(server: bool) -> Callable[[str], Address]:
    def convert(text: str) -> Address:
        try:
            return parse_url(text, server)
        except AmpeError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = "address"
    return convert


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    convert.__name__ = "number"
    return convert


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


# ---------------------------------------------------------------- shared helpers


def _status_text(raw: int) -> str:
    status = raw_to_status(raw)
    return f"{status.name} ({status.meaning})"


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else words or word + 's'}"


def _out(text: str = "") -> None:
    """One line of the command's own output (flushed: other programs read it)."""
    print(text, flush=True)


def _make_console(force: bool | None) -> Any:
    from rich.console import Console

    return Console(stderr=True, force_terminal=True if force else None)


@contextmanager
def _progress(total: int, description: str, force: bool | None) -> Iterator[Callable[[int], None]]:
    """A transient progress bar on stderr; yields `advance(n)`.

    Shown when stderr is a terminal (or `force` is True), never when `force`
    is False."""
    if force is False:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Column

    console = _make_console(force)
    if not console.is_terminal:
        yield lambda n: None
        return
    # The count "done/total" and the time always show whole; on a narrow
    # terminal the bar shrinks first, then the description is cut short.
    count_width = 2 * len(str(total)) + 1
    room = console.width - count_width - len("0:00:00") - 3
    bar_width = max(5, min(40, room - len(description) - 1))
    room -= bar_width + 1
    if len(description) > room:
        description = description[: max(1, room - 1)] + "…"
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=bar_width),
        MofNCompleteColumn(table_column=Column(min_width=count_width, no_wrap=True)),
        TimeElapsedColumn(table_column=Column(min_width=7, no_wrap=True)),
        console=console,
        transient=True,
    )
    task = progress.add_task(description, total=total)
    with progress:
        yield lambda n: progress.advance(task, n)


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def _signals_to_main_thread() -> Iterator[None]:
    """Threads started inside this block (the engine's I/O thread among them)
    block SIGINT and SIGTERM, so the kernel delivers those to the main thread.

    CPython runs signal handlers in the main thread, but a signal the kernel
    hands to another thread does not interrupt the main thread's blocking
    wait_receive(): the handler would run only when that wait ends by itself.
    Threads inherit the signal mask of the thread that starts them."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _reactor() -> Reactor:
    """A Reactor whose I/O thread leaves SIGINT and SIGTERM to the main thread."""
    with _signals_to_main_thread():
        return Reactor()


def _listen(ampe: Ampe, group: ChannelGroup, address: Address, timeout: float = 10.0) -> tuple[int, str]:
    """Open a listener; return its channel number and the URL it really listens on."""
    msg = ampe.get(AllocationStrategy.always)
    assert msg is not None
    address.format(msg)
    bhdr = group.post(msg)
    resp = _receive_for(group, bhdr.channel_number, timeout)
    if resp is None:
        raise CLIError(f"no WelcomeResponse for {format_url(address)} within {timeout:g} s")
    try:
        if resp.bhdr.status != 0:
            raise CLIError(f"cannot listen on {format_url(address)}: {_status_text(resp.bhdr.status)}")
        value = resp.thdrs.get(LISTEN_ON_HEADER)
        actual = parse_address_value(value, server=True) if value else address
    finally:
        ampe.put(resp)
    return bhdr.channel_number, format_url(actual)


def _receive_for(group: ChannelGroup, channel: int, timeout: float) -> Message | None:
    """The next message of `channel`; others are dropped (used before anything else runs)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        msg = group.wait_receive(remaining)
        if msg is None:
            return None
        if msg.bhdr.channel_number == channel:
            return msg


def _headers_text(msg: Message) -> str:
    try:
        return "  ".join(f"{n}:{v}" for n, v in msg.thdrs)
    except InvalidMessage:
        return repr(bytes(msg.thdrs))


# ================================================================ tofu serve


@dataclass
class _ServeState:
    stop: bool = False
    force: bool = False
    signals: int = 0


class _SignalWatcher:
    """Calls `on_signal(signum)` on a thread for every SIGINT / SIGTERM.

    Why not just a Python signal handler calling update_receiver()? CPython
    runs those in the main thread between bytecodes; a signal that lands just
    before the main thread blocks in wait_receive(), or on another thread,
    does not interrupt that wait, so the handler would run only when the wait
    ends by itself. `signal.set_wakeup_fd` makes the interpreter's C-level
    handler write the signal number to a socket at once, whatever thread it
    runs on; this watcher reads it and can wake the receiver right away.
    Only usable from the main thread (`active` is False elsewhere)."""

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self._on_signal = on_signal
        self.active = threading.current_thread() is threading.main_thread()
        if not self.active:
            return
        self._r, self._w = socket.socketpair()
        self._w.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        self._old_handlers = {sig: signal.signal(sig, self._python_handler) for sig in _STOP_SIGNALS}
        self._thread = threading.Thread(target=self._run, name="tofu-signals", daemon=True)
        self._thread.start()

    @staticmethod
    def _python_handler(signum: int, frame: FrameType | None) -> None:
        pass  # it must exist (SIGTERM would kill, SIGINT raise); the watcher thread does the work

    def _run(self) -> None:
        while True:
            try:
                data = self._r.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in _STOP_SIGNALS:
                    self._on_signal(signum)

    def close(self) -> None:
        """Restore the previous handlers and wake-up fd; stop the thread."""
        if not self.active:
            return
        self.active = False
        signal.set_wakeup_fd(self._old_fd)
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._w.close()  # the watcher's recv() returns b"": it ends
        self._thread.join(5)
        self._r.close()


def _cmd_serve(args: argparse.Namespace) -> int:
    state = _ServeState()
    group_ref: list[ChannelGroup] = []

    def on_signal(signum: int) -> None:  # on the watcher thread
        state.signals += 1
        state.stop = True
        if state.signals > 1:
            state.force = True
        if group_ref:
            group_ref[0].update_receiver(None)  # wakes wait_receive in the main thread

    watcher = _SignalWatcher(on_signal)
    try:
        with _reactor() as rtr:
            ampe = rtr.ampe()
            group = ampe.create()
            group_ref.append(group)
            listeners: dict[int, str] = {}
            for address in args.address:
                number, url = _listen(ampe, group, address)
                listeners[number] = url
                _out(f"listening on {url}")
            if state.stop:
                return EXIT_OK
            _serve_loop(ampe, group, listeners, state, args.grace)
        _out("stopped")
        return EXIT_OK
    finally:
        watcher.close()


def _serve_loop(ampe: Ampe, group: ChannelGroup, listeners: dict[int, str], state: _ServeState, grace: float) -> None:
    clients: dict[int, int] = {}  # channel -> requests served
    total_clients = 0
    total_requests = 0
    deadline: float | None = None
    post = group.post
    put = ampe.put

    def reply(msg: Message, op: OpCode) -> None:
        msg.bhdr.proto.op_code = op
        try:
            post(msg)
        except AmpeError as exc:  # the channel closed since the message arrived
            log.debug("channel %d: reply not sent: %s", msg.bhdr.channel_number, exc)
            put(msg)

    while True:
        if state.stop and deadline is None:
            deadline = time.monotonic() + grace
            _out(f"stopping: saying bye to {len(clients)} client(s), waiting up to {grace:g} s")
            for number in list(listeners):
                bye = Message(OpCode.ByeSignal)
                bye.bhdr.channel_number = number
                try:
                    post(bye)
                except AmpeError:
                    pass
            listeners.clear()
            for number in clients:
                bye = Message(OpCode.ByeRequest)
                bye.bhdr.channel_number = number
                bye.thdrs.append("reason", "server shutting down")
                try:
                    post(bye)
                except AmpeError:
                    pass
        if deadline is not None:
            if state.force:
                _out("stopping now")
                break
            if not clients:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _out(f"grace period over: closing {len(clients)} channel(s)")
                break
            msg = group.wait_receive(remaining)
            if msg is None:
                continue
        else:
            msg = group.wait_receive(None)
            if msg is None:
                continue
        bh = msg.bhdr
        number = bh.channel_number
        if msg.is_from_engine():
            status = raw_to_status(bh.status)
            if status is AmpeStatus.channel_closed and bh.proto.op_code == OpCode.Signal:
                if number in clients:
                    served = clients.pop(number)
                    reason = msg.thdrs.get(CLOSE_REASON_HEADER)
                    _out(f"channel {number}: closed after {served} request(s)" + (f" ({reason})" if reason else ""))
                elif number in listeners:
                    _out(f"listener {listeners.pop(number)} closed")
                    if not listeners and not state.stop:
                        raise CLIError("every listener closed")
            elif status not in (AmpeStatus.receiver_update, AmpeStatus.pool_empty):
                log.info("channel %d: %s returned: %s", number, bh.proto.op_code, status.name)
            put(msg)
            continue

        op = bh.proto.op_code
        if op == OpCode.Request:
            total_requests += 1
            if number in clients:
                clients[number] += 1
            reply(msg, OpCode.Response)
        elif op == OpCode.Signal:
            reply(msg, OpCode.Signal)
        elif op == OpCode.HelloRequest:
            total_clients += 1
            clients[number] = 0
            _out(f"channel {number}: connected ({msg.thdrs.get(CONNECT_TO_HEADER, '?')})")
            if state.stop:  # too late to join: accept and say bye at once
                reply(msg, OpCode.HelloResponse)
                bye = Message(OpCode.ByeRequest)
                bye.bhdr.channel_number = number
                try:
                    post(bye)
                except AmpeError:
                    pass
            else:
                reply(msg, OpCode.HelloResponse)
        elif op == OpCode.ByeRequest:
            _out(f"channel {number}: bye")
            reply(msg, OpCode.ByeResponse)
        else:  # HelloResponse, Response, ByeResponse: nothing to answer
            put(msg)
    _out(f"served {total_requests} request(s) on {total_clients} connection(s)")


# ================================================================ tofu ping


def _cmd_ping(args: argparse.Namespace) -> int:
    address: Address = args.address
    url = format_url(address)
    count: int = args.count
    payload = bytes(i & 0xFF for i in range(args.size))
    timeout: float = args.timeout

    with _reactor() as rtr:
        ampe = rtr.ampe()
        group = ampe.create()
        hello = ampe.get(AllocationStrategy.always)
        assert hello is not None
        address.format(hello)
        started = time.perf_counter()
        channel = group.post(hello).channel_number
        resp = _receive_for(group, channel, timeout)
        if resp is None:
            raise CLIError(f"no HelloResponse from {url} within {timeout:g} s")
        connect_ms = (time.perf_counter() - started) * 1000
        try:
            if resp.is_from_engine():
                if resp.bhdr.status == AmpeStatus.channel_closed:
                    raise CLIError(f"{url} closed the connection without a HelloResponse")
                raise CLIError(f"cannot connect to {url}: {_status_text(resp.bhdr.status)}")
            if resp.bhdr.proto.op_code != OpCode.HelloResponse:
                raise CLIError(f"{url} answered the HelloRequest with {resp.bhdr.proto.op_code.name}")
        finally:
            ampe.put(resp)
        _out(
            f"PING {url}: {_plural(count, 'request')} of {_plural(args.size, 'byte')}; connected in {connect_ms:.3f} ms"
        )

        rtts: list[float] = []
        mismatched = 0
        with _progress(count, f"ping {url}", args.progress) as advance:
            for _ in range(count):
                req = ampe.get(AllocationStrategy.always)
                assert req is not None
                req.bhdr.channel_number = channel
                req.body.append(payload)
                t0 = time.perf_counter()
                mid = group.post(req).message_id
                while True:
                    got = _receive_for(group, channel, timeout)
                    if got is None:
                        raise CLIError(f"no reply from {url} within {timeout:g} s (after {len(rtts)} of {count})")
                    if got.is_from_engine():
                        status = _status_text(got.bhdr.status)
                        ampe.put(got)
                        raise CLIError(f"connection to {url} lost after {len(rtts)} of {count} replies: {status}")
                    if got.bhdr.proto.op_code == OpCode.Response and got.bhdr.message_id == mid:
                        rtts.append(time.perf_counter() - t0)
                        if got.body != payload:
                            mismatched += 1
                        ampe.put(got)
                        break
                    ampe.put(got)  # anything else (a Signal, an old reply) is not ours
                advance(1)

        _say_bye(ampe, group, channel, timeout)

    ms = sorted(t * 1000 for t in rtts)
    p99 = ms[max(math.ceil(0.99 * len(ms)) - 1, 0)]
    _out(f"{_plural(len(ms), 'reply', 'replies')} to {_plural(count, 'request')}, {mismatched} with a different body")
    _out(
        f"round trip: min {ms[0]:.3f} ms, median {statistics.median(ms):.3f} ms, p99 {p99:.3f} ms, max {ms[-1]:.3f} ms"
    )
    return EXIT_OK if mismatched == 0 else EXIT_FAILURE


def _say_bye(ampe: Ampe, group: ChannelGroup, channel: int, timeout: float) -> None:
    """ByeRequest, then wait (bounded) for the ByeResponse and channel_closed."""
    bye = Message(OpCode.ByeRequest)
    bye.bhdr.channel_number = channel
    try:
        group.post(bye)
    except AmpeError:
        return  # already closed
    while True:
        got = _receive_for(group, channel, timeout)
        if got is None:
            log.info("no channel_closed after ByeRequest within %g s", timeout)
            return
        closed = got.is_from_engine() and got.bhdr.status == AmpeStatus.channel_closed
        is_signal = got.bhdr.proto.op_code == OpCode.Signal
        ampe.put(got)
        if closed and is_signal:
            return


# ================================================================ tofu decode


class _DecodeError(CLIError):
    pass


def _read_input(path: str, as_hex: bool) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"{path}: is a directory") from None
    except OSError as exc:
        raise CLIError(f"{path}: {exc.strerror or exc}") from None
    if not as_hex:
        return data
    return _parse_hex(data, "<stdin>" if path == "-" else path)


def _parse_hex(data: bytes, name: str) -> bytes:
    """Hex text to bytes: whitespace, `0x` prefixes, `:`/`-`/`,` separators and `#` comments are ignored."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise CLIError(f"{name}: not hex text (a non-ASCII byte at offset {exc.start})") from None
    digits: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0]
        for word in line.replace(",", " ").replace(":", " ").replace("-", " ").split():
            if word[:2].lower() == "0x":
                word = word[2:]
            for ch in word:
                if ch not in "0123456789abcdefABCDEF":
                    raise CLIError(f"{name}: line {lineno}: {ch!r} is not a hex digit")
            digits.append(word)
    joined = "".join(digits)
    if len(joined) % 2:
        raise CLIError(f"{name}: odd number of hex digits ({len(joined)})")
    return bytes.fromhex(joined)


def _preview(body: bytes, limit: int) -> str:
    shown = body[:limit]
    tail = f" ... (+{len(body) - limit} bytes)" if len(body) > limit else ""
    try:
        text = shown.decode("utf-8")
        if text.isprintable():
            return repr(text) + tail
    except UnicodeDecodeError:
        pass
    return shown.hex(" ") + tail


def _cmd_decode(args: argparse.Namespace) -> int:
    from .generated import structs  # construct: slow, readable; only this command needs it

    name = "<stdin>" if args.file == "-" else args.file
    data = _read_input(args.file, args.hex)
    total = len(data)
    offset = 0
    frame_no = 0
    problems = 0
    force = args.progress
    if force is None and (sys.stdout.isatty() or total < 1 << 20):
        force = False
    with _progress(total, f"decode {name}", force) as advance:
        while offset < total:
            frame_no += 1
            left = total - offset
            if left < HEADER_SIZE:
                raise _DecodeError(
                    f"{name}: frame {frame_no} at offset {offset}: truncated binary header "
                    f"({left} of {HEADER_SIZE} bytes)"
                )
            hdr = structs.BinaryHeader.parse(data[offset : offset + HEADER_SIZE])
            op_raw = data[offset + 2] & 0x0F
            if op_raw >= len(OpCode):
                raise _DecodeError(
                    f"{name}: frame {frame_no} at offset {offset}: invalid op code {op_raw} "
                    f"(proto byte 0x{data[offset + 2]:02x}); the stream cannot be read past it"
                )
            size = HEADER_SIZE + hdr.thl + hdr.bl
            if size > left:
                raise _DecodeError(
                    f"{name}: frame {frame_no} at offset {offset}: truncated frame: the header announces "
                    f"{hdr.thl} bytes of text headers and {hdr.bl} of body ({size} in all), "
                    f"only {left} bytes left"
                )
            frame = structs.Frame.parse(data[offset : offset + size])
            problems += _print_frame(frame_no, offset, size, data[offset + 2], data[offset + 3], frame, args.body_bytes)
            offset += size
            advance(size)
    _out(f"{frame_no} frame(s), {total} byte(s)" + (f", {problems} with malformed text headers" if problems else ""))
    return EXIT_OK if not problems else EXIT_FAILURE


def _print_frame(no: int, offset: int, size: int, proto_byte: int, status_raw: int, frame: Any, body_bytes: int) -> int:
    """Print one frame parsed by the construct definitions; return 1 if its text headers are malformed."""
    p = frame.proto
    status = raw_to_status(status_raw)
    status_name = status.name if status_raw <= int(AmpeStatus.unknown_error) else f"reads as {status.name}"
    _out(f"frame {no} at offset {offset} ({size} bytes)")
    _out(f"  channel_number  {frame.channel_number}")
    _out(
        f"  proto           0x{proto_byte:02x}: op_code {p.op_code} ({int(p.op_code.intvalue)}), "
        f"origin {p.origin}, more {p.more}, internal_a {p.internal_a}, internal_b {p.internal_b}"
    )
    _out(f"  status          {status_raw} {status_name}")
    _out(f"  message_id      {frame.message_id}")
    _out(f"  thl             {frame.thl}")
    _out(f"  bl              {frame.bl}")
    problems = 0
    if frame.thl:
        try:
            pairs = list(TextHeaders(frame.text_headers))
        except InvalidMessage as exc:
            _out(f"  text headers    MALFORMED: {exc}")
            _out(f"                  raw {bytes(frame.text_headers)!r}")
            problems = 1
        else:
            _out(f"  text headers    {len(pairs)}")
            for n, v in pairs:
                _out(f"    {n}: {v}")
    else:
        _out("  text headers    none")
    if frame.bl:
        _out(f"  body            {frame.bl} bytes: {_preview(bytes(frame.body), body_bytes)}")
    else:
        _out("  body            empty")
    return problems


# ================================================================ tofu demo


class _Transcript:
    """Prints one line per message received, from any thread, with a time stamp."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self._t0) * 1000

    def say(self, text: str) -> None:
        with self._lock:
            print(f"{self.elapsed_ms():9.3f} ms  {text}", file=self._out, flush=True)

    def narrate(self, who: str, text: str) -> None:
        with self._lock:
            print(f"{'':12}  {who}: {text}", file=self._out, flush=True)

    def message(self, src: str, dst: str, msg: Message) -> None:
        bh = msg.bhdr
        op = bh.proto.op_code
        op_name = op.name if isinstance(op, OpCode) else str(op)
        flags = "more" if msg.has_more() else ""
        status = f"  status {raw_to_status(bh.status).name}" if bh.status else ""
        headers = _headers_text(msg)
        body = f"  body {len(msg.body)} B" if len(msg.body) else ""
        self.say(
            f"{src:>5} -> {dst:<5}  {op_name:<15} {bh.channel_number:>3}  {bh.message_id:>5}  {flags:<4}"
            f"{status}{'  ' + headers if headers else ''}{body}"
        )

    def columns(self) -> None:
        with self._lock:
            print(
                f"{'time':>12}  {'from':>5} -> {'to':<5}  {'op code':<15} {'ch':>3}  {'mid':>5}  flag  "
                "status / text headers / body",
                file=self._out,
                flush=True,
            )


_TICKETS = {"PS": "PPD", "PDF": "JDF"}


def _ticket(job: int, pdl: str, pages: int) -> tuple[str, bytes]:
    kind = _TICKETS[pdl]
    if kind == "JDF":
        body = (
            f'<?xml version="1.0"?>\n<JDF Type="Combined" JobID="{job}" Status="Waiting">\n'
            f'  <ResourcePool><RunList Pages="0~{pages - 1}"/><Media Dimension="595 842"/></ResourcePool>\n</JDF>\n'
        )
    else:
        body = f'*PPD-Adobe: "4.3"\n*% job {job}\n*DefaultPageSize: A4\n*Pages: {pages}\n*Duplex: None\n'
    return kind, body.encode()


def _page(pdl: str, job: int, page: int) -> bytes:
    # Fake but plausible page descriptions, with some image data to give them weight.
    image = zlib.compress(bytes((page * 7 + i * 13) & 0xFF for i in range(3000)), 1).hex()
    if pdl == "PS":
        return (
            f"%%Page: {page} {page}\n/Helvetica findfont 24 scalefont setfont\n"
            f"72 720 moveto (job {job}, page {page}) show\n<{image}>\nshowpage\n"
        ).encode()
    return (f"{page + 2} 0 obj << /Type /Page /Parent 2 0 R /Contents <{image}> >> endobj\n").encode()


def _count_pages(pdl: str, data: bytes) -> int:
    return data.count(b"showpage") if pdl == "PS" else data.count(b"/Type /Page ")


@dataclass
class _Job:
    job_id: int
    pdl: str
    pages: int
    channel: int = 0
    pdl_bytes: int = 0
    requests: int = 0
    progress_signals: int = 0
    final: str = ""
    sent_at: float = 0.0
    done_at: float = 0.0


class _Spool:
    """The spool server: waits for RIP workers, sends each a job as a multi-request."""

    def __init__(
        self, ampe: Ampe, group: ChannelGroup, tr: _Transcript, jobs: list[_Job], pages_per_chunk: int
    ) -> None:
        self.ampe, self.group, self.tr = ampe, group, tr
        self.waiting = list(jobs)
        self.by_channel: dict[int, _Job] = {}
        self.pages_per_chunk = pages_per_chunk
        self.finished: list[_Job] = []
        self.listener = 0
        self.total = len(jobs)

    def run(self, deadline: float) -> None:
        group = self.group
        while len(self.finished) < self.total:
            remaining = deadline - time.monotonic()
            msg = group.wait_receive(remaining) if remaining > 0 else None
            if msg is None:
                raise CLIError("demo: the spool server timed out")
            try:
                self._handle(msg)
            finally:
                self.ampe.put(msg)
        bye = Message(OpCode.ByeSignal)  # close the listener
        bye.bhdr.channel_number = self.listener
        group.post(bye)

    def _handle(self, msg: Message) -> None:
        bh = msg.bhdr
        number = bh.channel_number
        job: _Job | None
        if msg.is_from_engine():
            self.tr.message("tofu", "spool", msg)
            if bh.status == AmpeStatus.channel_closed and number in self.by_channel:
                job = self.by_channel.pop(number)
                if not job.final:
                    raise CLIError(f"demo: the worker of job {job.job_id} went away")
                self.finished.append(job)
            elif bh.status not in (AmpeStatus.pool_empty, AmpeStatus.channel_closed):
                raise CLIError(f"demo: spool got {bh.proto.op_code.name} back: {_status_text(bh.status)}")
            return
        self.tr.message("rip", "spool", msg)
        op = bh.proto.op_code
        if op == OpCode.HelloRequest:
            pdl = msg.thdrs.get("PDL")
            job = next((j for j in self.waiting if j.pdl == pdl), None)
            if job is None:
                self.tr.narrate("S", f"no {pdl} job for this worker: rejecting it with ByeSignal")
                bye = Message(OpCode.ByeSignal)
                bye.bhdr.channel_number = number
                self.group.post(bye)
                return
            self.waiting.remove(job)
            job.channel = number
            self.by_channel[number] = job
            self.tr.narrate(
                "S", f"no HelloResponse: job {job.job_id} goes out at once, JobTicket first, then {pdl} data"
            )
            self._send_job(job)
        elif op == OpCode.Signal:
            job = self.by_channel.get(number)
            if job is not None and bh.message_id == job.job_id:
                job.progress_signals += 1
        elif op == OpCode.ByeRequest:
            job = self.by_channel.get(number)
            if job is not None:
                job.final = f"{msg.thdrs.get('JobStatus', '?')} {msg.thdrs.get('Progress', '')}".strip()
                job.done_at = self.tr.elapsed_ms()
            reply = msg.copy()
            reply.bhdr.proto.op_code = OpCode.ByeResponse
            reply.body.clear()
            self.group.post(reply)

    def _send_job(self, job: _Job) -> None:
        post = self.group.post
        kind, ticket = _ticket(job.job_id, job.pdl, job.pages)
        job.sent_at = self.tr.elapsed_ms()
        first = Message(OpCode.Request)
        first.bhdr.channel_number = job.channel
        first.bhdr.message_id = job.job_id
        first.bhdr.proto.more = MoreMessagesFlag.more
        first.thdrs.append("JobTicket", kind)
        first.body.append(ticket)
        post(first)
        job.requests += 1
        page = 1
        while page <= job.pages:
            last_page = min(page + self.pages_per_chunk - 1, job.pages)
            chunk = Message(OpCode.Request)
            chunk.bhdr.channel_number = job.channel
            chunk.bhdr.message_id = job.job_id
            chunk.thdrs.append("PDL", job.pdl)
            for n in range(page, last_page + 1):
                chunk.body.append(_page(job.pdl, job.job_id, n))
            if last_page < job.pages:
                chunk.bhdr.proto.more = MoreMessagesFlag.more
            job.pdl_bytes += len(chunk.body)
            post(chunk)
            job.requests += 1
            page = last_page + 1


class _RipWorker:
    """The RIP worker: connects once per job it can take, rasterizes, reports progress."""

    def __init__(self, ampe: Ampe, group: ChannelGroup, tr: _Transcript, address: Address, pdl: str) -> None:
        self.ampe, self.group, self.tr = ampe, group, tr
        self.address, self.pdl = address, pdl
        self.open: set[int] = set()
        self.pages_done: dict[int, int] = {}
        self.ticket_seen: set[int] = set()

    def connect(self) -> None:
        hello = Message()
        self.address.format(hello)
        hello.thdrs.append("PDL", self.pdl)
        self.open.add(self.group.post(hello).channel_number)

    def run(self, deadline: float) -> None:
        while self.open:
            remaining = deadline - time.monotonic()
            msg = self.group.wait_receive(remaining) if remaining > 0 else None
            if msg is None:
                raise CLIError("demo: the RIP worker timed out")
            try:
                self._handle(msg)
            finally:
                self.ampe.put(msg)

    def _handle(self, msg: Message) -> None:
        bh = msg.bhdr
        number = bh.channel_number
        if msg.is_from_engine():
            self.tr.message("tofu", "rip", msg)
            if bh.status == AmpeStatus.channel_closed and bh.proto.op_code == OpCode.Signal:
                self.open.discard(number)
            elif bh.status not in (AmpeStatus.pool_empty, AmpeStatus.channel_closed):
                raise CLIError(f"demo: the worker got {bh.proto.op_code.name} back: {_status_text(bh.status)}")
            return
        self.tr.message("spool", "rip", msg)
        op = bh.proto.op_code
        job = bh.message_id
        if op == OpCode.Request:
            ticket = msg.thdrs.get("JobTicket")
            if ticket is not None:
                self.ticket_seen.add(job)
                self.pages_done[job] = 0
                return
            if job not in self.ticket_seen:
                raise CLIError(f"demo: job {job} data came before its JobTicket")
            if msg.thdrs.get("PDL") != self.pdl:
                raise CLIError(f"demo: job {job} is {msg.thdrs.get('PDL')}, this worker takes {self.pdl}")
            first = self.pages_done[job] + 1
            last = self.pages_done[job] + _count_pages(self.pdl, bytes(msg.body))
            self.pages_done[job] = last
            progress = Message(OpCode.Signal)
            progress.bhdr.channel_number = number
            progress.bhdr.message_id = job
            progress.thdrs.append("Progress", f"[{first}:{last}]")
            self.group.post(progress)
            if not msg.has_more():
                self.tr.narrate("R", f"job {job} done: ByeRequest with the final status instead of a Response")
                bye = Message(OpCode.ByeRequest)
                bye.bhdr.channel_number = number
                bye.bhdr.message_id = job
                bye.thdrs.append("Progress", f"[1:{last}]")
                bye.thdrs.append("JobStatus", "completed")
                bye.body.append(f"{last} page(s) rasterized")
                self.group.post(bye)


_DIALOGUE = """\
The print-server conversation from the reference's README, played over loopback:
  S (spool server) listens; R (RIP worker) connects with a HelloRequest whose PDL
  header says what it can rasterize (PS or PDF). S answers with no HelloResponse:
  it sends the job as a multi-request, every frame with the job id as message id:
  a JobTicket request first (PPD for PS, JDF for PDF), then the PDL data, all but
  the last with the `more` flag. R reports progress with Signals carrying
  `Progress:[N:M]` (the pages just rasterized) and finishes with a ByeRequest
  carrying the final status; S answers ByeResponse and the channel closes.
  `ch` is the receiver's channel number: numbers are local to each engine."""


def _cmd_demo(args: argparse.Namespace) -> int:
    tr = _Transcript(sys.stdout)
    listen_addr: Address
    if args.uds:
        from .testing import temp_uds_path

        listen_addr = UDSServerAddress(temp_uds_path("tofu-demo"))
    else:
        listen_addr = TCPServerAddress("127.0.0.1", 0)
    jobs = [_Job(job_id=1001 + i, pdl=args.pdl, pages=args.pages) for i in range(args.jobs)]
    print(_DIALOGUE, flush=True)
    print(flush=True)
    tr.columns()
    with _reactor() as spool_rtr, _reactor() as rip_rtr:
        spool_ampe, rip_ampe = spool_rtr.ampe(), rip_rtr.ampe()
        spool_group, rip_group = spool_ampe.create(), rip_ampe.create()
        spool = _Spool(spool_ampe, spool_group, tr, jobs, args.pages_per_chunk)
        tr.narrate("S", "I don't know the addresses of the workers, so you should connect to me.")
        spool.listener, url = _listen(spool_ampe, spool_group, listen_addr)
        tr.say(f"spool listening on {url} (listener channel {spool.listener})")
        connect = parse_url(url, server=False)
        rip = _RipWorker(rip_ampe, rip_group, tr, connect, args.pdl)
        tr.narrate("R", f"I'll send a HelloRequest; its PDL header says {args.pdl}.")
        for _ in range(args.jobs):
            rip.connect()  # one channel per job: "working one job per channel looks cleaner"

        deadline = time.monotonic() + args.timeout
        errors: list[BaseException] = []

        def guarded(fn: Callable[[float], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    fn(deadline)
                except ShutdownStarted:
                    pass
                except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
                    errors.append(exc)
                    spool_rtr.destroy()
                    rip_rtr.destroy()

            return run

        threads = [
            threading.Thread(target=guarded(spool.run), name="demo-spool", daemon=True),
            threading.Thread(target=guarded(rip.run), name="demo-rip", daemon=True),
        ]
        with _signals_to_main_thread():
            for t in threads:
                t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # short joins keep Ctrl-C responsive
        if errors:
            raise errors[0]

    _demo_summary(jobs, args.pdl, tr.elapsed_ms())
    return EXIT_OK


def _demo_summary(jobs: list[_Job], pdl: str, total_ms: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"print jobs ({pdl}), {total_ms:.1f} ms in all", title_justify="left")
    for col in ("job (message id)", "channel", "requests", "PDL bytes", "progress signals", "final status", "ms"):
        table.add_column(col, justify="left" if col == "final status" else "right")
    for job in jobs:
        table.add_row(
            str(job.job_id),
            str(job.channel),
            str(job.requests),
            str(job.pdl_bytes),
            str(job.progress_signals),
            job.final,
            f"{job.done_at - job.sent_at:.1f}",
        )
    print(flush=True)
    Console(file=sys.stdout, highlight=False, width=max(100, _terminal_width())).print(table)
    sys.stdout.flush()


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


# ================================================================ parser and main


def _bench_module() -> tuple[ModuleType | None, str | None]:
    """`tofu.bench` if it provides the hook, else None; and an import error to report."""
    try:
        if importlib.util.find_spec(f"{__package__}.bench") is None:
            return None, None
    except (ImportError, ValueError):
        return None, None
    try:
        module = importlib.import_module(f"{__package__}.bench")
    except Exception as exc:  # noqa: BLE001 (a broken bench module must not break the others)
        return None, f"{type(exc).__name__}: {exc}"
    if callable(getattr(module, "add_arguments", None)) and callable(getattr(module, "run", None)):
        return module, None
    return None, None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `tofu` command, with every subcommand."""
    parser = _Parser(
        prog="tofu",
        description="tofu: asynchronous, message-based, peer-to-peer messaging (wire-compatible with Zig tofu).",
        epilog="ADDRESS: tcp://HOST:PORT, uds:///PATH, tcp|HOST|PORT or uds|PATH. "
        "Run 'tofu COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"tofu {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log the engine's activity (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "demo",
        help="play the print-server conversation over loopback",
        description="Play the print-server conversation from the reference README in one process: "
        "a spool server and a RIP worker, each with its own engine, over loopback. Prints a transcript.",
    )
    p.add_argument("--pdl", choices=("PS", "PDF"), default="PS", help="what the worker rasterizes (default PS)")
    p.add_argument("--pages", type=_int_range(1, 10000), default=12, help="pages per job (default 12)")
    p.add_argument("--pages-per-chunk", type=_int_range(1, 15), default=3, help="pages in each PDL request (default 3)")
    p.add_argument("--jobs", type=_int_range(1, 16), default=1, help="jobs, one channel each (default 1)")
    p.add_argument("--uds", action="store_true", help="talk over a temporary Unix domain socket instead of TCP")
    p.add_argument("--timeout", type=_seconds, default=30.0, help="give up after this many seconds (default 30)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "serve",
        help="run an echo server",
        description="Echo server: answers Request with Response (same headers and body), HelloRequest with "
        "HelloResponse, ByeRequest with ByeResponse, and echoes Signals. Prints 'listening on URL' for each "
        "address (with the real port when PORT is 0). SIGINT or SIGTERM stops it gracefully: it says "
        "ByeRequest to every client and waits for them; a second signal stops it at once.",
    )
    p.add_argument("address", nargs="+", type=_address_arg(server=True), metavar="ADDRESS", help="where to listen")
    p.add_argument("--grace", type=_seconds, default=3.0, help="seconds to wait for clients when stopping (default 3)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "ping",
        help="measure round trips to a server",
        description="Connect, send N sequential Requests and time each Response; print min / median / p99 / "
        "max round trip, then close with ByeRequest. Works against 'tofu serve' or any peer that answers "
        "Requests.",
    )
    p.add_argument("address", type=_address_arg(server=False), metavar="ADDRESS", help="where to connect")
    p.add_argument("-n", "--count", type=_int_range(1, 100_000_000), default=10, help="requests (default 10)")
    p.add_argument(
        "-s", "--size", type=_int_range(0, MAX_BODY_LEN), default=64, help="body bytes per request (default 64)"
    )
    p.add_argument("--timeout", type=_seconds, default=5.0, help="seconds to wait for each reply (default 5)")
    _progress_flags(p)
    p.set_defaults(func=_cmd_ping)

    p = sub.add_parser(
        "decode",
        help="print the frames of a captured byte stream",
        description="Read a raw tofu byte stream (one direction of a connection) and print every frame field "
        "by field. Stops with an error naming the offset where the stream breaks (invalid op code, truncated "
        "frame).",
    )
    p.add_argument("file", nargs="?", default="-", metavar="FILE", help="the stream; '-' or nothing for stdin")
    p.add_argument(
        "--hex", action="store_true", help="the input is hex text (whitespace, 0x, ':' and '#' comments ignored)"
    )
    p.add_argument("--body-bytes", type=_int_range(0, MAX_BODY_LEN), default=64, help="body bytes to show (default 64)")
    _progress_flags(p)
    p.set_defaults(func=_cmd_decode)

    bench, problem = _bench_module()
    if bench is not None:
        p = sub.add_parser(
            "bench",
            help="benchmarks",
            description=(bench.__doc__ or "Benchmarks.").strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        bench.add_arguments(p)
        p.set_defaults(func=bench.run)
    elif problem is not None:
        p = sub.add_parser("bench", help="benchmarks (unavailable)", description="tofu.bench failed to import.")

        def broken(args: argparse.Namespace) -> int:
            raise CLIError(f"tofu.bench cannot be imported: {problem}")

        p.set_defaults(func=broken)
    return parser


def _progress_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `tofu` command with `argv` (default: sys.argv[1:]); return the exit status."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"{exc.prog}: error: {exc} (see '{exc.prog} --help')", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    except KeyboardInterrupt:
        print("tofu: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED

    prog = f"tofu {args.command}"
    if args.verbose:
        _configure_logging(args.verbose)
    try:
        return int(args.func(args))
    except CLIError as exc:
        _error(prog, str(exc))
        return exc.code
    except KeyboardInterrupt:
        _error(prog, "interrupted")
        return EXIT_INTERRUPTED
    except ShutdownStarted:
        _error(prog, "stopped: the engine shut down")
        return EXIT_FAILURE
    except AmpeError as exc:
        _error(prog, f"{type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader of our output went away (`tofu decode x | head`): stop quietly.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_FAILURE
    except OSError as exc:
        _error(prog, exc.strerror or str(exc))
        return EXIT_FAILURE
    except Exception as exc:  # a bug: still one line, the traceback only with -vv
        log.debug("internal error", exc_info=True)
        _error(prog, f"internal error: {type(exc).__name__}: {exc} (run with -vv for the traceback)")
        return EXIT_FAILURE


def _error(prog: str, message: str) -> None:
    try:
        print(f"{prog}: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
