"""The command's console: exit codes, one-line errors, output lines, progress bars."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("tofu.cli")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A failure to report as one line on stderr, with exit status `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else words or word + 's'}"


def printable(text: str) -> str:
    """`text` safe for a terminal: control and format characters (an escape
    sequence, a carriage return, a bidi override) are shown as Python escapes,
    `\\x1b` for ESC. Everything a peer sent goes through this before it is printed."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def out(text: str = "") -> None:
    """One line of the command's own output (flushed: other programs read it)."""
    print(text, flush=True)


def _make_console(force: bool | None) -> Any:
    from rich.console import Console

    return Console(stderr=True, force_terminal=True if force else None)


@contextmanager
def progress_bar(total: int, description: str, force: bool | None) -> Iterator[Callable[[int], None]]:
    """A transient progress bar on stderr; yields `advance(n)`.

    Shown when stderr is a terminal (or `force` is True), never when `force`
    is False."""
    if force is False:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Column

    console = _make_console(force)
    if not console.is_terminal:
        yield lambda n: None
        return
    # The count "done/total" and the time always show whole; on a narrow
    # terminal the bar shrinks first, then the description is cut short.
    count_width = 2 * len(str(total)) + 1
    room = console.width - count_width - len("0:00:00") - 3
    bar_width = max(5, min(40, room - len(description) - 1))
    room -= bar_width + 1
    if len(description) > room:
        description = description[: max(1, room - 1)] + "…"
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=bar_width),
        MofNCompleteColumn(table_column=Column(min_width=count_width, no_wrap=True)),
        TimeElapsedColumn(table_column=Column(min_width=7, no_wrap=True)),
        console=console,
        transient=True,
    )
    task = progress.add_task(description, total=total)
    with progress:
        yield lambda n: progress.advance(task, n)


def terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100
