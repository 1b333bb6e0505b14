"""A TypeScript SDK generated from the spec meets the API: openapi-typescript turns
``openapi/openapi.yaml`` into types, openapi-fetch is the client, ``tsc --strict`` type-checks a
program written against them, and the program drives a live server: a flow, a job, posts, a
conditional breakpoint, evaluate, continue, wait, state, metrics, events and error bodies.

This is how a TypeScript user (or a dashboard) meets Routilux, so the test holds the spec to
what TypeScript generators need, at compile time and at run time:

- request fields with a default in the spec would be *required* in the generated types (a
  ``POST /api/jobs`` with only ``flow_id`` would not compile): defaults live in descriptions;
- ``ErrorHandler`` fields left out at their defaults must be optional in the types (comparing one
  with ``undefined`` does not compile if it is declared present), and are left out at run time;
- ``seq`` is a plain number (``seq === 1``), errors are ``ErrorResponse`` (not ``Error``), and a
  nullable object is ``X | null``.

The tools are the pinned npm packages of ``tests/support/npm`` (see ``tests/support/node.py``).
The program's output is JSON, checked here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import node
from tests.support.servers import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "openapi" / "openapi.yaml"
KEY = "ts-sdk-test-key"

TSCONFIG = {
    "compilerOptions": {
        "strict": True,
        "target": "ES2022",
        "module": "NodeNext",
        "moduleResolution": "NodeNext",
        "lib": ["ES2022", "DOM"],  # fetch, Request, Response and console, as in a browser
        "outDir": "out",
        "skipLibCheck": True,  # the packages' own .d.ts files; schema.ts and client.ts are checked
        "noUnusedLocals": True,
    },
    "files": ["client.ts"],
}

# Written against the generated `paths`/`components`: anything the spec says wrongly for a
# TypeScript user fails to compile here (tsc --strict), or fails a check at run time.
CLIENT_TS = r"""
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";
import { API_KEY, BASE_URL, FLOW_ID } from "./config.js";

type ErrorResponse = components["schemas"]["ErrorResponse"];
type JobState = components["schemas"]["JobState"];

function check(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Error(`check failed: ${what}`);
}

const client = createClient<paths>({ baseUrl: BASE_URL, headers: { "X-API-Key": API_KEY } });
const seen: Record<string, unknown> = {};

// A flow: source -> double -> sink, `double` retrying with the defaults of everything else.
const flow = await client.POST("/api/flows", {
  body: {
    dsl_dict: {
      flow_id: FLOW_ID,
      routines: {
        source: { class: "DataSource" },
        double: { class: "DataMultiplier", config: { factor: 2 }, error_handler: { strategy: "retry" } },
        sink: { class: "DataSink" },
      },
      connections: [{ from: "source.output", to: "double.input" }, { from: "double.output", to: "sink.input" }],
    },
  },
});
check(flow.response.status === 201 && flow.data !== undefined, `create flow: ${flow.response.status}`);
const handler = flow.data.routines["double"].error_handler;
check(handler !== null, "double has its own error handler");
// Fields at their defaults are left out, and the types say they may be.
check(handler.strategy === "retry" && handler.max_retries === undefined, JSON.stringify(handler));
seen.flow = { flow_id: flow.data.flow_id, revision: flow.data.revision, routines: Object.keys(flow.data.routines) };

// A job, with nothing but its flow: every other field of JobStart is optional.
const started = await client.POST("/api/jobs", { body: { flow_id: FLOW_ID } });
check(started.data !== undefined, `start job: ${started.response.status}`);
const job_id: string = started.data.job_id;
const job = { params: { path: { job_id } } };
const startedError: string | null = started.data.error;
seen.started = { status: started.data.status, error: startedError, error_detail: started.data.error_detail };

// A conditional breakpoint, then two posts: only the big one stops before `double`.
const bp = await client.POST("/api/jobs/{job_id}/breakpoints", {
  ...job, body: { routine_id: "double", condition: "data > 100" },
});
check(bp.response.status === 201 && bp.data !== undefined, `breakpoint: ${bp.response.status}`);
for (const data of [5, 500]) {
  const posted = await client.POST("/api/jobs/{job_id}/post", {
    ...job, body: { routine_id: "source", slot_name: "trigger", data },
  });
  check(posted.response.status === 202, `post ${data}: ${posted.response.status}`);
}
let session = (await client.GET("/api/jobs/{job_id}/debug/session", job)).data;
for (let i = 0; i < 500 && !session?.paused_at; i++) {
  await new Promise((resolve) => setTimeout(resolve, 20));
  session = (await client.GET("/api/jobs/{job_id}/debug/session", job)).data;
}
check(session !== undefined && session.paused_at !== null, "the job stops at the breakpoint");
const evaluated = await client.POST("/api/jobs/{job_id}/debug/evaluate", {
  ...job, body: { expression: "data * 2", routine_id: "double" },
});
seen.breakpoint = { routine: session.paused_at.routine_id, evaluated: evaluated.data?.result,
                    hits: (await client.GET("/api/jobs/{job_id}/breakpoints", job)).data?.breakpoints[0].hit_count };
check((await client.POST("/api/jobs/{job_id}/debug/resume", job)).response.status === 200, "resume");

// Wait for both items to reach the sink, complete the job, and wait for its end.
let state: JobState | undefined;
for (let i = 0; i < 500; i++) {
  state = (await client.GET("/api/jobs/{job_id}/state", job)).data;
  const kept = (state?.shared_data["results"] as Record<string, unknown[]> | undefined)?.["sink"];
  if (kept && kept.length === 2) break;
  await new Promise((resolve) => setTimeout(resolve, 20));
}
check(state !== undefined, "state");
seen.sink = ((state.shared_data["results"] as Record<string, { data: number }[]>)["sink"]).map((item) => item.data);
const history = state.execution_history[0];
seen.state = { routines: Object.keys(state.routine_states).sort(), history_event: history.event_name,
               history_items: history.data.items, updated_at: typeof state.updated_at, durable: state.durable };
check((await client.POST("/api/jobs/{job_id}/complete", job)).response.status === 200, "complete");
const waited = await client.POST("/api/jobs/{job_id}/wait", { ...job, body: { timeout: 10 } });
check(waited.data !== undefined, "wait");
seen.waited = { status: waited.data.status, timed_out: waited.data.timed_out };

// Metrics: durations are numbers (never null) in routine_metrics; totals under both names.
const metrics = (await client.GET("/api/jobs/{job_id}/metrics", job)).data;
check(metrics !== undefined, "metrics");
const avg: number = metrics.routine_metrics["double"].avg_duration;
seen.metrics = { status: metrics.status, double_runs: metrics.routines["double"].execution_count,
                 avg_is_number: typeof avg === "number", slot_calls: metrics.total_slot_calls,
                 same_totals: metrics.total_slot_calls === metrics.totals.slot_calls };

// Events: seq is a plain number.
const since = { params: { path: { job_id }, query: { since: 0 } } };
const events = (await client.GET("/api/jobs/{job_id}/events", since)).data;
check(events !== undefined, "events");
const first: number = events.events[0].seq;
seen.events = { first_is_1: first === 1, first_type: events.events[0].type, last_is_end: events.events.at(-1)?.type,
                json: JSON.stringify({ seq: events.last_seq }) };

// Error bodies: typed ErrorResponse, with the stable code (and the field on a 422).
const missing = await client.GET("/api/jobs/{job_id}", { params: { path: { job_id: "no-such-job" } } });
const invalid = await client.POST("/api/jobs", { body: { flow_id: FLOW_ID, timeout: -1 } });
const conflict = await client.POST("/api/jobs/{job_id}/pause", job);
const errors: [number, ErrorResponse | undefined][] = [
  [missing.response.status, missing.error], [invalid.response.status, invalid.error],
  [conflict.response.status, conflict.error],
];
seen.errors = errors.map(([status, body]) => [status, body?.detail.error, body?.detail.field ?? null]);
const unauthenticated = await createClient<paths>({ baseUrl: BASE_URL }).GET("/api/flows");
seen.unauthenticated = [unauthenticated.response.status, unauthenticated.error?.detail.error];

console.log(JSON.stringify(seen));
"""


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("ts-sdk") / "sdk.db", api_key=KEY,
                           ROUTILUX_API_KEY_ENABLED="true", ROUTILUX_API_KEY=KEY).start()
    yield server
    server.stop()


def checked(done: node.subprocess.CompletedProcess[str], what: str) -> str:
    assert done.returncode == 0, f"{what} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_generated_typescript_client_type_checks_and_drives_a_live_server(tmp_path: Path,
                                                                             secured: ServerProcess) -> None:
    modules = node.install()
    project = tmp_path / "ts-client"
    project.mkdir()
    (project / "node_modules").symlink_to(modules, target_is_directory=True)
    (project / "package.json").write_text(json.dumps({"type": "module", "private": True}))
    (project / "tsconfig.json").write_text(json.dumps(TSCONFIG))
    flow_id = f"ts-{tmp_path.name[-20:]}".replace("_", "-")
    (project / "config.ts").write_text(
        f"export const BASE_URL = {json.dumps(secured.url)};\n"
        f"export const API_KEY = {json.dumps(KEY)};\nexport const FLOW_ID = {json.dumps(flow_id)};\n"
    )
    (project / "client.ts").write_text(CLIENT_TS)

    generated = checked(node.run([modules / ".bin" / "openapi-typescript", SPEC, "-o", project / "schema.ts"],
                                 cwd=project, timeout=120), "openapi-typescript")
    assert "schema.ts" in generated and "⚠" not in generated, generated
    checked(node.run([modules / ".bin" / "tsc", "--strict", "-p", project / "tsconfig.json"], cwd=project,
                     timeout=300), "tsc --strict")
    output = checked(node.run(["node", project / "out" / "client.js"], cwd=project, timeout=120), "the client")
    seen = json.loads(output.strip().splitlines()[-1])

    assert seen["flow"] == {"flow_id": flow_id, "revision": 1, "routines": ["source", "double", "sink"]}
    assert seen["started"] == {"status": seen["started"]["status"], "error": None, "error_detail": None}
    assert seen["started"]["status"] in {"running", "idle"}
    assert seen["breakpoint"] == {"routine": "double", "evaluated": 1000, "hits": 1}
    assert seen["sink"] == [10, 1000]
    assert seen["state"] == {"routines": ["double", "sink", "source"], "history_event": "routine_end",
                             "history_items": 1, "updated_at": "string", "durable": True}
    assert seen["waited"] == {"status": "completed", "timed_out": False}
    assert seen["metrics"]["status"] == "completed" and seen["metrics"]["double_runs"] == 2
    assert seen["metrics"]["avg_is_number"] is True and seen["metrics"]["same_totals"] is True
    assert seen["metrics"]["slot_calls"] == 6  # 2 triggers, 2 into double, 2 into sink
    assert seen["events"]["first_is_1"] is True and seen["events"]["first_type"] == "job_start"
    assert seen["events"]["last_is_end"] == "job_end" and seen["events"]["json"].startswith('{"seq":')
    assert seen["errors"] == [[404, "job_not_found", None], [422, "validation_error", "body.timeout"],
                              [409, "illegal_transition", None]]
    assert seen["unauthenticated"] == [401, "authentication_required"]
