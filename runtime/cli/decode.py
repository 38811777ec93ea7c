"""`tofu decode`: every frame of a captured byte stream, field by field."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from .. import (
    HEADER_SIZE,
    AmpeStatus,
    InvalidMessage,
    OpCode,
    TextHeaders,
    raw_to_status,
)
from .capture import CaptureError, capture_format, read_capture
from .console import EXIT_FAILURE, EXIT_OK, CLIError, out, plural, printable, progress_bar

log = logging.getLogger("tofu.cli")


class _DecodeError(CLIError):
    pass


def _read_input(path: str, as_hex: bool) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"{path}: is a directory") from None
    except OSError as exc:
        raise CLIError(f"{path}: {exc.strerror or exc}") from None
    if not as_hex:
        return data
    return _parse_hex(data, "<stdin>" if path == "-" else path)


def _parse_hex(data: bytes, name: str) -> bytes:
    """Hex text to bytes: whitespace, `0x` prefixes, `:`/`-`/`,` separators and `#` comments are ignored."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise CLIError(f"{name}: not hex text (a non-ASCII byte at offset {exc.start})") from None
    digits: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0]
        for word in line.replace(",", " ").replace(":", " ").replace("-", " ").split():
            if word[:2].lower() == "0x":
                word = word[2:]
            for ch in word:
                if ch not in "0123456789abcdefABCDEF":
                    raise CLIError(f"{name}: line {lineno}: {ch!r} is not a hex digit")
            digits.append(word)
    joined = "".join(digits)
    if len(joined) % 2:
        raise CLIError(f"{name}: odd number of hex digits ({len(joined)})")
    return bytes.fromhex(joined)


def _preview(body: bytes, limit: int) -> str:
    shown = body[:limit]
    tail = f" ... (+{len(body) - limit} bytes)" if len(body) > limit else ""
    try:
        text = shown.decode("utf-8")
        if text.isprintable():
            return repr(text) + tail
    except UnicodeDecodeError:
        pass
    return shown.hex(" ") + tail


def run(args: argparse.Namespace) -> int:
    """`tofu decode FILE`: every frame of a captured byte stream (raw, hex, pcap or pcapng), field by field."""
    name = "<stdin>" if args.file == "-" else args.file
    data = _read_input(args.file, args.hex)
    fmt = capture_format(data)
    if fmt is None:  # a raw byte stream: one direction of one connection
        frames, problems = _decode_stream(data, name, args, "")
        out(
            f"{frames} frame(s), {len(data)} byte(s)"
            + (f", {problems} with malformed text headers" if problems else "")
        )
        return EXIT_OK if not problems else EXIT_FAILURE
    try:
        cap = read_capture(data)
    except CaptureError as exc:
        raise CLIError(f"{name}: {exc}") from None
    skipped = f", {cap.skipped} not TCP or not decodable" if cap.skipped else ""
    out(
        f"{name}: {fmt} capture, {plural(cap.packets, 'packet')}{skipped}, {len(cap.streams)} TCP direction(s) with data"
    )
    errors: list[str] = []
    damaged = 0
    for no, stream in enumerate(cap.streams, 1):
        label = printable(stream.label)
        out()
        out(f"stream {no}: {label}: {plural(len(stream.data), 'byte')} in {plural(stream.segments, 'segment')}")
        if stream.gap is not None:
            damaged += 1
            out(f"stream {no}: {label}: the capture misses bytes at offset {stream.gap}: decoded up to there")
        try:
            frames, problems = _decode_stream(stream.data, f"{name}: {label}", args, label)
        except _DecodeError as exc:
            errors.append(str(exc))
            out(f"stream {no}: {label}: cannot be read further: {exc}")
            continue
        damaged += problems > 0
        out(
            f"stream {no}: {label}: {frames} frame(s), {len(stream.data)} byte(s)"
            + (f", {problems} with malformed text headers" if problems else "")
        )
    if errors:
        more = f" (and {plural(len(errors) - 1, 'other stream')})" if len(errors) > 1 else ""
        raise _DecodeError(errors[0] + more)
    return EXIT_OK if not damaged else EXIT_FAILURE


def _decode_stream(data: bytes, name: str, args: argparse.Namespace, label: str) -> tuple[int, int]:
    """Print every frame of one direction's bytes; return (frames, frames with malformed text headers).

    Raises _DecodeError where the stream breaks."""
    from ..generated import structs  # construct: slow, readable; only this command needs it

    total = len(data)
    offset = 0
    frame_no = 0
    problems = 0
    force = args.progress
    if force is None and (sys.stdout.isatty() or total < 1 << 20):
        force = False
    with progress_bar(total, f"decode {name}", force) as advance:
        while offset < total:
            frame_no += 1
            left = total - offset
            if left < HEADER_SIZE:
                raise _DecodeError(
                    f"{name}: frame {frame_no} at offset {offset}: truncated binary header "
                    f"({left} of {HEADER_SIZE} bytes)"
                )
            hdr = structs.BinaryHeader.parse(data[offset : offset + HEADER_SIZE])
            op_raw = data[offset + 2] & 0x0F
            if op_raw >= len(OpCode):
                raise _DecodeError(
                    f"{name}: frame {frame_no} at offset {offset}: invalid op code {op_raw} "
                    f"(proto byte 0x{data[offset + 2]:02x}); the stream cannot be read past it"
                )
            size = HEADER_SIZE + hdr.thl + hdr.bl
            if size > left:
                raise _DecodeError(
                    f"{name}: frame {frame_no} at offset {offset}: truncated frame: the header announces "
                    f"{hdr.thl} bytes of text headers and {hdr.bl} of body ({size} in all), "
                    f"only {left} bytes left"
                )
            frame = structs.Frame.parse(data[offset : offset + size])
            where = f"frame {frame_no} at offset {offset} ({size} bytes)" + (f", {label}" if label else "")
            problems += _print_frame(where, data[offset + 2], data[offset + 3], frame, args.body_bytes)
            offset += size
            advance(size)
    return frame_no, problems


def _print_frame(where: str, proto_byte: int, status_raw: int, frame: Any, body_bytes: int) -> int:
    """Print one frame parsed by the construct definitions; return 1 if its text headers are malformed."""
    p = frame.proto
    status = raw_to_status(status_raw)
    status_name = status.name if status_raw <= int(AmpeStatus.unknown_error) else f"reads as {status.name}"
    out(where)
    out(f"  channel_number  {frame.channel_number}")
    out(
        f"  proto           0x{proto_byte:02x}: op_code {p.op_code} ({int(p.op_code.intvalue)}), "
        f"origin {p.origin}, more {p.more}, internal_a {p.internal_a}, internal_b {p.internal_b}"
    )
    out(f"  status          {status_raw} {status_name}")
    out(f"  message_id      {frame.message_id}")
    out(f"  thl             {frame.thl}")
    out(f"  bl              {frame.bl}")
    problems = 0
    if frame.thl:
        try:
            pairs = list(TextHeaders(frame.text_headers))
        except InvalidMessage as exc:
            out(f"  text headers    MALFORMED: {exc}")
            out(f"                  raw {bytes(frame.text_headers)!r}")
            problems = 1
        else:
            out(f"  text headers    {len(pairs)}")
            for n, v in pairs:
                out(f"    {printable(n)}: {printable(v)}")
    else:
        out("  text headers    none")
    if frame.bl:
        out(f"  body            {frame.bl} bytes: {_preview(bytes(frame.body), body_bytes)}")
    else:
        out("  body            empty")
    return problems
