"""A subprocess's output, line by line, for tests that wait on what it prints."""

from __future__ import annotations

import io
import queue
import threading

TIMEOUT = 30.0  # seconds a line may take before the test fails (bounds a failure, never paces a success)


class Lines:
    """Reads a subprocess's stdout on a thread so the test can wait with a timeout."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: io.TextIOBase) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float = TIMEOUT) -> str:
        """The next line that starts with `prefix` (earlier lines are kept in `seen`)."""
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"output ended before {prefix!r}; saw {self.seen}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line
