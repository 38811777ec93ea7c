"""Codec benchmark: the fast struct codec against the construct definitions.

    .venv/bin/python benchmarks/codec_bench.py            # full run (~15 s)
    .venv/bin/python benchmarks/codec_bench.py --quick    # shorter repeats
    .venv/bin/python benchmarks/codec_bench.py --profile  # plus a cProfile of the small-frame fast path

Both codecs are generated from spec/tofu.toml. The fast path is what the engine
uses per frame: `tofu.encode(msg)` then `FrameDecoder.feed(bytes)`, which makes a
`tofu.Message`. The construct path is `structs.Frame.build(fields)` then
`structs.Frame.parse(bytes)`, which makes a construct Container; its input dict
is taken from the same Message every iteration, as an engine would have to.

A second comparison takes the Message out of the decoding side: the generated
codec turns the same fields into bytes and back into fields (header fields,
proto bits, text-header and body bytes), exactly what Frame.build and
Frame.parse do, so the ratio is codec against codec.

Every case is timed in this one process, side by side: several repeats of a
calibrated number of iterations each, reporting the best and the median rate.
Nothing here asserts a timing; the script only checks, before timing, that each
path really round-trips its frame.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable

import tofu
from tofu.generated import codec, structs

# ---------------------------------------------------------------- the frames


def small_message() -> tofu.Message:
    """A HelloRequest with a ~connect_to header: 49 bytes on the wire."""
    m = tofu.TCPClientAddress("127.0.0.1", 47413).format(tofu.Message())
    m.bhdr.channel_number = 0x4EDD
    m.bhdr.message_id = 1
    return m


def large_message() -> tofu.Message:
    """A Request with one header and the largest body a frame holds (65535 bytes, 64 KiB - 1)."""
    m = tofu.Message(tofu.OpCode.Request)
    m.bhdr.channel_number = 7
    m.bhdr.message_id = 101
    m.thdrs.append("x-seq", "1")
    m.body.append(bytes(range(256)) * 255 + bytes(range(255)))
    return m


def construct_fields(msg: tofu.Message) -> dict:
    """The input of structs.Frame.build, read from a Message."""
    b = msg.bhdr
    p = b.proto
    return {
        "channel_number": b.channel_number,
        "proto": {
            "op_code": int(p.op_code),
            "origin": int(p.origin),
            "more": int(p.more),
            "internal_a": p.internal_a,
            "internal_b": p.internal_b,
        },
        "status": b.status,
        "message_id": b.message_id,
        "text_headers": bytes(msg.thdrs),
        "body": bytes(msg.body),
    }


# ---------------------------------------------------------------- the loops
# Each returns a function running `n` iterations, so the timer wraps one call.


def fast_roundtrip(msg: tofu.Message) -> Callable[[int], None]:
    encode = tofu.encode
    decoder = tofu.FrameDecoder()
    feed = decoder.feed

    def run(n: int) -> None:
        for _ in range(n):
            feed(encode(msg))

    return run


def fast_encode(msg: tofu.Message) -> Callable[[int], None]:
    encode = tofu.encode

    def run(n: int) -> None:
        for _ in range(n):
            encode(msg)

    return run


def fast_decode(msg: tofu.Message, factory: Callable[[], tofu.Message] | None = None) -> Callable[[int], None]:
    data = tofu.encode(msg)
    feed = tofu.FrameDecoder(factory).feed

    def run(n: int) -> None:
        for _ in range(n):
            feed(data)

    return run


def codec_encode(msg: tofu.Message) -> bytes:
    """Frame bytes from the fields read off `msg`, as construct_fields + Frame.build do."""
    b = msg.bhdr
    p = b.proto
    th, body = bytes(msg.thdrs), bytes(msg.body)
    proto = codec.pack_proto(p.op_code, p.origin, p.more, p.internal_a, p.internal_b)
    return b"".join((codec.pack_header(b.channel_number, proto, b.status, b.message_id, len(th), len(body)), th, body))


def codec_decode(data: bytes) -> tuple:
    """The fields of one frame, as Frame.parse gives them: header fields, the
    five proto bits, and text-header and body bytes (copied)."""
    ch, proto, status, mid, thl, bl = codec.unpack_header(data)
    start = codec.HEADER_SIZE
    split = start + thl
    return ch, codec.unpack_proto(proto), status, mid, data[start:split], data[split : split + bl]


def codec_fields_roundtrip(msg: tofu.Message) -> Callable[[int], None]:
    """The generated codec doing exactly what construct's Frame does, with no
    Message on the decoding side: fields -> bytes -> fields."""
    encode, decode = codec_encode, codec_decode

    def run(n: int) -> None:
        for _ in range(n):
            decode(encode(msg))

    return run


def construct_roundtrip(msg: tofu.Message) -> Callable[[int], None]:
    build = structs.Frame.build
    parse = structs.Frame.parse

    def run(n: int) -> None:
        for _ in range(n):
            parse(build(construct_fields(msg)))

    return run


HEADER_FIELDS = (0x4EDD, 0x03, 0, 1, 33, 0)  # the small frame's header
HEADER_DICT = {
    "channel_number": 0x4EDD,
    "proto": {"op_code": 3, "origin": 0, "more": 0, "internal_a": 0, "internal_b": 0},
    "status": 0,
    "message_id": 1,
    "thl": 33,
    "bl": 0,
}
HEADER_BYTES = codec.pack_header(*HEADER_FIELDS)


def header_fast_pack(n: int) -> None:
    pack = codec.pack_header
    f = HEADER_FIELDS
    for _ in range(n):
        pack(*f)


def header_fast_unpack(n: int) -> None:
    unpack = codec.unpack_header
    data = HEADER_BYTES
    for _ in range(n):
        unpack(data)


def header_fast_both(n: int) -> None:
    pack = codec.pack_header
    unpack = codec.unpack_header
    f = HEADER_FIELDS
    for _ in range(n):
        unpack(pack(*f))


def header_construct_build(n: int) -> None:
    build = structs.BinaryHeader.build
    d = HEADER_DICT
    for _ in range(n):
        build(d)


def header_construct_parse(n: int) -> None:
    parse = structs.BinaryHeader.parse
    data = HEADER_BYTES
    for _ in range(n):
        parse(data)


def header_construct_both(n: int) -> None:
    build = structs.BinaryHeader.build
    parse = structs.BinaryHeader.parse
    d = HEADER_DICT
    for _ in range(n):
        parse(build(d))


# ---------------------------------------------------------------- timing


def rate(run: Callable[[int], None], repeats: int, target_s: float) -> tuple[float, float]:
    """(best, median) iterations per second over `repeats` timed runs of about `target_s` each."""
    n = 1
    while True:  # calibrate: grow n until one run takes a measurable slice of the target
        t0 = time.perf_counter()
        run(n)
        dt = time.perf_counter() - t0
        if dt >= target_s / 10:
            break
        n *= 4 if dt < target_s / 100 else 2
    n = max(1, int(n * target_s / dt))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(n)
        rates.append(n / (time.perf_counter() - t0))
    return max(rates), statistics.median(rates)


def fmt(x: float) -> str:
    return f"{x:>14,.0f}"


def row(label: str, best_med: tuple[float, float], extra: str = "") -> None:
    best, med = best_med
    print(f"  {label:<38}{fmt(best)}/s {fmt(med)}/s  {extra}")


def compare(
    title: str, fast: Callable[[int], None], slow: Callable[[int], None], repeats: int, target: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Time both, print both and their ratio; return (fast (best, median), ratio (best, median))."""
    f = rate(fast, repeats, target)
    s = rate(slow, repeats, target)
    print(title)
    row("fast (struct)", f)
    row("construct", s)
    ratio = (f[0] / s[0], f[1] / s[1])
    print(f"  {'ratio fast/construct':<38}{ratio[0]:>14.1f}x   {ratio[1]:>14.1f}x")
    return f, ratio


# ---------------------------------------------------------------- checks before timing


def check_paths(msg: tofu.Message) -> None:
    data = tofu.encode(msg)
    (back,) = tofu.FrameDecoder().feed(data)
    if tofu.encode(back) != data:
        raise SystemExit("fast codec does not round-trip the benchmark frame")
    built = structs.Frame.build(construct_fields(msg))
    if built != data:
        raise SystemExit("construct builds different bytes than the fast codec")
    parsed = structs.Frame.parse(built)
    if parsed.body != bytes(msg.body) or parsed.text_headers != bytes(msg.thdrs):
        raise SystemExit("construct does not round-trip the benchmark frame")
    fields = codec_decode(codec_encode(msg))
    if codec_encode(msg) != data or fields[4:] != (parsed.text_headers, parsed.body) or fields[3] != parsed.message_id:
        raise SystemExit("the codec-level path does not round-trip the benchmark frame")
    if codec.unpack_header(HEADER_BYTES) != HEADER_FIELDS or structs.BinaryHeader.build(HEADER_DICT) != HEADER_BYTES:
        raise SystemExit("header codecs disagree")


def profile_small(seconds: float = 1.0) -> None:
    msg = small_message()
    run = fast_roundtrip(msg)
    n = int(rate(run, 1, 0.2)[0] * seconds)
    prof = cProfile.Profile()
    prof.enable()
    run(n)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
    print(f"\ncProfile of {n:,} small-frame encode+feed round trips (sorted by own time):")
    print(out.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--profile", action="store_true", help="also cProfile the small-frame fast path")
    args = parser.parse_args(argv)
    repeats, target = (3, 0.1) if args.quick else (7, 0.25)

    small, large = small_message(), large_message()
    for m in (small, large):
        check_paths(m)

    print(
        f"tofu codec benchmark: Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.machine()}, {repeats} repeats of ~{target}s each, one core"
    )
    print(
        f"small frame: {len(tofu.encode(small))} bytes (HelloRequest, ~connect_to); "
        f"large frame: {len(tofu.encode(large))} bytes (65535-byte body)"
    )
    print(f"  {'':<38}{'best':>14}   {'median':>14}")

    small_both, r_small = compare(
        "\nsmall frame, encode + decode (frames/s)", fast_roundtrip(small), construct_roundtrip(small), repeats, target
    )
    _, r_large = compare(
        "\nlarge frame, encode + decode (frames/s)", fast_roundtrip(large), construct_roundtrip(large), repeats, target
    )

    print("\ncodec level, no Message: fields -> bytes -> fields, exactly what Frame.build + Frame.parse do")
    _, r_small_codec = compare(
        "  small frame", codec_fields_roundtrip(small), construct_roundtrip(small), repeats, target
    )
    _, r_large_codec = compare(
        "  large frame", codec_fields_roundtrip(large), construct_roundtrip(large), repeats, target
    )

    print("\nfast path alone (frames/s)")
    row("small: encode + feed", rate(fast_roundtrip(small), repeats, target))
    row("small: encode only", rate(fast_encode(small), repeats, target))
    row("small: feed only", rate(fast_decode(small), repeats, target))
    # the engine's decoders fill messages from its pool instead of making them:
    recycled = tofu.Message()
    row("small: feed only, pool-like factory", rate(fast_decode(small, lambda: recycled), repeats, target))
    row("small: feed only, factory Message()", rate(fast_decode(small, lambda: tofu.Message()), repeats, target))
    large_both = rate(fast_roundtrip(large), repeats, target)
    row("large: encode + feed", large_both, f"= {large_both[1] * len(tofu.encode(large)) / 2**30:.2f} GiB/s (median)")

    print("\nbinary header only, 16 bytes (headers/s)")
    _, r_hdr = compare("  pack + unpack", header_fast_both, header_construct_both, repeats, target)
    compare("  pack_header vs BinaryHeader.build", header_fast_pack, header_construct_build, repeats, target)
    compare("  unpack_header vs BinaryHeader.parse", header_fast_unpack, header_construct_parse, repeats, target)

    print("\nsummary: best (median) of the side-by-side runs above")
    print(f"  small frame encode+decode: {small_both[0]:,.0f} ({small_both[1]:,.0f}) frames/s (target >= 300,000)")
    print(
        f"  fast/construct: small frame {r_small[0]:.0f}x ({r_small[1]:.0f}x), large frame {r_large[0]:.0f}x "
        f"({r_large[1]:.0f}x), header {r_hdr[0]:.0f}x ({r_hdr[1]:.0f}x) (target >= 50x)"
    )
    print(
        f"  codec level, no Message: small frame {r_small_codec[0]:.0f}x ({r_small_codec[1]:.0f}x), "
        f"large frame {r_large_codec[0]:.0f}x ({r_large_codec[1]:.0f}x)"
    )

    if args.profile:
        profile_small()
    return 0


if __name__ == "__main__":
    sys.exit(main())
