"""The demo's transcript: one line per message received, from any thread."""

from __future__ import annotations

import logging
import threading
import time
from typing import TextIO

from .. import (
    InvalidMessage,
    Message,
    OpCode,
    raw_to_status,
)
from .console import printable

log = logging.getLogger("tofu.cli")


class Transcript:
    """Prints one line per message received, from any thread, with a time stamp."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self._t0) * 1000

    def say(self, text: str) -> None:
        with self._lock:
            print(f"{self.elapsed_ms():9.3f} ms  {text}", file=self._out, flush=True)

    def narrate(self, who: str, text: str) -> None:
        with self._lock:
            print(f"{'':12}  {who}: {text}", file=self._out, flush=True)

    def message(self, src: str, dst: str, msg: Message) -> None:
        bh = msg.bhdr
        op = bh.proto.op_code
        op_name = op.name if isinstance(op, OpCode) else str(op)
        flags = "more" if msg.has_more() else ""
        status = f"  status {raw_to_status(bh.status).name}" if bh.status else ""
        headers = headers_text(msg)
        body = f"  body {len(msg.body)} B" if len(msg.body) else ""
        self.say(
            f"{src:>5} -> {dst:<5}  {op_name:<15} {bh.channel_number:>3}  {bh.message_id:>5}  {flags:<4}"
            f"{status}{'  ' + headers if headers else ''}{body}"
        )

    def columns(self) -> None:
        with self._lock:
            print(
                f"{'time':>12}  {'from':>5} -> {'to':<5}  {'op code':<15} {'ch':>3}  {'mid':>5}  flag  "
                "status / text headers / body",
                file=self._out,
                flush=True,
            )


def headers_text(msg: Message) -> str:
    """A message's text headers on one line, safe for a terminal."""
    try:
        return printable("  ".join(f"{n}:{v}" for n, v in msg.thdrs))
    except InvalidMessage:
        return repr(bytes(msg.thdrs))
