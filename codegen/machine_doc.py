"""The channel state machine as the docs show it: the tables of the "Channel
states" section of docs/protocol.md, shaped from the same Machine the
transition table is generated from (codegen/machine.py), so the page and the
code agree.

A table has a row per state and a column per op code, each cell the next
state or the refusal, with a number that points to the move's meaning below
the table. Op codes that do the same thing in every state of a role share a
column, so a table stays narrow enough to read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from codegen.machine import RECEIVE, SEND, Cell, Machine, State

__all__ = ["DocTable", "Note", "RoleDoc", "doc_context"]

# What a close's status says when it is no status name (machine.DERIVED_CLOSE_STATUSES).
CLOSE_STATUS_TEXT = {
    "peer_end": "the state's *peer ends*",
    "refusal": "the refusal's",
    "timer": "the timer's",
}


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
    }
