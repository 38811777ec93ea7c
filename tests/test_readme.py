"""The README's quickstart runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_quickstart_runs():
    text = README.read_text(encoding="utf-8")
    match = re.search(r"## Quickstart\n\n```python\n(.*?)```", text, re.DOTALL)
    assert match, "README.md has no Quickstart code block"
    exec(compile(match.group(1), "README.md quickstart", "exec"), {})  # noqa: S102 - runs the README example as written
