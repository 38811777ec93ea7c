"""The channel state machine as the docs show it: the tables of the "Channel
states" section of docs/protocol.md and the state diagrams (docs/machine-
<role>.dot), shaped from the same Machine the transition table is generated
from (codegen/machine.py), so the page, the pictures and the code agree.

A table has a row per state and a column per op code, each cell the next
state or the refusal, with a number that points to the move's meaning below
the table. Op codes that do the same thing in every state of a role share a
column, so a table stays narrow enough to read.

A diagram has a node per state, with the op codes that keep the state
written in it, and an edge per move to another state, labelled with the
direction and the op codes that make it; a move every state but the
terminal one makes alike (an abort) is one edge from a box around them.
Refusals are in the tables only.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

from codegen.machine import RECEIVE, SEND, Cell, Machine, State

__all__ = ["Diagram", "DocTable", "Edge", "Node", "Note", "RoleDoc", "diagrams", "doc_context"]

# What a close's status says when it is no status name (machine.DERIVED_CLOSE_STATUSES).
CLOSE_STATUS_TEXT = {
    "peer_end": "the state's *peer ends*",
    "refusal": "the refusal's",
    "timer": "the timer's",
}
EDGE_LABEL_WIDTH = 28  # characters per line of a diagram's edge label
NODE_LABEL_WIDTH = 40  # and of the moves written in a node


@dataclass(frozen=True)
class Note:
    """A move's meaning, numbered in the order its table first uses it."""

    number: int
    doc: str
    differs: str


@dataclass(frozen=True)
class DocTable:
    """What one role does in one direction, as docs/protocol.md shows it."""

    direction: str
    columns: list[str]  # Markdown text of each header cell: the op codes the column covers
    rows: list[tuple[State, list[str]]]  # (state, Markdown text of each cell)
    notes: list[Note]


@dataclass(frozen=True)
class RoleDoc:
    name: str
    doc: str
    start: State
    opened_by: str | None  # the op code whose post() opens it, None: a listener accepts it
    states: list[State]
    tables: list[DocTable]  # send, then receive (a listener receives nothing)


def _op_label(machine: Machine, column: str) -> str:
    """An op code column's name as a reader knows it (the invalid ones by their codes)."""
    return f"{len(machine.op_names)}..15" if column == machine.invalid else column


def _note_key(machine: Machine, cell: Cell) -> tuple[str, str]:
    move = machine.moves[cell.move]
    return move["doc"], move.get("differs", "")


def _table(machine: Machine, role: str, direction: str) -> DocTable:
    states = machine.of_role(role)
    grid: list[list[Cell | None]] = machine.send if direction == SEND else [list(r) for r in machine.receive]
    names = machine.columns(direction)
    # Op codes whose cells agree in every state (same outcome, same meaning) share a column.
    groups: dict[tuple[Any, ...], list[int]] = {}
    for col in range(len(names)):
        cells = [grid[s.id][col] for s in states]
        if any(c is None for c in cells):
            continue  # posting it opens a new channel: no move of this one
        outcomes = tuple((c.to, c.refuse, _note_key(machine, c)) for c in cells if c is not None)
        groups.setdefault(outcomes, []).append(col)
    columns = list(groups.values())

    notes: dict[tuple[str, str], Note] = {}
    rows = []
    for s in states:
        texts = []
        for cols in columns:
            cell = grid[s.id][cols[0]]
            assert cell is not None
            key = _note_key(machine, cell)
            note = notes.setdefault(key, Note(len(notes) + 1, *key))
            if cell.refuse is not None:
                outcome = f"refused: {cell.refuse}"
            elif cell.to == s.id:
                outcome = "stays"
            else:
                outcome = f"**{machine.states[cell.to].name}**"  # type: ignore[index]
            texts.append(f"{outcome} ({note.number})")
        rows.append((s, texts))
    headers = [
        ", ".join(_op_label(machine, names[c]) if names[c] == machine.invalid else f"`{names[c]}`" for c in cols)
        for cols in columns
    ]
    return DocTable(direction, headers, rows, list(notes.values()))


def _timer_states(machine: Machine) -> dict[str, list[tuple[list[str], list[str]]]]:
    """Per timer, the states that run it: [(roles, state names), ...], where
    the names are empty for every state of the roles but the terminal one."""
    out: dict[str, list[tuple[list[str], list[str]]]] = {}
    for name in machine.timers:
        runs: list[tuple[list[str], list[str]]] = []
        for role in machine.roles:
            states = machine.of_role(role["name"])
            running = [s.name for s in states if name in s.timers]
            if not running:
                continue
            if running == [s.name for s in states if not s.terminal]:
                running = []
            if runs and not running and not runs[-1][1]:
                runs[-1][0].append(role["name"])  # one more role where it runs in every live state
            else:
                runs.append(([role["name"]], running))
        out[name] = runs
    return out


def doc_context(machine: Machine) -> dict[str, Any]:
    """What protocol.md.j2 needs of the machine, beside the machine itself."""
    roles = []
    for role in machine.roles:
        name = role["name"]
        states = machine.of_role(name)
        opened_by = next((op for op, sid in machine.opens.items() if machine.states[sid].role == name), None)
        start = machine.states[machine.opens[opened_by] if opened_by else machine.accepted]
        if start.role != name:
            raise ValueError(f"role {name} has no initial state")
        directions = [SEND] if name == "listener" else [SEND, RECEIVE]
        tables = [_table(machine, name, d) for d in directions]
        roles.append(RoleDoc(name, role["doc"], start, opened_by, states, tables))
    return {
        "machine_roles": roles,
        "machine_timer_states": _timer_states(machine),
        "machine_terminal": next(s.name for s in machine.states if s.terminal),
        "close_status_text": CLOSE_STATUS_TEXT,
        "machine_send_refusals": sorted({c.refuse for row in machine.send for c in row if c is not None and c.refuse}),
        "diagrams": diagrams(machine),
    }


# ---------------------------------------------------------------- the diagrams


@dataclass(frozen=True)
class Node:
    state: State
    start: bool
    stays: list[tuple[str, list[str]]]  # (direction, label lines): the op codes that keep this state


@dataclass(frozen=True)
class Edge:
    src: State | None  # None: from every state but the terminal one (the diagram's cluster of them)
    dst: State
    direction: str
    lines: list[str]  # the label: the direction, then the op codes that make the move


@dataclass(frozen=True)
class Diagram:
    role: str
    file: str  # under docs/, without the extension: machine-<role>
    start_label: str  # what opens the channel in its initial state
    receives: bool  # False: a listener, which receives no frames
    nodes: list[Node]
    edges: list[Edge]

    @property
    def clustered(self) -> bool:
        """Whether an edge leaves every live state at once (drawn from a cluster of them)."""
        return any(e.src is None for e in self.edges)

    @property
    def live(self) -> list[Node]:
        return [n for n in self.nodes if not n.state.terminal]


def _wrap(first: str, ops: list[str], width: int = EDGE_LABEL_WIDTH) -> list[str]:
    return textwrap.wrap(f"{first} {', '.join(ops)}", width, break_long_words=False, break_on_hyphens=False)


def _ops(machine: Machine, direction: str, cols: list[int]) -> list[str]:
    names = machine.columns(direction)
    if len(cols) == len(names):
        return ["anything"]
    return [_op_label(machine, names[c]) for c in cols]


def _diagram(machine: Machine, role: str) -> Diagram:
    states = machine.of_role(role)
    live = [s for s in states if not s.terminal]
    opened_by = next((op for op, sid in machine.opens.items() if machine.states[sid].role == role), None)
    start = machine.opens[opened_by] if opened_by else machine.accepted
    directions = [SEND] if role == "listener" else [SEND, RECEIVE]

    def row(s: State, direction: str) -> list[Cell | None]:
        return machine.send[s.id] if direction == SEND else list(machine.receive[s.id])

    # A move every live state makes alike (an abort, say) is drawn once, from all of them.
    common: dict[tuple[int, str], list[int]] = {}
    if len(live) > 1:
        for direction in directions:
            for col, first in enumerate(row(live[0], direction)):
                to = first.to if first is not None else None
                if to is None or to in {s.id for s in live}:
                    continue
                if all((c := row(s, direction)[col]) is not None and c.to == to for s in live):
                    common.setdefault((to, direction), []).append(col)

    nodes, edges = [], []
    for s in states:
        stays: list[tuple[str, list[str]]] = []
        moves: dict[tuple[int, str], list[int]] = {}
        for direction in directions:
            kept = [col for col, c in enumerate(row(s, direction)) if c is not None and c.to == s.id]
            if kept:
                stays.append((direction, _wrap(direction, _ops(machine, direction, kept), NODE_LABEL_WIDTH)))
            for col, c in enumerate(row(s, direction)):
                if c is None or c.to is None or c.to == s.id or col in common.get((c.to, direction), ()):
                    continue
                moves.setdefault((c.to, direction), []).append(col)
        nodes.append(Node(s, s.id == start, stays))
        for (to, direction), cols in sorted(moves.items()):
            edges.append(Edge(s, machine.states[to], direction, _wrap(direction, _ops(machine, direction, cols))))
    for (to, direction), cols in sorted(common.items()):
        lines = [*_wrap(direction, _ops(machine, direction, cols)), "(from any state in the box)"]
        edges.append(Edge(None, machine.states[to], direction, lines))
    start_label = f"post {opened_by}" if opened_by else "a listener accepts"
    return Diagram(role, f"machine-{role}", start_label, RECEIVE in directions, nodes, edges)


def diagrams(machine: Machine) -> list[Diagram]:
    """One state diagram per role, in the spec's order of roles."""
    return [_diagram(machine, role["name"]) for role in machine.roles]
