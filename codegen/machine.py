"""The channel state machine of the spec ([machine]): checked, then expanded
into the full tables every consumer renders (the runtime's transition table,
the protocol reference, the Wireshark dissector's sequence checks).

A move in the spec covers many cells at once (several roles, states and op
codes); here every (state, direction, op code) cell gets exactly one move,
or the spec is refused with a SpecError naming the gap or the overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Cell", "Machine", "MachineError", "State", "build_machine", "table_context"]

SEND, RECEIVE = "send", "receive"
STAY = "="
# A close's status in [[machine.closes]] is a status name, or one of these:
# the status comes from where the channel is (the state's peer_end), from the
# refusal that closed it, or from the timer that expired.
DERIVED_CLOSE_STATUSES = ("peer_end", "refusal", "timer")


class MachineError(ValueError):
    """The [machine] section contradicts itself or the rest of the spec."""


@dataclass(frozen=True)
class State:
    """One state of one role; `id` is its number in the generated tables."""

    id: int
    role: str
    name: str
    doc: str
    timers: tuple[str, ...]
    notify: bool
    peer_end: str
    returns_hello: bool
    terminal: bool

    @property
    def key(self) -> str:
        """"role.name", as the docs write it."""
        return f"{self.role}.{self.name}"

    @property
    def timer_expr(self) -> str:
        """Its timers as a ChannelTimer expression of the generated module."""
        return " | ".join(f"ChannelTimer.{t}" for t in self.timers) or "ChannelTimer(0)"

    @property
    def const(self) -> str:
        """The generated module's constant for this state, e.g. CONNECTOR_OPEN."""
        return f"{self.role}_{self.name}".upper()


@dataclass(frozen=True)
class Cell:
    """What one op code does in one state and direction: a move to `to` (a
    state id), or a refusal with `refuse` (a status name); `move` is the index
    of the spec's move that says so (its doc and differs)."""

    to: int | None
    refuse: str | None
    move: int

    @property
    def refused(self) -> bool:
        return self.refuse is not None


@dataclass
class Machine:
    roles: list[dict[str, Any]]
    states: list[State]
    timers: dict[str, dict[str, Any]]
    moves: list[dict[str, Any]]
    # [state id][op code] -> Cell; send rows have None for the op codes that open a new channel
    send: list[list[Cell | None]] = field(default_factory=list)
    # [state id][column] -> Cell; the last column is the invalid op codes
    receive: list[list[Cell]] = field(default_factory=list)
    opens: dict[str, int] = field(default_factory=dict)  # op name -> initial state id
    accepted: int = 0
    invalid: str = "invalid"
    frame_checks: list[dict[str, Any]] = field(default_factory=list)
    closes: list[dict[str, Any]] = field(default_factory=list)
    notice: dict[str, Any] = field(default_factory=dict)
    doc: str = ""
    doc_of: dict[str, str] = field(default_factory=dict)
    op_names: list[str] = field(default_factory=list)  # by code: the send columns

    @property
    def receive_columns(self) -> list[str]:
        """The receive tables' columns: the op codes, then the invalid ones."""
        return [*self.op_names, self.invalid]

    def columns(self, direction: str) -> list[str]:
        return self.op_names if direction == SEND else self.receive_columns

    def of_role(self, role: str) -> list[State]:
        return [s for s in self.states if s.role == role]

    def terminal_of(self, state: State) -> State:
        """The terminal state of `state`'s role."""
        return next(s for s in self.of_role(state.role) if s.terminal)

    def state(self, role: str, name: str) -> State:
        for s in self.states:
            if s.role == role and s.name == name:
                return s
        raise MachineError(f"role {role} has no state {name}")


def _names(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MachineError(f"{what} must be a name or a list of names, not {value!r}")
    return list(value)


def build_machine(spec: dict[str, Any], op_names: list[str], status_names: list[str]) -> Machine:
    """Check [machine] against `op_names` (by code) and `status_names` (by
    value) and expand it into full tables."""
    m = spec["machine"]
    roles = list(m["roles"])
    role_names = [r["name"] for r in roles]
    timers = {name: dict(t) for name, t in m["timers"].items()}
    for name, t in timers.items():
        if t["status"] not in status_names:
            raise MachineError(f"timer {name} closes with unknown status {t['status']}")
    terminal = m["terminal"]

    states: list[State] = []
    for role in role_names:
        for s in m["states"]:
            if role not in s["roles"]:
                continue
            for t in s["timers"]:
                if t not in timers:
                    raise MachineError(f"state {s['name']} runs unknown timer {t}")
            if s["peer_end"] not in status_names:
                raise MachineError(f"state {s['name']}: unknown peer_end status {s['peer_end']}")
            states.append(
                State(
                    len(states),
                    role,
                    s["name"],
                    s["doc"],
                    tuple(s["timers"]),
                    bool(s["notify"]),
                    s["peer_end"],
                    bool(s["returns_hello"]),
                    s["name"] == terminal,
                )
            )
    for s in m["states"]:
        unknown = sorted(set(s["roles"]) - set(role_names))
        if unknown:
            raise MachineError(f"state {s['name']} names unknown roles {unknown}")
    machine = Machine(roles, states, timers, list(m["moves"]))
    machine.doc = m["doc"]
    machine.doc_of = dict(m["doc_of"])
    machine.invalid = m["invalid"]
    machine.frame_checks = list(m["frame_checks"])
    machine.closes = list(m["closes"])
    machine.notice = dict(m["notice"])
    machine.op_names = list(op_names)
    for check in machine.frame_checks:
        if check["status"] not in status_names:
            raise MachineError(f"frame check with unknown status {check['status']}")
    for close in machine.closes:
        if close["status"] not in status_names and close["status"] not in DERIVED_CLOSE_STATUSES:
            raise MachineError(
                f"close {close['cause']!r} has unknown status {close['status']}"
                f" (a status name, or one of {', '.join(DERIVED_CLOSE_STATUSES)})"
            )
    for role in role_names:
        if not any(s.terminal for s in machine.of_role(role)):
            raise MachineError(f"role {role} has no {terminal} state")

    opening = {}
    for op, state in m["opens"].items():
        if op not in op_names:
            raise MachineError(f"machine.opens names unknown op code {op}")
        owners = [s for s in states if s.name == state]
        if len(owners) != 1:
            raise MachineError(f"machine.opens: state {state} must belong to exactly one role")
        opening[op] = owners[0].id
    machine.opens = opening
    accepted = [s for s in states if s.name == m["accepted"]]
    if len(accepted) != 1:
        raise MachineError(f"machine.accepted: state {m['accepted']} must belong to exactly one role")
    machine.accepted = accepted[0].id

    receive_columns = [*op_names, machine.invalid]
    send_cells: dict[tuple[int, int], Cell] = {}
    receive_cells: dict[tuple[int, int], Cell] = {}
    for index, move in enumerate(machine.moves):
        _expand(machine, index, move, op_names, receive_columns, status_names, send_cells, receive_cells)

    gaps = []
    for s in states:
        row: list[Cell | None] = []
        for code, op in enumerate(op_names):
            if op in opening:
                row.append(None)
            elif (s.id, code) in send_cells:
                row.append(send_cells[(s.id, code)])
            else:
                gaps.append(f"{s.key} send {op}")
        machine.send.append(row)
        if s.role == "listener":  # a listener receives no frames: refused, by no move of the spec
            machine.receive.append([Cell(None, "not_allowed", -1)] * len(receive_columns))
            continue
        cells = []
        for col, op in enumerate(receive_columns):
            if (s.id, col) in receive_cells:
                cells.append(receive_cells[(s.id, col)])
            else:
                gaps.append(f"{s.key} receive {op}")
        machine.receive.append(cells)
    if gaps:
        raise MachineError("no move says what happens for: " + ", ".join(gaps))
    _check_reachable(machine)
    _check_lock_free(machine)
    return machine


def _expand(
    machine: Machine,
    index: int,
    move: dict[str, Any],
    op_names: list[str],
    receive_columns: list[str],
    status_names: list[str],
    send_cells: dict[tuple[int, int], Cell],
    receive_cells: dict[tuple[int, int], Cell],
) -> None:
    where = f"move {index + 1} ({move.get('doc', '')[:40]!r})"
    if not move.get("doc"):
        raise MachineError(f"{where} has no doc")
    if (SEND in move) == (RECEIVE in move):
        raise MachineError(f"{where} needs exactly one of send or receive")
    if ("to" in move) == ("refuse" in move):
        raise MachineError(f"{where} needs exactly one of to or refuse")
    direction = SEND if SEND in move else RECEIVE
    columns = op_names if direction == SEND else receive_columns
    ops = _names(move[direction], f"{where} {direction}")
    for op in ops:
        if op not in columns:
            raise MachineError(f"{where}: {op} is not an op code it can {direction}")
        if direction == SEND and op in machine.opens:
            raise MachineError(f"{where}: posting {op} opens a new channel; it is no move of this one")
    if "refuse" in move and (move["refuse"] not in status_names or move["refuse"] == status_names[0]):
        raise MachineError(f"{where} refuses with {move['refuse']!r}, which is no failure status")
    roles = _names(move["roles"], f"{where} roles")
    names = _names(move["states"], f"{where} states")
    matched = set()
    cells = send_cells if direction == SEND else receive_cells
    for role in roles:
        if role not in [r["name"] for r in machine.roles]:
            raise MachineError(f"{where} names unknown role {role}")
        if role == "listener" and direction == RECEIVE:
            raise MachineError(f"{where}: a listener receives no frames")
        for s in machine.of_role(role):
            if s.name not in names:
                continue
            matched.add(s.name)
            if "to" in move:
                to = s.id if move["to"] == STAY else machine.state(role, move["to"]).id
                cell = Cell(to, None, index)
            else:
                cell = Cell(None, move["refuse"], index)
            for op in ops:
                key = (s.id, columns.index(op))
                if key in cells:
                    raise MachineError(
                        f"{where} and move {cells[key].move + 1} both say what {s.key} does on {direction} {op}"
                    )
                cells[key] = cell
    unmatched = sorted(set(names) - matched)
    if unmatched:
        raise MachineError(f"{where} names states none of its roles has: {unmatched}")


def _check_reachable(machine: Machine) -> None:
    starts = {*machine.opens.values(), machine.accepted}
    seen = set(starts)
    todo = list(starts)
    while todo:
        sid = todo.pop()
        for cell in [*machine.send[sid], *machine.receive[sid]]:
            if cell is not None and cell.to is not None and cell.to not in seen:
                seen.add(cell.to)
                todo.append(cell.to)
    lost = [s.key for s in machine.states if s.id not in seen]
    if lost:
        raise MachineError(f"no move leads to {', '.join(lost)}")


def _check_lock_free(machine: Machine) -> None:
    """What the runtime relies on to check the common frame without a lock:
    a state that keeps a frame (a move to itself) in one direction, left by a
    move in the other direction, keeps accepting that frame in the state it
    moves to (unless that state is the terminal one, where everything ends).
    So a post checked just before the I/O thread moves the state (or a frame
    read just before a post moves it) is still right afterwards."""
    problems = []
    for s in machine.states:
        for mine, theirs, what, other in (
            (machine.send, machine.receive, SEND, RECEIVE),
            (machine.receive, machine.send, RECEIVE, SEND),
        ):
            stays = [col for col, cell in enumerate(mine[s.id]) if cell is not None and cell.to == s.id]
            for by, cell in enumerate(theirs[s.id]):
                if cell is None or cell.to is None or cell.to == s.id or machine.states[cell.to].terminal:
                    continue
                for col in stays:
                    after = mine[cell.to][col]
                    if after is None or after.refused:
                        problems.append(
                            f"{s.key} {what} {machine.columns(what)[col]} stays, but {other}"
                            f" {machine.columns(other)[by]} moves to {machine.states[cell.to].key}, which refuses it"
                        )
    if problems:
        raise MachineError("a lock-free check would be wrong: " + "; ".join(sorted(set(problems))))


def _widths(names: list[str], cells: list[list[str]]) -> list[int]:
    return [max(len(names[i]), *(len(row[i]) for row in cells)) + 1 for i in range(len(names))]


def _rows(names: list[str], cells: list[list[str]], labels: list[str], lua: bool = False) -> list[str]:
    """Rows with aligned columns (see _header), each commented with its label:
    Python tuples, or Lua tables indexed from 0 (`[LABEL] = {[0] = a, b, ...},`)."""
    widths = _widths(names, cells)
    label_width = max(map(len, labels)) + 2
    out = []
    for row, label in zip(cells, labels, strict=True):
        items = [f"{c},".ljust(w) for c, w in zip(row[:-1], widths, strict=False)] + [row[-1]]
        if lua:
            out.append(f"[{label}]".ljust(label_width) + " = {[0] = " + " ".join(items) + "},")
        else:
            out.append("(" + " ".join(items) + f"),  # {label}")
    return out


def _header(names: list[str], cells: list[list[str]], labels: list[str] | None = None) -> str:
    """A comment naming the columns of the rows _rows makes (given the labels:
    of its Lua rows)."""
    widths = _widths(names, cells)
    columns = " ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip()
    if labels is None:
        return "#    " + columns
    return "-- " + " " * (max(map(len, labels)) + 2 + len(" = {[0] = ") - len("-- ")) + columns


def table_context(machine: Machine, op_names: list[str], status_values: dict[str, int]) -> dict[str, Any]:
    """What the templates need of the machine: the machine itself, and its
    tables as aligned Python rows (generated/machine.py) and Lua rows
    (generated/tofu.lua)."""
    rows: list[Sequence[Cell | None]] = [*machine.send, *machine.receive]
    refused = sorted(
        {c.refuse for row in rows for c in row if c is not None and c.refuse},
        key=lambda name: status_values[name],
    )
    refusals = [{"name": n, "value": status_values[n], "const": n.upper()} for n in refused]

    def value(cell: Cell | None) -> str:
        if cell is None:
            return "OPENS"
        if cell.refuse is not None:
            return cell.refuse.upper()
        return machine.states[cell.to].const  # type: ignore[index]

    invalid_count = 16 - len(op_names)  # the op code field has 4 bits
    send = [[value(c) for c in row] for row in machine.send]
    receive = [[value(c) for c in row[:-1]] + [value(row[-1])] * invalid_count for row in machine.receive]
    send_moves = [[str(c.move) if c is not None else "-1" for c in row] for row in machine.send]
    receive_moves = [[str(c.move) for c in row[:-1]] + [str(row[-1].move)] * invalid_count for row in machine.receive]
    labels = [s.const for s in machine.states]
    receive_names = [*op_names, *(str(code) for code in range(len(op_names), 16))]
    return {
        "machine": machine,
        "refusals": refusals,
        "num_ops": len(op_names),
        "send_rows": _rows(op_names, send, labels),
        "receive_rows": _rows(receive_names, receive, labels),
        "send_move_rows": _rows(op_names, send_moves, labels),
        "receive_move_rows": _rows(receive_names, receive_moves, labels),
        "send_header": _header(op_names, send),
        "receive_header": _header(receive_names, receive),
        # the same tables as Lua (the Wireshark dissector's sequence checks)
        "lua_send_rows": _rows(op_names, send, labels, lua=True),
        "lua_receive_rows": _rows(receive_names, receive, labels, lua=True),
        "lua_send_move_rows": _rows(op_names, send_moves, labels, lua=True),
        "lua_receive_move_rows": _rows(receive_names, receive_moves, labels, lua=True),
        "lua_send_header": _header(op_names, send, labels),
        "lua_receive_header": _header(receive_names, receive, labels),
    }
