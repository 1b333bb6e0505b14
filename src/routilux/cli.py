"""The ``routilux`` command: serve the API, run or validate a flow file, export a flow, list routines.

Every subcommand reports problems as one readable line each (with the DSL location where there
is one) and never a traceback: a user who typed a wrong path or a bad flag needs to know what to
fix, not where in Routilux the error surfaced. Exit codes are stable so scripts and CI can rely
on them: 0 success, 1 the work itself failed (a job failed, was cancelled or timed out; the
server could not be reached or refused), 2 bad input (unreadable or invalid flow, bad flag).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import anyio
import msgspec
from rich.console import Console
from rich.live import Live
from rich.table import Table

from routilux.bus.events import Event, Gap
from routilux.engine import Engine, Entry, JobStatus, Registry, default_registry
from routilux.engine.dsl import Format, load_flow
from routilux.engine.errors import Problem
from routilux.engine.flow import Flow
from routilux.engine.plan import FlowPlan, compile_flow, validate_flow
from routilux.errors import RoutiluxError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CLIError(Exception):
    """A failure to report as one message and an exit code, never as a traceback."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = list(details)


def _registry() -> Registry:
    """The process-wide registry; a broken ROUTILUX_ROUTINE_MODULES module is bad input (exit 2)."""
    try:
        return default_registry()
    except Exception as exc:  # an import error, or any exception raised by the user's module
        raise CLIError(
            f"cannot load the routines of ROUTILUX_ROUTINE_MODULES={os.environ.get('ROUTILUX_ROUTINE_MODULES', '')!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def _problem_lines(problems: Sequence[Problem]) -> list[str]:
    return [f"{p.location or '<document>'}: {p.message} [{p.code}]" for p in problems]


# ---------------------------------------------------------------------------------------------
# Reading flows
# ---------------------------------------------------------------------------------------------
def _read_flow(path: str) -> Flow:
    """Load a flow file, turning every DSL problem into a located message (exit 2)."""
    file = Path(path)
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None
    suffix = file.suffix.lower()
    fmt: Format | None = "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else None
    try:
        return load_flow(text, fmt)
    except RoutiluxError as exc:
        problems = getattr(exc, "problems", None)
        lines = _problem_lines(problems) if problems else [exc.message]
        raise CLIError(f"{path}: invalid flow ({len(lines)} problem(s))", details=lines) from None


def _compile(flow: Flow, registry: Registry, path: str) -> FlowPlan:
    report = validate_flow(flow, registry)
    if report.errors:
        lines = _problem_lines(report.errors)
        raise CLIError(f"{path}: invalid flow ({len(lines)} problem(s))", details=lines)
    return compile_flow(flow, registry)


# ---------------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    """Check a flow file the way the server would before accepting it."""
    registry = _registry()
    flow = _read_flow(args.flow)
    report = validate_flow(flow, registry)
    for line in _problem_lines(report.warnings):
        err.print(f"warning: {line}", markup=False)
    if report.errors:
        for line in _problem_lines(report.errors):
            err.print(f"error: {line}", markup=False)
        err.print(f"{args.flow}: invalid flow ({len(report.errors)} problem(s))", markup=False)
        return EXIT_BAD_INPUT
    out.print(
        f"{args.flow}: flow '{flow.flow_id}' is valid "
        f"({len(flow.routines)} routines, {len(flow.connections)} connections)",
        markup=False,
    )
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------
@dataclass
class _RoutineRow:
    """What the progress table shows of one routine, counted from bus events only."""

    status: str = "pending"
    items_in: int = 0
    runs: int = 0
    errors: int = 0
    emitted: int = 0
    last_duration: float | None = None


@dataclass
class _Progress:
    rows: dict[str, _RoutineRow]
    started: float = field(default_factory=time.monotonic)
    job_status: str = "pending"
    lost: int = 0

    def apply(self, event: Event | Gap) -> None:
        """Fold one bus event (or gap) into the table."""
        if isinstance(event, Gap):
            self.lost += event.to_seq - event.from_seq + 1
            return
        etype, rid, data = event.type, event.routine_id, event.data
        if etype == "job_start":
            self.job_status = "running"
        elif etype in ("job_idle", "job_pause", "job_resume"):
            self.job_status = {"job_idle": "idle", "job_pause": "paused", "job_resume": "running"}[etype]
        elif etype == "job_end":
            self.job_status = str(data.get("status"))
        row = self.rows.get(rid) if rid is not None else None
        if row is None:
            return
        if etype == "slot_call":
            row.items_in += 1
        elif etype == "routine_start":
            row.status = "running"
        elif etype == "routine_end":
            status = str(data.get("status"))
            row.last_duration = data.get("duration")
            if status == "completed":
                row.runs += 1
                row.status = "done"
            else:
                row.errors += 1
                row.status = status
        elif etype == "event_emit":
            row.emitted += 1

    def table(self) -> Table:
        elapsed = time.monotonic() - self.started
        table = Table(title=f"job {self.job_status} · {elapsed:.1f}s", title_justify="left")
        for column in ("routine", "status", "items in", "runs", "emitted", "errors", "last (ms)"):
            table.add_column(column, justify="left" if column in ("routine", "status") else "right")
        for rid, row in self.rows.items():
            last = f"{row.last_duration * 1000:.1f}" if row.last_duration is not None else "-"
            table.add_row(rid, row.status, str(row.items_in), str(row.runs), str(row.emitted), str(row.errors), last)
        if self.lost:
            table.caption = f"{self.lost} event(s) not shown (display fell behind)"
        return table


def _parse_data(raw: str) -> Any:
    """``--data`` is JSON, or ``@file.json`` to read it from a file."""
    if raw.startswith("@"):
        try:
            raw = Path(raw[1:]).read_text()
        except OSError as exc:
            raise CLIError(f"--data {raw}: cannot read file: {exc.strerror or exc}") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--data: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def _entry_port(flow: Flow, plan: FlowPlan, entry: str | None) -> tuple[str, str]:
    """The routine.slot the data goes to: ``--entry``, or the flow's only routine nothing feeds."""
    if entry is not None:
        routine_id, dot, slot = entry.partition(".")
        if not dot or not routine_id or not slot:
            raise CLIError(f"--entry {entry!r}: expected ROUTINE.SLOT (e.g. source.trigger)")
        try:
            plan.check_port(routine_id, slot)
        except RoutiluxError as exc:
            raise CLIError(f"--entry {entry}: {exc.message}") from None
        return routine_id, slot
    fed = {c.target_routine for c in flow.connections}
    starts = [rid for rid in plan.routines if rid not in fed]
    if len(starts) == 1 and len(plan.routines[starts[0]].slot_specs) == 1:
        return starts[0], next(iter(plan.routines[starts[0]].slot_specs))
    raise CLIError("this flow has no single entry routine with one slot: name one with --entry ROUTINE.SLOT")


def _summary(job: Any) -> dict[str, Any]:
    """The final result as plain data (what ``--json`` prints; the table view shows the same)."""
    state = job.state()
    return {
        "job_id": job.job_id,
        "flow_id": job.flow_id,
        "status": job.status.value,
        "error": job.error,
        "routines": {
            rid: {"status": s["status"], "executions": s["execution_count"], "errors": s["error_count"]}
            for rid, s in state["routine_states"].items()
        },
        "errors": [
            {k: e.get(k) for k in ("routine_id", "type", "message", "attempt", "strategy")} for e in state["errors"]
        ],
        "shared_data": state["shared_data"],
    }


def _print_summary(summary: dict[str, Any]) -> None:
    status = summary["status"]
    colour = "green" if status == "completed" else "red"
    out.print(f"[bold {colour}]{status}[/]  job {summary['job_id']} of flow '{summary['flow_id']}'")
    if summary["error"]:
        out.print(f"job error: {summary['error'].get('type')}: {summary['error'].get('message')}", markup=False)
    for error in summary["errors"]:
        out.print(
            f"  error in {error['routine_id']} (attempt {error['attempt']}, {error['strategy']}): "
            f"{error['type']}: {error['message']}",
            markup=False,
        )
    shared = summary["shared_data"]
    results = shared.get("results") if isinstance(shared.get("results"), dict) else {}
    for rid, items in results.items():
        preview = json.dumps([i.get("data", i) if isinstance(i, dict) else i for i in items[:10]], default=repr)
        more = f" … (+{len(items) - 10})" if len(items) > 10 else ""
        out.print(f"  {rid}: {len(items)} item(s) {preview}{more}", markup=False)
    others = {k: v for k, v in shared.items() if k != "results" and not k.startswith("__")}
    if others:
        text = json.dumps(others, default=repr)
        out.print(f"  shared_data: {text[:500]}{' …' if len(text) > 500 else ''}", markup=False)


async def _run_job(plan: FlowPlan, registry: Registry, entries: list[Entry], timeout: float | None,
                   live: bool) -> dict[str, Any]:
    async with Engine(registry=registry) as engine:
        progress = _Progress({rid: _RoutineRow() for rid in plan.routines})
        # Subscribed before the start, so the table sees every event from job_start on.
        with engine.bus.subscribe(buffer=10_000) as sub:
            job = await engine.start_job(plan, entries=entries, timeout=timeout, complete_when_idle=True)
            display = Live(progress.table(), console=out, refresh_per_second=8, transient=False) if live else None
            if display is not None:
                display.start()
            try:
                while not job.is_terminal or sub.pending():
                    with anyio.move_on_after(0.25):
                        batch = await sub.receive_batch()
                        for event in batch:
                            progress.apply(event)
                    if display is not None:
                        display.update(progress.table())
                    if job.is_terminal and not sub.pending():
                        break
            finally:
                if display is not None:
                    display.update(progress.table())
                    display.stop()
                    if not out.is_terminal:  # a captured Live leaves its last line open
                        out.print()
        return _summary(job)


def cmd_run(args: argparse.Namespace) -> int:
    """Run a flow file to the end in this process, showing progress per routine."""
    registry = _registry()
    flow = _read_flow(args.flow)
    plan = _compile(flow, registry, args.flow)
    routine_id, slot = _entry_port(flow, plan, args.entry)
    values = [_parse_data(raw) for raw in args.data] if args.data else [None]
    if args.each:
        if len(values) != 1 or not isinstance(values[0], list):
            raise CLIError("--each needs one --data holding a JSON list")
        values = values[0]
    if args.timeout is not None and not args.timeout > 0:
        raise CLIError("--timeout must be a number of seconds greater than 0")
    entries = [Entry(routine_id, slot, value) for value in values]
    summary = anyio.run(_run_job, plan, registry, entries, args.timeout, not args.json)
    if args.json:
        out.print_json(json.dumps(summary, default=repr))
    else:
        _print_summary(summary)
    return EXIT_OK if summary["status"] == JobStatus.COMPLETED.value else EXIT_FAILED


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    """Print a flow's DSL as the server stores it (lossless: it can be loaded back)."""
    import httpx

    base = args.server.rstrip("/")
    api_key = args.api_key or os.environ.get("ROUTILUX_API_KEY") or None
    headers = {"X-API-Key": api_key} if api_key else {}
    url = f"{base}/api/flows/{args.flow_id}/dsl"
    try:
        response = httpx.get(url, params={"format": args.format}, headers=headers, timeout=args.http_timeout)
    except httpx.InvalidURL as exc:
        raise CLIError(f"--server {args.server!r}: {exc}") from None
    except httpx.UnsupportedProtocol:
        raise CLIError(f"--server {args.server!r}: expected an http:// or https:// URL") from None
    except httpx.HTTPError as exc:
        raise CLIError(f"cannot reach {base}: {exc or type(exc).__name__}", code=EXIT_FAILED) from None
    if response.status_code == 200:
        try:
            out.out(response.json()["dsl"], end="" if args.format == "yaml" else "\n", highlight=False)
        except (ValueError, KeyError, TypeError):
            raise CLIError(f"{url}: the server's answer is not a Routilux DSL export", code=EXIT_FAILED) from None
        return EXIT_OK
    try:
        detail = response.json().get("detail", {})
        message = detail.get("message") if isinstance(detail, dict) else str(detail)
    except ValueError:
        message = response.text[:200]
    hint = {
        401: " (pass --api-key or set ROUTILUX_API_KEY)",
        403: " (the API key was refused)",
        404: f" (no flow '{args.flow_id}' on {base})",
    }.get(response.status_code, "")
    raise CLIError(f"{response.status_code}: {message or response.reason_phrase}{hint}", code=EXIT_FAILED)


# ---------------------------------------------------------------------------------------------
# routines
# ---------------------------------------------------------------------------------------------
def _config_fields(schema: dict[str, Any]) -> list[str]:
    fields = []
    for name, prop in schema.get("properties", {}).items():
        default = f"={json.dumps(prop['default'])}" if "default" in prop else ""
        fields.append(f"{name}{default}")
    return fields


def cmd_routines(args: argparse.Namespace) -> int:
    """List the routine classes a flow may name, as the server's catalogue would."""
    registry = _registry()
    names = args.names or registry.names()
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise CLIError(f"unknown routine class(es): {', '.join(unknown)}. Available: {', '.join(registry.names())}")
    infos = [registry.interface(name) for name in names]
    if args.json:
        out.print_json(msgspec.json.encode(infos).decode())
        return EXIT_OK
    table = Table(title="registered routines", title_justify="left", show_lines=True)
    for column in ("class", "slots", "events", "config", "description"):
        table.add_column(column, overflow="fold")
    for info in infos:
        table.add_row(
            info.name,
            ", ".join(s.name for s in info.slots) or "-",
            ", ".join(info.events) or "(from config)",
            "\n".join(_config_fields(info.config_schema)) or "-",
            info.description,
        )
    out.print(table)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# serve
# ---------------------------------------------------------------------------------------------
SERVE_FLAGS: dict[str, str] = {
    "host": "ROUTILUX_API_HOST",
    "port": "ROUTILUX_API_PORT",
    "db": "ROUTILUX_DB",
    "flows_dir": "ROUTILUX_FLOWS_DIR",
    "reload": "ROUTILUX_API_RELOAD",
}


def _needs_api_extra(exc: ImportError) -> CLIError:
    return CLIError(f"the server needs the api extra: pip install 'routilux[api]' ({exc})", code=EXIT_FAILED)


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the API server; flags override the matching ROUTILUX_* variables.

    The flags are written into the environment rather than passed along, so that uvicorn's
    reloader child process (``--reload``) sees exactly the same settings as this one.
    """
    for attr, variable in SERVE_FLAGS.items():
        value = getattr(args, attr)
        if value is not None:
            os.environ[variable] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    try:
        from routilux.server.settings import Settings, SettingsError
    except ImportError as exc:  # the server's dependencies are the [api] extra
        raise _needs_api_extra(exc) from None
    try:
        Settings.from_env()
    except SettingsError as exc:
        raise CLIError(f"bad configuration: {exc}") from None
    try:
        from routilux.api import main as server
    except ImportError as exc:
        raise _needs_api_extra(exc) from None
    server.main()
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line and the subcommand's usage (no traceback)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        err.print(f"{self.prog}: error: {message}", markup=False)
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="routilux",
        description="Routilux: run, validate and serve event-driven workflows.",
        epilog="Exit codes: 0 success, 1 the job or the server request failed, 2 bad input.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    serve = sub.add_parser("serve", help="start the HTTP/WebSocket API server",
                           description="Start the API server. Each flag overrides its ROUTILUX_* variable; "
                                       "every other ROUTILUX_* variable applies as usual.")
    serve.add_argument("--host", help="address to bind (ROUTILUX_API_HOST, default 0.0.0.0)")
    serve.add_argument("--port", help="port to listen on (ROUTILUX_API_PORT, default 20555)")
    serve.add_argument("--db", help="SQLite file, or :memory: (ROUTILUX_DB, default ./routilux.db)")
    serve.add_argument("--flows-dir", help="load every flow file in this folder (ROUTILUX_FLOWS_DIR)")
    serve.add_argument("--reload", action=argparse.BooleanOptionalAction, default=None,
                       help="restart on code changes, for development (ROUTILUX_API_RELOAD, default true)")
    serve.set_defaults(handler=cmd_serve)

    run = sub.add_parser("run", help="run a flow file in this process and show its progress",
                         description="Run a flow to completion in this process (no server), with a live table "
                                     "per routine, then print the result. Exit 0 if the job completed, 1 if it "
                                     "failed, was cancelled or timed out, 2 for bad input.")
    run.add_argument("flow", metavar="FLOW", help="flow file (.yaml, .yml or .json)")
    run.add_argument("--entry", metavar="ROUTINE.SLOT",
                     help="where the data goes (default: the only routine no connection feeds)")
    run.add_argument("--data", metavar="JSON", action="append",
                     help="JSON value to post, or @file.json; repeat to post several items (default: null)")
    run.add_argument("--each", action="store_true", help="post each element of the --data list as its own item")
    run.add_argument("--timeout", type=float, metavar="S", help="fail the job after S seconds (default: the flow's)")
    run.add_argument("--json", action="store_true", help="print the result as JSON, without the live table")
    run.set_defaults(handler=cmd_run)

    validate = sub.add_parser("validate", help="check a flow file and list every problem with its location",
                              description="Check a flow file as the server would. Exit 0 if valid, 2 if not.")
    validate.add_argument("flow", metavar="FLOW", help="flow file (.yaml, .yml or .json)")
    validate.set_defaults(handler=cmd_validate)

    export = sub.add_parser("export", help="print a flow's DSL from a running server",
                            description="Print GET /api/flows/{id}/dsl from a server.")
    export.add_argument("flow_id", metavar="FLOW_ID")
    export.add_argument("--server", required=True, metavar="URL", help="e.g. http://localhost:20555")
    export.add_argument("--api-key", help="API key (default: $ROUTILUX_API_KEY)")
    export.add_argument("--format", choices=("yaml", "json"), default="yaml")
    export.add_argument("--http-timeout", type=float, default=10.0, metavar="S", help=argparse.SUPPRESS)
    export.set_defaults(handler=cmd_export)

    routines = sub.add_parser("routines", help="list registered routine classes with slots, events and config",
                              description="List the routine classes flows may name: builtins, entry points and "
                                          "ROUTILUX_ROUTINE_MODULES.")
    routines.add_argument("names", nargs="*", metavar="CLASS", help="only these classes")
    routines.add_argument("--json", action="store_true", help="print the full interfaces as JSON")
    routines.set_defaults(handler=cmd_routines)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except CLIError as exc:
        err.print(f"routilux: error: {exc.message}", markup=False)
        for line in exc.details:
            err.print(f"  {line}", markup=False)
        return exc.code
    except RoutiluxError as exc:  # anything the engine refuses that we did not foresee
        err.print(f"routilux: error: {exc.message}", markup=False)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err.print("routilux: interrupted", markup=False)
        return 130
    except Exception as exc:  # a bug, or a user routine failing outside a job: still one line
        err.print(f"routilux: error: unexpected {type(exc).__name__}: {exc}", markup=False)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
