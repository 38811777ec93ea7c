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
from .console import EXIT_FAILURE, EXIT_OK, CLIError, _out, _progress

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


def _cmd_decode(args: argparse.Namespace) -> int:
    from ..generated import structs  # construct: slow, readable; only this command needs it

    name = "<stdin>" if args.file == "-" else args.file
    data = _read_input(args.file, args.hex)
    total = len(data)
    offset = 0
    frame_no = 0
    problems = 0
    force = args.progress
    if force is None and (sys.stdout.isatty() or total < 1 << 20):
        force = False
    with _progress(total, f"decode {name}", force) as advance:
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
            problems += _print_frame(frame_no, offset, size, data[offset + 2], data[offset + 3], frame, args.body_bytes)
            offset += size
            advance(size)
    _out(f"{frame_no} frame(s), {total} byte(s)" + (f", {problems} with malformed text headers" if problems else ""))
    return EXIT_OK if not problems else EXIT_FAILURE


def _print_frame(no: int, offset: int, size: int, proto_byte: int, status_raw: int, frame: Any, body_bytes: int) -> int:
    """Print one frame parsed by the construct definitions; return 1 if its text headers are malformed."""
    p = frame.proto
    status = raw_to_status(status_raw)
    status_name = status.name if status_raw <= int(AmpeStatus.unknown_error) else f"reads as {status.name}"
    _out(f"frame {no} at offset {offset} ({size} bytes)")
    _out(f"  channel_number  {frame.channel_number}")
    _out(
        f"  proto           0x{proto_byte:02x}: op_code {p.op_code} ({int(p.op_code.intvalue)}), "
        f"origin {p.origin}, more {p.more}, internal_a {p.internal_a}, internal_b {p.internal_b}"
    )
    _out(f"  status          {status_raw} {status_name}")
    _out(f"  message_id      {frame.message_id}")
    _out(f"  thl             {frame.thl}")
    _out(f"  bl              {frame.bl}")
    problems = 0
    if frame.thl:
        try:
            pairs = list(TextHeaders(frame.text_headers))
        except InvalidMessage as exc:
            _out(f"  text headers    MALFORMED: {exc}")
            _out(f"                  raw {bytes(frame.text_headers)!r}")
            problems = 1
        else:
            _out(f"  text headers    {len(pairs)}")
            for n, v in pairs:
                _out(f"    {n}: {v}")
    else:
        _out("  text headers    none")
    if frame.bl:
        _out(f"  body            {frame.bl} bytes: {_preview(bytes(frame.body), body_bytes)}")
    else:
        _out("  body            empty")
    return problems
