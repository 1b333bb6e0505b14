"""The ``routilux`` command, run as a real process: exit codes, messages, and no tracebacks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

SCRIPT = Path(sys.executable).parent / "routilux"


def cli(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m routilux.cli ARGS`` (the same ``main`` the console script calls)."""
    import os

    result = subprocess.run(
        [sys.executable, "-m", "routilux.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200", **env},
    )
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


def test_console_script_is_installed_and_has_help_everywhere() -> None:
    assert SCRIPT.exists(), "pip install -e . puts the routilux console script next to the interpreter"
    top = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert top.returncode == 0
    for command in ("serve", "run", "validate", "export", "routines"):
        assert command in top.stdout
        sub = cli(command, "--help")
        assert sub.returncode == 0 and "usage: routilux " + command in sub.stdout, sub.stdout


def test_validate_accepts_a_good_flow(tmp_path: Path) -> None:
    result = cli("validate", str(EXAMPLES / "flows" / "etl.yaml"))
    assert result.returncode == 0, result.stderr
    assert "flow 'etl' is valid" in result.stdout


def test_validate_lists_every_problem_with_its_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "flow_id: bad\nroutines:\n  a: {class: NoSuchClass}\n"
        "  b: {class: DataTransformer, config: {transformation: 5}}\n"
        "connections:\n  - {from: b.output, to: c.input}\n"
    )
    result = cli("validate", str(bad))
    assert result.returncode == 2
    for location in ("routines.a.class", "routines.b.config.transformation", "connections[0].to"):
        assert location in result.stderr, result.stderr
    assert "3 problem(s)" in result.stderr


def test_validate_reports_yaml_syntax_errors_with_line_and_a_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("flow_id: x\nroutines: {a: [\n")
    result = cli("validate", str(broken))
    assert result.returncode == 2 and "line" in result.stderr, result.stderr
    missing = cli("validate", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_run_etl_example_completes_with_progress_and_result() -> None:
    result = cli("run", str(EXAMPLES / "flows" / "etl.yaml"), "--data", '"apple"', "--data", '""', "--data", "42")
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout
    for routine in ("source", "validate", "transform", "kept", "rejected"):  # the per-routine table
        assert routine in result.stdout
    assert 'kept: 1 item(s) ["APPLE"]' in result.stdout


def test_run_json_result_of_the_etl_pipeline_example() -> None:
    result = cli("run", str(EXAMPLES / "flows" / "etl_pipeline.yaml"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed"
    assert summary["routines"]["validate"]["errors"] == 0
    assert [i["data"] for i in summary["shared_data"]["results"]["sink"]] == [["ALPHA", "BETA"], ["GAMMA"]]


def test_run_failing_flow_exits_1_and_shows_the_error(tmp_path: Path) -> None:
    flow = tmp_path / "fail.yaml"
    flow.write_text(
        "flow_id: fail\nroutines:\n  source: {class: DataSource}\n"
        "  boom: {class: ErrorGenerator, config: {should_fail: true, message: kaboom}}\n"
        "connections:\n  - {from: source.output, to: boom.input}\n"
    )
    result = cli("run", str(flow), "--data", "1")
    assert result.returncode == 1
    assert "failed" in result.stdout and "GeneratedError: kaboom" in result.stdout


def test_run_timeout_exits_1(tmp_path: Path) -> None:
    flow = tmp_path / "slow.yaml"
    flow.write_text("flow_id: slow\nroutines:\n  wait: {class: SlowProcessor, config: {delay: 30}}\n")
    started = time.monotonic()
    result = cli("run", str(flow), "--timeout", "0.5", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["status"] == "failed"
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--entry", "source.nope"], "has no slot 'nope'"),
        (["--entry", "nodot"], "expected ROUTINE.SLOT"),
        (["--data", "{bad json"], "--data: not valid JSON"),
        (["--data", "@/nonexistent/file.json"], "cannot read file"),
        (["--timeout", "-1"], "--timeout"),
    ],
)
def test_run_bad_input_exits_2(args: list[str], message: str) -> None:
    result = cli("run", str(EXAMPLES / "flows" / "etl.yaml"), *args)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr


def test_run_invalid_flow_exits_2_with_locations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("flow_id: bad\nroutines:\n  a: {class: DataSource, config: {itemz: 1}}\n")
    result = cli("run", str(bad))
    assert result.returncode == 2
    assert "routines.a.config" in result.stderr


def test_routines_lists_builtins_with_ports_and_config() -> None:
    result = cli("routines")
    assert result.returncode == 0
    for name in ("DataSource", "DataValidator", "Router", "DataSink"):
        assert name in result.stdout
    detail = json.loads(cli("routines", "DataAggregator", "SlowProcessor", "--json").stdout)
    assert [d["name"] for d in detail] == ["DataAggregator", "SlowProcessor"]
    assert [s["name"] for s in detail[0]["slots"]] == ["input1", "input2"]
    assert "delay" in detail[1]["config_schema"]["properties"]
    unknown = cli("routines", "Nope")
    assert unknown.returncode == 2 and "unknown routine class" in unknown.stderr


def test_routines_include_routine_modules_and_report_broken_ones() -> None:
    env = {"PYTHONPATH": str(EXAMPLES / "custom_routine"), "ROUTILUX_ROUTINE_MODULES": "word_routines"}
    result = cli("routines", "WordCount", **env)
    assert result.returncode == 0 and "WordCount" in result.stdout and "min_length" in result.stdout
    broken = cli("routines", ROUTILUX_ROUTINE_MODULES="no_such_module_xyz")
    assert broken.returncode == 2 and "no_such_module_xyz" in broken.stderr


@pytest.fixture(scope="module")
def flows_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("cli") / "routilux.db"
    proc = ServerProcess(db, api_key="cli-test-key", ROUTILUX_API_KEY_ENABLED="true", ROUTILUX_API_KEY="cli-test-key",
                         ROUTILUX_FLOWS_DIR=str(EXAMPLES / "flows")).start()
    yield proc
    proc.stop()


def test_export_prints_the_flow_dsl_from_a_server(flows_server: ServerProcess) -> None:
    result = cli("export", "etl", "--server", flows_server.url, "--api-key", "cli-test-key")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("flow_id: etl")
    as_json = cli("export", "etl", "--server", flows_server.url, "--format", "json", ROUTILUX_API_KEY="cli-test-key")
    assert json.loads(as_json.stdout)["flow_id"] == "etl"


def test_export_errors_are_clear(flows_server: ServerProcess) -> None:
    unauthorized = cli("export", "etl", "--server", flows_server.url, ROUTILUX_API_KEY="")
    assert unauthorized.returncode == 1 and "401" in unauthorized.stderr and "--api-key" in unauthorized.stderr
    missing = cli("export", "nope", "--server", flows_server.url, "--api-key", "cli-test-key")
    assert missing.returncode == 1 and "404" in missing.stderr and "no flow 'nope'" in missing.stderr
    down = cli("export", "etl", "--server", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "cannot reach" in down.stderr


def test_serve_starts_answers_and_stops(tmp_path: Path) -> None:
    import os

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTILUX_")}
    process = subprocess.Popen(
        [str(SCRIPT), "serve", "--host", "127.0.0.1", "--port", str(port), "--db", str(tmp_path / "r.db"),
         "--flows-dir", str(EXAMPLES / "flows"), "--no-reload"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "routilux serve did not answer within 30 s"
            time.sleep(0.1)
        flows = httpx.get(f"http://127.0.0.1:{port}/api/flows", timeout=5).json()
        assert "etl" in {f["flow_id"] for f in flows["flows"]}  # --flows-dir was applied
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode in (0, -signal.SIGTERM)


def test_serve_bad_setting_prints_the_variable_without_traceback() -> None:
    result = cli("serve", "--port", "70000", "--no-reload")
    assert result.returncode == 2
    assert "ROUTILUX_API_PORT" in result.stderr
