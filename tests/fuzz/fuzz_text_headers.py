"""Fuzz target: text headers built from any bytes a peer may send.

The input is the text-header part of a frame (seeded with the headers of the
captured Zig session). Iterating `TextHeaders` and `get` on it are checked.

Invariants:
- only InvalidMessage escapes (a line without a colon, with an empty name or
  an empty value), nothing else;
- iteration yields str pairs, names never contain ':' and values are trimmed
  of spaces and tabs and never empty;
- `get(name)` is the first value of that name when that line comes before
  the first malformed one, the default when the name is nowhere and every
  line is well formed, and InvalidMessage when it has to read past the
  malformed line;
- the bytes are never changed by reading them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import GOLDEN, main

if __name__ == "__main__" and importlib.util.find_spec("atheris"):  # instrument for coverage, not when imported
    import atheris

    with atheris.instrument_imports(include=["tofu"]):
        import tofu
        import tofu.message
else:
    import tofu

from tofu import InvalidMessage, TextHeaders

_ABSENT = "\x00absent"  # a str (compiled code checks get()'s types) no header value can be: it has a NUL


def test_one_input(data: bytes) -> None:
    thdrs = TextHeaders(data)
    pairs: list[tuple[str, str]] = []
    malformed = False
    try:
        for name, value in thdrs:
            assert isinstance(name, str) and isinstance(value, str), (name, value)
            assert name and ":" not in name, name
            assert value and value == value.strip(" \t"), value
            pairs.append((name, value))
    except InvalidMessage:
        malformed = True
    assert bytes(thdrs) == data, "reading changed the headers"

    seen: dict[str, str] = {}
    for name, value in pairs:
        seen.setdefault(name, value)
    for name, value in seen.items():
        assert thdrs.get(name) == value, (name, thdrs.get(name), value)
    probe = "\x00absent\x00"  # a NUL never survives as a whole name here unless the input has it
    if probe not in seen:
        try:
            got = thdrs.get(probe, _ABSENT)
        except InvalidMessage:
            assert malformed, "get raised on well-formed headers"
        else:
            assert not malformed, "get read past a malformed line without raising"
            assert got is _ABSENT, got


def seeds() -> list[bytes]:
    """The text headers of every frame in the captured Zig session, and a few edge lines."""
    found = []
    for path in sorted(GOLDEN.glob("*.bin")):
        for msg in tofu.FrameDecoder().feed(path.read_bytes()):
            if msg.thdrs:
                found.append(bytes(msg.thdrs))
    return [*found, b"a:b\r\n\r\nc: d \t\r\nlast:line", b"\xff\xfe:\x80\r\n", b"no colon\r\n"]


if __name__ == "__main__":
    main(test_one_input, seeds)
