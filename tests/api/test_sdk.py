"""A generated SDK meets the API: openapi-python-client turns ``openapi/openapi.yaml`` into a Python
package, which is installed into a throw-away venv and drives a live server with typed models.

This is how users' generated clients will meet Routilux, so the test holds the spec to two
things a validator does not check: the generator understands every schema (it prints no warning —
a warning means it silently dropped a model or a field), and the generated code actually parses
the server's real responses into its models (a wrong ``required`` or ``nullable`` in the spec
fails here with a ``KeyError``/``TypeError`` inside the client, not in a validator).

Everything lives under pytest's tmp path: the generated project, the venv, the database. The venv
is made without pip and sees the project venv's packages (httpx, attrs, setuptools, wheel)
through a ``.pth`` file, so the install needs no network and no cache; the package itself is
installed properly (``pip install`` of the generated project, not a sys.path hack), so a broken
generated ``setup.py`` would fail too. The client code runs in that venv's interpreter, in a
child process, and reports what it saw as JSON.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "openapi" / "openapi.yaml"
VENV_BIN = Path(sys.executable).parent
KEY = "sdk-test-key"

# Runs inside the temporary venv: only the generated package (and its own dependencies) is used.
CLIENT_SCRIPT = '''
"""Create a flow, start a job, post data, read state and metrics through the generated client."""
import json
import sys
import time

import httpx

from routilux_api_client import AuthenticatedClient, Client
from routilux_api_client.api.flows import create_flow, list_flow_routines, list_flows
from routilux_api_client.api.jobs import complete_job, get_job_state, post_job_data, start_job
from routilux_api_client.api.monitoring import get_job_metrics_alias
from routilux_api_client.models import (
    EntryBody, ErrorResponse, FlowCreate, FlowView, JobMetrics, JobPost, JobStart, JobState, JobStatus,
    JobView, PostAccepted, RoutineMetrics,
)

base_url, key, flow_id = sys.argv[1:4]
DSL = f"""
flow_id: {flow_id}
routines:
  source: {{class: DataSource, config: {{items: [a, b, c]}}}}
  clean:  {{class: DataTransformer, config: {{transformation: upper}}}}
  sink:   {{class: DataSink}}
connections:
  - {{from: source.output, to: clean.input}}
  - {{from: clean.output, to: sink.input}}
"""
timeout = httpx.Timeout(20.0)
seen = {}

anonymous = Client(base_url=base_url, timeout=timeout)
refused = list_flows.sync_detailed(client=anonymous)
assert refused.status_code == 401 and isinstance(refused.parsed, ErrorResponse), refused
seen["without_key"] = refused.parsed.detail.error

client = AuthenticatedClient(base_url=base_url, token=key, auth_header_name="X-API-Key", prefix="",
                             timeout=timeout, raise_on_unexpected_status=True)
flow = create_flow.sync(client=client, body=FlowCreate(dsl=DSL))
assert isinstance(flow, FlowView), flow
seen["flow"] = {"flow_id": flow.flow_id, "routines": sorted(flow.routines.additional_properties),
                "runnable": flow.runnable}
routines = list_flow_routines.sync(flow.flow_id, client=client)  # a bare map, by routine id
seen["listed_routines"] = {rid: r.class_name for rid, r in routines.additional_properties.items()}

job = start_job.sync(client=client, body=JobStart(
    flow_id=flow.flow_id, entry=EntryBody(routine_id="source", slot_name="trigger", data={})))
assert isinstance(job, JobView), job
seen["started"] = job.status.value

posted = post_job_data.sync(job.job_id, client=client,
                            body=JobPost(routine_id="clean", slot_name="input", data={"data": "d"}))
assert isinstance(posted, PostAccepted), posted
seen["posted"] = [posted.routine_id, posted.slot_name]

deadline = time.monotonic() + 15
while True:
    state = get_job_state.sync(job.job_id, client=client)
    assert isinstance(state, JobState), state
    sink = state.shared_data.additional_properties.get("results", {}).get("sink", [])
    if len(sink) >= 4 or time.monotonic() > deadline:
        break
    time.sleep(0.05)
seen["sink"] = sorted(item["data"] for item in sink)
seen["state_keys"] = {"routine_states": sorted(state.routine_states.additional_properties),
                      "history": len(state.execution_history)}

done = complete_job.sync(job.job_id, client=client)
assert isinstance(done, JobView) and done.status == JobStatus.COMPLETED, done
assert done.error is None and done.error_detail is None, done  # `error` is text, the object beside it
seen["history_event"] = state.execution_history[0].event_name.value

metrics = get_job_metrics_alias.sync(job.job_id, client=client)
assert isinstance(metrics, JobMetrics), metrics
clean = metrics.routines.additional_properties["clean"]
assert isinstance(clean, RoutineMetrics), clean
seen["metrics"] = {"status": metrics.status.value, "activations": metrics.totals.activations,
                   "clean_executions": clean.execution_count, "slot_calls": metrics.totals.slot_calls,
                   "has_start": metrics.start_time is not None, "total_slot_calls": metrics.total_slot_calls,
                   "clean_avg": metrics.routine_metrics.additional_properties["clean"].avg_duration}
print(json.dumps(seen))
'''


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with API keys on, so the generated client's auth settings are exercised too."""
    server = ServerProcess(
        tmp_path_factory.mktemp("sdk") / "sdk.db",
        api_key=KEY,
        ROUTILUX_API_KEY_ENABLED="true",
        ROUTILUX_API_KEY=KEY,
    ).start()
    yield server
    server.stop()


def run(argv: list[str], *, timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a command to completion (bounded); fail the test with its output when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{argv[:3]} exited with {done.returncode}:\n{output}"
    return output


def generate(out: Path) -> str:
    """openapi-python-client with its default settings (ruff post-hooks included: PATH has the venv)."""
    env = {**os.environ, "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")])}
    generator = VENV_BIN / "openapi-python-client"
    return run(
        [str(generator), "generate", "--path", str(SPEC), "--meta", "setup", "--output-path", str(out)],
        timeout=120,
        env=env,
        cwd=out.parent,
    )


def make_venv(path: Path) -> Path:
    """A fresh venv without pip that sees the project venv's packages (see the module docstring)."""
    run([sys.executable, "-m", "venv", "--without-pip", str(path)], timeout=60)
    python = path / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], timeout=30).strip()
    Path(purelib, "routilux_project_venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def test_generated_client_drives_a_live_server(tmp_path: Path, secured: ServerProcess) -> None:
    out = tmp_path / "routilux-api-client"
    log = generate(out)
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines == [f"Generating {out}"], f"the generator complained about the spec:\n{log}"
    assert "warning" not in log.lower() and "unable to" not in log.lower(), log
    # A nullable object written as a nullable schema becomes a model named `<Name>Type0`; the
    # spec writes `anyOf: [{$ref}, null]`, so every model has its schema's own name.
    models = sorted(p.stem for p in (out / "routilux_api_client" / "models").glob("*.py"))
    assert not [m for m in models if re.search(r"_type_\d+$", m)], models

    python = make_venv(tmp_path / "venv")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--no-cache-dir",
            str(out),
        ],
        timeout=120,
    )
    where = run([str(python), "-c", "import routilux_api_client; print(routilux_api_client.__file__)"], timeout=30)
    assert where.strip().startswith(str(tmp_path / "venv")), where  # installed there, not found elsewhere

    script = tmp_path / "use_client.py"
    script.write_text(CLIENT_SCRIPT)
    flow_id = f"sdk-{tmp_path.name[-20:]}".replace("_", "-")
    output = run([str(python), str(script), secured.url, KEY, flow_id], timeout=60, cwd=tmp_path)
    seen = json.loads(output.strip().splitlines()[-1])

    assert seen["without_key"] == "authentication_required"
    assert seen["flow"] == {"flow_id": flow_id, "routines": ["clean", "sink", "source"], "runnable": True}
    assert seen["listed_routines"] == {"source": "DataSource", "clean": "DataTransformer", "sink": "DataSink"}
    assert seen["started"] in {"running", "idle"}
    assert seen["posted"] == ["clean", "input"]
    assert seen["sink"] == ["A", "B", "C", "D"]  # the source's three items plus the posted one
    assert seen["state_keys"]["routine_states"] == ["clean", "sink", "source"]
    assert seen["state_keys"]["history"] >= 3  # one activation per routine at least (they batch)
    assert seen["history_event"] == "routine_end"
    assert seen["metrics"]["status"] == "completed" and seen["metrics"]["has_start"] is True
    # trigger + 3 items into clean + the posted one + 4 into sink; clean may take several per activation
    assert seen["metrics"]["slot_calls"] >= 9 and seen["metrics"]["clean_executions"] >= 1
    assert seen["metrics"]["activations"] >= 3
    assert seen["metrics"]["total_slot_calls"] == seen["metrics"]["slot_calls"]
    assert isinstance(seen["metrics"]["clean_avg"], float)  # routine_metrics: numbers, never null
