"""Fuzz target: tofu.FrameDecoder over any byte stream, cut anywhere.

The input is the stream itself (the captured Zig session in tests/data/golden
is the seed). It is decoded three ways: in one feed, in pieces whose sizes
come from a generator seeded by the input, and (when short) one byte at a
time; the third way also recycles dirty Messages through `recycle`.

Invariants:
- only AmpeError subclasses escape (InvalidOpCode, documented), nothing else;
- every way yields the same frames and the same verdict (error or not);
- the frames re-encode to exactly the bytes they were decoded from, and what
  is left over is exactly what the decoder holds as `pending`;
- `pending` never exceeds one maximal frame (MAX_FRAME_SIZE) and never holds a
  whole frame;
- after an error, every later feed raises again.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import GOLDEN, main

if __name__ == "__main__" and importlib.util.find_spec("atheris"):  # instrument for coverage, not when imported
    import atheris

    with atheris.instrument_imports(include=["tofu"]):
        import tofu
        import tofu.framing
        import tofu.message
else:
    import tofu

from tofu import MAX_FRAME_SIZE, AmpeError, FrameDecoder, InvalidOpCode, Message

_HEADER = 16


def _dirty() -> Message:
    """A used Message with something in every part, as the engine's pool may hand back."""
    msg = Message(tofu.OpCode.Request)
    msg.bhdr.channel_number = 7
    msg.bhdr.message_id = 99
    msg.bhdr.status = 3
    msg.bhdr.proto.more = tofu.MoreMessagesFlag.more
    msg.thdrs.append("stale", "header")
    msg.body.append(b"stale body")
    return msg


def _decode(data: bytes, cuts: list[int], recycle: bool) -> tuple[list[bytes], bool, int]:
    """Frames (re-encoded), whether it raised, and the pending count, feeding `data` cut at `cuts`."""
    decoder = FrameDecoder(_dirty if recycle else None)
    frames: list[bytes] = []
    failed = False
    start = 0
    for end in [*cuts, len(data)]:
        try:
            got = decoder.feed(data[start:end])
        except InvalidOpCode as exc:
            frames += [tofu.encode(m) for m in exc.frames]  # type: ignore[attr-defined]
            failed = True
            break
        except AmpeError as exc:  # documented family, but FrameDecoder only promises InvalidOpCode
            raise AssertionError(f"FrameDecoder raised {type(exc).__name__}, not InvalidOpCode: {exc}") from exc
        frames += [tofu.encode(m) for m in got]
        assert decoder.pending <= MAX_FRAME_SIZE, f"pending {decoder.pending} > one frame {MAX_FRAME_SIZE}"
        start = end
    if failed:
        for probe in (b"", b"\x00" * 16):
            try:
                decoder.feed(probe)
            except InvalidOpCode:
                continue
            raise AssertionError("a broken decoder accepted more bytes")
    return frames, failed, decoder.pending


def test_one_input(data: bytes) -> None:
    whole = _decode(data, [], recycle=False)
    rng = random.Random(zlib.crc32(data))
    cuts = sorted({rng.randrange(len(data) + 1) for _ in range(rng.randrange(1, 8))}) if data else []
    pieces = _decode(data, cuts, recycle=False)
    assert pieces == whole, f"cut at {cuts}: {pieces!r} != {whole!r}"
    if len(data) <= 512:
        single = _decode(data, list(range(1, len(data))), recycle=True)
        assert single == whole, f"byte by byte, recycled: {single!r} != {whole!r}"

    frames, failed, pending = whole
    used = sum(len(f) for f in frames)
    assert b"".join(frames) == data[:used], "decoded frames do not re-encode to the input"
    if not failed:
        assert pending == len(data) - used, f"pending {pending}, but {len(data) - used} bytes were left"
        if pending >= _HEADER:
            thl = int.from_bytes(data[used + 12 : used + 14], "big")
            bl = int.from_bytes(data[used + 14 : used + 16], "big")
            assert pending < _HEADER + thl + bl, "a whole frame was left pending"


def seeds() -> list[bytes]:
    """The captured Zig session, each direction and both together."""
    streams = [p.read_bytes() for p in sorted(GOLDEN.glob("*.bin"))]
    return [*streams, b"".join(streams)]


if __name__ == "__main__":
    main(test_one_input, seeds)
