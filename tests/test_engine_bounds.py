"""The engine's own error boundaries: a failure stays where it happens.

- An exception while handling one channel's event, flush or close closes
  that channel with processing_failed and a ~close_detail that says where
  and what; the I/O thread and the other channels go on, and the engine logs
  the internal error. One bad accepted socket never closes its listener.
- A TLS client context that cannot start a client fails the connect at once,
  with connect_failed and the reason, and leaves no channel behind.
- Nothing post() accepted vanishes at shutdown: each message reaches the
  peer, or comes back with shutdown_started, or post() refused it and the
  caller kept it; exactly one of the three.
- The I/O thread never waits on an application thread: a post from a
  delivery hook never waits for room in a send window, and a delivery hook
  never runs while the engine holds a connection's send lock.
- A post checks the channel it writes to: a channel number that closed and
  was reused by another group while the post waited receives nothing.
- TLS ends cleanly (close_notify), and a handshake failure found while
  writing is connect_failed.

The faults are injected where a compiled (mypyc) build takes them too: a
group's delivery hook, an ssl.SSLContext subclass, a context's
`sslobject_class` (the documented way to make wrap_bio return a subclass of
SSLObject). The few internals the tests reach are in the helpers below.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tofu
from engine_support import (
    TIMEOUT,
    answer_hello,
    assert_closed,
    connect,
    is_closed_signal,
    is_pool_empty,
    make,
    plain_listener,
    read_frame,
    recv,
    recv_until,
    tcp_listen,
    wait_for,
    wait_for_eof,
)
from tls_support import Pems
from tofu import AmpeStatus, Message, OpCode

PROMPT = 2.0  # seconds: what "at once" may take on a loaded machine (a timeout in the engine is longer)

# ------------------------------------------------------------ internals the tests reach


def set_delivery_hook(group: tofu.ChannelGroup, hook: Callable[[], None] | None) -> None:
    """Install the group's delivery hook (called on the I/O thread after each delivery)."""
    from tofu.groups import mailbox_of

    mailbox_of(group).on_delivery = hook


def channel_of(rtr: tofu.Reactor, number: int) -> object:
    """The engine's channel object with this number (None when there is none)."""
    return rtr._table.get(number)


def channel_count(rtr: tofu.Reactor) -> int:
    return len(rtr._table)


def block_window(rtr: tofu.Reactor, number: int) -> object:
    """Give channel `number` a send window with no room (a post on it waits
    until the window is released); returns that window."""
    from tofu.window import SendWindow

    window = SendWindow(0)
    rtr._table._windows[number] = window
    return window


def forget_window(rtr: tofu.Reactor, number: int) -> None:
    """Take channel `number`'s window out of the table (its close will not free a post waiting on it)."""
    rtr._table._windows.pop(number, None)


def next_number(rtr: tofu.Reactor, number: int) -> None:
    """The next channel the engine opens gets `number` (if it is free)."""
    rtr._table._next = number


def io_thread_alive(rtr: tofu.Reactor) -> bool:
    return rtr._io_thread.is_alive()


HAND_OVER = "submit"  # the Inbox method through which post() hands a message to the I/O thread


# ------------------------------------------------------------ helpers


def tcp(port: int) -> tofu.TCPClientAddress:
    return tofu.TCPClientAddress("127.0.0.1", port)


def detail(msg: Message) -> str | None:
    return msg.thdrs.get(tofu.CLOSE_DETAIL_HEADER)


def internal_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tofu" and r.levelno >= logging.ERROR]


def round_trip(client: tofu.ChannelGroup, channel: int, server: tofu.ChannelGroup, server_channel: int) -> None:
    """A Request from `client` answered by `server`: the channel works both ways."""
    client.post(make(OpCode.Request, channel, b"still here?"))
    req = recv(server)
    assert req.bhdr.proto.op_code == OpCode.Request and req.bhdr.channel_number == server_channel, req
    assert bytes(req.body) == b"still here?"
    req.bhdr.proto.op_code = OpCode.Response
    server.post(req)
    resp = recv(client)
    assert resp.bhdr.proto.op_code == OpCode.Response and resp.bhdr.channel_number == channel, resp
    assert resp.is_from_application() and bytes(resp.body) == b"still here?"


@dataclass
class Pair:
    """A server engine with a listener and a client engine, each with a group."""

    server_rtr: tofu.Reactor
    client_rtr: tofu.Reactor
    server: tofu.ChannelGroup
    client: tofu.ChannelGroup
    address: tofu.Address


@pytest.fixture
def pair() -> Iterator[Pair]:
    with tofu.Reactor() as server_rtr, tofu.Reactor() as client_rtr:
        server = server_rtr.ampe().create()
        _, port = tcp_listen(server)
        yield Pair(server_rtr, client_rtr, server, client_rtr.ampe().create(), tcp(port))


@pytest.fixture
def pems(tmp_path: Path) -> Pems:
    return Pems(tmp_path)


def tls_pair(pems: Pems, client_context: ssl.SSLContext | None = None) -> tuple[tofu.Reactor, tofu.Reactor]:
    """(server engine, client engine) for TLS: the server listens with the
    server certificate, the client trusts the CA (or uses `client_context`)."""
    server_rtr = tofu.Reactor(tofu.Options(tls_server_context=tofu.server_tls_context(pems.server)))
    context = client_context if client_context is not None else tofu.client_tls_context(ca=pems.ca_pem)
    return server_rtr, tofu.Reactor(tofu.Options(tls_client_context=context))


def tls_listen(group: tofu.ChannelGroup) -> tofu.TLSClientAddress:
    """A TLS listener on 127.0.0.1; the address to connect to it."""
    header = group.post(tofu.TLSServerAddress("127.0.0.1", 0).format(Message()))
    resp = recv(group)
    assert resp.bhdr.status == AmpeStatus.success and resp.bhdr.channel_number == header.channel_number, resp
    port = int(resp.thdrs.get(tofu.LISTEN_ON_HEADER).rsplit("|", 1)[1])
    return tofu.TLSClientAddress("127.0.0.1", port)


def faulty_sessions(context: ssl.SSLContext) -> dict[str, BaseException]:
    """Make the TLS sessions `context` starts raise on demand: after
    `faults["write"] = exc`, the next SSLObject.write of any of them raises
    `exc` (once); likewise "read" and "unwrap". Through the context's
    sslobject_class, which wrap_bio instantiates."""
    faults: dict[str, BaseException] = {}

    def fire(name: str) -> None:
        exc = faults.pop(name, None)
        if exc is not None:
            raise exc

    class FaultySSLObject(ssl.SSLObject):
        def read(self, *args: object) -> bytes:  # type: ignore[override]
            fire("read")
            return super().read(*args)  # type: ignore[arg-type]

        def write(self, data: bytes) -> int:  # type: ignore[override]
            fire("write")
            return super().write(data)

        def unwrap(self) -> None:  # type: ignore[override]
            fire("unwrap")
            super().unwrap()

    context.sslobject_class = FaultySSLObject
    return faults


# ============================================================ 1. one channel's failure stays in it


def test_a_delivery_that_raises_closes_only_that_channel(pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tofu")
    other = pair.client_rtr.ampe().create()
    bad_ch, bad_srv = connect(pair.client, pair.server, pair.address)
    good_ch, good_srv = connect(other, pair.server, pair.address)

    armed = [RuntimeError("boom")]

    def hook() -> None:  # raises once, on the I/O thread, delivering the Request below
        if armed:
            raise armed.pop()

    set_delivery_hook(pair.client, hook)
    pair.server.post(make(OpCode.Request, bad_srv, b"to the bad group"))
    closed, before = recv_until(pair.client, is_closed_signal)
    assert [bytes(m.body) for m in before] == [b"to the bad group"]  # delivered before the hook raised
    assert_closed(closed, AmpeStatus.processing_failed, bad_ch)
    assert detail(closed) == "internal error while handling its socket's event: RuntimeError: boom"
    assert pair.client.wait_receive(0.2) is None  # nothing after the notice

    # The peer sees its channel end; the other channel, on the same I/O thread, goes on.
    assert_closed(recv(pair.server), AmpeStatus.peer_disconnected, bad_srv)
    round_trip(other, good_ch, pair.server, good_srv)
    assert io_thread_alive(pair.client_rtr)
    assert internal_errors(caplog) == [f"tofu: internal error on channel {bad_ch} while handling its socket's event"]
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None and str(record.exc_info[1]) == "boom"


def test_a_delivery_hook_that_always_raises_never_stops_the_engine(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    """Every delivery to the group raises, the close's own ones too: its
    channel still closes with processing_failed (the notice is queued before
    the hook runs), the other group's channel goes on, and the engine's stop
    still closes everything and wakes every receiver."""
    caplog.set_level(logging.INFO, logger="tofu")
    other = pair.client_rtr.ampe().create()
    bad_ch, bad_srv = connect(pair.client, pair.server, pair.address)
    good_ch, good_srv = connect(other, pair.server, pair.address)

    def hook() -> None:
        raise RuntimeError("broken hook")

    set_delivery_hook(pair.client, hook)
    pair.server.post(make(OpCode.Signal, bad_srv, b"to the bad group"))
    closed, before = recv_until(pair.client, is_closed_signal)
    assert [bytes(m.body) for m in before] == [b"to the bad group"]
    assert_closed(closed, AmpeStatus.processing_failed, bad_ch)
    assert detail(closed) == "internal error while handling its socket's event: RuntimeError: broken hook"
    assert_closed(recv(pair.server), AmpeStatus.peer_disconnected, bad_srv)

    round_trip(other, good_ch, pair.server, good_srv)
    assert io_thread_alive(pair.client_rtr)
    errors = internal_errors(caplog)
    assert f"tofu: internal error on channel {bad_ch} while handling its socket's event" in errors

    pair.client_rtr.destroy()  # the stop delivers to the broken group too: the other still hears of it
    closed = recv(other)
    assert_closed(closed, AmpeStatus.shutdown_started, good_ch)
    with pytest.raises(tofu.ShutdownStarted):
        other.wait_receive(TIMEOUT)
    with pytest.raises(tofu.ShutdownStarted):
        pair.client.wait_receive(TIMEOUT)


class OneBadWrap(ssl.SSLContext):
    """A server context whose wrap_bio raises for the first connection only."""

    bad = 1

    def wrap_bio(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.bad:
            self.bad -= 1
            raise RuntimeError("no session for you")
        return super().wrap_bio(*args, **kwargs)


def test_one_bad_accepted_socket_never_closes_its_listener(pems: Pems, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tofu")
    context = OneBadWrap(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pems.server)
    with (
        tofu.Reactor(tofu.Options(tls_server_context=context)) as server_rtr,
        tofu.Reactor(tofu.Options(tls_client_context=tofu.client_tls_context(ca=pems.ca_pem))) as client_rtr,
    ):
        server = server_rtr.ampe().create()
        header = server.post(tofu.TLSServerAddress("127.0.0.1", 0).format(Message()))
        listener = header.channel_number
        port = int(recv(server).thdrs.get(tofu.LISTEN_ON_HEADER).rsplit("|", 1)[1])
        address = tofu.TLSClientAddress("127.0.0.1", port)
        client = client_rtr.ampe().create()

        first = client.post(address.format(Message()))
        back = recv(client)
        assert back.bhdr.proto.op_code == OpCode.HelloRequest and back.bhdr.channel_number == first.channel_number
        assert back.bhdr.status == AmpeStatus.connect_failed, tofu.raw_to_status(back.bhdr.status)
        assert_closed(recv(client), AmpeStatus.connect_failed, first.channel_number)

        # The listener goes on: the next client is served, and its Hello is
        # the first thing the server's application hears of (never the dropped one).
        cch, sch = connect(client, server, address)
        round_trip(client, cch, server, sch)
        assert server.wait_receive(0) is None
    dropped = [r.getMessage() for r in caplog.records if "dropped an incoming connection" in r.getMessage()]
    assert dropped == [f"channel {listener}: dropped an incoming connection: RuntimeError: no session for you"]
    assert not internal_errors(caplog)


def test_a_transport_that_raises_while_flushing_closes_only_that_channel(
    pems: Pems, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tofu")
    client_context = tofu.client_tls_context(ca=pems.ca_pem)
    faults = faulty_sessions(client_context)
    server_rtr, client_rtr = tls_pair(pems, client_context)
    with server_rtr, client_rtr:
        server = server_rtr.ampe().create()
        address = tls_listen(server)
        bad, good = client_rtr.ampe().create(), client_rtr.ampe().create()
        bad_ch, bad_srv = connect(bad, server, address)
        good_ch, good_srv = connect(good, server, address)

        faults["write"] = RuntimeError("cannot encrypt")
        bad.post(make(OpCode.Request, bad_ch, b"never sent"))
        back = recv(bad)
        assert back.bhdr.proto.op_code == OpCode.Request and bytes(back.body) == b"never sent"
        assert back.is_from_engine() and back.bhdr.status == AmpeStatus.processing_failed
        closed = assert_closed(recv(bad), AmpeStatus.processing_failed, bad_ch)
        assert detail(closed) == "internal error while flushing: RuntimeError: cannot encrypt"
        assert_closed(recv(server), AmpeStatus.peer_disconnected, bad_srv)

        round_trip(good, good_ch, server, good_srv)
        assert io_thread_alive(client_rtr)
    assert internal_errors(caplog) == [f"tofu: internal error flushing channel {bad_ch}"]


def test_a_transport_that_raises_while_closing_still_tells_the_application(
    pems: Pems, caplog: pytest.LogCaptureFixture
) -> None:
    """The close's own failure (here the TLS session's close_notify) still
    gives the application what a close gives: the notice, processing_failed,
    and why; the channel's number is free and the engine goes on."""
    caplog.set_level(logging.INFO, logger="tofu")
    client_context = tofu.client_tls_context(ca=pems.ca_pem)
    faults = faulty_sessions(client_context)
    server_rtr, client_rtr = tls_pair(pems, client_context)
    with server_rtr, client_rtr:
        server = server_rtr.ampe().create()
        address = tls_listen(server)
        client = client_rtr.ampe().create()
        bad_ch, bad_srv = connect(client, server, address)
        good_ch, good_srv = connect(client, server, address)
        count = channel_count(client_rtr)

        faults["unwrap"] = RuntimeError("cannot say goodbye")
        client.post(make(OpCode.ByeRequest, bad_ch))
        bye = recv(server)
        assert bye.bhdr.proto.op_code == OpCode.ByeRequest and bye.bhdr.channel_number == bad_srv
        bye.bhdr.proto.op_code = OpCode.ByeResponse
        server.post(bye)
        answer = recv(client)
        assert answer.bhdr.proto.op_code == OpCode.ByeResponse and answer.bhdr.channel_number == bad_ch
        closed = assert_closed(recv(client), AmpeStatus.processing_failed, bad_ch)
        assert detail(closed) == "internal error while closing: RuntimeError: cannot say goodbye"
        assert channel_count(client_rtr) == count - 1
        assert_closed(recv(server), None, bad_srv)  # the server's side ended with its ByeResponse

        round_trip(client, good_ch, server, good_srv)
    assert internal_errors(caplog) == [f"tofu: internal error closing channel {bad_ch}"]


# ============================================================ 2. a TLS context that cannot start a client


@pytest.mark.parametrize("connect_timeout", [5.0, None], ids=["connect_timeout", "no_connect_timeout"])
def test_a_client_context_that_cannot_start_tls_fails_the_connect_at_once(
    connect_timeout: float | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tofu")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # a server's context: it cannot start a client
    try:
        context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=False, server_hostname="127.0.0.1")
    except (ssl.SSLError, ValueError) as exc:
        why = str(exc)  # what ssl says (it names its source line)
    else:
        pytest.fail("a server's context started a client")
    options = tofu.Options(tls_client_context=context, connect_timeout=connect_timeout)
    # A listener that never accepts: were the engine to connect, nothing would answer.
    with tofu.Reactor(options) as rtr, plain_listener() as (_lsock, port):
        group = rtr.ampe().create()
        count = channel_count(rtr)
        address = tofu.TLSClientAddress("127.0.0.1", port)
        start = time.monotonic()
        hello = group.post(address.format(Message()))
        back = recv(group, timeout=PROMPT)
        assert back.bhdr.proto.op_code == OpCode.HelloRequest and back.bhdr.channel_number == hello.channel_number
        assert back.bhdr.status == AmpeStatus.connect_failed, tofu.raw_to_status(back.bhdr.status)
        closed = assert_closed(recv(group, timeout=PROMPT), AmpeStatus.connect_failed, hello.channel_number)
        assert time.monotonic() - start < PROMPT
        assert detail(closed) == f"{address.value}: Options.tls_client_context cannot start a TLS client: {why}"
        assert channel_count(rtr) == count  # no channel, no number left behind
        assert group.wait_receive(0.2) is None
    assert not internal_errors(caplog)


# ============================================================ 3. nothing vanishes at shutdown


@dataclass
class Ledger:
    """Where every message of a shutdown race went, by its key."""

    posted: list[str] = field(default_factory=list)  # post() took it
    refused: list[str] = field(default_factory=list)  # post() raised; the caller still holds it
    delivered: list[str] = field(default_factory=list)  # the peer's application received it
    returned: list[str] = field(default_factory=list)  # the engine gave it back with shutdown_started
    lock: threading.Lock = field(default_factory=threading.Lock)


POSTERS = 6


def _poster(client: tofu.ChannelGroup, channels: list[int], name: str, ledger: Ledger, go: threading.Barrier) -> None:
    go.wait()
    i = 0
    while True:
        key = f"{name}:{i}"
        body = bytes(20_000) if i % 10 == 3 else b"x" * (i % 50)  # now and then a big one, to fill buffers
        msg = make(OpCode.Request, channels[i % len(channels)], body, [("key", key)])
        try:
            client.post(msg)
        except tofu.AmpeError:
            # post() refused it: the message is still the caller's, whole.
            assert msg.thdrs.get("key") == key and len(msg.body) == len(body)
            with ledger.lock:
                ledger.refused.append(key)
            return
        with ledger.lock:
            ledger.posted.append(key)
        i += 1


def _drain_server(server: tofu.ChannelGroup, channels: int, ledger: Ledger) -> None:
    """Receive on the peer until its `channels` channels have closed."""
    closed = 0
    while closed < channels:
        msg = server.wait_receive(TIMEOUT)
        assert msg is not None, "the peer's channels never closed"
        if is_closed_signal(msg):
            closed += 1
        elif msg.bhdr.proto.op_code == OpCode.Request and msg.is_from_application():
            ledger.delivered.append(msg.thdrs.get("key"))
        else:
            assert is_pool_empty(msg), msg


def _race_shutdown(delay: float, slow_peer: bool, pems: Pems | None) -> Ledger:
    """POSTERS threads post on two channels while the engine is destroyed.
    A slow peer reads nothing until the engine has stopped (so the engine
    stops with its socket buffers full, frames half written); a fast one
    reads all along. A send window (slow peer) keeps memory bounded: posts
    then also wait in it when the stop comes. With `pems`, over TLS."""
    ledger = Ledger()
    server_options, options = tofu.Options(), tofu.Options(max_unsent_msgs=32 if slow_peer else 0)
    if pems is not None:
        server_options = tofu.Options(tls_server_context=tofu.server_tls_context(pems.server))
        options = dataclasses.replace(options, tls_client_context=tofu.client_tls_context(ca=pems.ca_pem))
    with tofu.Reactor(server_options) as server_rtr:
        server = server_rtr.ampe().create()
        address: tofu.Address = tls_listen(server) if pems is not None else tcp(tcp_listen(server)[1])
        client_rtr = tofu.Reactor(options)
        try:
            client = client_rtr.ampe().create()
            channels = [connect(client, server, address)[0] for _ in range(2)]
            go = threading.Barrier(POSTERS + 1)
            posters = [
                threading.Thread(target=_poster, args=(client, channels, f"t{n}", ledger, go), daemon=True)
                for n in range(POSTERS)
            ]
            for t in posters:
                t.start()
            reader = None
            if not slow_peer:
                reader = threading.Thread(target=_drain_server, args=(server, 2, ledger), daemon=True)
                reader.start()
            go.wait()
            time.sleep(delay)
            client_rtr.destroy()
            for t in posters:
                t.join(TIMEOUT)
                assert not t.is_alive(), "a post hung across the shutdown"
            # The engine gives back what it did not write, then its notices, then stops.
            notices = 0
            while True:
                try:
                    msg = client.wait_receive(TIMEOUT)
                except tofu.ShutdownStarted:
                    break
                assert msg is not None, "the engine's stop never reached the group"
                if is_closed_signal(msg):
                    assert_closed(msg, AmpeStatus.shutdown_started)
                    notices += 1
                elif is_pool_empty(msg):
                    pass
                else:
                    assert msg.bhdr.proto.op_code == OpCode.Request and msg.is_from_engine(), msg
                    assert msg.bhdr.status == AmpeStatus.shutdown_started, tofu.raw_to_status(msg.bhdr.status)
                    ledger.returned.append(msg.thdrs.get("key"))
            assert notices == 2
        finally:
            client_rtr.destroy()
        if reader is not None:
            reader.join(TIMEOUT)
            assert not reader.is_alive()
        else:
            _drain_server(server, 2, ledger)
    return ledger


@pytest.mark.parametrize(
    ("slow_peer", "tls"), [(False, False), (True, False), (True, True)], ids=["fast_peer", "slow_peer", "slow_peer_tls"]
)
def test_every_post_racing_a_shutdown_is_written_returned_or_refused_exactly_once(
    slow_peer: bool, tls: bool, tmp_path: Path
) -> None:
    pems = Pems(tmp_path) if tls else None
    for delay in (0.0, 0.01, 0.05, 0.1, 0.2):
        ledger = _race_shutdown(delay, slow_peer, pems)
        posted = set(ledger.posted)
        assert len(ledger.refused) == POSTERS  # each poster stops at its first refusal
        twice = [k for k, n in (Counter(ledger.delivered) + Counter(ledger.returned)).items() if n > 1]
        assert not twice, f"delivered or returned twice, or both: {twice[:10]} ({len(twice)})"
        vanished = posted - set(ledger.delivered) - set(ledger.returned)
        assert not vanished, f"posted, never delivered nor returned: {sorted(vanished)[:10]} ({len(vanished)})"
        assert set(ledger.delivered) | set(ledger.returned) == posted
        assert not posted & set(ledger.refused)


@pytest.mark.skipif(tofu.COMPILED, reason="a compiled post() runs no Python frame to stop in")
def test_a_post_that_reaches_the_inbox_after_the_stop_is_refused_not_lost() -> None:
    """A post that passed its own shutdown check, and hands its message to
    the engine only once the engine has stopped: post() raises
    ShutdownStarted and the caller keeps the message (the engine can give
    nothing back any more). Made deterministic by stopping the posting
    thread just before the hand-over (a trace function: pure Python only)."""
    with plain_listener() as (lsock, port):
        rtr = tofu.Reactor(tofu.Options(direct_send=False))
        client = rtr.ampe().create()
        channel = client.post(tcp(port).format(Message())).channel_number
        with answer_hello(lsock, client, channel) as peer:
            reached, go = threading.Event(), threading.Event()
            msg = make(OpCode.Request, channel, b"late", [("h", "v")], mid=77)
            outcome: list[object] = []

            def tracer(frame, event, arg):  # type: ignore[no-untyped-def]
                if event == "call" and frame.f_code.co_name == HAND_OVER:
                    sys.settrace(None)
                    reached.set()
                    go.wait(TIMEOUT)

            def post() -> None:
                sys.settrace(tracer)
                outcome.append(_post_or_error(client, msg))

            poster = threading.Thread(target=post)
            poster.start()
            assert reached.wait(TIMEOUT), "the post never reached the hand-over"
            rtr.destroy()  # the engine stops completely meanwhile
            go.set()
            poster.join(TIMEOUT)
            (result,) = outcome
            assert isinstance(result, tofu.ShutdownStarted), result
            assert str(result) == "the engine is shutting down"
            # Still the caller's, whole: not posted, its header, headers and body as they were.
            assert not msg.is_posted
            header = (msg.bhdr.proto.op_code, msg.bhdr.channel_number, msg.bhdr.message_id)
            assert header == (OpCode.Request, channel, 77)
            assert list(msg.thdrs) == [("h", "v")] and bytes(msg.body) == b"late"
            assert_closed(recv(client), AmpeStatus.shutdown_started, channel)
            with pytest.raises(tofu.ShutdownStarted):
                client.wait_receive(TIMEOUT)
            assert wait_for_eof(peer) == b""  # nothing more reached the peer


# ============================================================ 4. the I/O thread never waits on an application thread


def test_a_post_from_a_delivery_hook_never_waits_for_the_send_window() -> None:
    with (
        tofu.Reactor(tofu.Options(max_unsent_msgs=4, direct_send=False)) as rtr,
        plain_listener() as (lsock, port),
    ):
        client = rtr.ampe().create()
        channel = client.post(tcp(port).format(Message())).channel_number
        peer = answer_hello(lsock, client, channel)
        with peer:
            # The peer reads nothing: once the socket's buffers are full, the window stays full.
            for _ in range(10_000):
                try:
                    client.post(make(OpCode.Signal, channel, bytes(65_000)), timeout=0.2)
                except tofu.PostTimeout:
                    break
            else:
                pytest.fail("the window never filled")

            outcome: list[tuple[BaseException | None, float]] = []
            done = threading.Event()

            def hook() -> None:  # on the I/O thread, delivering the peer's Signal
                if done.is_set():
                    return
                start = time.monotonic()
                error: BaseException | None = None
                try:
                    client.post(make(OpCode.Signal, channel, b"from the hook"), timeout=3.0)
                except BaseException as exc:  # noqa: BLE001 - checked below
                    error = exc
                outcome.append((error, time.monotonic() - start))
                done.set()

            set_delivery_hook(client, hook)
            ping = make(OpCode.Signal, 1, b"ping")
            peer.sendall(tofu.encode(ping))
            assert done.wait(TIMEOUT), "the hook never ran"
            set_delivery_hook(client, None)
            ((error, waited),) = outcome
            assert isinstance(error, tofu.PostTimeout), error
            assert waited < 0.5, f"the I/O thread waited {waited:.2f} s for the send window"
            assert bytes(recv(client).body) == b"ping"


def test_a_delivery_hook_runs_without_the_connections_send_lock(pair: Pair) -> None:
    """A close that follows the last frame written delivers its notice after
    letting go of the connection's send lock (the lock a post's direct write
    takes): a hook that waits for another thread taking that lock, or that
    posts, goes on."""
    closing_ch, closing_srv = connect(pair.client, pair.server, pair.address)
    other_ch, other_srv = connect(pair.client, pair.server, pair.address)
    conn = channel_of(pair.client_rtr, closing_ch)
    assert conn is not None

    pair.server.post(make(OpCode.ByeRequest, closing_srv))
    bye = recv(pair.client)
    assert bye.bhdr.proto.op_code == OpCode.ByeRequest

    seen: list[object] = []
    done = threading.Event()

    def take_the_lock() -> None:  # as a post writing directly to the connection does
        lock = conn.send_lock  # type: ignore[attr-defined]
        seen.append(lock.acquire(timeout=2.0))
        if seen[-1]:
            lock.release()

    def hook() -> None:  # the next delivery: the close's notice, once the ByeResponse is written
        if done.is_set():
            return
        taker = threading.Thread(target=take_the_lock)
        taker.start()
        taker.join()
        pair.client.post(make(OpCode.Signal, other_ch, b"posted by the hook"))
        done.set()

    set_delivery_hook(pair.client, hook)
    bye.bhdr.proto.op_code = OpCode.ByeResponse
    pair.client.post(bye)
    assert done.wait(TIMEOUT), "the hook never ran"
    set_delivery_hook(pair.client, None)
    assert seen == [True], "the engine held the connection's send lock while delivering"
    assert_closed(recv(pair.client), None, closing_ch)
    got, before = recv_until(pair.server, lambda m: m.bhdr.proto.op_code == OpCode.Signal and m.is_from_application())
    assert got.bhdr.channel_number == other_srv and bytes(got.body) == b"posted by the hook"
    assert {m.bhdr.channel_number for m in before} <= {closing_srv}  # the Bye exchange's end, if first


# ============================================================ 5. a post checks the channel it writes to


def test_a_channel_number_reused_by_another_group_while_a_post_waits_receives_nothing() -> None:
    """A post on channel N waits (here for room in N's send window); N
    closes, and another group's new connection gets number N and goes idle
    (a post to it would be written directly). The waiting post must not
    write to that connection: the channel it checked is closed, so it raises
    and its caller keeps the message."""
    with (
        tofu.Reactor() as server_rtr,
        tofu.Reactor(tofu.Options(max_unsent_msgs=4)) as client_rtr,
    ):
        server = server_rtr.ampe().create()
        _, port = tcp_listen(server)
        first, second = client_rtr.ampe().create(), client_rtr.ampe().create()
        number, first_srv = connect(first, server, tcp(port))

        window = block_window(client_rtr, number)
        msg = make(OpCode.Request, number, b"for the first group's peer only")
        outcome: list[object] = []
        poster = threading.Thread(target=lambda: outcome.append(_post_or_error(first, msg)), daemon=True)
        poster.start()
        poster.join(0.3)
        assert poster.is_alive(), "the post did not wait"
        forget_window(client_rtr, number)

        first.post(make(OpCode.ByeSignal, number))  # N closes
        assert_closed(recv(first), None, number)
        assert_closed(recv(server), AmpeStatus.peer_disconnected, first_srv)

        next_number(client_rtr, number)
        reused, reused_srv = connect(second, server, tcp(port))
        assert reused == number
        conn = channel_of(client_rtr, number)
        wait_for(lambda: conn.direct_ok, "the new connection to go idle")  # type: ignore[union-attr]

        window.release(1)  # type: ignore[attr-defined]
        poster.join(TIMEOUT)
        assert not poster.is_alive()
        (error,) = outcome
        assert isinstance(error, tofu.ChannelClosed), error
        assert str(error).startswith(f"Request on channel {number} (connector closed)"), str(error)
        assert msg.thdrs is not None and bytes(msg.body) == b"for the first group's peer only"  # still the caller's
        assert server.wait_receive(0.5) is None, "the other group's peer received the message"
        assert second.wait_receive(0) is None and first.wait_receive(0) is None
        round_trip(second, reused, server, reused_srv)


def _post_or_error(group: tofu.ChannelGroup, msg: Message) -> object:
    try:
        return group.post(msg)
    except tofu.AmpeError as exc:
        return exc


# ============================================================ 6. TLS ends cleanly


def _tls_peer_socket(pems: Pems, port: int) -> ssl.SSLSocket:
    """A plain ssl client connected to an engine's TLS listener; an unclean
    end of its stream raises SSLEOFError (no ragged EOFs suppressed)."""
    context = ssl.create_default_context(cafile=pems.ca_pem)
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    return context.wrap_socket(sock, server_hostname="localhost", suppress_ragged_eofs=False)


def _frame(op: OpCode, mid: int, headers: list[tuple[str, str]] | None = None) -> bytes:
    return tofu.encode(make(op, 1, headers=headers or [], mid=mid))


def test_a_graceful_close_ends_the_tls_stream_with_close_notify(pems: Pems) -> None:
    with tofu.Reactor(tofu.Options(tls_server_context=tofu.server_tls_context(pems.server))) as rtr:
        server = rtr.ampe().create()
        address = tls_listen(server)
        with _tls_peer_socket(pems, address.port) as peer:
            peer.sendall(_frame(OpCode.HelloRequest, 1, [(tofu.CONNECT_TO_HEADER, address.value)]))
            hello = recv(server)
            assert hello.bhdr.proto.op_code == OpCode.HelloRequest
            channel = hello.bhdr.channel_number
            hello.bhdr.proto.op_code = OpCode.HelloResponse
            server.post(hello)
            assert read_frame(peer).bhdr.proto.op_code == OpCode.HelloResponse

            peer.sendall(_frame(OpCode.ByeRequest, 2))
            bye = recv(server)
            assert bye.bhdr.proto.op_code == OpCode.ByeRequest
            bye.bhdr.proto.op_code = OpCode.ByeResponse
            server.post(bye)
            assert read_frame(peer).bhdr.proto.op_code == OpCode.ByeResponse
            assert peer.recv(1) == b"", "no clean end of the TLS stream"  # close_notify; SSLEOFError without it
            assert_closed(recv(server), None, channel)


def test_the_connecting_side_ends_its_tls_stream_with_close_notify(pems: Pems) -> None:
    """The engine as the client: after its Bye exchange, the server (a plain
    ssl socket) sees the TLS stream end with close_notify."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pems.server)
    with (
        tofu.Reactor(tofu.Options(tls_client_context=tofu.client_tls_context(ca=pems.ca_pem))) as rtr,
        plain_listener() as (lsock, port),
    ):
        client = rtr.ampe().create()
        header = client.post(tofu.TLSClientAddress("127.0.0.1", port).format(Message()))
        raw, _ = lsock.accept()
        raw.settimeout(TIMEOUT)
        with context.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False) as peer:
            hello = read_frame(peer)
            assert hello.bhdr.proto.op_code == OpCode.HelloRequest
            hello.bhdr.proto.op_code = OpCode.HelloResponse
            peer.sendall(tofu.encode(hello))
            assert recv(client).bhdr.proto.op_code == OpCode.HelloResponse

            client.post(make(OpCode.ByeRequest, header.channel_number))
            bye = read_frame(peer)
            assert bye.bhdr.proto.op_code == OpCode.ByeRequest
            bye.bhdr.proto.op_code = OpCode.ByeResponse
            peer.sendall(tofu.encode(bye))
            assert recv(client).bhdr.proto.op_code == OpCode.ByeResponse
            assert_closed(recv(client), None, header.channel_number)
            peer.settimeout(TIMEOUT)
            assert peer.recv(1) == b"", "no clean end of the TLS stream"


def test_a_handshake_failure_found_while_writing_is_connect_failed(pems: Pems) -> None:
    """The client's TLS session fails on its first write, the HelloRequest
    (with TLS 1.3 the client's handshake is over before the server has judged
    it: the channel is still being set up): connect_failed and why, as a
    failure found while reading would be, not send_failed."""
    client_context = tofu.client_tls_context(ca=pems.ca_pem)
    faults = faulty_sessions(client_context)
    alert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    alert.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"  # type: ignore[attr-defined]
    faults["write"] = alert
    server_rtr, client_rtr = tls_pair(pems, client_context)
    with server_rtr, client_rtr:
        server = server_rtr.ampe().create()
        address = tls_listen(server)
        client = client_rtr.ampe().create()
        hello = client.post(address.format(Message()))
        back = recv(client)
        assert back.bhdr.proto.op_code == OpCode.HelloRequest and back.bhdr.channel_number == hello.channel_number
        assert back.bhdr.status == AmpeStatus.connect_failed, tofu.raw_to_status(back.bhdr.status)
        closed = assert_closed(recv(client), AmpeStatus.connect_failed, hello.channel_number)
        assert detail(closed) == "TLS channel setup failed: tlsv13 alert certificate required"
        assert server.wait_receive(0.2) is None  # the server's application never saw it


def test_an_engine_bug_after_a_name_lookup_fails_only_that_channel(caplog: pytest.LogCaptureFixture) -> None:
    """What follows a lookup (here: the bind a listener does with it) runs on
    the I/O thread later; an exception there closes that channel with
    processing_failed, and the engine goes on."""
    from tofu.resolver import Resolver

    failures: list[tuple[tofu.AmpeStatus, str]] = []

    def then(resolved: object) -> None:
        raise RuntimeError("boom")

    calls: list[object] = []
    resolver = Resolver(calls.append)  # a stand-in for call_soon: the test runs the call itself
    with caplog.at_level(logging.ERROR, logger="tofu"):
        resolver.resolve_then(tofu.TCPClientAddress("127.0.0.1", 1), then, lambda s, d: failures.append((s, d)))
    assert failures == [(tofu.AmpeStatus.processing_failed, "internal error after the name lookup: RuntimeError: boom")]
    assert any("internal error after resolving" in r.getMessage() for r in caplog.records)
