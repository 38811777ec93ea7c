"""Engine lifecycle, the pool, message ownership and post() validation
(docs/protocol.md, the reference's recipe book)."""

from __future__ import annotations

import threading
import time

import pytest
import tofu
from tofu.groups import mailbox_of
from engine_support import assert_closed, make, recv, wait_for
from tofu import AllocationStrategy, AmpeStatus, Message, OpCode, Options
from tofu.channels import ChannelTable, Connection, Listener
from tofu.generated.machine import ACCEPTED_STATE, INITIAL_STATE, ChannelState
from tofu.mailbox import Mailbox
from tofu.pool import Pool

# ---------------------------------------------------------------- lifecycle


def test_create_and_destroy():
    with tofu.Reactor() as rtr:
        ampe = rtr.ampe()
        group = ampe.create()
        ampe.destroy(group)
        thread = rtr._io_thread
        assert thread.is_alive()
    assert not thread.is_alive()


def test_destroy_is_idempotent_and_forbids_further_use():
    rtr = tofu.Reactor()
    ampe = rtr.ampe()
    group = ampe.create()
    rtr.destroy()
    rtr.destroy()
    with pytest.raises(tofu.ShutdownStarted):
        ampe.get(AllocationStrategy.always)
    with pytest.raises(tofu.ShutdownStarted):
        ampe.create()
    with pytest.raises(tofu.ShutdownStarted):
        rtr.ampe()
    msg = make(OpCode.HelloRequest, headers=[("~connect_to", "tcp|127.0.0.1|1")])
    with pytest.raises(tofu.ShutdownStarted, match="^the engine is shutting down$"):
        group.post(msg)
    assert not msg.is_posted  # a refused post leaves the message with the caller
    with pytest.raises(tofu.ShutdownStarted, match="^the engine has stopped$"):
        group.wait_receive(0)


@pytest.mark.parametrize("timeout", [0, 0.01, tofu.WAIT_RECEIVE_INFINITE_TIMEOUT])
def test_every_wait_receive_after_the_stop_raises(timeout):
    """Not only the first: a receiver loop that calls again (with any timeout,
    even after a late update_receiver) never gets None or blocks."""
    rtr = tofu.Reactor()
    group = rtr.ampe().create()
    rtr.destroy()
    for _ in range(3):
        with pytest.raises(tofu.ShutdownStarted, match="^the engine has stopped$"):
            group.wait_receive(0)
    group.update_receiver(None)  # a wake-up after the stop changes nothing
    with pytest.raises(tofu.ShutdownStarted):
        group.wait_receive(timeout)
    with pytest.raises(tofu.ShutdownStarted):
        group.wait_receive(0)


def test_destroy_wakes_a_receiver_blocked_forever():
    rtr = tofu.Reactor()
    group = rtr.ampe().create()
    outcome = []

    def receive():
        try:
            group.wait_receive(None)
        except tofu.ShutdownStarted:
            outcome.append("shutdown")

    t = threading.Thread(target=receive)
    t.start()
    rtr.destroy()
    t.join(10)
    assert outcome == ["shutdown"]


def test_several_engines_in_one_process():
    with tofu.Reactor() as a, tofu.Reactor() as b:
        ga, gb = a.ampe().create(), b.ampe().create()
        from engine_support import connect, tcp_listen

        _, port = tcp_listen(gb)
        ca, cb = connect(ga, gb, tofu.TCPClientAddress("127.0.0.1", port))
        ga.post(make(OpCode.Signal, ca, b"across engines"))
        got = recv(gb)
        assert bytes(got.body) == b"across engines" and got.bhdr.channel_number == cb


# ---------------------------------------------------------------- pool


def test_options_fall_back_to_defaults():
    assert (Options().initial_pool_msgs, Options().max_pool_msgs) == (16, 64)
    assert (Options(0, 0).initial_pool_msgs, Options(0, 0).max_pool_msgs) == (16, 64)
    assert (Options(10, 5).initial_pool_msgs, Options(10, 5).max_pool_msgs) == (16, 64)
    assert (Options(32, 128).initial_pool_msgs, Options(32, 128).max_pool_msgs) == (32, 128)


def test_smallest_pool():
    # max_queued_msgs=1 too: the pool never keeps fewer than the engine may hold (see Options)
    with tofu.Reactor(Options(initial_pool_msgs=1, max_pool_msgs=1, max_queued_msgs=1)) as rtr:
        ampe = rtr.ampe()
        first = ampe.get(AllocationStrategy.always)
        assert isinstance(first, Message)
        assert ampe.get(AllocationStrategy.poolOnly) is None
        second = ampe.get(AllocationStrategy.always)  # allocates when empty
        assert isinstance(second, Message) and second is not first
        ampe.put(first)
        ampe.put(second)  # the pool is full: freed
        assert ampe.get(AllocationStrategy.poolOnly) is first
        assert ampe.get(AllocationStrategy.poolOnly) is None
        ampe.put(None)  # a no-op


@pytest.mark.parametrize(
    ("options", "keeps"),
    [
        (Options(), 4096),  # max_queued_msgs: a full receive queue, and a stream's batches (STREAM_BATCHES)
        (Options(max_unsent_msgs=1000), 5096),  # and a full send window
        (Options(max_pool_msgs=8192), 8192),
        (Options(max_queued_msgs=1023), 1023),  # a receive queue under a batch: no room for batches
        (Options(initial_pool_msgs=1, max_pool_msgs=8, max_queued_msgs=2), 8),
        (Options(initial_pool_msgs=1, max_pool_msgs=1, max_queued_msgs=5, max_unsent_msgs=3), 8),
    ],
)
def test_the_pool_keeps_what_the_engine_may_hold(options, keeps):
    from tofu.pool import pool_capacity

    assert pool_capacity(options) == keeps
    with tofu.Reactor(options) as rtr:
        ampe = rtr.ampe()
        taken = [ampe.get(AllocationStrategy.always) for _ in range(keeps + 5)]
        for msg in taken:
            ampe.put(msg)
        again = [ampe.get(AllocationStrategy.poolOnly) for _ in range(keeps + 5)]
        assert sum(m is not None for m in again) == keeps  # kept up to the capacity, then freed


def test_a_shortage_is_reported_once_and_ends_when_half_are_back():
    from tofu.pool import Pool

    pool = Pool(initial=2, maximum=4)
    out = [pool.get(), pool.get()]
    assert pool.get(AllocationStrategy.poolOnly) is None
    for _ in range(2):  # the caller makes what the pool lacks: no shortage while <= maximum are in use
        out.append(Message())
        assert not pool.made_one()
    out.append(Message())
    assert pool.made_one() and pool.in_use() == 5  # all 4 in use, and one more
    assert pool.begin_shortage()
    assert not pool.begin_shortage()  # reported once
    posted = Message()
    posted._take()  # what post() leaves with the caller: no put
    pool.put(posted)
    assert pool.in_use() == 5
    pool.put(out[0])
    pool.put(out[1])
    assert pool.in_use() == 3 and pool._short  # more than half of the 4 still out
    pool.put(out[2])
    assert pool.in_use() == 2 and not pool._short  # over: a new one may be reported
    pool.put(out[3])
    pool.put(out[4])
    assert len(pool) == 4 and pool.in_use() == 0  # full: the fifth was dropped


def test_a_shortage_ends_even_when_messages_come_back_into_a_full_pool():
    from tofu.pool import Pool

    pool = Pool(initial=1, maximum=1)
    pool.get()
    extra = [Message() for _ in range(3)]
    for _ in extra:
        pool.made_one()
    assert pool.begin_shortage()
    pool.put(Message())  # kept: the pool is full now, 3 in use
    assert pool._short
    for msg in extra:
        pool.put(msg)  # dropped, and counted out
    assert pool.in_use() == 0 and not pool._short


def test_put_resets_the_message():
    with tofu.Reactor(Options(1, 1)) as rtr:
        ampe = rtr.ampe()
        msg = ampe.get(AllocationStrategy.always)
        msg.bhdr.channel_number = 7
        msg.bhdr.message_id = 99
        msg.bhdr.status = 3
        msg.bhdr.proto.op_code = OpCode.Signal
        msg.bhdr.proto.more = tofu.MoreMessagesFlag.more
        msg.thdrs.append("secret", "value")
        msg.body.append(b"old data")
        ampe.put(msg)
        again = ampe.get(AllocationStrategy.poolOnly)
        assert again is msg
        assert again.bhdr == tofu.BinaryHeader()
        assert list(again.thdrs) == [] and bytes(again.body) == b""


# ---------------------------------------------------------------- ownership


def test_post_moves_the_message_into_the_engine(rtr):
    ampe = rtr.ampe()
    group = ampe.create()
    msg = ampe.get(AllocationStrategy.always)
    tofu.TCPServerAddress("127.0.0.1", 0).format(msg)
    header = group.post(msg)
    assert isinstance(header, tofu.BinaryHeader)
    assert header.channel_number >= 1 and header.message_id >= 1
    assert msg.is_posted
    for part in ("bhdr", "thdrs", "body"):
        with pytest.raises(tofu.NotAllowed):
            getattr(msg, part)
    with pytest.raises(tofu.NotAllowed):
        msg.is_from_engine()
    with pytest.raises(tofu.NotAllowed):
        group.post(msg)
    ampe.put(msg)  # a no-op for an emptied message
    resp = recv(group)
    assert resp.bhdr.channel_number == header.channel_number
    assert resp.bhdr.message_id == header.message_id


def test_message_ids_come_from_one_process_wide_counter(rtr):
    g1, g2 = rtr.ampe().create(), rtr.ampe().create()
    ids = []
    for g in (g1, g2, g1):
        ids.append(g.post(tofu.TCPServerAddress("127.0.0.1", 0).format(Message())).message_id)
    assert ids == sorted(ids) and len(set(ids)) == 3
    own = tofu.TCPServerAddress("127.0.0.1", 0).format(Message())
    own.bhdr.message_id = 424242
    assert g1.post(own).message_id == 424242  # a caller's own id is kept


# ---------------------------------------------------------------- validation


def test_posting_a_fresh_message_is_an_invalid_channel_number(rtr):
    ampe = rtr.ampe()
    group = ampe.create()
    msg = ampe.get(AllocationStrategy.always)
    with pytest.raises(tofu.InvalidChannelNumber):
        group.post(msg)
    assert not msg.is_posted


def test_bye_request_on_channel_zero(rtr):
    group = rtr.ampe().create()
    with pytest.raises(tofu.InvalidChannelNumber):
        group.post(make(OpCode.ByeRequest))


def test_hello_request_without_address(rtr):
    group = rtr.ampe().create()
    with pytest.raises(tofu.WrongAddress):
        group.post(make(OpCode.HelloRequest))
    with pytest.raises(tofu.WrongAddress):
        group.post(make(OpCode.WelcomeRequest))


@pytest.mark.parametrize(
    ("build", "error", "says"),
    [
        # each message breaks its rule and every later one: the earliest wins
        (lambda m: setattr(m.bhdr.proto, "op_code", 12), tofu.InvalidOpCode, "^invalid op code 12$"),
        (
            lambda m: setattr(m.bhdr.proto, "op_code", OpCode.Response),
            tofu.InvalidMessageId,
            "^a Response needs the message id of its request$",
        ),
        (
            lambda m: setattr(m.bhdr.proto, "op_code", OpCode.ByeRequest),
            tofu.InvalidMoreUsage,
            "^the more flag is only for Request, Response and Signal, not ByeRequest$",
        ),
        (
            lambda m: setattr(m.bhdr.proto, "op_code", OpCode.Signal),
            tofu.InvalidChannelNumber,
            "^Signal needs the channel number of an open channel$",
        ),
    ],
)
def test_validation_order(rtr, build, error, says):
    group = rtr.ampe().create()
    msg = Message()
    msg.bhdr.proto.more = tofu.MoreMessagesFlag.more
    msg.thdrs._buf += b"x" * 70000  # past append's own checks
    msg.body._buf += b"y" * 70000
    build(msg)
    with pytest.raises(error, match=says):
        group.post(msg)
    assert not msg.is_posted


def test_headers_length_checked_before_address_and_body(rtr):
    group = rtr.ampe().create()
    hello = make(OpCode.HelloRequest)
    hello.thdrs._buf += b"x" * 70000  # past append's own checks
    hello.body._buf += b"y" * 70000
    with pytest.raises(tofu.InvalidHeadersLen, match="^text headers are 70000 bytes, at most 65535 fit$"):
        group.post(hello)
    hello.thdrs.clear()
    with pytest.raises(tofu.WrongAddress, match="^a HelloRequest needs an address header$"):
        group.post(hello)
    hello.thdrs.append("~connect_to", "tcp|127.0.0.1|1")
    with pytest.raises(tofu.InvalidBodyLen, match="^body is 70000 bytes, at most 65535 fit$"):
        group.post(hello)


def test_parts_of_exactly_65535_bytes_are_posted(rtr):
    """The limits are inclusive: 65535 bytes of text headers, and of body, fit."""
    server, client = rtr.ampe().create(), rtr.ampe().create()
    from engine_support import connect, tcp_listen

    _, port = tcp_listen(server)
    cch, _ = connect(client, server, tofu.TCPClientAddress("127.0.0.1", port))
    msg = make(OpCode.Signal, cch, b"b" * 65535, [("h", "v" * (65535 - len("h:\r\n")))])
    assert len(bytes(msg.thdrs)) == 65535
    client.post(msg)
    got = recv(server)
    assert len(bytes(got.thdrs)) == 65535 and len(got.body) == 65535


def test_post_refuses_none_and_posts_to_a_destroyed_group(rtr):
    ampe = rtr.ampe()
    group = ampe.create()
    assert mailbox_of(group).destroyed is False
    with pytest.raises(tofu.NullMessage, match="^post\\(\\) needs a message$"):
        group.post(None)
    ampe.destroy(group)
    assert mailbox_of(group).destroyed is True
    msg = tofu.TCPServerAddress("127.0.0.1", 0).format(Message())
    with pytest.raises(tofu.NotAllowed, match="^this channel group was destroyed$"):
        group.post(msg)
    assert not msg.is_posted


def test_unknown_channel_and_other_groups_channel(rtr):
    ampe = rtr.ampe()
    mine, other = ampe.create(), ampe.create()
    with pytest.raises(tofu.InvalidChannelNumber, match="^channel 4321 is not open$"):
        mine.post(make(OpCode.Signal, 4321))
    with pytest.raises(tofu.InvalidChannelNumber, match="^channel 65535 is not open$"):
        mine.post(make(OpCode.Signal, 65535))
    header = other.post(tofu.TCPServerAddress("127.0.0.1", 0).format(Message()))
    recv(other)
    with pytest.raises(
        tofu.InvalidMessageChannelGroup, match=f"^channel {header.channel_number} belongs to another channel group$"
    ):
        mine.post(make(OpCode.ByeSignal, header.channel_number))


def test_post_forces_origin_and_status(rtr):
    group = rtr.ampe().create()
    msg = tofu.TCPServerAddress("127.0.0.1", 0).format(Message())
    msg.bhdr.proto.origin = tofu.OriginFlag.engine
    msg.bhdr.status = 17
    header = group.post(msg)
    assert header.proto.origin == tofu.OriginFlag.application and header.status == 0


def test_update_receiver_wakes_an_infinite_wait(rtr):
    group = rtr.ampe().create()
    got = []
    t = threading.Thread(target=lambda: got.append(group.wait_receive(tofu.WAIT_RECEIVE_INFINITE_TIMEOUT)))
    t.start()
    group.update_receiver(None)
    t.join(10)
    assert not t.is_alive()
    (msg,) = got
    assert msg.bhdr.status == AmpeStatus.receiver_update and msg.is_from_engine()
    assert msg.bhdr.proto.op_code == OpCode.Signal  # an empty Signal
    assert msg.bhdr.proto.more is tofu.MoreMessagesFlag.last
    assert bytes(msg.thdrs) == b"" and bytes(msg.body) == b""
    data = make(OpCode.Signal, body=b"new work", more=True)
    group.update_receiver(data)
    assert data.is_posted
    again = recv(group)
    assert again.bhdr.status == AmpeStatus.receiver_update and bytes(again.body) == b"new work"
    assert again.is_from_engine() and again.bhdr.proto.more is tofu.MoreMessagesFlag.last


def test_the_receive_queue_is_over_its_limit_at_max_queued_msgs():
    with tofu.Reactor(Options(max_queued_msgs=4)) as small:
        group = small.ampe().create()
        for _ in range(3):
            group.update_receiver(None)
        assert not mailbox_of(group).over_limit()
        group.update_receiver(None)
        assert mailbox_of(group).over_limit()  # 4 queued: reading pauses now, not at 5


def test_a_posted_bye_signal_carries_the_abort_trigger(rtr):
    server, client = rtr.ampe().create(), rtr.ampe().create()
    from engine_support import connect, tcp_listen

    _, port = tcp_listen(server)
    cch, _ = connect(client, server, tofu.TCPClientAddress("127.0.0.1", port))
    header = client.post(make(OpCode.ByeSignal, cch))
    assert header.proto.internal_a == 1  # the engine's trigger for an abort
    assert header.proto.op_code is OpCode.ByeSignal


def test_wait_receive_timeouts(rtr):
    group = rtr.ampe().create()
    assert group.wait_receive(0) is None
    assert group.wait_receive(0.01) is None
    # A short timeout is waited out, not taken as "do not wait". (A lower
    # bound only: a loaded machine makes the wait longer, never shorter.)
    start = time.monotonic()
    assert group.wait_receive(0.25) is None
    assert time.monotonic() - start >= 0.2
    # The reference's timeout names, in seconds.
    assert tofu.WAIT_RECEIVE_INFINITE_TIMEOUT is None and tofu.WAIT_RECEIVE_SEC_TIMEOUT == 1.0


def test_a_group_as_a_context_manager_is_destroyed_on_leaving(rtr):
    ampe = rtr.ampe()
    client = ampe.create()
    with ampe.create() as server:
        from engine_support import connect, tcp_listen

        _, port = tcp_listen(server)
        cch, _ = connect(client, server, tofu.TCPClientAddress("127.0.0.1", port))
    assert mailbox_of(server).destroyed
    # The server's channels were closed with it: the client's peer vanished.
    assert_closed(recv(client), AmpeStatus.peer_disconnected, cch)
    with pytest.raises(tofu.NotAllowed):
        server.post(make(OpCode.Signal, cch))
    ampe.destroy(server)  # destroying it again is a no-op


def test_adding_messages_to_the_pool():
    with tofu.Reactor(Options(initial_pool_msgs=1, max_pool_msgs=8, max_queued_msgs=8)) as rtr:
        ampe = rtr.ampe()
        for _ in range(10):
            ampe.put(Message())  # the reference's addToPool: made outside, kept up to the maximum
        taken = [ampe.get(AllocationStrategy.poolOnly) for _ in range(8)]
        assert all(isinstance(m, Message) for m in taken)
        assert ampe.get(AllocationStrategy.poolOnly) is None


def test_dump_is_one_readable_line_logged_at_debug(caplog):
    msg = make(OpCode.Response, 5, mid=42, more=True)
    msg.bhdr.proto.origin = tofu.OriginFlag.engine
    msg.bhdr.status = AmpeStatus.channel_closed
    with caplog.at_level("DEBUG", logger="tofu"):
        line = msg.bhdr.dump("got")
    assert line == "got Response chn 5 mid 42 engine more channel_closed"
    assert [r.getMessage() for r in caplog.records] == [line]
    msg.bhdr.proto.op_code = 12  # an invalid op code from a peer still dumps
    assert Message().bhdr.dump() == "Request chn 0 mid 0 application last success"
    assert msg.bhdr.dump().startswith("op_code=12 chn 5")


# ---------------------------------------------------------------- channel numbers


def _table(first: int = tofu.CHANNEL_MIN, last: int = tofu.CHANNEL_MAX) -> ChannelTable:
    pool = Pool(0, 4)
    return ChannelTable(pool.for_frame, pool.put, 0, first, last)


def test_channel_numbers_skip_0_and_65535_and_are_reused_after_close():
    table = _table()
    mailbox = Mailbox(8)
    channels = [table.accept(mailbox) for _ in range(65534)]
    assert {ch.number for ch in channels if ch is not None} == set(range(1, 65535))
    assert table.accept(mailbox) is None  # all in use
    with pytest.raises(tofu.NotAllowed, match="every channel number is in use"):
        table.open(mailbox, OpCode.HelloRequest, 1)
    table.remove(channels[4])
    again = table.accept(mailbox)
    assert again is not None and again.number == 5  # reused after close
    assert table.get(5) is again and table.get(0) is None and table.get(65535) is None


def test_channel_numbers_round_robin_delays_reuse():
    table = _table(1, 10)
    mailbox = Mailbox(8)
    first = table.open(mailbox, OpCode.HelloRequest, 1)
    table.remove(first)
    assert (
        table.open(mailbox, OpCode.HelloRequest, 2).number != first.number
    )  # the freshly closed number comes back last


def test_a_channel_opened_by_a_post_starts_in_its_initial_state():
    table = _table()
    mailbox = Mailbox(8)
    listener = table.open(mailbox, OpCode.WelcomeRequest, 7)
    connection = table.open(mailbox, OpCode.HelloRequest, 8)
    accepted = table.accept(mailbox)
    assert isinstance(listener, Listener) and isinstance(connection, Connection) and accepted is not None
    assert listener.protocol.state == INITIAL_STATE[OpCode.WelcomeRequest] == ChannelState.listener_listening
    assert connection.protocol.state == ChannelState.connector_connecting
    assert accepted.protocol.state == ACCEPTED_STATE == ChannelState.acceptor_awaiting_hello
    assert (listener.protocol.first_mid, connection.protocol.first_mid, accepted.protocol.first_mid) == (7, 8, 0)


def test_destroying_a_group_while_the_engine_stops_wakes_its_receiver():
    rtr = tofu.Reactor()
    ampe = rtr.ampe()
    group = ampe.create()
    release = threading.Event()
    rtr._inbox.call_soon(lambda: release.wait(10))  # hold the I/O thread
    stopper = threading.Thread(target=rtr.destroy)
    stopper.start()
    wait_for(lambda: rtr._inbox.closing, "destroy() to begin")  # the I/O thread cannot stop yet
    ampe.destroy(group)
    release.set()
    stopper.join(10)
    with pytest.raises(tofu.ShutdownStarted):
        group.wait_receive(5)


def test_engine_threads_leave_sigint_to_the_application():
    import signal

    with tofu.Reactor() as rtr:
        group = rtr.ampe().create()
        blocked = []
        rtr._inbox.call_soon(lambda: blocked.append(signal.pthread_sigmask(signal.SIG_BLOCK, set())))
        rtr._inbox.call_soon(lambda: group.update_receiver(None))  # the inbox is first in, first out
        recv(group)
        assert signal.SIGINT in blocked[0] and signal.SIGTERM in blocked[0]


def test_messages_made_elsewhere_do_not_hide_a_later_shortage():
    from tofu.pool import Pool

    pool = Pool(initial=2, maximum=4)
    for _ in range(100):
        pool.put(Message())  # the application's own messages: 2 more kept, the rest dropped uncounted
    assert len(pool) == 4 and pool.in_use() == 0
    out = [pool.get() for _ in range(4)]
    # past the maximum within a few more: the 98 dropped ones are not held against it
    assert any(pool.made_one() for _ in range(4))
    assert len(out) == 4
