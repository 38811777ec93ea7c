"""The bench judges itself: every target gets a verdict (ok, missed by how
much, not judged and why, left out by the options), `--check` turns them into
the exit status, and the table of targets in the documentation is the one
TARGETS renders."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from tofu import bench
from tofu.bench import instructions, metrics, targets
from tofu.bench.instructions import Count
from tofu.bench.metrics import INSTRUCTION_TARGETS, METRIC_BY_KEY, TARGETS, TIMED_TARGETS, Target
from tofu.bench.targets import LEFT_OUT, MISS, OK, UNJUDGED, Scope, check, judge_instructions, judge_timed

ROOT = Path(__file__).resolve().parents[1]
EVERYTHING = Scope(tuple(bench.WORKLOADS), ("tcp", "uds"), ("tofu", "pyzmq", "floor"))  # tofu bench's defaults


# ---------------------------------------------------------------- the table in the documentation


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "benchmarks").glob("*.md"))]


def test_benchmarks_readme_holds_the_table_targets_renders() -> None:
    readme = ROOT / "benchmarks" / "README.md"
    text = readme.read_text(encoding="utf-8")
    assert text.count(targets.BEGIN) == 1 and text.count(targets.END) == 1, "benchmarks/README.md has no markers"
    assert targets.render_into(text) == text, (
        "benchmarks/README.md's table of targets is not what tofu.bench.metrics.TARGETS renders: "
        f"run `{targets.UPDATE} benchmarks/README.md`"
    )


def test_every_file_with_the_markers_holds_the_current_table() -> None:
    stale = [
        p.relative_to(ROOT).as_posix()
        for p in _markdown_files()
        if targets.BEGIN in (text := p.read_text(encoding="utf-8")) and targets.render_into(text) != text
    ]
    assert stale == [], f"run `{targets.UPDATE} {' '.join(stale)}`"


# A target written out by hand: a bound, a ratio and pyzmq or the floor ("≥ 0.5× pyzmq", "<= 1.5x floor").
RESTATED = re.compile(r"(?:[≥≤]|(?<!-)[<>]=?)\s*\d+(?:\.\d+)?\s*[x×]\s*(?:pyzmq|floor)")  # not "->"


def test_no_page_restates_a_target_outside_the_generated_table() -> None:
    found = []
    for p in _markdown_files():
        text = p.read_text(encoding="utf-8")
        if targets.BEGIN in text:  # the generated table itself
            head, rest = text.split(targets.BEGIN, 1)
            text = head + rest.split(targets.END, 1)[1]
        found += [f"{p.relative_to(ROOT).as_posix()}: {m[0]}" for m in RESTATED.finditer(text)]
    assert found == [], "say it in TARGETS and point at benchmarks/README.md's table instead"


def test_the_restated_pattern_finds_what_it_is_for() -> None:
    assert [m[0] for m in RESTATED.finditer("≥ 0.5× pyzmq and <=1.5x floor; 0.10x -> 0.53x pyzmq")] == [
        "≥ 0.5× pyzmq",
        "<=1.5x floor",
    ]


def test_the_table_has_a_row_per_target_with_its_bound() -> None:
    rows = targets.markdown().splitlines()
    assert rows[0] == "| figure | transports | target | judged by |"
    assert len(rows) == 2 + len(TARGETS)
    for t, row in zip(TARGETS, rows[2:]):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0].startswith(targets.title(t))
        assert cells[1] == ("one process, tcp" if t.instructions else "tcp, uds")
        assert cells[2] == t.bound(times="×", space=" ")
        assert cells[3] == ("`tofu bench --instructions --check`" if t.instructions else "`tofu bench --check`")


def test_update_rewrites_only_between_the_markers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"before\n\n{targets.BEGIN}\n| old | table |\n{targets.END}\n\nafter\n", encoding="utf-8")
    assert targets.main(["--update", str(page)]) == 0
    assert (
        page.read_text(encoding="utf-8")
        == f"before\n\n{targets.BEGIN}\n\n{targets.markdown()}\n{targets.END}\n\nafter\n"
    )
    assert "rewritten" in capsys.readouterr().out
    assert targets.main(["--update", str(page)]) == 0
    assert "already up to date" in capsys.readouterr().out

    page.write_text("no markers\n", encoding="utf-8")
    assert targets.main(["--update", str(page)]) == 2
    assert "needs one line" in capsys.readouterr().err
    assert page.read_text(encoding="utf-8") == "no markers\n"


def test_without_options_it_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert targets.main([]) == 0
    assert capsys.readouterr().out == targets.markdown()


# ---------------------------------------------------------------- the targets themselves


def test_the_targets_of_this_round() -> None:
    got = {(t.metric, t.against, t.op, t.value, t.instructions, t.transports) for t in TARGETS}
    both = ("tcp", "uds")
    assert got == {
        ("oneway_64_msgs", "pyzmq", ">=", 0.75, False, both),
        ("oneway_64_msgs", "floor", ">=", 0.5, False, both),
        ("fanin_msgs", "pyzmq", ">=", 0.5, False, both),
        ("pipeline_msgs", "pyzmq", ">=", 1.0, False, both),
        ("rtt_p50_us", "pyzmq", "<=", 1.0, False, both),
        ("oneway_64k_mbps", "pyzmq", ">=", 1.0, False, both),
        ("idle_rss_server_b", "absolute", "<", 10240, False, both),
        ("oneway-64", "pyzmq", "<=", 2.0, True, ("tcp",)),
        ("rtt", "pyzmq", "<=", 1.5, True, ("tcp",)),
    }


def test_every_target_names_a_figure_the_bench_makes() -> None:
    for t in TIMED_TARGETS:
        assert t.metric in METRIC_BY_KEY, t
        # a ratio's direction agrees with the figure's: more msg/s is better, fewer µs is better
        if t.against != "absolute":
            assert (t.op == ">=") == METRIC_BY_KEY[t.metric].higher_is_better, t
    for t in INSTRUCTION_TARGETS:
        assert t.metric in metrics.BENCH_WORKLOADS and t.op == "<=" and t.against == "pyzmq", t


@pytest.mark.parametrize(
    ("target", "text", "markdown", "met", "missed"),
    [
        (Target("oneway_64_msgs", "pyzmq", ">=", 0.75), "≥0.75x pyzmq", "≥ 0.75× pyzmq", 0.75, 0.7499),
        (Target("rtt_p50_us", "pyzmq", "<=", 1.0), "≤1.0x pyzmq", "≤ 1.0× pyzmq", 1.0, 1.0001),
        (Target("idle_rss_server_b", "absolute", "<", 10240), "<10 KiB", "< 10 KiB", 10239, 10240),
    ],
)
def test_a_target_says_its_bound_and_judges_at_the_edge(
    target: Target, text: str, markdown: str, met: float, missed: float
) -> None:
    assert target.text == text
    assert target.bound(times="×", space=" ") == markdown
    assert target.met(met) is True
    assert target.met(missed) is False


# ---------------------------------------------------------------- verdicts on a timed run


def _figs(ratio: float, transports: tuple[str, ...] = ("tcp", "uds"), rss: float = 4000.0) -> dict[str, Any]:
    """figures() of a run where tofu is `ratio` times pyzmq and the floor on every ratio figure."""
    figs: dict[str, Any] = {}
    for t in TIMED_TARGETS:
        for transport in transports:
            fig = figs.setdefault(f"{t.metric}/{transport}", {"tofu": rss if t.against == "absolute" else 1.0})
            if t.against != "absolute":
                fig[t.against] = 1.0 / ratio
                fig[f"tofu/{t.against}"] = ratio
    return figs


def _statuses(verdicts: list[targets.Verdict]) -> dict[tuple[str, str, str], str]:
    return {(v.target.metric, v.target.against, v.transport): v.status for v in verdicts}


def test_a_run_that_meets_every_target_passes() -> None:
    # ratio 1.0 meets every ratio target: the ≥ ones are at most 1.0x, the ≤ ones 1.0x or more
    verdicts = judge_timed(_figs(1.0), EVERYTHING, ["tofu", "pyzmq", "floor"])
    assert len(verdicts) == 2 * len(TIMED_TARGETS)
    assert {v.status for v in verdicts} == {OK}
    assert check(verdicts) == (0, f"check passed: {len(verdicts)} of {len(verdicts)} targets of this run met")


def test_a_missed_target_fails_and_says_by_how_much() -> None:
    figs = _figs(1.0)
    figs["oneway_64_msgs/uds"]["tofu/pyzmq"] = 0.52
    figs["rtt_p50_us/tcp"]["tofu/pyzmq"] = 1.3
    figs["idle_rss_server_b/tcp"]["tofu"] = 12000.0
    verdicts = judge_timed(figs, EVERYTHING, ["tofu", "pyzmq", "floor"])
    missed = {(v.target.metric, v.transport): v.line() for v in verdicts if v.status == MISS}
    assert missed == {
        ("oneway_64_msgs", "uds"): "one-way 64 B, uds: tofu ≥0.75x pyzmq (measured 0.52x: 0.23x short)",
        ("rtt_p50_us", "tcp"): "round trip p50, tcp: tofu ≤1.0x pyzmq (measured 1.30x: 0.30x over)",
        ("idle_rss_server_b", "tcp"): "RSS per idle conn, server, tcp: tofu <10 KiB (measured 12,000 B: 1,760 B over)",
    }
    status, line = check(verdicts)
    assert status == 1
    assert line == f"check FAILED: 3 missed, of {len(verdicts)} targets of this run"
    marks = {text: mark for mark, text in targets.report_lines(verdicts)}
    assert marks[missed["oneway_64_msgs", "uds"]] == "MISS"


def test_pyzmq_absent_leaves_its_targets_unjudged_and_fails_the_check() -> None:
    figs = _figs(1.0)
    for fig in figs.values():  # what figures() gives without pyzmq's runs
        fig.pop("pyzmq", None)
        fig.pop("tofu/pyzmq", None)
    verdicts = judge_timed(figs, EVERYTHING, ["tofu", "floor"])
    unjudged = [v for v in verdicts if v.status == UNJUDGED]
    assert {(v.target.against, v.reason) for v in unjudged} == {("pyzmq", "pyzmq is absent")}
    assert len(unjudged) == 2 * len([t for t in TIMED_TARGETS if t.against == "pyzmq"])
    assert {v.status for v in verdicts if v.target.against != "pyzmq"} == {OK}
    assert unjudged[0].line().endswith("(not judged: pyzmq is absent)")
    assert check(verdicts) == (1, f"check FAILED: {len(unjudged)} not judged, of {len(verdicts)} targets of this run")


def test_leaving_pyzmq_out_on_purpose_judges_the_rest() -> None:
    scope = Scope(EVERYTHING.workloads, EVERYTHING.transports, ("tofu", "floor"))  # --impls tofu,floor
    verdicts = judge_timed(_figs(1.0), scope, ["tofu", "floor"])
    left = [v for v in verdicts if v.status == LEFT_OUT]
    assert {v.target.against for v in left} == {"pyzmq"} and {v.reason for v in left} == {"--impls"}
    judged = [v for v in verdicts if v.status != LEFT_OUT]
    assert {(v.target.metric, v.target.against) for v in judged} == {
        ("oneway_64_msgs", "floor"),
        ("idle_rss_server_b", "absolute"),
    }
    assert check(verdicts) == (0, "check passed: 4 of 4 targets of this run met")
    assert targets.report_lines(verdicts)[-1] == ("-", f"{len(left)} more not in this run: left out by --impls")


def test_narrowed_workloads_and_transports_judge_only_their_targets() -> None:
    scope = Scope(("rtt", "oneway-64"), ("tcp",), EVERYTHING.impls)
    verdicts = judge_timed(_figs(1.0, transports=("tcp",)), scope, EVERYTHING.impls)
    assert {k for k, s in _statuses(verdicts).items() if s != LEFT_OUT} == {
        ("rtt_p50_us", "pyzmq", "tcp"),
        ("oneway_64_msgs", "pyzmq", "tcp"),
        ("oneway_64_msgs", "floor", "tcp"),
    }
    reasons = {(v.target.metric, v.transport): v.reason for v in verdicts if v.status == LEFT_OUT}
    assert reasons["rtt_p50_us", "uds"] == "--transports"
    assert reasons["fanin_msgs", "tcp"] == "--workloads"
    assert check(verdicts)[0] == 0


def test_a_figure_whose_trials_failed_is_unjudged() -> None:
    figs = _figs(1.0)
    del figs["pipeline_msgs/uds"]  # every run of tofu's and pyzmq's trial failed
    figs["fanin_msgs/tcp"] = {"tofu": None, "pyzmq": 1.0, "tofu/pyzmq": None}  # tofu's failed
    verdicts = {(v.target.metric, v.transport): v for v in judge_timed(figs, EVERYTHING, EVERYTHING.impls)}
    assert verdicts["pipeline_msgs", "uds"].status == UNJUDGED
    assert verdicts["pipeline_msgs", "uds"].reason == "its trials gave no figure of tofu or pyzmq"
    assert verdicts["fanin_msgs", "tcp"].reason == "its trials gave no figure of tofu"
    assert check(list(verdicts.values()))[0] == 1


def test_a_check_that_judged_nothing_fails() -> None:
    scope = Scope(("oneway-1k",), ("tcp",), EVERYTHING.impls)  # no target is about one-way 1 KiB
    verdicts = judge_timed({}, scope, EVERYTHING.impls)
    assert {v.status for v in verdicts} == {LEFT_OUT}
    assert check(verdicts) == (1, "check FAILED: this run judged no target (its options left every one out)")


# ---------------------------------------------------------------- verdicts on instruction counts


def test_instruction_targets_judge_tofu_over_pyzmq_per_workload() -> None:
    scope = Scope(("oneway-64", "rtt", "fanin"), ("tcp",), ("tofu", "pyzmq"))
    verdicts = judge_instructions({"oneway-64": 3.5, "rtt": 1.5}, scope, ["tofu", "pyzmq"])
    assert [(v.target.metric, v.status) for v in verdicts] == [("oneway-64", MISS), ("rtt", OK)]
    assert verdicts[0].line() == (
        "instructions per one-way message, 64 B, tcp: tofu ≤2.0x pyzmq (measured 3.50x: 1.50x over)"
    )
    assert check(verdicts)[0] == 1

    absent = judge_instructions({}, scope, ["tofu"])  # pyzmq asked for, not installed
    assert [(v.status, v.reason) for v in absent] == [(UNJUDGED, "pyzmq is absent")] * 2

    tofu_only = judge_instructions({}, Scope(scope.workloads, ("tcp",), ("tofu",)), ["tofu"])  # --impls tofu
    assert [(v.status, v.reason) for v in tofu_only] == [(LEFT_OUT, "--impls")] * 2


class _FakeCounts:
    """instructions.measure without running callgrind: `per` instructions per
    message of each (impl, workload). (The word for the tool stays out of this
    file: test_readme.py takes a file that names it and runs --instructions
    for one that needs the tool.)"""

    def __init__(self, per: dict[tuple[str, str], int]) -> None:
        self.per = per
        self.calls: list[tuple[str, str]] = []

    def __call__(self, impl: str, workload: str, small: int, large: int, connections: int = 1) -> Count:
        self.calls.append((impl, workload))
        p = self.per[impl, workload]
        return Count(impl, workload, connections, small, large, 1_000_000 + p * small, 1_000_000 + p * large)


def _instructions(
    monkeypatch: pytest.MonkeyPatch, per: dict[tuple[str, str], int], *args: str
) -> tuple[int, _FakeCounts]:
    fake = _FakeCounts(per)
    monkeypatch.setattr(instructions, "measure", fake)
    rc = bench.main(["--instructions", "--workloads", "oneway-64,rtt", "--messages", "600", *args])
    return rc, fake


COUNTS = {("tofu", "oneway"): 15_000, ("pyzmq", "oneway"): 7_500, ("tofu", "rtt"): 30_000, ("pyzmq", "rtt"): 25_000}


def test_instructions_check_passes_when_the_counts_meet_the_targets(monkeypatch, capsys) -> None:
    rc, _ = _instructions(monkeypatch, COUNTS, "--check")
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "target ok   instructions per one-way message, 64 B, tcp: tofu ≤2.0x pyzmq (measured 2.00x)" in out
    assert "target ok   instructions per round trip, 64 B, tcp: tofu ≤1.5x pyzmq (measured 1.20x)" in out
    assert out.splitlines()[-1] == "check passed: 2 of 2 targets of this run met"


def test_instructions_check_fails_on_a_miss_and_only_with_check(monkeypatch, capsys) -> None:
    counts = dict(COUNTS)
    counts["tofu", "rtt"] = 40_000  # 1.6x pyzmq
    rc, _ = _instructions(monkeypatch, counts, "--check")
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "target MISS instructions per round trip, 64 B, tcp: tofu ≤1.5x pyzmq (measured 1.60x: 0.10x over)" in out
    assert out.splitlines()[-1] == "check FAILED: 1 missed, of 2 targets of this run"
    rc, _ = _instructions(monkeypatch, counts)  # without --check: the same lines, exit 0
    out = capsys.readouterr().out
    assert rc == 0 and "target MISS" in out and "check" not in out


def test_instructions_without_pyzmq_count_tofu_and_fail_the_check(monkeypatch, capsys) -> None:
    monkeypatch.setattr(bench.command, "have_pyzmq", lambda: None)
    rc, fake = _instructions(monkeypatch, COUNTS, "--check")
    captured = capsys.readouterr()
    assert rc == 1, captured.out
    assert fake.calls == [("tofu", "oneway"), ("tofu", "rtt")]  # tofu is still counted
    assert "pyzmq is absent" in captured.err
    rows = [line.split() for line in captured.out.splitlines() if line.startswith(("one-way", "round trip"))]
    assert [row[-1] for row in rows] == ["15,000", "30,000"]  # tofu's column, no ratio
    assert "target ?    instructions per round trip, 64 B, tcp: tofu ≤1.5x pyzmq (not judged: pyzmq is absent)" in (
        captured.out
    )
    assert captured.out.splitlines()[-1] == "check FAILED: 2 not judged, of 2 targets of this run"


def test_instructions_of_tofu_alone_on_purpose_judge_nothing(monkeypatch, capsys) -> None:
    rc, fake = _instructions(monkeypatch, COUNTS, "--check", "--impls", "tofu")
    out = capsys.readouterr().out
    assert {impl for impl, _ in fake.calls} == {"tofu"}
    assert "target -    2 more not in this run: left out by --impls" in out
    assert rc == 1 and out.splitlines()[-1].startswith("check FAILED: this run judged no target")


# ---------------------------------------------------------------- tofu bench --check, end to end

RUN = [
    "--quick",
    "--workloads",
    "oneway-64",
    "--transports",
    "tcp",
    "--messages",
    "2000",
    "--no-progress",
    "--timeout",
    "20",
    "--stall-timeout",
    "3",
]
MET = Target("oneway_64_msgs", "floor", ">=", 0.0)  # any measured ratio meets it
MISSED = Target("oneway_64_msgs", "floor", "<", 0.0)  # no measured ratio meets it
OF_PYZMQ = Target("oneway_64_msgs", "pyzmq", ">=", 0.0)


def _run(monkeypatch, tmp_path: Path, chosen: list[Target], *args: str) -> tuple[int, dict[str, Any]]:
    monkeypatch.setattr(targets, "TIMED_TARGETS", chosen)
    out = tmp_path / "bench.json"
    rc = bench.main([*RUN, "--json", str(out), *args])
    return rc, json.loads(out.read_text())


def test_bench_check_exit_status_follows_the_verdicts(monkeypatch, tmp_path, capsys) -> None:
    rc, doc = _run(monkeypatch, tmp_path, [MET, MISSED], "--impls", "tofu,floor", "--check")
    out = capsys.readouterr().out
    assert doc["errors"] == []
    assert rc == 1, out
    assert [(v["target"], v["transport"], v["status"]) for v in doc["verdicts"]] == [
        ("≥0.0x floor", "tcp", OK),
        ("≥0.0x floor", "uds", LEFT_OUT),  # --transports tcp
        ("<0.0x floor", "tcp", MISS),
        ("<0.0x floor", "uds", LEFT_OUT),
    ]
    missed = doc["verdicts"][2]
    assert missed["by"] == f"{missed['measured']:.2f}x over"
    assert re.search(
        r"^target MISS one-way 64 B, tcp: tofu <0\.0x floor \(measured [\d.]+x: [\d.]+x over\)$", out, re.MULTILINE
    )
    assert out.splitlines()[-1] == "check FAILED: 1 missed, of 2 targets of this run"

    rc, doc = _run(monkeypatch, tmp_path, [MET, MISSED], "--impls", "tofu,floor")  # no --check: exit 0
    out = capsys.readouterr().out
    assert rc == 0 and "target MISS" in out and "check" not in out

    rc, doc = _run(monkeypatch, tmp_path, [MET], "--impls", "tofu,floor", "--check")
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.splitlines()[-1] == "check passed: 1 of 1 target of this run met"


def test_bench_check_without_pyzmq_fails_unless_pyzmq_was_left_out(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setattr(bench.command, "have_pyzmq", lambda: None)
    rc, doc = _run(monkeypatch, tmp_path, [MET, OF_PYZMQ], "--check")  # the default --impls asks for pyzmq
    out = capsys.readouterr().out
    assert rc == 1, out
    assert [v["status"] for v in doc["verdicts"] if v["transport"] == "tcp"] == [OK, UNJUDGED]
    assert "target ?    one-way 64 B, tcp: tofu ≥0.0x pyzmq (not judged: pyzmq is absent)" in out
    assert out.splitlines()[-1] == "check FAILED: 1 not judged, of 2 targets of this run"

    rc, doc = _run(monkeypatch, tmp_path, [MET, OF_PYZMQ], "--check", "--impls", "tofu,floor")
    out = capsys.readouterr().out
    assert rc == 0, out
    assert [(v["status"], v["reason"]) for v in doc["verdicts"] if v["transport"] == "tcp"] == [
        (OK, None),
        (LEFT_OUT, "--impls"),
    ]
    assert "target -    3 more not in this run: left out by --impls, --transports" in out
