"""The channel state machine of the spec ([machine]): codegen refuses a broken
one, naming the problem, and generated/machine.py says what the spec says.

Each broken spec is a deep copy of the real one with one thing changed;
nothing here writes to spec/ or generated/.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tofu import AmpeStatus, OpCode
from tofu.generated import machine as gm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # codegen/ is a tool in the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from codegen import generator
from codegen.generator import SpecError

SPEC = generator.load_spec(ROOT / "spec" / "tofu.toml")
CONNECTION_ROLES = ("connector", "acceptor")


def build(spec: dict[str, Any]) -> dict[str, Any]:
    return generator.build_context(spec, "test.toml")


def broken(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """A deep copy of the spec, with `change` applied to its [machine]."""
    spec = copy.deepcopy(SPEC)
    change(spec["machine"])
    return spec


def move(machine: dict[str, Any], doc: str, **where: Any) -> dict[str, Any]:
    """The one move whose doc starts with `doc` (and whose other keys match `where`)."""
    found = [m for m in machine["moves"] if m["doc"].startswith(doc) and all(m.get(k) == v for k, v in where.items())]
    assert len(found) == 1, f"{len(found)} moves match {doc!r} {where}"
    return found[0]


def state(machine: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [s for s in machine["states"] if s["name"] == name]
    return found


# ---------------------------------------------------------------- the real spec


def test_the_spec_builds() -> None:
    context = build(copy.deepcopy(SPEC))
    m = context["machine"]
    assert [r["name"] for r in m.roles] == ["listener", "connector", "acceptor"]
    assert {s.key for s in m.states} >= {"connector.connecting", "acceptor.greeted", "listener.listening"}


# ---------------------------------------------------------------- broken specs, each refused by name


def _gap(m: dict[str, Any]) -> None:
    m["moves"].remove(move(m, "the peer says hello: the HelloRequest is delivered"))


def _overlap(m: dict[str, Any]) -> None:
    m["moves"].append(copy.deepcopy(move(m, "accepts the channel", send=["HelloResponse"])))


def _unknown_state_in_move(m: dict[str, Any]) -> None:
    move(m, "accepts the channel", send=["HelloResponse"])["states"] = ["greeted", "limbo"]


def _unknown_target_state(m: dict[str, Any]) -> None:
    move(m, "accepts the channel", send=["HelloResponse"])["to"] = "limbo"


def _unknown_role_in_move(m: dict[str, Any]) -> None:
    move(m, "accepts the channel", send=["HelloResponse"])["roles"] = ["acceptor", "server"]


def _unknown_role_of_state(m: dict[str, Any]) -> None:
    state(m, "greeted")["roles"] = ["acceptor", "server"]


def _unknown_refusal(m: dict[str, Any]) -> None:
    move(m, "nothing was asked of the peer yet", roles=["connector"])["refuse"] = "not_welcome"


def _success_refusal(m: dict[str, Any]) -> None:
    move(m, "nothing was asked of the peer yet", roles=["connector"])["refuse"] = "success"


def _unknown_timer_status(m: dict[str, Any]) -> None:
    m["timers"]["idle_timeout"]["status"] = "bored"


def _unknown_peer_end(m: dict[str, Any]) -> None:
    state(m, "open")["peer_end"] = "peer_vanished"


def _unknown_timer(m: dict[str, Any]) -> None:
    state(m, "open")["timers"] = ["idle_timeout", "lunch_timeout"]


def _unknown_frame_check_status(m: dict[str, Any]) -> None:
    m["frame_checks"][0]["status"] = "too_much_more"


def _unknown_close_status(m: dict[str, Any]) -> None:
    m["closes"][0]["status"] = "bye_bye"


def _unknown_send_op(m: dict[str, Any]) -> None:
    move(m, "accepts the channel", send=["HelloResponse"])["send"] = ["HelloResponse", "HelloAgain"]


def _unknown_receive_op(m: dict[str, Any]) -> None:
    move(m, "the peer says hello: the HelloRequest")["receive"] = ["HelloRequest", "Howdy"]


def _opening_op_as_move(m: dict[str, Any]) -> None:
    move(m, "accepts the channel", send=["HelloResponse"])["send"] = ["HelloResponse", "HelloRequest"]


def _unreachable(m: dict[str, Any]) -> None:
    # a connector state that behaves like bye_sent in every cell, but that no move leads to
    m["states"].append({**copy.deepcopy(state(m, "bye_sent")), "name": "limbo", "roles": ["connector"]})
    for mv in m["moves"]:
        if "bye_sent" in mv["states"] and "connector" in mv["roles"]:
            mv["states"] = [*mv["states"], "limbo"]


def _not_lock_free(m: dict[str, Any]) -> None:
    # after its ByeRequest this side would refuse what the peer sent before reading it
    received = move(m, "the peer sent them before it read the ByeRequest")
    del received["to"]
    received["refuse"] = "not_allowed"


def _listener_receives(m: dict[str, Any]) -> None:
    m["moves"].append(
        {"roles": ["listener"], "states": ["listening"], "receive": ["Signal"], "to": "=", "doc": "a listener hears"}
    )


def _both_directions(m: dict[str, Any]) -> None:
    move(m, "accepts the channel", send=["HelloResponse"])["receive"] = ["HelloResponse"]


def _to_and_refuse(m: dict[str, Any]) -> None:
    move(m, "accepts the channel", send=["HelloResponse"])["refuse"] = "not_allowed"


def _no_doc(m: dict[str, Any]) -> None:
    move(m, "accepts the channel", send=["HelloResponse"])["doc"] = ""


BROKEN = {
    "gap": (_gap, r"no move says what happens for: acceptor\.awaiting_hello receive HelloRequest$"),
    "overlap": (
        _overlap,
        r"move \d+ \('accepts the channel'\) and move 7 both say what acceptor\.greeted does on send HelloResponse",
    ),
    "unknown state in a move": (_unknown_state_in_move, r"names states none of its roles has: \['limbo'\]"),
    "unknown target state": (_unknown_target_state, r"role acceptor has no state limbo"),
    "unknown role in a move": (_unknown_role_in_move, r"names unknown role server"),
    "unknown role of a state": (_unknown_role_of_state, r"state greeted names unknown roles \['server'\]"),
    "unknown refusal status": (_unknown_refusal, r"refuses with 'not_welcome', which is no failure status"),
    "refusal with success": (_success_refusal, r"refuses with 'success', which is no failure status"),
    "unknown timer status": (_unknown_timer_status, r"timer idle_timeout closes with unknown status bored"),
    "unknown peer_end status": (_unknown_peer_end, r"state open: unknown peer_end status peer_vanished"),
    "unknown timer": (_unknown_timer, r"state open runs unknown timer lunch_timeout"),
    "unknown frame check status": (_unknown_frame_check_status, r"frame check with unknown status too_much_more"),
    "unknown close status": (_unknown_close_status, r"close 'a Bye exchange completes' has unknown status bye_bye"),
    "unknown op code sent": (_unknown_send_op, r"HelloAgain is not an op code it can send"),
    "unknown op code received": (_unknown_receive_op, r"Howdy is not an op code it can receive"),
    "an opening op code as a move": (_opening_op_as_move, r"posting HelloRequest opens a new channel"),
    "unreachable state": (_unreachable, r"no move leads to connector\.limbo$"),
    "not lock-free": (
        _not_lock_free,
        (
            r"a lock-free check would be wrong: .*connector\.open receive Request stays, but send ByeRequest"
            r" moves to connector\.bye_sent, which refuses it"
        ),
    ),
    "listener receive move": (_listener_receives, r"a listener receives no frames"),
    "send and receive in one move": (_both_directions, r"needs exactly one of send or receive"),
    "to and refuse in one move": (_to_and_refuse, r"needs exactly one of to or refuse"),
    "a move without a doc": (_no_doc, r"has no doc"),
}


@pytest.mark.parametrize(("change", "message"), BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_machine_is_refused_by_name(change: Callable[[dict[str, Any]], None], message: str) -> None:
    with pytest.raises(SpecError, match=r"^\[machine\]: ") as raised:
        build(broken(change))
    assert raised.match(message), str(raised.value)


def test_the_broken_copies_leave_the_spec_alone() -> None:
    before = copy.deepcopy(SPEC)
    for change, _ in BROKEN.values():
        broken(change)
    assert before == SPEC
    build(copy.deepcopy(SPEC))


# ---------------------------------------------------------------- generated/machine.py follows the spec


def spec_move(role: str, name: str, direction: str, op: str) -> dict[str, Any]:
    """The spec's move for one cell, found in the spec itself (not through codegen)."""
    (found,) = [
        m for m in SPEC["machine"]["moves"] if role in m["roles"] and name in m["states"] and op in m.get(direction, [])
    ]
    return found


def test_hand_picked_cells() -> None:
    request, response = int(OpCode.Request), int(OpCode.ByeResponse)
    # nothing goes out before the peer accepts the channel
    assert gm.SEND[gm.CONNECTOR_CONNECTING][request] == gm.NOT_ALLOWED
    assert gm.refusal(gm.SEND[gm.CONNECTOR_CONNECTING][request]) is AmpeStatus.not_allowed
    # an acceptor accepts the channel by sending to it
    assert gm.SEND[gm.ACCEPTOR_GREETED][request] == gm.ACCEPTOR_OPEN
    assert gm.SEND[gm.ACCEPTOR_GREETED][int(OpCode.HelloResponse)] == gm.ACCEPTOR_OPEN
    # a ByeResponse completes the exchange, on either side
    assert gm.RECEIVE[gm.CONNECTOR_BYE_SENT][response] == gm.CONNECTOR_CLOSED
    assert gm.RECEIVE[gm.ACCEPTOR_BYE_SENT][response] == gm.ACCEPTOR_CLOSED
    # the first frame of an accepted connection is a HelloRequest
    assert gm.RECEIVE[gm.ACCEPTOR_AWAITING_HELLO][int(OpCode.HelloRequest)] == gm.ACCEPTOR_GREETED
    assert gm.RECEIVE[gm.ACCEPTOR_AWAITING_HELLO][request] == gm.NOT_ALLOWED
    # a closed channel refuses posts with channel_closed, but a ByeSignal stays
    assert gm.refusal(gm.SEND[gm.CONNECTOR_CLOSED][request]) is AmpeStatus.channel_closed
    assert gm.SEND[gm.LISTENER_CLOSED][int(OpCode.ByeSignal)] == gm.LISTENER_CLOSED
    # posting a HelloRequest or a WelcomeRequest opens a new channel, whatever the state
    assert {row[int(OpCode.HelloRequest)] for row in gm.SEND} == {gm.OPENS}
    assert gm.INITIAL_STATE[OpCode.HelloRequest] == gm.CONNECTOR_CONNECTING
    assert gm.ACCEPTED_STATE == gm.ACCEPTOR_AWAITING_HELLO


def test_an_invalid_op_code_is_refused_in_every_state_of_a_connection_but_closed() -> None:
    for s in gm.ChannelState:
        if gm.STATE_ROLE[s] not in (gm.ChannelRole.connector, gm.ChannelRole.acceptor):
            continue
        for code in range(len(OpCode), 16):
            cell = gm.RECEIVE[s][code]
            if gm.STATE_TERMINAL[s]:
                assert cell == s, f"{s} receive {code}"
            else:
                assert cell == gm.INVALID_OP_CODE, f"{s} receive {code}"
                assert gm.refusal(cell) is AmpeStatus.invalid_op_code


@pytest.mark.parametrize(
    ("send", "state", "op"),
    [
        (True, gm.CONNECTOR_CONNECTING, OpCode.Request),
        (True, gm.ACCEPTOR_GREETED, OpCode.Request),
        (True, gm.ACCEPTOR_GREETED, OpCode.HelloResponse),
        (True, gm.LISTENER_LISTENING, OpCode.Signal),
        (False, gm.CONNECTOR_BYE_SENT, OpCode.ByeResponse),
        (False, gm.ACCEPTOR_BYE_SENT, OpCode.ByeRequest),
        (False, gm.ACCEPTOR_AWAITING_HELLO, OpCode.HelloRequest),
        (False, gm.CONNECTOR_OPEN, OpCode.WelcomeRequest),
    ],
)
def test_why_is_the_doc_of_the_spec_move(send: bool, state: int, op: OpCode) -> None:
    direction = "send" if send else "receive"
    expected = spec_move(gm.STATE_ROLE[state].name, gm.STATE_NAME[state], direction, op.name)
    assert gm.why(send, state, int(op)) == expected["doc"]
    moves = gm.SEND_MOVE if send else gm.RECEIVE_MOVE
    assert gm.MOVES[moves[state][int(op)]] == (expected["doc"], expected.get("differs", ""))


def test_why_an_invalid_op_code_is_refused() -> None:
    expected = spec_move("connector", "open", "receive", SPEC["machine"]["invalid"])
    assert gm.why(False, gm.CONNECTOR_OPEN, 12) == expected["doc"]


def test_every_state_says_what_a_close_gives_back() -> None:
    for spec_state in SPEC["machine"]["states"]:
        for role in spec_state["roles"]:
            s = gm.ChannelState[f"{role}_{spec_state['name']}"]
            assert gm.STATE_NOTIFY[s] is spec_state["notify"]
            assert gm.STATE_PEER_END[s] is AmpeStatus[spec_state["peer_end"]]
            assert gm.STATE_RETURNS_HELLO[s] is spec_state["returns_hello"]
            assert gm.STATE_TIMERS[s] == sum(gm.ChannelTimer[t] for t in spec_state["timers"])
