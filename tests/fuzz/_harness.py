"""What every fuzz target shares: run under atheris, or replay inputs without it.

    python tests/fuzz/fuzz_framing.py [libFuzzer flags] [CORPUS_DIR ...]

runs the target under atheris (coverage-guided, libFuzzer's flags:
`-max_total_time=`, `-runs=`, `-rss_limit_mb=`, ...). A target module defines
`test_one_input(data: bytes)`, which raises AssertionError (or any exception
it does not document) when an invariant breaks. `replay(target, paths)` runs
the same function over saved inputs without atheris, so a crash libFuzzer
wrote can be kept as a regression input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden"


def main(test_one_input: Callable[[bytes], None], seeds: Callable[[], list[bytes]]) -> None:
    """The command line of a target.

    `--replay PATH...` runs the inputs without atheris. Otherwise atheris runs
    with libFuzzer's arguments; an empty corpus directory among them is first
    filled with the target's seeds (the captured Zig session)."""
    if sys.argv[1:2] == ["--replay"]:
        print(f"replayed {replay(test_one_input, [Path(p) for p in sys.argv[2:]])} inputs")
        return
    for arg in sys.argv[1:]:
        corpus = Path(arg)
        if not arg.startswith("-") and corpus.is_dir() and not any(corpus.iterdir()):
            for i, seed in enumerate(seeds()):
                (corpus / f"seed-{i}").write_bytes(seed)
    import atheris

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def replay(test_one_input: Callable[[bytes], None], paths: list[Path]) -> int:
    """Run `test_one_input` over every file (or every file in each directory); return how many."""
    count = 0
    for path in paths:
        for item in sorted(path.iterdir()) if path.is_dir() else [path]:
            test_one_input(item.read_bytes())
            count += 1
    return count
