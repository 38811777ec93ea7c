"""The fuzz targets in tests/fuzz/ stay runnable and keep passing.

Each target runs under atheris (coverage-guided) for a few seconds in a
subprocess, from its seeds (the captured Zig session): a crash, a broken
invariant or a leak past the RSS limit fails the test with libFuzzer's
report. The saved regression inputs (inputs that once broke a target) and the
seeds are also replayed in this process, without atheris.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"
TARGETS = ["framing", "text_headers", "addresses"]
SECONDS = 3  # per target; the long runs are described in tests/fuzz/README.md


def _target(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", FUZZ / f"fuzz_{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", TARGETS)
def test_seeds_and_regressions_pass(name: str) -> None:
    target = _target(name)
    test_one_input: Callable[[bytes], None] = target.test_one_input
    seeds = target.seeds()
    assert seeds, "a target needs seeds"
    for data in seeds:
        test_one_input(data)
    saved = FUZZ / "regressions" / name  # inputs that once failed; a target may have none yet
    for path in sorted(saved.iterdir() if saved.is_dir() else ()):
        test_one_input(path.read_bytes())


def test_golden_session_seeds_real_frames() -> None:
    """The framing seeds are the captured Zig session: they decode to whole frames."""
    import tofu

    for data in _target("framing").seeds():
        decoder = tofu.FrameDecoder()
        assert decoder.feed(data), "a seed with no frame"
        assert decoder.pending == 0


@pytest.mark.parametrize("name", TARGETS)
def test_short_fuzz_run(name: str, tmp_path: Path) -> None:
    assert importlib.util.find_spec("atheris"), "atheris is missing: pip install -e '.[fuzz]' (Linux wheels)"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    cmd = [
        sys.executable,
        str(FUZZ / f"fuzz_{name}.py"),
        f"-max_total_time={SECONDS}",
        "-runs=200000",
        "-max_len=4096",
        "-rss_limit_mb=512",
        "-timeout=10",
        f"-artifact_prefix={tmp_path}/",
        str(corpus),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    report = proc.stderr[-4000:]
    assert proc.returncode == 0, f"fuzz target {name} failed:\n{report}"
    assert "DONE" in proc.stderr, f"fuzz target {name} did not finish:\n{report}"
    assert not list(tmp_path.glob("crash-*")), report


def test_what_the_address_fuzzer_found_reaches_the_engine_as_wrong_address(rtr) -> None:
    """A HelloRequest whose port has thousands of digits once raised ValueError
    on the I/O thread (an internal error; the application never heard back)."""
    import tofu
    from engine_support import TIMEOUT, assert_closed, is_closed_signal, recv_until

    group = rtr.ampe().create()
    hello = tofu.Message(tofu.OpCode.HelloRequest)
    hello.thdrs.append(tofu.CONNECT_TO_HEADER, "tcp|127.0.0.1|" + "1" * 5000)
    header = group.post(hello)
    closed, _ = recv_until(group, is_closed_signal, TIMEOUT)
    assert_closed(closed, tofu.AmpeStatus.wrong_address, header.channel_number)
