#!/usr/bin/env bash
# Mutation testing: does the suite fail when the code is wrong?
#
#   pip install -e '.[test,dev]'
#   tools/mutation.sh                    # framing message addresses groups pool protocol
#   tools/mutation.sh groups pool        # only these modules of runtime/
#
# mutmut 3 imports the mutated code by the path it lives at, so the package is
# staged as it installs (src/tofu with tofu/generated inside) in .mutation/,
# with the tests; mutmut runs there. For each module it prints the score
# (killed / all mutants) and the names of the survivors; `cd .mutation &&
# mutmut show NAME` shows one. MUTATION_STAGE=DIR stages elsewhere;
# MUTANTS="NAME ..." runs only those mutants (globs too: 'tofu.groups.*');
# MUTATION_TEST_TIMEOUT=SECONDS bounds each test (default 120). Survivors that are equivalent to the original
# (no test can tell them apart) are listed with the reason in docs/mutation.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=$(command -v "${PYTHON:-python}")
stage=${MUTATION_STAGE:-$root/.mutation}
if [ $# -eq 0 ]; then
    set -- framing message addresses groups pool protocol
fi

only=""
for module in "$@"; do
    test -f "$root/runtime/$module.py" || { echo "no runtime/$module.py" >&2; exit 2; }
    only+="\"src/tofu/$module.py\", "
done

rm -rf "$stage"
mkdir -p "$stage/src"
cp -r "$root/runtime" "$stage/src/tofu"
cp -r "$root/generated" "$stage/src/tofu/generated"
cp -r "$root/tests" "$stage/tests"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +

# Tests that need the repository around them (the generator and the spec,
# the examples, the docs and the site, the install and the build, mypy on
# runtime/, the layering of runtime/, the benchmark and soak tools, tshark,
# valgrind, chromium) are left out: they test those, not the engine's
# behaviour. So are the tests that run `tofu` or an example in a
# subprocess: it imports the installed package, never the mutant.
cat > "$stage/pyproject.toml" <<TOML
[tool.pytest.ini_options]
testpaths = ["tests"]
markers = ["tshark: needs tshark", "valgrind: needs valgrind", "chromium: needs chromium"]

[tool.mutmut]
source_paths = ["src"]
only_mutate = [$only]
# A mutant that deadlocks the engine uses no CPU, so mutmut's CPU-time limit
# never ends it: pytest-timeout does (a hang counts as caught).
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "--timeout=${MUTATION_TEST_TIMEOUT:-120}", "--timeout-method=thread"]
pytest_add_cli_args_test_selection = [
    "tests",
    "-m", "not tshark and not valgrind and not chromium",
    "--ignore=tests/test_typing.py",
    "--ignore=tests/test_codegen.py",
    "--ignore=tests/test_examples.py",
    "--ignore=tests/test_wireshark.py",
    "--ignore=tests/test_bench.py",
    "--ignore=tests/test_bench_targets.py",
    "--ignore=tests/test_bench_instructions.py",
    "--ignore=tests/test_readme.py",
    "--ignore=tests/test_docs.py",
    "--ignore=tests/test_docs_security.py",
    "--ignore=tests/test_site.py",
    "--ignore=tests/test_install.py",
    "--ignore=tests/test_build.py",
    "--ignore=tests/test_architecture.py",
    "--ignore=tests/test_machine_doc.py",
    "--ignore=tests/test_machine_spec.py",
    "--ignore=tests/test_protocol_doc.py",
    "--ignore=tests/test_soak.py",
    "--deselect=tests/test_cli.py::test_echo_server_example_says_what_it_prints",
    "--deselect=tests/test_conform.py::test_docs_table_is_the_catalogue",
    "--deselect=tests/test_serve_workers.py::test_the_more_than_one_core_program_in_the_docs_runs",
    "--deselect=tests/test_cli.py::test_python_dash_m_and_console_script",
    "--deselect=tests/test_cli.py::test_ping_interrupted_is_one_line_and_exit_130",
    "--deselect=tests/test_cli.py::test_serve_announces_real_port_answers_ping_and_stops_on_sigint",
    "--deselect=tests/test_cli.py::test_serve_on_tcp_and_uds_and_sigterm",
    "--deselect=tests/test_cli.py::test_serve_stops_gracefully_with_a_connected_client",
    "--deselect=tests/test_cli.py::test_serve_logs_why_a_client_vanished",
    "--deselect=tests/test_cli.py::test_serve_on_a_taken_port_fails_with_one_line",
    "--deselect=tests/test_cli.py::test_serve_survives_a_hello_request_it_cannot_read",
    "--deselect=tests/test_cli.py::test_verbose_logs_the_engine_activity",
    "--deselect=tests/test_cli.py::test_serve_grace_zero_stops_at_once",
    "--deselect=tests/test_cli.py::test_serve_never_prints_a_peer_s_control_characters",
    "--deselect=tests/test_cli.py::test_serve_survives_a_malformed_hello_request",
    "--deselect=tests/test_cli.py::test_ping_ctrl_c_prints_the_statistics_so_far",
]
TOML

cd "$stage"
echo "mutmut run: progress in $stage/run.log"
# MUTANTS="name ..." runs only those mutants (e.g. the survivors of an
# earlier run, after adding tests); the score then counts only them.
# shellcheck disable=SC2086
"$python" -m mutmut run ${MUTANTS:-} > run.log 2>&1 || true
"$python" -m mutmut results --all true > results.txt || true
MUTATION_TEST_TIMEOUT=${MUTATION_TEST_TIMEOUT:-120} "$python" - "$@" <<'PY'
import glob, json, os, re, sys
counts = {}
survivors = {}
# A mutant whose run ended at the test timeout is listed apart: pytest-timeout
# ends the worker as a failure, but inside mutmut's forked workers a test may
# hang whatever the mutant (it forks a process with threads). Run each one in a
# plain process to classify it (docs/mutation.md says how).
limit = float(os.environ["MUTATION_TEST_TIMEOUT"])
timed_out = set()
for meta in glob.glob("mutants/**/*.meta", recursive=True):
    durations = json.load(open(meta)).get("durations_by_key", {})
    timed_out |= {name for name, seconds in durations.items() if seconds >= 0.95 * limit}
for line in open("results.txt"):
    m = re.match(r"\s*tofu\.(\w+)\.(\S+): (.+)", line)
    if not m:
        continue
    module, name, status = m.group(1), m.group(2), m.group(3).strip()
    if status == "not checked" and os.environ.get("MUTANTS"):
        continue  # not asked for this time
    c = counts.setdefault(module, {})
    c[status] = c.get(status, 0) + 1
    full = f"tofu.{module}.{name}"
    if status == "killed" and full in timed_out:
        status = "ended at the test timeout"
        c[status] = c.get(status, 0) + 1
        c["killed"] -= 1
    if status not in ("killed", "timeout"):  # a mutant that hangs the suite is caught too
        survivors.setdefault(module, []).append(f"{full}: {status}")
print(f"{'module':12} {'mutants':>8} {'killed':>8} {'score':>7}  other (check what ended at the test timeout in a plain process)")
for module in sys.argv[1:]:
    c = counts.get(module, {})
    total = sum(c.values())
    killed = c.get("killed", 0) + c.get("timeout", 0)
    other = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k not in ("killed", "timeout"))
    score = f"{100 * killed / total:.1f}%" if total else "-"
    print(f"{module:12} {total:8} {killed:8} {score:>7}  {other}")
for module in sys.argv[1:]:
    for line in survivors.get(module, []):
        print("  " + line)
PY
