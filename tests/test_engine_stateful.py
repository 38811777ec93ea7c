"""The engine against the state machine: random sequences of the public API
over real sockets, every outcome predicted from generated/machine.py.

A hypothesis state machine drives two engines (a server engine whose groups
listen, a client engine whose groups connect) with random steps: listen (TCP
or UDS), connect (the server answers the HelloRequest with a HelloResponse,
by sending at once as the reference's print server does, by declining with a
ByeRequest, by rejecting with a ByeSignal, or not yet), abandon a connect,
post any op code a channel may carry (Request, Response and Signal, alone or
as a `more` stream, HelloResponse, ByeRequest, ByeResponse, ByeSignal,
WelcomeResponse) on either side in whatever state it is in, legal or not,
post what the table allows now, crossing ByeRequests, post on a listener,
wait for the frames in flight, update_receiver, destroy a group, destroy the
whole client engine (a new one takes its place). At the end every channel
still open is closed gracefully, by what the table allows each side.

The model holds no rule of the protocol: each side of a channel (and each
listener) is a set of worlds, the ways the engine may have run it so far,
and every world moves only by the generated tables:

- a post moves the poster's world by SEND[state][op]: the post must succeed
  or raise the refusal's error (tofu.raw_to_error(-cell)), InvalidChannelNumber
  once the engine has closed the channel;
- a frame of the peer moves the receiver's world by RECEIVE[state][op] when
  the engine reads it: delivered, or (a refusal) the channel closes with
  that status; a move into the terminal state closes it normally;
- a close happens in two steps, as in the engine (the status is decided,
  then the channel leaves the table; a post in between still succeeds): on
  a move into the terminal state (a normal close), when the peer may have
  closed (the state's STATE_PEER_END; communication_failed where that is
  peer_disconnected and a frame may be cut), on a refusal, or on the
  engine's shutdown (shutdown_started);
- what a close gives back is the state's: a notice where STATE_NOTIFY (the
  state a move into the terminal one left, for a terminal channel), the
  HelloRequest where STATE_RETURNS_HELLO, every returned message with the
  close's status, before the notice.

What the engine does on its own (read a frame, close) races with the
application, so before each observation the model extends the worlds by
every move the engine may have made meanwhile (frames in flight read, or
not yet; a close that may have come), then keeps the worlds that agree with
what the application saw. An observation that no world allows fails the
test. Where nothing races (no frame in flight to that side, its peer cannot
have closed) there is one world and exactly one outcome: a post in the
poster's own state is deterministic; where frames race, exactly the
outcomes the table allows for some interleaving are accepted, no more. No
timer runs (the engines run without connect and handshake timeouts), so
STATE_TIMERS never closes a channel here.

Checked, for every example:
- every post succeeds or fails exactly as the table says; every delivered
  frame is one the table lets through, in the order posted on its channel
  and direction with nothing skipped, with its op code, message id, `more`
  flag and body; every close names the reason the table allows
  (assert_closed: a normal close names none) and gives back what its state
  gives back (the HelloRequest in `connecting`), each returned message with
  the close's status (channel_closed once the notice came: a post that
  crossed the close);
- every message posted is delivered to the peer at most once or comes back
  to its sender at most once, never both (a HelloRequest may do both: the
  engine gives back its copy), and exactly once on a channel that nothing
  aborted (no ByeSignal, no group or engine destroyed, no refusal);
- every channel the application saw ends with exactly one channel_closed
  notice, carrying the channel's first message id, and there is none for a
  channel it never saw;
- every update_receiver call wakes its group exactly once;
- the engine logs no error on the `tofu` logger;
- no thread is left behind once both engines are destroyed.
Every wait is bounded; a hang fails with what it waited for.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import tofu
from engine_support import TIMEOUT, assert_closed
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, MultipleResults, RuleBasedStateMachine, initialize, invariant, multiple, rule
from tofu import AmpeStatus, Message, MoreMessagesFlag, OpCode
from tofu.generated.machine import (
    ACCEPTED_STATE,
    INITIAL_STATE,
    RECEIVE,
    SEND,
    STATE_NAME,
    STATE_NOTIFY,
    STATE_PEER_END,
    STATE_RETURNS_HELLO,
    STATE_ROLE,
    STATE_TERMINAL,
    TERMINAL_OF,
    ChannelRole,
)

_TOKEN = "x-token"  # the header naming each posted message uniquely
_tokens = itertools.count(1)
_mids = itertools.count(1_000_000_000)
# No timer runs: a step may take long on a loaded machine, and the model has no clock.
_CALM = {"connect_timeout": None, "handshake_timeout": None}
# The client engine runs with tiny limits: its pool runs dry (pool_empty warnings)
# and its groups hit the receive bound (the engine stops reading, then resumes).
_TIGHT = tofu.Options(initial_pool_msgs=1, max_pool_msgs=2, max_queued_msgs=4, **_CALM)  # type: ignore[arg-type]
_SERVER = tofu.Options(**_CALM)  # type: ignore[arg-type]

# What the application may post on a channel (the op codes that open a new one aside).
CHANNEL_OPS = [
    OpCode.Request,
    OpCode.Response,
    OpCode.Signal,
    OpCode.HelloResponse,
    OpCode.ByeRequest,
    OpCode.ByeResponse,
    OpCode.ByeSignal,
    OpCode.WelcomeResponse,
]
_REGULAR = (OpCode.Request, OpCode.Response, OpCode.Signal)
# How a server may answer a HelloRequest: accept it, accept it by sending
# (the reference's print server; a Response the connector refuses, having
# asked nothing), decline it gracefully, reject it.
_ANSWERS = [OpCode.HelloResponse, OpCode.Request, OpCode.Signal, OpCode.Response, OpCode.ByeRequest, OpCode.ByeSignal]
_LINK = st.integers(0, 15)  # which link a step acts on (see EngineModel._link)
_MAX_LINKS = 8  # connections per example
_MAX_DESTROYED = 2  # client groups and engines destroyed per example (each is slow)
_CLOSED = AmpeStatus.channel_closed
_PEER_DISCONNECTED = AmpeStatus.peer_disconnected
_CONNECTING = INITIAL_STATE[OpCode.HelloRequest]


class World(NamedTuple):
    """One way the engine may have run a side of a channel so far."""

    state: int  # its state (generated/machine.py)
    live: int  # the last live state it was in: what a close of a terminal channel gives back
    read: int  # frames of the peer the engine read
    delivered: int  # of them, delivered to the application (always the first ones)
    closing: AmpeStatus | None = None  # the close's status, once the engine decided it
    end: AmpeStatus | None = None  # the status it closed with: the channel left the table
    by_peer: bool = False  # the close was the peer ending the stream

    def __str__(self) -> str:
        text = f"{STATE_NAME[self.state]} read={self.read} delivered={self.delivered}"
        if self.end is not None:
            text += f" ended:{self.end.name}"
        elif self.closing is not None:
            text += f" closing:{self.closing.name}"
        return text


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass(eq=False)
class Group:
    """A group the model knows."""

    name: str
    group: tofu.ChannelGroup
    engine: str  # "server" or "client"
    alive: bool = True
    updates_sent: int = 0
    updates_seen: int = 0
    address: object = None  # a listener group's address, for connects


@dataclass(eq=False)
class Side:
    """One side of a channel: a listener, or one end of a connection."""

    name: str
    group: Group
    worlds: set[World]
    channel: int = 0  # 0: the application has not seen it (an accepted connection before its hello)
    first_mid: int = 0  # the message id its channel_closed notice carries
    peer: Side | None = None  # the other end (None for a listener)
    listener: Side | None = None  # the listener that accepts this end (an acceptor)
    link: Link | None = None
    sent: list[OpCode] = field(default_factory=list)  # the frames it posted, in order
    delivered: int = 0  # frames of the peer delivered to the application
    returned: list[AmpeStatus] = field(default_factory=list)  # statuses of what came back before the notice
    hello_back: bool = False  # its HelloRequest came back
    noticed: bool = False  # its channel_closed notice came
    shutdown: bool = False  # its engine is shutting down
    dead: bool = False  # its group or engine is gone: it closed, silently or unobserved
    stopped: bool = False  # a ByeSignal was posted on it (a listener: it no longer counts)
    uds: bool = False  # a listener on a Unix domain socket

    @property
    def role(self) -> ChannelRole:
        return STATE_ROLE[next(iter(self.worlds)).state]

    def __str__(self) -> str:
        return f"{self.name} ch={self.channel}"


@dataclass(eq=False)
class Link:
    """A connection: its connector and acceptor sides."""

    client: Side
    server: Side
    aborted: bool = False  # a ByeSignal, a destroyed group or engine, a refusal: frames may be lost

    def side(self, which: str) -> Side:
        return self.client if which == "client" else self.server


@dataclass(eq=False)
class Posted:
    token: str
    side: Side
    op: OpCode
    mid: int
    more: bool
    size: int
    index: int | None  # its frame's place in side.sent (None: a ByeSignal, which never travels)
    delivered: int = 0
    returned: int = 0


def _outcome_name(outcome: type[tofu.AmpeError] | None) -> str:
    return "success" if outcome is None else outcome.__name__


class EngineModel(RuleBasedStateMachine):
    listeners = Bundle("listeners")

    def __init__(self) -> None:
        super().__init__()
        self.threads_before = set(threading.enumerate())
        self.errors = _Errors()
        logging.getLogger("tofu").addHandler(self.errors)
        self.server_rtr = tofu.Reactor(_SERVER)
        self.client_rtr = tofu.Reactor(_TIGHT)
        self.groups: list[Group] = []
        self.client_groups = [self._group("client") for _ in range(2)]
        self.sides: list[Side] = []
        self.all_links: list[Link] = []
        self.posted: dict[str, Posted] = {}
        self.trace: list[str] = []  # what happened, for a failure's message
        self.destroyed = 0  # client groups and engines destroyed

    def _log(self, text: str) -> None:
        self.trace.append(text)
        del self.trace[:-60]

    def _history(self) -> str:
        return "\n  ".join(["last events:", *self.trace])

    # ------------------------------------------------------------ the worlds

    def _reach(self, side: Side, peer_end: bool = True) -> set[World]:
        """side's worlds, extended by every move its engine may have made on
        its own since the last observation: read the peer's next frame,
        decide a close, finish a decided one. `peer_end`: the peer ending the
        stream counts (left out when asking whether this side may have
        closed, for its peer: a close that the peer's own close caused
        cannot come before it)."""
        frames = side.peer.sent if side.peer is not None else []
        ended = peer_end and self._peer_may_have_ended(side)
        start = side.worlds if ended else {w for w in side.worlds if not w.by_peer}
        seen = set(start)
        todo = list(start)
        while todo:
            for nxt in self._moves(side, todo.pop(), frames, ended):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def _moves(self, side: Side, w: World, frames: list[OpCode], peer_ended: bool) -> Iterator[World]:
        if w.end is not None:
            return
        if w.closing is not None:  # the close finishes: the channel leaves the table
            yield w._replace(state=TERMINAL_OF[w.state], end=w.closing)
            return
        state = w.state
        if w.read < len(frames):  # the engine reads the peer's next frame
            op = frames[w.read]
            if STATE_TERMINAL[state]:
                yield w._replace(read=w.read + 1)  # the channel is over: dropped
            else:
                nxt = RECEIVE[state][op]
                if nxt < 0:  # refused: the channel closes with the refusal's status
                    yield w._replace(read=w.read + 1, closing=AmpeStatus(-nxt))
                elif STATE_TERMINAL[nxt]:  # a Bye exchange completes: delivered, then a normal close
                    yield w._replace(state=nxt, read=w.read + 1, delivered=w.delivered + 1, closing=_CLOSED)
                else:
                    yield w._replace(state=nxt, live=nxt, read=w.read + 1, delivered=w.delivered + 1)
        if STATE_TERMINAL[state]:  # a post ended it (a ByeSignal, the last Bye): the engine closes it
            yield w._replace(closing=_CLOSED)
        if peer_ended:
            status = STATE_PEER_END[state]
            yield w._replace(closing=status, by_peer=True)
            if status is _PEER_DISCONNECTED and w.read < len(frames):  # the stream may end inside a frame
                yield w._replace(closing=AmpeStatus.communication_failed, by_peer=True)
        if side.shutdown:
            yield w._replace(closing=AmpeStatus.shutdown_started)
        if peer_ended and side.peer is not None and side.peer.channel == 0 and w.live == _CONNECTING:
            # Nothing may have accepted the connection (its listener closed
            # first): the connect fails, whatever the application posted
            # meanwhile; a UDS path that the listener removed, as the address.
            yield w._replace(closing=AmpeStatus.connect_failed, by_peer=True)
            listener = side.peer.listener
            if listener is not None and listener.uds:
                yield w._replace(closing=AmpeStatus.uds_path_not_found, by_peer=True)

    def _may_have_closed(self, side: Side) -> bool:
        """side's engine may have closed its socket by now."""
        if side.dead:
            return True
        if side.channel == 0 and side.listener is not None and self._may_have_closed(side.listener):
            return True  # its listener may have closed before it accepted the connection
        return any(w.end is not None for w in self._reach(side, peer_end=False))

    def _peer_may_have_ended(self, side: Side) -> bool:
        return side.peer is not None and self._may_have_closed(side.peer)

    def _describe(self, worlds: set[World]) -> str:
        return "; ".join(sorted(str(w) for w in worlds))

    # ------------------------------------------------------------ posting

    def _post(
        self, side: Side, op: OpCode, more: bool = False, size: int = 0, mid: int | None = None
    ) -> type[tofu.AmpeError] | None:
        """Post `op` on side's channel: the outcome must be one the table
        allows in a world the engine may be in; the worlds that agree are kept.
        Returns the error class raised (None: posted)."""
        assert side.channel and side.group.alive
        token = f"t{next(_tokens)}"
        mid = next(_mids) if mid is None else mid
        msg = Message(op)
        msg.bhdr.channel_number = side.channel
        msg.bhdr.message_id = mid
        if more:
            msg.bhdr.proto.more = MoreMessagesFlag.more
        msg.thdrs.append(_TOKEN, token)
        if size:
            msg.body.append(b"b" * size)
        expected: dict[type[tofu.AmpeError] | None, set[World]] = {}
        before = self._reach(side)
        for w in before:
            if w.end is not None:
                outcome: type[tofu.AmpeError] | None = tofu.InvalidChannelNumber
                after = w
            else:
                cell = SEND[w.state][op]
                if cell < 0:
                    outcome, after = type(tofu.raw_to_error(-cell)), w
                else:
                    outcome, after = None, w._replace(state=cell, live=w.live if STATE_TERMINAL[cell] else cell)
            expected.setdefault(outcome, set()).add(after)
        try:
            side.group.group.post(msg)
            got: type[tofu.AmpeError] | None = None
        except tofu.AmpeError as exc:
            got = type(exc)
        self._log(
            f"{side} posts {op.name}{' more' if more else ''} {token}: {_outcome_name(got)}"
            f"{'' if len(expected) == 1 else ' (raced: ' + ', '.join(map(_outcome_name, expected)) + ')'}"
        )
        assert got in expected, (
            f"{side}: post({op.name}) gave {_outcome_name(got)}; the table allows "
            f"{sorted(map(_outcome_name, expected))} in the worlds {self._describe(self._reach(side))}\n"
            f"{self._history()}"
        )
        states = "/".join(sorted({STATE_NAME[w.state] if w.end is None else "gone" for w in before}))
        event(f"{side.role.name} {states}: post {op.name} -> {_outcome_name(got)}")
        side.worlds = expected[got]
        if got is None:
            index = None
            if op is OpCode.ByeSignal:
                if side.link is not None:
                    side.link.aborted = True
            else:
                index = len(side.sent)
                side.sent.append(op)
            self.posted[token] = Posted(token, side, op, mid, more, size, index)
        return got

    def _post_stream(self, side: Side, op: OpCode, parts: int, size: int) -> None:
        """A Request, Response or Signal, as `parts` messages (all but the last with `more`)."""
        mid = next(_mids)
        for i in range(parts):
            if self._post(side, op, more=i < parts - 1, size=size, mid=mid) is not None:
                return

    def _link(self, pick: int) -> Link:
        """The pick-th of the links with a side still open, as the model
        sees it (else of all): closed ones are tried too, just less often."""
        live = [
            lk
            for lk in self.all_links
            if any(s.channel and not s.dead and not s.noticed for s in (lk.client, lk.server))
        ]
        links = live if live and pick % 4 else self.all_links
        return links[pick % len(links)]

    def _usable(self, side: Side) -> bool:
        return side.group.alive and side.channel != 0

    # ------------------------------------------------------------ receiving

    def _group(self, engine: str) -> Group:
        rtr = self.server_rtr if engine == "server" else self.client_rtr
        g = Group(f"{engine}{len(self.groups)}", rtr.ampe().create(), engine)
        self.groups.append(g)
        return g

    def _side_of(self, g: Group, channel: int) -> Side | None:
        for side in self.sides:
            if side.group is g and side.channel == channel and not side.noticed:
                return side
        return None

    def _handle(self, g: Group, msg: Message) -> None:
        """Account for one received message."""
        bh = msg.bhdr
        op = bh.proto.op_code
        token = msg.thdrs.get(_TOKEN)
        self._log(
            f"{g.name} got {op.name} ch={bh.channel_number} {tofu.raw_to_status(bh.status).name} "
            f"{'engine' if msg.is_from_engine() else 'app'} {token or ''} {msg.thdrs.get(tofu.CLOSE_REASON_HEADER) or ''}"
        )
        if msg.is_from_engine() and bh.status == AmpeStatus.pool_empty:
            return
        if msg.is_from_engine() and bh.status == AmpeStatus.receiver_update:
            g.updates_seen += 1
            assert g.updates_seen <= g.updates_sent, f"{g.name}: a receiver_update nobody sent"
            return
        if msg.is_close_notice():
            self._closed(g, msg)
            return
        assert token is not None and token in self.posted, f"{g.name}: unexpected {msg!r}\n{self._history()}"
        p = self.posted[token]
        assert op == p.op and bh.message_id == p.mid, f"{token}: {op.name} mid {bh.message_id}, posted as {p}"
        if msg.is_from_engine():
            self._came_back(g, msg, p)
        else:
            self._arrived(g, msg, p)

    def _came_back(self, g: Group, msg: Message, p: Posted) -> None:
        side = p.side
        status = tofu.raw_to_status(msg.bhdr.status)
        assert g is side.group and msg.bhdr.channel_number == side.channel, f"{p.token} came back to {g.name}"
        p.returned += 1
        if p.op is OpCode.HelloRequest:
            assert p.returned == 1, f"{p.token}: the HelloRequest came back twice"
            side.hello_back = True
        else:
            assert p.delivered + p.returned == 1, f"{p.token}: delivered {p.delivered}, returned {p.returned} times"
        if side.noticed:  # a post that crossed the close: the engine gives it back when it takes it
            allowed = {_CLOSED} | ({AmpeStatus.shutdown_started} if side.shutdown else set())
            assert status in allowed, f"{p.token} came back after the notice with {status.name}\n{self._history()}"
        else:
            side.returned.append(status)

    def _arrived(self, g: Group, msg: Message, p: Posted) -> None:
        side = p.side.peer
        assert side is not None and g is side.group, f"{p.token} was delivered to {g.name}, not to the peer"
        bh = msg.bhdr
        if p.op is OpCode.HelloRequest:
            assert side.channel == 0, f"{p.token}: a second HelloRequest"
            side.channel, side.first_mid = bh.channel_number, bh.message_id
        assert bh.channel_number == side.channel, f"{p.token} arrived on channel {bh.channel_number}, not {side}"
        assert msg.has_more() == p.more and len(msg.body) == p.size, f"{p.token}: more or body changed"
        assert p.index == side.delivered, (
            f"{side}: frame {p.index} of the peer ({p.token}) delivered after {side.delivered}: out of order or "
            f"one skipped\n{self._history()}"
        )
        worlds = {w for w in self._reach(side) if w.delivered > p.index}
        assert worlds, (
            f"{side}: {p.op.name} ({p.token}) delivered, which no world allows: "
            f"{self._describe(self._reach(side))}\n{self._history()}"
        )
        side.worlds = worlds
        side.delivered += 1
        p.delivered += 1
        if p.op is not OpCode.HelloRequest:
            assert p.delivered + p.returned == 1, f"{p.token}: delivered {p.delivered}, returned {p.returned} times"

    def _closed(self, g: Group, msg: Message) -> None:
        """A channel_closed notice: its channel, its reason and what came back before it."""
        channel = msg.bhdr.channel_number
        side = self._side_of(g, channel)
        assert side is not None, (
            f"{g.name}: channel_closed for channel {channel}, which the application never saw or saw "
            f"closed already\n{self._history()}"
        )
        worlds = {
            w for w in self._reach(side) if w.end is not None and STATE_NOTIFY[w.live] and w.delivered == side.delivered
        }
        assert worlds, (
            f"{side}: a channel_closed notice, which no world allows: {self._describe(self._reach(side))}\n"
            f"{self._history()}"
        )
        reasons = frozenset(None if w.end is _CLOSED else w.end for w in worlds)
        try:
            assert_closed(msg, next(iter(reasons)) if len(reasons) == 1 else reasons, side.channel)
        except AssertionError as exc:
            raise AssertionError(f"{side}: {exc}; worlds {self._describe(worlds)}\n{self._history()}") from None
        assert msg.bhdr.message_id == side.first_mid, f"{side}: the notice carries mid {msg.bhdr.message_id}"
        named = msg.thdrs.get(tofu.CLOSE_REASON_HEADER)
        status = _CLOSED if named is None else AmpeStatus[named]
        worlds = {w for w in worlds if w.end is status}
        assert all(
            s is status for s in side.returned
        ), f"{side}: closed for {status.name}, gave back {[s.name for s in side.returned]}\n{self._history()}"
        hello_back = {STATE_RETURNS_HELLO[w.live] for w in worlds}
        assert (
            side.hello_back in hello_back
        ), f"{side}: HelloRequest back: {side.hello_back}; closed in {self._describe(worlds)}\n{self._history()}"
        side.worlds = {w for w in worlds if STATE_RETURNS_HELLO[w.live] is side.hello_back}
        side.noticed = True
        event(f"{side.role.name} closed: {status.name}{', HelloRequest back' if side.hello_back else ''}")
        self._log(f"NOTICED {side} {id(side)}")
        if status not in (_CLOSED, AmpeStatus.shutdown_started) and side.link is not None:
            side.link.aborted = True  # a refused frame: what followed it is lost; a vanished peer: its frames

    def _drain(self, g: Group) -> None:
        while g.alive:
            msg = g.group.wait_receive(0)
            if msg is None:
                return
            self._handle(g, msg)

    def _drain_all(self) -> None:
        for g in self.groups:
            self._drain(g)

    def _wait_until(
        self, done: Callable[[], bool], groups: Callable[[], list[Group]], what: str | Callable[[], str]
    ) -> None:
        """Receive on `groups()` until `done()`; bounded."""
        deadline = time.monotonic() + TIMEOUT
        while not done():
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"no {what if isinstance(what, str) else what()} within {TIMEOUT:.0f} s\n{self._history()}"
                )
            waiting = [g for g in groups() if g.alive]
            self._drain_all()
            for g in waiting:
                msg = g.group.wait_receive(0.01)
                if msg is not None:
                    self._handle(g, msg)

    def _kill(self, dead: list[Group]) -> None:
        """These groups are gone: their channels closed silently, or were seen closing."""
        for g in dead:
            g.alive = False
        for side in self.sides:
            if side.group in dead:
                side.dead = True
                if side.link is not None:
                    side.link.aborted = True

    # ------------------------------------------------------------ rules

    @initialize(target=listeners, uds=st.booleans())
    def first_link(self, uds: bool) -> Side:
        """Every example starts with a listener and an open connection."""
        listener = self.listen(uds)
        self.connect(listener, 0, OpCode.HelloResponse)
        return listener

    # The limits on the steps below are no preconditions: a precondition makes
    # hypothesis draw again, and an example that runs out of enabled steps is
    # thrown away. They read only what the steps so far decided, never what the
    # engines did meanwhile, so every run of an example draws the same.
    @rule(target=listeners, uds=st.booleans())
    def add_listener(self, uds: bool) -> Side | MultipleResults[Side]:
        if sum(1 for s in self.sides if s.peer is None and s.group.alive and not s.stopped) >= 3:
            return multiple()
        return self.listen(uds)

    def listen(self, uds: bool) -> Side:
        g = self._group("server")
        address = tofu.UDSServerAddress(tofu.temp_uds_path()) if uds else tofu.TCPServerAddress("127.0.0.1", 0)
        header = g.group.post(address.format(Message()))
        resp = g.group.wait_receive(TIMEOUT)
        assert resp is not None, "no WelcomeResponse"
        assert resp.bhdr.proto.op_code == OpCode.WelcomeResponse and resp.bhdr.status == AmpeStatus.success, resp
        value = resp.thdrs.get(tofu.LISTEN_ON_HEADER)
        assert value is not None
        state = INITIAL_STATE[OpCode.WelcomeRequest]
        side = Side(f"{g.name}.listener", g, {World(state, state, 0, 0)}, header.channel_number, header.message_id)
        side.uds = uds
        self.sides.append(side)
        g.address = tofu.parse_address_value(value, server=False)
        self._log(f"{side} listens on {value}")
        return side

    @rule(
        listener=listeners,
        which=st.integers(0, 1),
        answer=st.sampled_from([*_ANSWERS, None]),
    )
    def connect(self, listener: Side, which: int, answer: OpCode | None) -> None:
        """Connect, wait for the HelloRequest on the server, and answer it
        as `answer` says (None: not yet; the generic posts may)."""
        if len(self.all_links) >= _MAX_LINKS:
            return
        link = self._open(listener, which)
        if link.server.group.alive and not link.server.dead:
            server = link.server
            self._wait_until(lambda: server.channel != 0 or server.dead, lambda: [server.group], "HelloRequest")
            if answer is not None and self._usable(server):
                self._answer(server, answer)

    def _open(self, listener: Side, which: int) -> Link:
        """A client group posts a HelloRequest to `listener`'s address."""
        client_group = self.client_groups[which]
        server_group = listener.group
        connecting = INITIAL_STATE[OpCode.HelloRequest]
        client = Side(f"{client_group.name}.c", client_group, {World(connecting, connecting, 0, 0)})
        server = Side(f"{server_group.name}.a", server_group, {World(ACCEPTED_STATE, ACCEPTED_STATE, 0, 0)})
        client.peer, server.peer, server.listener = server, client, listener
        link = Link(client, server)
        client.link = server.link = link
        self.all_links.append(link)
        self.sides += [client, server]
        if not server_group.alive or all(STATE_TERMINAL[w.state] for w in self._reach(listener)):
            # Nothing listens there any more, and a TCP port may have been taken by anyone since.
            client.dead = server.dead = link.aborted = True
            return link
        token = f"t{next(_tokens)}"
        hello = server_group.address.format(Message())  # type: ignore[attr-defined]
        hello.thdrs.append(_TOKEN, token)
        header = client_group.group.post(hello)
        client.channel, client.first_mid = header.channel_number, header.message_id
        client.sent.append(OpCode.HelloRequest)
        self.posted[token] = Posted(token, client, OpCode.HelloRequest, header.message_id, False, 0, 0)
        self._log(f"{client} connects to {listener} {token}")
        return link

    def _answer(self, server: Side, answer: OpCode) -> None:
        if answer is OpCode.HelloResponse:
            self._post(server, answer, mid=self._hello_mid(server))
        else:
            self._post(server, answer, size=10 if answer in _REGULAR else 0)

    def _hello_mid(self, side: Side) -> int | None:
        """The message id of the HelloRequest side's channel began with (a
        HelloResponse answers it), None on the side that sent it."""
        return side.first_mid if side.role is ChannelRole.acceptor else None

    @rule(listener=listeners, which=st.integers(0, 1))
    def abandon_connect(self, listener: Side, which: int) -> None:
        """A HelloRequest, then at once a ByeSignal: the connect is abandoned
        (the HelloRequest comes back); the server may or may not have seen it."""
        if len(self.all_links) >= _MAX_LINKS:
            return
        link = self._open(listener, which)
        if self._usable(link.client) and not link.client.dead:
            self._post(link.client, OpCode.ByeSignal)

    @rule(
        link=_LINK,
        side=st.sampled_from(["client", "server"]),
        op=st.sampled_from(CHANNEL_OPS),
        parts=st.integers(1, 3),
        size=st.sampled_from([0, 10, 3000, 70_000]),
    )
    def post(self, link: int, side: str, op: OpCode, parts: int, size: int) -> None:
        """Any op code in whatever state the side is in: the table says whether it may."""
        ours = self._link(link).side(side)
        if not self._usable(ours):
            return
        if op in _REGULAR:
            self._post_stream(ours, op, parts, min(size, tofu.MAX_BODY_LEN))
        else:
            self._post(ours, op)

    @rule(link=_LINK, side=st.sampled_from(["client", "server"]), op=st.sampled_from([OpCode.Request, OpCode.Signal]))
    def post_small(self, link: int, side: str, op: OpCode) -> None:
        """A single small message: the most common step (hypothesis has no rule weights)."""
        ours = self._link(link).side(side)
        if self._usable(ours):
            self._post(ours, op, size=10)

    @rule(link=_LINK, side=st.sampled_from(["client", "server"]), pick=st.integers(0, 7))
    def legal_post(self, link: int, side: str, pick: int) -> None:
        """What the table lets this side send in every state it may be in now
        (a ByeSignal aside: it has its own rule), so channels move through
        their states as an application would move them."""
        ours = self._link(link).side(side)
        if not self._usable(ours):
            return
        worlds = self._reach(ours)
        if any(w.end is not None for w in worlds):
            return
        legal = [op for op in CHANNEL_OPS if op is not OpCode.ByeSignal and all(SEND[w.state][op] >= 0 for w in worlds)]
        if legal:
            op = legal[pick % len(legal)]
            mid = self._hello_mid(ours) if op is OpCode.HelloResponse else None
            self._post(ours, op, size=10 if op in _REGULAR else 0, mid=mid)

    @rule(link=_LINK)
    def crossing_byes(self, link: int) -> None:
        """Both sides say bye at once."""
        lk = self._link(link)
        if self._usable(lk.client) and self._usable(lk.server):
            self._post(lk.client, OpCode.ByeRequest)
            self._post(lk.server, OpCode.ByeRequest)

    @rule(link=_LINK, side=st.sampled_from(["client", "server"]))
    def bye_signal(self, link: int, side: str) -> None:
        ours = self._link(link).side(side)
        if self._usable(ours):
            self._post(ours, OpCode.ByeSignal)

    @rule(listener=listeners, op=st.sampled_from(CHANNEL_OPS))
    def listener_post(self, listener: Side, op: OpCode) -> None:
        """A listener carries nothing but the ByeSignal that closes it."""
        if self._usable(listener):
            self._post(listener, op, mid=next(_mids))
            listener.stopped |= op is OpCode.ByeSignal

    @rule(link=_LINK)
    def wait_for_frames(self, link: int) -> None:
        """Receive until every frame posted on the link has arrived, or its
        side has closed: the next posts there are deterministic again."""
        lk = self._link(link)
        sides = (lk.client, lk.server)

        def arrived() -> bool:
            return all(s.dead or s.noticed or not s.channel or s.delivered == len(s.peer.sent) for s in sides)  # type: ignore[union-attr]

        self._wait_until(arrived, lambda: [s.group for s in sides], f"frames on {lk.client}")

    @rule(which=st.integers(0, 1), with_message=st.booleans())
    def update_receiver(self, which: int, with_message: bool) -> None:
        g = self.client_groups[which]
        g.updates_sent += 1
        g.group.update_receiver(Message(OpCode.Signal) if with_message else None)

    @rule(which=st.integers(0, 1))
    def destroy_client_group(self, which: int) -> None:
        if self.destroyed >= _MAX_DESTROYED:
            return
        g = self.client_groups[which]
        self._log(f"destroy group {g.name}")
        self.destroyed += 1
        self.client_rtr.ampe().destroy(g.group)
        self._kill([g])
        self.client_groups[which] = self._group("client")

    @rule(listener=listeners)
    def destroy_server_group(self, listener: Side) -> None:
        g = listener.group
        if g.alive:
            self._log(f"destroy group {g.name}")
            self.server_rtr.ampe().destroy(g.group)
            self._kill([g])

    @rule()
    def destroy_client_engine(self) -> None:
        if self.destroyed >= _MAX_DESTROYED:
            return
        self._log("destroy the client engine")
        self.destroyed += 1
        dying = [g for g in self.groups if g.engine == "client" and g.alive]
        for side in self.sides:
            if side.group in dying:
                side.shutdown = True
                if side.link is not None:
                    side.link.aborted = True
        self.client_rtr.destroy()
        for g in dying:
            # What the engine queued before it stopped is still there to read, up to the end.
            while True:
                try:
                    msg = g.group.wait_receive(TIMEOUT)
                except tofu.ShutdownStarted:
                    break
                assert msg is not None, f"{g.name}: no ShutdownStarted within {TIMEOUT} s of destroy()"
                self._handle(g, msg)
            unclosed = [str(s) for s in self.sides if s.group is g and s.channel and not s.noticed]
            assert not unclosed, f"{g.name}: no channel_closed for {unclosed} at destroy()\n{self._history()}"
            assert g.updates_seen == g.updates_sent, f"{g.name}: a receiver_update was lost at destroy()"
        self._kill(dying)
        self.client_rtr = tofu.Reactor(_TIGHT)
        self.client_groups = [self._group("client") for _ in range(2)]

    @invariant()
    def drained(self) -> None:
        self._drain_all()

    # ------------------------------------------------------------ the end

    def teardown(self) -> None:
        try:
            self._settle()
            self._check_accounting()
        finally:
            self.client_rtr.destroy()
            self.server_rtr.destroy()
            logging.getLogger("tofu").removeHandler(self.errors)
        assert not self.errors.records, [r.getMessage() for r in self.errors.records]
        self._check_threads()

    def _settle(self) -> None:
        """Close every channel the application saw, by what the table lets
        each side send towards the end (a ByeResponse, a ByeRequest; a
        listener's ByeSignal) in the one state it is in, once per state, and
        wait for every notice."""
        acted: set[tuple[int, int]] = set()

        def open_sides() -> list[Side]:
            return [s for s in self.sides if s.group.alive and not s.dead and s.channel and not s.noticed]

        def done() -> bool:
            for side in open_sides():
                worlds = self._reach(side)
                states = {w.state for w in worlds}
                if len(states) != 1 or any(w.closing is not None or w.end is not None for w in worlds):
                    continue
                (state,) = states
                if (id(side), state) in acted:
                    continue
                for op in (OpCode.ByeResponse, OpCode.ByeRequest, OpCode.ByeSignal):
                    cell = SEND[state][op]
                    if cell >= 0 and (op is not OpCode.ByeSignal or side.peer is None):
                        acted.add((id(side), state))
                        self._post(side, op)
                        break
            return not open_sides() and all(g.updates_seen == g.updates_sent for g in self.groups if g.alive)

        self._wait_until(
            done,
            lambda: list({s.group: None for s in open_sides()}),
            lambda: f"channel_closed for {[f'{s} {id(s)} {s.noticed}: {self._describe(self._reach(s))}' for s in open_sides()]}",
        )

    def _check_accounting(self) -> None:
        for p in self.posted.values():
            link = p.side.link
            if p.index is None or p.op is OpCode.HelloRequest or link is None:
                continue
            if not link.aborted:
                assert p.delivered + p.returned == 1, (
                    f"{p.token} ({p.op.name} from {p.side}, on a channel nothing aborted) was neither delivered "
                    f"nor returned"
                )

    def _check_threads(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = [t for t in threading.enumerate() if t not in self.threads_before and t.is_alive()]
            if not left:
                return
            assert time.monotonic() < deadline, f"threads left behind: {[t.name for t in left]}"
            left[0].join(0.1)


# CI runs a fixed set of sequences (derandomize). For a longer exploration:
# TOFU_STATEFUL_EXAMPLES=2000 TOFU_STATEFUL_RANDOM=1 pytest tests/test_engine_stateful.py
# (--hypothesis-show-statistics lists each state's posts and outcomes, and the closes, seen).
EngineModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("TOFU_STATEFUL_EXAMPLES", "100")),
    stateful_step_count=25,
    deadline=None,
    derandomize=not os.environ.get("TOFU_STATEFUL_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_engine_against_model = EngineModel.TestCase
