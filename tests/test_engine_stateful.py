"""The engine against a model: random sequences of the public API over real sockets.

A hypothesis state machine drives two engines (a server engine whose groups
listen, a client engine whose groups connect) with random steps: listen (TCP
or UDS), connect, post Request / Response / Signal (alone or as a `more`
stream) either way, ByeRequest, ByeSignal, update_receiver, destroying a
group, and destroying the whole client engine (a new one takes its place).
After every step each live group is drained without waiting; the model plays
the application: it answers a HelloRequest with a HelloResponse and a
ByeRequest with a ByeResponse. At the end every channel still open is closed
gracefully and the groups are drained until every channel has closed.

Checked, for every example:
- every message posted is delivered to the peer's application at most once,
  or comes back to its own group with the engine's origin and a failure status
  at most once, never both; it is delivered or returned exactly once unless
  its channel was aborted (ByeSignal, a group or an engine destroyed) or it
  was posted after a close began (then it may be lost in flight);
- messages arrive in the order they were posted on each channel and direction,
  with their message id and `more` flag;
- every channel of a live group ends with exactly one `channel_closed`, and
  there is none for a channel that was not open;
- every update_receiver call wakes its group exactly once;
- the engine logs no error on the `tofu` logger;
- no thread is left behind once both engines are destroyed.
Every wait is bounded; a hang fails with the channel it waited for.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import tofu
from engine_support import TIMEOUT
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, precondition, rule
from tofu import AmpeStatus, Message, MoreMessagesFlag, OpCode

_TOKEN = "x-token"  # the header naming each posted message uniquely
_tokens = itertools.count(1)
_mids = itertools.count(1_000_000_000)
# The client engine runs with tiny limits: its pool runs dry (pool_empty warnings)
# and its groups hit the receive bound (the engine stops reading, then resumes).
_TIGHT = tofu.Options(initial_pool_msgs=1, max_pool_msgs=2, max_queued_msgs=4)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass(eq=False)
class Group:
    """A group the model knows, with everything received on it."""

    name: str
    group: tofu.ChannelGroup
    engine: str  # "server" or "client"
    generation: int  # which client engine it belongs to
    alive: bool = True
    open_channels: set[int] = field(default_factory=set)  # IO channels not yet closed
    listeners: set[int] = field(default_factory=set)
    updates_sent: int = 0
    updates_seen: int = 0


@dataclass(eq=False)
class Link:
    """A connection: the client's channel and the server's channel."""

    client: Group
    cch: int
    server: Group
    sch: int
    closing: bool = False  # a Bye was posted or a group or engine went away
    aborted: bool = False  # ByeSignal, or a group or engine destroyed: frames in flight may be lost

    def end(self, side: str) -> tuple[Group, int, Group, int]:
        """(our group, our channel, peer group, peer channel) seen from `side`."""
        if side == "client":
            return self.client, self.cch, self.server, self.sch
        return self.server, self.sch, self.client, self.cch


@dataclass(eq=False)
class Posted:
    token: str
    link: Link
    side: str
    mid: int
    more: bool
    exact: bool  # must be delivered or returned exactly once
    delivered: int = 0
    returned: int = 0


class EngineModel(RuleBasedStateMachine):
    listeners = Bundle("listeners")
    links = Bundle("links")

    def __init__(self) -> None:
        super().__init__()
        self.threads_before = set(threading.enumerate())
        self.errors = _Errors()
        logging.getLogger("tofu").addHandler(self.errors)
        self.server_rtr = tofu.Reactor()
        self.client_rtr = tofu.Reactor(_TIGHT)
        self.generation = 0
        self.groups: list[Group] = []
        self.client_groups = [self._group("client") for _ in range(2)]
        self.all_links: list[Link] = []
        self.posted: dict[str, Posted] = {}
        self.order: dict[tuple[int, str], list[str]] = {}  # (link id, from side) -> tokens delivered
        self.trace: list[str] = []  # what happened, for a failure's message

    def _log(self, text: str) -> None:
        self.trace.append(text)
        del self.trace[:-40]

    def _history(self) -> str:
        return "\n  ".join(["last events:", *self.trace])

    # ------------------------------------------------------------ helpers

    def _group(self, engine: str) -> Group:
        rtr = self.server_rtr if engine == "server" else self.client_rtr
        g = Group(f"{engine}{len(self.groups)}", rtr.ampe().create(), engine, self.generation)
        self.groups.append(g)
        return g

    def _link_of(self, group: Group, channel: int) -> tuple[Link, str] | None:
        for link in self.all_links:
            if link.client is group and link.cch == channel and link.cch in group.open_channels:
                return link, "client"
            if link.server is group and link.sch == channel and link.sch in group.open_channels:
                return link, "server"
        return None

    def _handle(self, g: Group, msg: Message) -> Message | None:
        """Account for one received message; return it if the caller is waiting for its kind."""
        bh = msg.bhdr
        op = bh.proto.op_code
        self._log(
            f"{g.name} got {op.name} ch={bh.channel_number} {tofu.raw_to_status(bh.status).name} "
            f"{'engine' if msg.is_from_engine() else 'app'} {msg.thdrs.get(_TOKEN)}"
        )
        if msg.is_from_engine() and bh.status == AmpeStatus.pool_empty:
            return None
        if msg.is_from_engine() and bh.status == AmpeStatus.receiver_update:
            g.updates_seen += 1
            assert g.updates_seen <= g.updates_sent, f"{g.name}: a receiver_update nobody sent"
            return None
        # A posted Signal that comes back on a close looks like the engine's
        # channel_closed Signal (same op, origin and status): the token tells them apart.
        token = msg.thdrs.get(_TOKEN)
        if token is not None and token in self.posted:
            p = self.posted[token]
            if msg.is_from_engine():
                assert bh.status != AmpeStatus.success, f"{token} came back with status success"
                ours = p.link.end(p.side)[0]
                assert g is ours, f"{token} came back to {g.name}, not to its sender {ours.name}"
                p.returned += 1
            else:
                peer = p.link.end(p.side)[2]
                assert g is peer, f"{token} was delivered to {g.name}, not to the peer {peer.name}"
                assert bh.channel_number == p.link.end(p.side)[3], f"{token} arrived on the wrong channel"
                assert bh.message_id == p.mid and msg.has_more() == p.more, f"{token}: mid or more changed"
                p.delivered += 1
                self.order.setdefault((id(p.link), p.side), []).append(token)
            assert p.delivered + p.returned == 1, (
                f"{token} delivered {p.delivered} and returned {p.returned} times: exactly once expected"
            )
            return None
        if msg.is_from_engine() and op == OpCode.Signal and bh.status == AmpeStatus.channel_closed:
            assert bh.channel_number in g.open_channels, (
                f"{g.name}: channel_closed for channel {bh.channel_number}, which is not open "
                f"(open: {sorted(g.open_channels)}, listeners: {sorted(g.listeners)})\n{self._history()}"
            )
            found = self._link_of(g, bh.channel_number)
            g.open_channels.discard(bh.channel_number)
            if found is not None:
                found[0].closing = True
            return None
        if op == OpCode.HelloRequest and msg.is_from_application():
            g.open_channels.add(bh.channel_number)
            return msg
        if op == OpCode.HelloResponse:
            return msg
        if op == OpCode.ByeRequest and msg.is_from_application():
            found = self._link_of(g, bh.channel_number)
            if found is not None:
                found[0].closing = True
            msg.bhdr.proto.op_code = OpCode.ByeResponse
            self._log(f"{g.name} posts ByeResponse ch={bh.channel_number}")
            try:
                g.group.post(msg)
            except tofu.AmpeError:
                pass  # the channel closed meanwhile (an abort from the other side)
            return None
        if op in (OpCode.ByeResponse, OpCode.ByeRequest, OpCode.ByeSignal):
            return None  # the answer to our ByeRequest, or our own Bye returned with a status
        raise AssertionError(f"{g.name}: unexpected {msg!r}")

    def _drain(self, g: Group) -> None:
        while g.alive:
            msg = g.group.wait_receive(0)
            if msg is None:
                return
            self._handle(g, msg)

    def _drain_all(self) -> None:
        for g in self.groups:
            self._drain(g)

    def _await(self, g: Group, op: OpCode, what: str) -> Message:
        """The next `op` on `g`, accounting for everything before it; bounded."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"{g.name}: no {what} within {TIMEOUT} s"
            msg = g.group.wait_receive(left)
            assert msg is not None, f"{g.name}: no {what} within {TIMEOUT} s"
            got = self._handle(g, msg)
            if got is not None:
                assert got.bhdr.proto.op_code == op, f"{g.name}: waiting for {what}, got {got!r}"
                return got

    def _abort_links_of(self, dead: list[Group]) -> None:
        for link in self.all_links:
            if link.client in dead or link.server in dead:
                link.closing = link.aborted = True
        for g in dead:
            g.alive = False

    # ------------------------------------------------------------ rules

    @initialize(target=links, uds=st.booleans())
    def first_link(self, uds: bool) -> Link:
        """Every example starts with a listener and a connection, so posts have somewhere to go."""
        return self.connect(self.listen(uds), 0)

    @precondition(lambda self: sum(len(g.listeners) for g in self.groups if g.alive) < 3)
    @rule(target=listeners, uds=st.booleans())
    def listen(self, uds: bool) -> Group:
        g = self._group("server")
        address = tofu.UDSServerAddress(tofu.temp_uds_path()) if uds else tofu.TCPServerAddress("127.0.0.1", 0)
        header = g.group.post(address.format(Message()))
        resp = g.group.wait_receive(TIMEOUT)
        assert resp is not None, "no WelcomeResponse"
        assert resp.bhdr.proto.op_code == OpCode.WelcomeResponse and resp.bhdr.status == AmpeStatus.success, resp
        value = resp.thdrs.get(tofu.LISTEN_ON_HEADER)
        assert value is not None
        g.listeners.add(header.channel_number)
        self._log(f"{g.name} listens ch={header.channel_number} {value}")
        g.address = tofu.parse_address_value(value, server=False)  # type: ignore[attr-defined]
        return g

    @precondition(lambda self: sum(1 for lk in self.all_links if not lk.closing) < 6)
    @rule(target=links, server=listeners, which=st.integers(0, 1))
    def connect(self, server: Group, which: int) -> Link:
        client = self.client_groups[which]
        if not server.alive:
            return self._dead_link(client, server)
        hello = client.group.post(server.address.format(Message()))  # type: ignore[attr-defined]
        client.open_channels.add(hello.channel_number)
        req = self._await(server, OpCode.HelloRequest, "HelloRequest")
        sch = req.bhdr.channel_number
        req.bhdr.proto.op_code = OpCode.HelloResponse
        server.group.post(req)
        resp = self._await(client, OpCode.HelloResponse, "HelloResponse")
        assert resp.bhdr.channel_number == hello.channel_number
        link = Link(client, hello.channel_number, server, sch)
        self._log(f"{client.name} ch={link.cch} connected to {server.name} ch={sch}")
        self.all_links.append(link)
        return link

    def _dead_link(self, client: Group, server: Group) -> Link:
        link = Link(client, 0, server, 0, closing=True, aborted=True)
        self.all_links.append(link)
        return link

    @rule(
        link=links,
        side=st.sampled_from(["client", "server"]),
        op=st.sampled_from([OpCode.Request, OpCode.Response, OpCode.Signal]),
        parts=st.integers(1, 3),
        size=st.sampled_from([0, 10, 3000, 70_000]),
    )
    def post(self, link: Link, side: str, op: OpCode, parts: int, size: int) -> None:
        ours, channel, _, _ = link.end(side)
        if not ours.alive or channel == 0:
            return
        mid = next(_mids)
        body = b"b" * min(size, tofu.MAX_BODY_LEN)
        for i in range(parts):
            token = f"t{next(_tokens)}"
            msg = Message(op)
            msg.bhdr.channel_number = channel
            msg.bhdr.message_id = mid
            more = i < parts - 1
            if more:
                msg.bhdr.proto.more = MoreMessagesFlag.more
            msg.thdrs.append(_TOKEN, token)
            msg.body.append(body)
            self._log(f"{ours.name} posts {op.name} ch={channel} {token} more={more}")
            try:
                ours.group.post(msg)
            except tofu.InvalidChannelNumber:
                assert link.closing or channel not in ours.open_channels, f"{ours.name}: post refused on a live channel"
                return
            self.posted[token] = Posted(token, link, side, mid, more, exact=not link.closing)

    @rule(link=links, side=st.sampled_from(["client", "server"]), op=st.sampled_from([OpCode.Request, OpCode.Signal]))
    def post_small(self, link: Link, side: str, op: OpCode) -> None:
        """A single small message: the most common step (hypothesis has no rule weights)."""
        self.post(link, side, op, 1, 10)

    @rule(link=links, side=st.sampled_from(["client", "server"]))
    def bye_request(self, link: Link, side: str) -> None:
        ours, channel, _, _ = link.end(side)
        if not ours.alive or channel == 0 or link.closing:
            return
        link.closing = True
        self._log(f"{ours.name} posts ByeRequest ch={channel}")
        try:
            ours.group.post(self._on(OpCode.ByeRequest, channel))
        except tofu.InvalidChannelNumber:
            pass  # it closed on its own meanwhile

    @rule(link=consumes(links), side=st.sampled_from(["client", "server"]))
    def bye_signal(self, link: Link, side: str) -> None:
        ours, channel, _, _ = link.end(side)
        if not ours.alive or channel == 0 or channel not in ours.open_channels:
            return
        link.closing = link.aborted = True
        self._log(f"{ours.name} posts ByeSignal ch={channel}")
        try:
            ours.group.post(self._on(OpCode.ByeSignal, channel))
        except tofu.InvalidChannelNumber:
            pass  # it closed on its own meanwhile (the peer's Bye)

    @rule(which=st.integers(0, 1), with_message=st.booleans())
    def update_receiver(self, which: int, with_message: bool) -> None:
        g = self.client_groups[which]
        g.updates_sent += 1
        g.group.update_receiver(Message(OpCode.Signal) if with_message else None)

    @rule(which=st.integers(0, 1))
    def destroy_client_group(self, which: int) -> None:
        g = self.client_groups[which]
        self._log(f"destroy group {g.name}")
        self.client_rtr.ampe().destroy(g.group)
        self._abort_links_of([g])
        self.client_groups[which] = self._group("client")

    @rule(server=consumes(listeners))
    def destroy_server_group(self, server: Group) -> None:
        if server.alive:
            self._log(f"destroy group {server.name}")
            self.server_rtr.ampe().destroy(server.group)
            self._abort_links_of([server])

    @rule()
    def destroy_client_engine(self) -> None:
        self._log("destroy the client engine")
        self.client_rtr.destroy()
        dying = [g for g in self.groups if g.engine == "client" and g.alive]
        for g in dying:
            # What the engine queued before it stopped is still there to read, up to the end.
            while True:
                try:
                    msg = g.group.wait_receive(TIMEOUT)
                except tofu.ShutdownStarted:
                    break
                assert msg is not None, f"{g.name}: no ShutdownStarted within {TIMEOUT} s of destroy()"
                self._handle(g, msg)
            assert not g.open_channels, f"{g.name}: no channel_closed for {sorted(g.open_channels)} at destroy()"
            assert g.updates_seen == g.updates_sent, f"{g.name}: a receiver_update was lost at destroy()"
        self._abort_links_of(dying)
        self.generation += 1
        self.client_rtr = tofu.Reactor(_TIGHT)
        self.client_groups = [self._group("client") for _ in range(2)]

    def _on(self, op: OpCode, channel: int) -> Message:
        msg = Message(op)
        msg.bhdr.channel_number = channel
        return msg

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
        """Close every channel still open, gracefully, and wait until all have closed."""
        for link in self.all_links:
            if not link.closing and link.client.alive and link.cch in link.client.open_channels:
                link.closing = True
                self._log(f"{link.client.name} posts ByeRequest ch={link.cch} (settle)")
                try:
                    link.client.group.post(self._on(OpCode.ByeRequest, link.cch))
                except tofu.InvalidChannelNumber:
                    pass  # the server side closed it meanwhile
        deadline = time.monotonic() + TIMEOUT
        while True:
            waiting = [g for g in self.groups if g.alive and (g.open_channels or g.updates_seen < g.updates_sent)]
            if not waiting:
                return
            still_open = {g.name: sorted(g.open_channels) for g in waiting}
            assert time.monotonic() < deadline, f"no channel_closed within {TIMEOUT:.0f} s for {still_open}"
            for g in waiting:
                msg = g.group.wait_receive(0.05)
                if msg is not None:
                    self._handle(g, msg)

    def _check_accounting(self) -> None:
        for p in self.posted.values():
            sender, _, peer, _ = p.link.end(p.side)
            assert p.delivered + p.returned <= 1, p
            observable = sender.alive and peer.alive  # a destroyed group's messages cannot be seen
            if p.exact and not p.link.aborted and observable:
                assert p.delivered + p.returned == 1, (
                    f"{p.token} ({p.side} of a gracefully closed channel) was neither delivered nor returned"
                )
        for (link_id, side), tokens in self.order.items():
            posted_order = [
                t for t in self.posted if id(self.posted[t].link) == link_id and self.posted[t].side == side
            ]
            delivered_rank = [posted_order.index(t) for t in tokens]
            assert delivered_rank == sorted(delivered_rank), f"out of order from the {side}: {tokens}"

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
EngineModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("TOFU_STATEFUL_EXAMPLES", "100")),
    stateful_step_count=25,
    deadline=None,
    derandomize=not os.environ.get("TOFU_STATEFUL_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_engine_against_model = EngineModel.TestCase
