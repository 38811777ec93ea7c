"""The channel state machine in the docs: the "Channel states" section of
docs/protocol.md says what generated/machine.py says, cell by cell.

Nothing here writes to spec/ or docs/.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from tofu import AmpeStatus, OpCode
from tofu.generated import machine as gm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # codegen/ is a tool in the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from codegen import generator

SPEC = ROOT / "spec" / "tofu.toml"
PAGE = ROOT / "docs" / "protocol.md"
ROLES = [r["name"] for r in generator.load_spec(SPEC)["machine"]["roles"]]


def state_names(role: str) -> list[str]:
    return [gm.STATE_NAME[s] for s in gm.ChannelState if gm.STATE_ROLE[s].name == role]


# ---------------------------------------------------------------- the tables of docs/protocol.md


def section(page: str, heading: str) -> str:
    """The text under `heading` (a whole line) up to the next heading."""
    start = page.index(f"\n{heading}\n") + len(heading) + 2
    end = page.find("\n#", start)
    return page[start : end if end >= 0 else len(page)]


def column_codes(header: str) -> list[int]:
    """The op codes a table's header cell names: `Request`, `Signal` or 10..15."""
    codes = []
    for part in header.split(", "):
        if re.fullmatch(r"\d+\.\.\d+", part):
            first, last = map(int, part.split(".."))
            codes += range(first, last + 1)
        else:
            codes.append(int(OpCode[part.strip("`")]))
    return codes


def expected_cell(table: tuple[tuple[int, ...], ...], state: int, code: int) -> str:
    """What the page should say of a cell of SEND or RECEIVE, before the note's number."""
    nxt = table[state][code]
    if nxt < 0:
        return f"refused: {AmpeStatus(-nxt).name}"
    return "stays" if nxt == state else f"**{gm.STATE_NAME[nxt]}**"


@pytest.mark.parametrize(("role", "send"), [(r, s) for r in ROLES for s in (True, False) if r != "listener" or s])
def test_each_cell_of_the_page_is_the_generated_table(role: str, send: bool) -> None:
    text = section(PAGE.read_text(encoding="utf-8"), f"#### What the {role} {'sends' if send else 'receives'}")
    lines = text.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[0] == "state"
    columns = [column_codes(h) for h in header[1:]]
    covered = sorted(c for codes in columns for c in codes)
    if send:  # every op code but the ones that open a new channel
        assert covered == sorted(int(op) for op in OpCode if op not in gm.INITIAL_STATE)
    else:
        assert covered == list(range(16))
    notes = dict(re.findall(r"^(\d+)\. (.+)$", text, re.MULTILINE))
    table = gm.SEND if send else gm.RECEIVE
    rows = [line for line in lines[2:] if line.startswith("|")]
    assert [r.split("|")[1].strip().strip("`") for r in rows] == state_names(role)
    states = [s for s in gm.ChannelState if gm.STATE_ROLE[s].name == role]
    for state, row in zip(states, rows, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        for codes, cell in zip(columns, cells, strict=True):
            outcome, number = re.fullmatch(r"(.+) \((\d+)\)", cell).groups()  # type: ignore[union-attr]
            for code in codes:
                where = f"{state.name} {'send' if send else 'receive'} {code}"
                assert outcome == expected_cell(table, state, code), where
                why = gm.why(send, state, code)
                assert notes[number].startswith(why[0].upper() + why[1:]), where


def test_every_difference_from_the_reference_is_on_the_page() -> None:
    machine = generator.load_spec(SPEC)["machine"]
    page = PAGE.read_text(encoding="utf-8")
    entries = [*machine["moves"], *machine["frame_checks"], machine["notice"]]
    differs = {e["differs"] for e in entries if "differs" in e}
    assert len(differs) > 10
    missing = [d for d in differs if f"*Where the reference differs:* {d}." not in page]
    assert missing == []


def test_the_states_tables() -> None:
    page = PAGE.read_text(encoding="utf-8")
    connector = section(page, "#### The connector's states")
    assert (
        "| `connecting` (start) | `connect_timeout`, `idle_timeout` | yes | `connect_failed` | **yes** |" in connector
    )
    acceptor = section(page, "#### The acceptor's states")
    assert (
        "| `awaiting_hello` (start) | `handshake_timeout`, `idle_timeout` | **no** | `accept_failed` | no |" in acceptor
    )
    for role in ROLES:
        text = section(page, f"#### The {role}'s states")
        for s in gm.ChannelState:
            if gm.STATE_ROLE[s].name == role:
                assert f"- `{gm.STATE_NAME[s]}`: {gm.STATE_DOC[s]}." in text


def test_the_rest_of_the_section() -> None:
    page = PAGE.read_text(encoding="utf-8")
    spec = generator.load_spec(SPEC)["machine"]
    checks = section(page, "### Checks on a received frame")
    assert re.findall(r"^\d+\. `(\w+)`", checks, re.MULTILINE) == [c["status"] for c in spec["frame_checks"]]
    timers = section(page, "### Timers")
    for name, timer in spec["timers"].items():
        assert f"| `{name}` | `{timer['status']}` |" in timers
    closes = section(page, "### How a channel closes")
    assert [c["cause"] for c in spec["closes"]] == re.findall(r"^\| ([^|`]+?) \| .+ \| .+ \|$", closes, re.MULTILINE)[
        1:
    ]
    notice = section(page, "#### The `channel_closed` notice")
    assert "Message.is_close_notice()" in notice and "internal bit B" in notice
