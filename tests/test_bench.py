"""The benchmark harness runs end to end and reports what it promises.

One tiny workload in the quickest mode: a server and a client process per
implementation over loopback TCP. Nothing here asserts a timing: only that
every figure exists, is a positive number, and that the table and the JSON
carry the expected keys.
"""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tofu import bench
from tofu.bench.metrics import TARGETS
from tofu.bench.trials import Trial

ARGS = [
    "--quick",
    "--repeat",
    "1",
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


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_bench_reports_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main([*ARGS, "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed

    doc = json.loads(out.read_text())
    assert set(doc) >= {"meta", "figures", "targets", "trials", "errors"}
    assert doc["errors"] == []
    impls = doc["meta"]["impls"]
    assert impls == ["tofu", "pyzmq", "floor"]  # pyzmq comes with the test extra

    for key in ("oneway_64_msgs/tcp", "oneway_64_e2e_msgs/tcp", "peak_rss_server_mib[oneway-64]/tcp"):
        fig = doc["figures"][key]
        assert fig["transport"] == "tcp"
        for impl in impls:
            assert _positive(fig[impl]), (key, impl, fig)
            assert fig["runs"][impl] and all(_positive(v) for v in fig["runs"][impl])
    fig = doc["figures"]["oneway_64_msgs/tcp"]
    assert _positive(fig["tofu/floor"])
    assert [c["target"] for c in fig["targets"]] == [t.text for t in TARGETS if t.metric == "oneway_64_msgs"]
    assert [(v["metric"], v["transport"]) for v in doc["verdicts"] if v["status"] != "left out"] == [
        ("oneway_64_msgs", "tcp"),
        ("oneway_64_msgs", "tcp"),
    ]

    assert len(doc["trials"]) == len(impls)
    for t in doc["trials"]:
        assert t["error"] is None
        assert _positive(t["server"]["seconds"]) and _positive(t["server"]["rss_peak"])
        assert _positive(t["client"]["rss_peak"])

    assert "one-way 64 B" in printed and "tofu/floor" in printed
    assert max(len(line) for line in printed.splitlines()) <= 100, printed


def test_bench_runs_without_pyzmq(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.command, "have_pyzmq", lambda: None)  # what run() calls
    out = tmp_path / "bench.json"
    rc = bench.main([*ARGS, "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    doc = json.loads(out.read_text())
    assert doc["meta"]["impls"] == ["tofu", "floor"]
    assert any("pyzmq is absent" in n for n in doc["meta"]["notes"])
    assert "pyzmq is absent (pip install 'tofu-messaging[bench]')" in printed  # not eaten as markup
    fig = doc["figures"]["oneway_64_msgs/tcp"]
    assert _positive(fig["tofu"]) and _positive(fig["floor"])
    assert "pyzmq" not in fig["runs"]


def test_fan_in_with_two_server_processes_sharing_the_port(tmp_path, capsys):
    """fanin-2: two tofu server processes (reuse_port) and two client processes; the
    servers' counts add up to every message sent; the ratio to 1 process is reported."""
    out = tmp_path / "bench.json"
    args = [*ARGS, "--workloads", "fanin,fanin-2", "--impls", "tofu", "--clients", "20", "--json", str(out)]
    rc = bench.main(args)
    printed = capsys.readouterr().out
    assert rc == 0, printed
    doc = json.loads(out.read_text())
    assert doc["errors"] == []
    (trial,) = [t for t in doc["trials"] if t["workload"] == "fanin-2"]
    processes = trial["server"]["processes"]
    assert len(processes) == 2
    assert sum(p["accepted"] for p in processes) == 20
    assert sum(p["received"] for p in processes) == trial["spec"]["warmup"] + trial["spec"]["count"]
    for key in ("fanin2_msgs/tcp", "fanin2_e2e_msgs/tcp", "fanin2_server_cpu_us/tcp", "fanin2_cores/tcp"):
        fig = doc["figures"][key]
        assert _positive(fig["tofu"]) and _positive(fig["tofu/1 process"]), (key, fig)
    assert "scaling fan-in, 2 server procs, tcp: tofu " in printed
    assert max(len(line) for line in printed.splitlines()) <= 100, printed


def test_the_service_layer_rows_stand_next_to_the_engine_alone(tmp_path, capsys):
    """pipeline-client and pipeline-aclient: requests through tofu.Client.request
    (threads) and tofu.aio.Client.request (tasks) against the pipeline
    workload's echo server; each figure is reported beside the engine's own."""
    out = tmp_path / "bench.json"
    workloads = "pipeline,pipeline-client,pipeline-aclient"
    args = [*ARGS, "--workloads", workloads, "--impls", "tofu,floor", "--transports", "tcp,uds", "--json", str(out)]
    rc = bench.main(args)
    printed = capsys.readouterr().out
    assert rc == 0, printed
    doc = json.loads(out.read_text())
    assert doc["errors"] == []
    ran = {(t["workload"], t["impl"]) for t in doc["trials"]}
    faces = {("pipeline-client", "tofu"), ("pipeline-aclient", "tofu")}
    assert ran == {("pipeline", "tofu"), ("pipeline", "floor")} | faces
    for workload, via in (("pipeline_client", "tofu.Client"), ("pipeline_aclient", "tofu.aio.Client")):
        for transport in ("tcp", "uds"):
            fig = doc["figures"][f"{workload}_msgs/{transport}"]
            assert _positive(fig["tofu"]) and _positive(fig["tofu/engine alone"]), fig
            assert fig["tofu/engine alone"] == fig["tofu"] / doc["figures"][f"pipeline_msgs/{transport}"]["tofu"]
            assert f"layer req/resp, {via}, 64 out, {transport}: " in printed
            assert re.search(rf"{transport}: [\d,]+ msg/s, the engine alone [\d,]+: \d\.\d\dx", printed)
    assert max(len(line) for line in printed.splitlines()) <= 100, printed


def _plan(workloads: list[str], impls: list[str], repeat: int) -> list[Trial]:
    """The trials `tofu bench` would run for these workloads over tcp and uds
    (quick, 100 clients)."""
    import argparse

    from tofu.bench.trials import plan

    ns = argparse.Namespace(
        workload_list=workloads,
        transport_list=["tcp", "uds"],
        impl_list=impls,
        repeat=repeat,
        messages=0,
        quick=True,
        clients=100,
        idle=10,
        window=64,
        timeout=60.0,
        stall_timeout=5.0,
        tofu_options_dict={},
    )
    return list(plan(ns))


def test_each_service_layer_run_follows_the_engine_s_own():
    trials = _plan(["pipeline", "rtt", "pipeline-client", "pipeline-aclient"], ["tofu", "floor"], 2)
    order = [(t.workload.name, t.transport, t.run, t.impl) for t in trials]
    for transport in ("tcp", "uds"):
        for run in (0, 1):
            at = order.index(("pipeline", transport, run, "tofu"))
            assert order[at + 1 : at + 3] == [
                ("pipeline-client", transport, run, "tofu"),
                ("pipeline-aclient", transport, run, "tofu"),
            ]
    assert len(order) == len(set(order)) == 2 * 2 * (2 + 2 + 1 + 1)


def test_multi_process_workloads_run_tofu_over_tcp_only():
    trials = _plan(["fanin", "fanin-4"], ["tofu", "pyzmq", "floor"], 1)
    got = {(t.workload.name, t.transport, t.impl, t.spec["procs"]) for t in trials}
    assert {g for g in got if g[0] == "fanin-4"} == {("fanin-4", "tcp", "tofu", 4)}
    assert len([g for g in got if g[0] == "fanin"]) == 6 and all(g[3] == 1 for g in got if g[0] == "fanin")


def test_module_entry_point_help():
    r = subprocess.run(
        [sys.executable, "-m", "tofu.bench", "--help"], check=False, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0
    for option in ("--quick", "--repeat", "--messages", "--json", "--workloads", "--transports"):
        assert option in r.stdout


def test_reference_style_peer_script_runs_both_cases():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_style_peer.py"
    r = subprocess.run(
        [sys.executable, str(script), "--requests", "3"], check=False, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("tofu")]
    assert len(rows) == 2 and all(_positive(float(line.split()[-2])) for line in rows)
    assert "ratio of p50s:" in r.stdout


def test_codec_bench_paths_round_trip():
    """Every path the codec benchmark times encodes and decodes its frames (no timing here)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "codec_bench.py"
    spec = importlib.util.spec_from_file_location("codec_bench", path)
    assert spec is not None and spec.loader is not None
    codec_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(codec_bench)
    for msg in (codec_bench.small_message(), codec_bench.large_message()):
        codec_bench.check_paths(msg)  # raises SystemExit when a path does not round-trip
        for make_run in (
            codec_bench.fast_roundtrip,
            codec_bench.codec_fields_roundtrip,
            codec_bench.construct_roundtrip,
        ):
            make_run(msg)(2)


def test_profile_hot_path_script_reports_every_scenario_and_stage():
    """The profiler script runs each scenario and its microbenchmarks (tiny numbers, no timing
    asserted) and names every stage of the hot path for each; a compiled build, whose classes
    it cannot wrap, makes it say so and exit with 2."""
    import importlib.util

    import tofu

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "profile_hot_path.py"
    args = ["--messages", "2000", "--requests", "300", "--micro-number", "500", "--top", "3"]
    r = subprocess.run([sys.executable, str(path), *args], check=False, capture_output=True, text=True, timeout=120)
    if tofu.COMPILED:
        assert r.returncode == 2, r.stdout + r.stderr
        assert "needs the pure Python build" in r.stderr and "tofu.COMPILED is True" in r.stderr
        assert r.stdout == ""
        return
    assert r.returncode == 0, r.stderr
    spec = importlib.util.spec_from_file_location("profile_hot_path", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    stages = [label for label, _ in script.STAGES]
    for scenario in ("oneway", "rtt", "pipeline"):
        assert f"========== {scenario}: " in r.stdout
        assert f"### {scenario}: calls per message" in r.stdout
        table = r.stdout.split(f"### {scenario}: own time per message by stage")[1].split("###")[0]
        rows = [line.strip() for line in table.splitlines()[2:] if line.strip()]
        for stage in [*stages, script.OTHER, "total"]:
            row = next((row for row in rows if row.startswith(stage)), None)
            assert row is not None, (scenario, stage)
            cells = row[len(stage) :].split()  # a number per thread, or "-": never called there
            assert cells and all(cell == "-" or math.isfinite(float(cell)) for cell in cells), row
    assert "STALLED" not in r.stdout
    micro = r.stdout.split("========== microbenchmarks")[1].splitlines()[1:]
    assert len(micro) >= 20 and all(math.isfinite(float(line.split()[0])) for line in micro)


def test_printed_text_is_never_markup():
    from rich.console import Console
    from tofu.bench.report import say

    console = Console(record=True, width=100, file=io.StringIO())
    say(console, "warning: w [bench] [red]x[/red] [/]")
    assert console.export_text().rstrip("\n") == "warning: w [bench] [red]x[/red] [/]"


def _fake_figures() -> dict[str, dict[str, object]]:
    figs: dict[str, dict[str, object]] = {}
    for key, title, unit, higher, base in (
        ("oneway_64_msgs", "one-way 64 B", "msg/s", True, 50_000.0),
        ("rtt_p50_us", "round trip p50", "µs", False, 100.0),
        ("peak_rss_server_mib[rtt]", "peak RSS server, rtt", "MiB", False, 20.0),
    ):
        for n, transport in enumerate(("tcp", "uds")):
            figs[f"{key}/{transport}"] = {
                "metric": key,
                "title": title,
                "unit": unit,
                "transport": transport,
                "higher_is_better": higher,
                "tofu": base * (1 + n),
                "pyzmq": base * 2,
                "floor": None if key.startswith("rtt") and transport == "uds" else base * 5,  # a missing figure
                "targets": [],
            }
    return figs


@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_plot_draws_every_figure_side_by_side(tmp_path, suffix):
    from tofu.bench.plot import write_plot

    out = tmp_path / f"bench{suffix}"
    assert write_plot(_fake_figures(), ["tofu", "pyzmq", "floor"], str(out)) == 2  # peak RSS is left out
    data = out.read_bytes()
    if suffix == ".svg":
        text = data.decode()
        assert "<svg" in text and "one-way 64 B" in text and "round trip p50" in text
        assert all(impl in text for impl in ("tofu", "pyzmq", "floor"))  # the legend
    else:
        assert data.startswith(b"\x89PNG\r\n\x1a\n")


def test_plot_errors_are_clear(tmp_path, monkeypatch):
    from tofu.bench.plot import PlotError, check_plot_target

    with pytest.raises(PlotError, match=r"must end in \.svg or \.png"):
        check_plot_target(str(tmp_path / "bench.pdf"))
    with pytest.raises(SystemExit, match=r"must end in \.svg or \.png"):  # before any trial runs
        bench.main([*ARGS, "--plot", str(tmp_path / "bench.txt")])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were not installed
    with pytest.raises(PlotError, match=r"pip install 'tofu-messaging\[plot\]'"):
        check_plot_target(str(tmp_path / "bench.svg"))


def test_tls_transport_runs_tofu_and_the_floor_and_compares_them_with_plaintext(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = [*ARGS, "--transports", "tcp,tls", "--impls", "tofu,floor", "--json", str(out)]
    rc = bench.main(args)
    printed = capsys.readouterr().out
    assert rc == 0, printed
    doc = json.loads(out.read_text())
    assert sorted((t["transport"], t["impl"]) for t in doc["trials"]) == [
        ("tcp", "floor"),
        ("tcp", "tofu"),
        ("tls", "floor"),  # blocking ssl sockets
        ("tls", "tofu"),
    ]
    fig = doc["figures"]["oneway_64_msgs/tls"]
    assert _positive(fig["tofu"]) and _positive(fig["floor"])
    assert _positive(fig["tls/tcp"])
    assert fig["targets"] == []  # the targets compare plaintext figures
    assert "TLS against plaintext" in printed and "floor tls/tcp" in printed
    assert max(len(line) for line in printed.splitlines()) <= 100, printed


def test_tofu_options_take_integers_and_0_or_1_for_a_yes_no_field():
    from tofu.bench.command import _tofu_options

    opts = _tofu_options("max_unsent_msgs=1000, direct_send=0")
    assert opts == {"max_unsent_msgs": 1000, "direct_send": False}
    assert type(opts["max_unsent_msgs"]) is int and type(opts["direct_send"]) is bool
    with pytest.raises(SystemExit, match="not an integer"):
        _tofu_options("direct_send=no")
    with pytest.raises(SystemExit, match="is not NAME=INT"):
        _tofu_options("no_such_option=1")
