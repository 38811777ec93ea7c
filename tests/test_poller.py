"""The I/O loop's poller: epoll where there is one, else a selectors selector,
both reporting what selectors.DefaultSelector would."""

from __future__ import annotations

import select
import socket

import pytest
from tofu.poller import READ, WRITE, _EpollPoller, Poller, _SelectorPoller, make_poller

KINDS = [_SelectorPoller] + ([_EpollPoller] if hasattr(select, "epoll") else [])


@pytest.fixture(params=KINDS, ids=lambda kind: kind.__name__)
def poller(request: pytest.FixtureRequest):
    p = request.param()
    yield p
    p.close()


def test_default_is_epoll_where_linux_has_it() -> None:
    p = make_poller()
    try:
        assert isinstance(p, _EpollPoller if hasattr(select, "epoll") else _SelectorPoller)
    finally:
        p.close()


def test_reports_registered_events_with_their_data(poller: Poller) -> None:
    a, b = socket.socketpair()
    with a, b:
        data = "chan"
        poller.register(a, READ, data)
        assert poller.select(0) == []  # nothing to read, and WRITE was not asked for
        b.send(b"x")
        assert poller.select(1.0) == [(data, READ)]
        poller.modify(a, READ | WRITE)
        assert poller.select(1.0) == [(data, READ | WRITE)]
        poller.modify(a, WRITE)
        assert poller.select(1.0) == [(data, WRITE)]
        poller.unregister(a)
        assert poller.select(0) == []


def test_a_socket_registers_once(poller: Poller) -> None:
    a, b = socket.socketpair()
    with a, b:
        poller.register(a, READ, "data")
        with pytest.raises(KeyError):
            poller.register(a, READ, "data")


def test_a_peer_that_closed_reads_as_ready(poller: Poller) -> None:
    """A hang-up wakes a reader (it then reads the end of the stream), as with selectors."""
    a, b = socket.socketpair()
    with a:
        poller.register(a, READ, "data")
        b.close()
        assert poller.select(1.0) == [("data", READ)]


def test_negative_timeout_does_not_block(poller: Poller) -> None:
    a, b = socket.socketpair()
    with a, b:
        poller.register(a, READ, "data")
        assert poller.select(-1.0) == []
