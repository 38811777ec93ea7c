"""The send window (Options.max_unsent_msgs): post() waits while a channel
has that many messages posted and not yet written."""

from __future__ import annotations

import threading

import pytest
import tofu
from engine_support import (
    answer_hello,
    assert_closed,
    TIMEOUT,
    connect,
    io_thread_parked,
    is_closed_signal,
    make,
    plain_listener,
    read_frame,
    recv,
    recv_until,
    tcp_listen,
    wait_for,
)
from tofu import Message, OpCode

WINDOW = 8


class Poster(threading.Thread):
    """Posts `count` Signals on `channel`, counting them; keeps any error."""

    def __init__(self, group: tofu.ChannelGroup, channel: int, count: int) -> None:
        super().__init__(daemon=True)
        self.group, self.channel, self.count = group, channel, count
        self.posted = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(self.count):
                self.group.post(make(OpCode.Signal, self.channel, b"%d" % i))
                self.posted += 1
        except BaseException as exc:  # noqa: BLE001  (checked by the test)
            self.error = exc


@pytest.fixture
def held_client():
    """An engine with a send window, a client connected to a plain socket, and
    a way to hold the I/O thread so that nothing posted gets written (direct
    writes off: a post could write to the idle connection itself)."""
    with (
        tofu.Reactor(tofu.Options(max_unsent_msgs=WINDOW, direct_send=False)) as rtr,
        plain_listener() as (lsock, port),
    ):
        client = rtr.ampe().create()
        header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
        peer = answer_hello(lsock, client, header.channel_number)  # the channel is open
        with peer:
            release = threading.Event()
            rtr._inbox.call_soon(lambda: release.wait(TIMEOUT))  # the I/O thread writes nothing now
            yield rtr, client, header.channel_number, peer, release
            release.set()


def test_post_waits_for_room_in_the_window(held_client):
    _rtr, client, channel, peer, release = held_client
    poster = Poster(client, channel, WINDOW + 1)
    poster.start()
    wait_for(lambda: poster.posted == WINDOW, "the window to fill")
    poster.join(0.2)
    assert poster.is_alive() and poster.posted == WINDOW  # the 9th post waits
    release.set()  # the engine writes, permits come back
    poster.join(TIMEOUT)
    assert not poster.is_alive() and poster.error is None
    got = [bytes(read_frame(peer).body) for _ in range(WINDOW + 1)]
    assert got == [b"%d" % i for i in range(WINDOW + 1)]


def test_a_closing_channel_frees_its_waiting_posts(held_client):
    _rtr, client, channel, _peer, release = held_client
    poster = Poster(client, channel, WINDOW + 1)
    poster.start()
    wait_for(lambda: poster.posted == WINDOW, "the window to fill")
    client.post(make(OpCode.ByeSignal, channel))  # an abort never waits for the window
    release.set()
    poster.join(TIMEOUT)
    # The post that waited goes on, and finds its channel closing: refused,
    # its message still the poster's.
    assert not poster.is_alive() and isinstance(poster.error, tofu.ChannelClosed), poster.error
    assert poster.posted == WINDOW
    # A returned Signal also has status channel_closed: the notice is the
    # engine's own (Message.is_close_notice).
    closed, unsent = recv_until(client, is_closed_signal)
    assert_closed(closed, None, channel)  # the application aborted it: a normal close
    assert [bytes(m.body) for m in unsent] == [b"%d" % i for i in range(WINDOW)]
    assert all(m.is_from_engine() and m.bhdr.status == tofu.AmpeStatus.channel_closed for m in unsent)
    assert not any(m.is_close_notice() for m in unsent)
    assert client.wait_receive(0) is None


def test_shutdown_wakes_a_waiting_post():
    with plain_listener() as (lsock, port):
        rtr = tofu.Reactor(tofu.Options(max_unsent_msgs=WINDOW, direct_send=False))
        client = rtr.ampe().create()
        header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
        peer = answer_hello(lsock, client, header.channel_number)
        with peer:
            release = threading.Event()
            rtr._inbox.call_soon(lambda: release.wait(TIMEOUT))
            poster = Poster(client, header.channel_number, WINDOW + 1)
            poster.start()
            wait_for(lambda: poster.posted == WINDOW, "the window to fill")
            stopper = threading.Thread(target=rtr.destroy)
            stopper.start()
            wait_for(lambda: rtr._inbox.closing, "destroy() to begin")
            release.set()
            poster.join(TIMEOUT)
            stopper.join(TIMEOUT)
            assert not poster.is_alive()
            assert isinstance(poster.error, tofu.ShutdownStarted)
            assert str(poster.error) == "the engine is shutting down"


@pytest.fixture
def window_of_one():
    """An engine whose channels take one unsent message, a client connected
    to a plain socket (direct writes off): (engine, group, channel, peer)."""
    with tofu.Reactor(tofu.Options(max_unsent_msgs=1, direct_send=False)) as rtr, plain_listener() as (lsock, port):
        client = rtr.ampe().create()
        header = client.post(tofu.TCPClientAddress("127.0.0.1", port).format(Message()))
        peer = answer_hello(lsock, client, header.channel_number)
        with peer:
            yield rtr, client, header.channel_number, peer


def test_a_post_on_the_io_thread_never_waits_for_the_window(window_of_one):
    """A post made on the engine's own thread (a delivery hook, say) takes a
    permit without waiting, whatever timeout it asked for: with the window
    full it raises PostTimeout at once (only that thread could free a
    permit). Asked to wait forever here: a wait would never end."""
    rtr, client, channel, peer = window_of_one
    outcome: list[object] = []
    done = threading.Event()

    def on_the_io_thread() -> None:
        try:
            client.post(make(OpCode.Signal, channel, b"first"), timeout=None)  # the one permit
            late = make(OpCode.Signal, channel, b"late")
            try:
                client.post(late, timeout=None)
            except tofu.PostTimeout as exc:
                outcome.append((str(exc), late.is_posted, bytes(late.body)))
        finally:
            done.set()

    rtr._inbox.call_soon(on_the_io_thread)
    assert done.wait(TIMEOUT), "the I/O thread waited for its own window"
    assert outcome == [
        (f"channel {channel}: no room in the send window, and the engine's thread does not wait", False, b"late")
    ]
    assert bytes(read_frame(peer).body) == b"first"


def test_a_refused_post_gives_its_window_permit_back(window_of_one):
    """post() takes the permit before the state machine's check: a refusal
    gives it back, exactly one."""
    rtr, client, channel, peer = window_of_one
    with io_thread_parked(rtr):  # nothing is written, no permit comes back
        for _ in range(2):
            with pytest.raises(tofu.NotAllowed):
                client.post(
                    make(OpCode.HelloResponse, channel, mid=5), timeout=0
                )  # the connector never answers a hello
        client.post(make(OpCode.Signal, channel, b"one"), timeout=0)  # the one permit
        with pytest.raises(tofu.PostTimeout, match=rf"^channel {channel}: no room in the send window within 0 s$"):
            client.post(make(OpCode.Signal, channel, b"two"), timeout=0)
    assert bytes(read_frame(peer).body) == b"one"


def test_no_window_by_default():
    with tofu.Reactor() as rtr:
        client, server = rtr.ampe().create(), rtr.ampe().create()
        _, port = tcp_listen(server)
        cch, _ = connect(client, server, tofu.TCPClientAddress("127.0.0.1", port))
        assert rtr._table._windows == {}
        release = threading.Event()
        rtr._inbox.call_soon(lambda: release.wait(TIMEOUT))
        for i in range(100):  # nothing is written while the I/O thread is held: no wait
            client.post(make(OpCode.Signal, cch, b"%d" % i))
        release.set()
        assert [bytes(recv(server).body) for _ in range(100)] == [b"%d" % i for i in range(100)]
