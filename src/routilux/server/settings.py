"""Server settings, read once from the environment and validated at start-up.

A bad value stops the server with a message that names the variable, rather than surfacing as a
strange failure on the first request. Every variable is listed in :data:`VARIABLES` with its
default and meaning; the README's configuration table is written from the same list.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from routilux.engine.flow import is_valid_id
from routilux.store.sqlite.store import SYNCHRONOUS_MODES, Synchronous

LOG_LEVELS: Final = ("critical", "error", "warning", "info", "debug", "trace")


class SettingsError(ValueError):
    """A configuration variable has a value the server cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the API server is configured with."""

    host: str = "0.0.0.0"
    port: int = 20555
    reload: bool = True
    db: str = "./routilux.db"
    flows_dir: Path | None = None
    log_level: str = "info"
    max_body_bytes: int = 1_048_576
    api_key_enabled: bool = False
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = (
        "http://localhost",
        "http://localhost:3000",
        "http://localhost:8000",
        "http://127.0.0.1",
        "http://127.0.0.1:3000",
        "http://127.0.0.1:8000",
    )
    rate_limit_enabled: bool = False
    rate_limit_per_minute: int = 60
    trusted_proxies: tuple[str, ...] = ()
    docs_enabled: bool = True
    jobs_keep: int = 10_000
    jobs_max_age_seconds: float | None = None
    shared_pool_size: int = 100
    max_wait_seconds: float = 300.0
    shutdown_seconds: float = 10.0
    evaluate_concurrency: int = 2
    checkpoint_seconds: float = 1.0
    checkpoint_every: int = 100
    events_per_job: int = 10_000
    db_synchronous: Synchronous = "FULL"
    history_per_job: int = 1000
    history_max_bytes: int = 64 * 1_048_576
    ws_ping_interval: float = 20.0
    ws_idle_timeout: float = 60.0
    ws_send_queue: int = 1000
    ws_max_queued_bytes: int = 64 * 1_048_576
    ws_linger_seconds: float | None = None
    ws_max_message_bytes: int = 65_536
    ws_max_subscriptions: int = 100
    ws_metrics_interval: float = 2.0
    redoc_js_url: str = ""  # empty: the ReDoc bundle served by the app itself (routes/docs.py)
    debugger_mode: bool = False
    redis_url: str | None = None
    node_id: str | None = None
    worker_group: str | None = None
    cluster_lease_seconds: float = 10.0
    # -- limits at the socket: what one connection may cost before the app sees a request --
    max_header_line_bytes: int = 8192
    max_header_bytes: int = 65_536
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    body_min_rate: int = 500
    max_connections: int | None = None  # None: from the open-file limit (routilux.api.transport)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``ROUTILUX_*`` variables; :class:`SettingsError` names the first bad one."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (field, parse, _default, _doc) in VARIABLES.items():
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[field] = parse(raw.strip())
            except ValueError as exc:
                raise SettingsError(f"{name}={raw!r}: {exc}") from None
        keys = [k for k in (env.get("ROUTILUX_API_KEY", "").strip(),) if k]
        keys += [k.strip() for k in env.get("ROUTILUX_API_KEYS", "").split(",") if k.strip()]
        values["api_keys"] = tuple(dict.fromkeys(keys))
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.api_key_enabled and not self.api_keys:
            raise SettingsError(
                "ROUTILUX_API_KEY_ENABLED=true but no key is configured: set ROUTILUX_API_KEY or ROUTILUX_API_KEYS"
            )
        if self.flows_dir is not None and not self.flows_dir.is_dir():
            raise SettingsError(f"ROUTILUX_FLOWS_DIR={str(self.flows_dir)!r}: not a directory")
        if self.max_header_line_bytes > self.max_header_bytes:
            raise SettingsError(
                f"ROUTILUX_MAX_HEADER_LINE_BYTES={self.max_header_line_bytes} is more than "
                f"ROUTILUX_MAX_HEADER_BYTES={self.max_header_bytes}: one line cannot be longer than the whole head"
            )


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("expected a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"expected a number from {low} to {high}")
        return value

    return parse


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number") from None
    if not value > 0:
        raise ValueError("expected a number greater than 0")
    return value


def _non_negative_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError("expected a number of 0 or more")
    return value


def _log_level(raw: str) -> str:
    if raw.lower() not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return raw.lower()


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"origin {origin!r} must start with http:// or https:// (or be *)")
    return origins


def _text(raw: str) -> str:
    return raw


def _synchronous(raw: str) -> Synchronous:
    for mode in SYNCHRONOUS_MODES:
        if raw.upper() == mode:
            return mode
    raise ValueError(f"expected one of {', '.join(SYNCHRONOUS_MODES)}")


def _group(raw: str) -> str:
    if not is_valid_id(raw):
        raise ValueError("a worker group is 1-128 of letters, digits, '_', '.', '-'")
    return raw


def _networks(raw: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks (``*`` trusts every peer: only behind a
    proxy that is the sole way in)."""
    entries = tuple(e.strip() for e in raw.split(",") if e.strip())
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/8)") from None
    return entries


#: variable -> (settings field, parser, default shown in docs, meaning)
VARIABLES: Final[dict[str, tuple[str, Callable[[str], Any], str, str]]] = {
    "ROUTILUX_API_HOST": ("host", _text, "0.0.0.0", "address the server binds"),
    "ROUTILUX_API_PORT": ("port", _int_in(1, 65535), "20555", "port the server listens on"),
    "ROUTILUX_API_RELOAD": ("reload", _bool, "true", "restart on code changes (development only)"),
    "ROUTILUX_DB": ("db", _text, "./routilux.db", "SQLite file for flows, jobs and events; ':memory:' keeps nothing"),
    "ROUTILUX_DB_SYNCHRONOUS": (
        "db_synchronous", _synchronous, "FULL",
        "FULL: every acknowledged change is on the disk (survives a power cut); NORMAL: faster commits, "
        "which survive the process being killed but maybe not the machine",
    ),
    "ROUTILUX_FLOWS_DIR": (
        "flows_dir", Path, "(none)",
        "load every *.yaml/*.yml/*.json flow in this folder at start-up",
    ),
    "ROUTILUX_LOG_LEVEL": ("log_level", _log_level, "info", "critical, error, warning, info, debug or trace"),
    "ROUTILUX_MAX_BODY_BYTES": (
        "max_body_bytes", _int_in(1024, 64 * 1_048_576), "1048576",
        "largest request body accepted (413 above it)",
    ),
    "ROUTILUX_API_KEY_ENABLED": ("api_key_enabled", _bool, "false", "require an API key on every endpoint"),
    "ROUTILUX_CORS_ORIGINS": ("cors_origins", _origins, "localhost only", "comma-separated allowed origins, or *"),
    "ROUTILUX_RATE_LIMIT_ENABLED": (
        "rate_limit_enabled", _bool, "false",
        "limit requests (and WebSocket connection attempts) per client IP",
    ),
    "ROUTILUX_RATE_LIMIT_PER_MINUTE": (
        "rate_limit_per_minute", _int_in(1, 1_000_000), "60",
        "requests per minute per client IP (sliding window)",
    ),
    "ROUTILUX_TRUSTED_PROXIES": (
        "trusted_proxies", _networks, "(none)",
        "proxies whose X-Forwarded-For names the client (IPs or CIDRs, comma-separated)",
    ),
    "ROUTILUX_DOCS_ENABLED": ("docs_enabled", _bool, "true", "serve /docs, /redoc and /openapi.json (unauthenticated)"),
    "ROUTILUX_JOBS_KEEP": (
        "jobs_keep", _int_in(10, 100_000_000), "10000",
        "finished jobs kept in the store; older ones are pruned with their events",
    ),
    "ROUTILUX_JOBS_MAX_AGE_SECONDS": (
        "jobs_max_age_seconds", _positive_float, "(forever)",
        "prune finished jobs that ended longer ago than this",
    ),
    "ROUTILUX_THREAD_POOL_SIZE": (
        "shared_pool_size", _int_in(1, 1000), "100",
        "threads of the pool shared by runtimes with thread_pool_size=0",
    ),
    "ROUTILUX_MAX_WAIT_SECONDS": (
        "max_wait_seconds", _positive_float, "300",
        "longest a POST /api/jobs/{id}/wait may hold a connection",
    ),
    "ROUTILUX_EVALUATE_CONCURRENCY": (
        "evaluate_concurrency", _int_in(1, 64), "2",
        "expressions evaluated at once (POST .../evaluate); one more answers 503 evaluations_busy",
    ),
    "ROUTILUX_SHUTDOWN_SECONDS": (
        "shutdown_seconds", _positive_float, "10",
        "on SIGTERM or Ctrl-C: how long requests still in flight may take before they are cut off",
    ),
    "ROUTILUX_CHECKPOINT_SECONDS": (
        "checkpoint_seconds", _positive_float, "1",
        "a running durable job's checkpoint is written at least this often (and whenever it goes idle or is paused)",
    ),
    "ROUTILUX_CHECKPOINT_EVERY": (
        "checkpoint_every", _int_in(1, 1_000_000), "100",
        "a running durable job's checkpoint is written after at most this many of its activations",
    ),
    "ROUTILUX_EVENTS_PER_JOB": (
        "events_per_job", _int_in(100, 10_000_000), "10000",
        "events kept per job in the store",
    ),
    "ROUTILUX_HISTORY_PER_JOB": (
        "history_per_job", _int_in(10, 1_000_000), "1000",
        "events per job kept in memory for WebSocket replay",
    ),
    "ROUTILUX_HISTORY_MAX_BYTES": (
        "history_max_bytes", _int_in(1_048_576, 2**40), "67108864",
        "memory for replay history in all (quiet jobs lose theirs first)",
    ),
    "ROUTILUX_WS_PING_INTERVAL": (
        "ws_ping_interval", _positive_float, "20",
        "seconds of silence before the server sends a ping frame",
    ),
    "ROUTILUX_WS_IDLE_TIMEOUT": (
        "ws_idle_timeout", _positive_float, "60",
        "close a socket whose client sent nothing for this long (code 4408)",
    ),
    "ROUTILUX_WS_SEND_QUEUE": (
        "ws_send_queue", _int_in(10, 1_000_000), "1000",
        "events queued per socket before the oldest are dropped (with a gap frame)",
    ),
    "ROUTILUX_WS_MAX_QUEUED_BYTES": (
        "ws_max_queued_bytes", _int_in(65_536, 2**40), "67108864",
        "bytes of events held for all WebSocket clients together; past it the clients furthest behind are "
        "closed with 1013",
    ),
    "ROUTILUX_WS_LINGER_SECONDS": (
        "ws_linger_seconds", _positive_float, "(stay open)",
        "close a job socket this long after its job ended",
    ),
    "ROUTILUX_WS_MAX_MESSAGE_BYTES": (
        "ws_max_message_bytes", _int_in(256, 16_777_216), "65536",
        "largest client message accepted",
    ),
    "ROUTILUX_WS_MAX_SUBSCRIPTIONS": (
        "ws_max_subscriptions", _int_in(1, 100_000), "100",
        "jobs and flows one /api/ws socket may subscribe to",
    ),
    "ROUTILUX_WS_METRICS_INTERVAL": (
        "ws_metrics_interval", _non_negative_float, "2",
        "seconds between metrics frames on a job monitor socket (sent only when they changed; 0: none)",
    ),
    "ROUTILUX_REDOC_JS_URL": (
        "redoc_js_url", _text, "(served locally)",
        "where /redoc loads its script from; empty: the bundled copy at /redoc/assets (works offline)",
    ),
    "ROUTILUX_REDIS_URL": (
        "redis_url", _text, "(none)",
        "redis://host:port/db: run as one node of a cluster: flows, jobs, runtimes, events and rate limits "
        "are shared in Redis, and requests about a job reach the node that runs it",
    ),
    "ROUTILUX_NODE_ID": (
        "node_id", _text, "host-pid-random",
        "this server's name in a cluster (ROUTILUX_REDIS_URL); unique per process",
    ),
    "ROUTILUX_WORKER_GROUP": (
        "worker_group", _group, "(none)",
        "this server's worker group in a cluster: it runs the jobs of runtimes created with this worker_group",
    ),
    "ROUTILUX_CLUSTER_LEASE_SECONDS": (
        "cluster_lease_seconds", _positive_float, "10",
        "a cluster node that stops renewing its lease this long is declared lost and its jobs move to live nodes "
        "(fail without a checkpoint)",
    ),
    # -- limits at the socket (routilux.api.transport) --
    "ROUTILUX_MAX_HEADER_LINE_BYTES": (
        "max_header_line_bytes", _int_in(256, 1_048_576), "8192",
        "longest request line (414 above it) or header line (431), line ending included",
    ),
    "ROUTILUX_MAX_HEADER_BYTES": (
        "max_header_bytes", _int_in(1024, 16_777_216), "65536",
        "request line and headers in all; 431 above it, before more is read",
    ),
    "ROUTILUX_HEADER_TIMEOUT_SECONDS": (
        "header_timeout_seconds", _positive_float, "10",
        "a request line and headers must arrive within this of the connection opening (of their first byte "
        "on a reused one); else 408, or closed unanswered if nothing came",
    ),
    "ROUTILUX_BODY_TIMEOUT_SECONDS": (
        "body_timeout_seconds", _positive_float, "30",
        "a request body still arriving must bring ROUTILUX_BODY_MIN_RATE bytes a second (at least one byte) "
        "in every period this long (else 408 and closed)",
    ),
    "ROUTILUX_BODY_MIN_RATE": (
        "body_min_rate", _int_in(0, 1_000_000_000), "500",
        "bytes a second a request body must average over each ROUTILUX_BODY_TIMEOUT_SECONDS",
    ),
    "ROUTILUX_MAX_CONNECTIONS": (
        "max_connections", _int_in(10, 10_000_000), "open-file limit - 100, at most 10000",
        "connections open at once, HTTP and WebSocket; a request beyond it gets 503 (logged at most once a minute)",
    ),
    "ROUTILUX_DEBUGGER_MODE": (
        "debugger_mode", _bool, "false",
        "register the demo flows linear_flow, branching_flow, complex_flow and error_flow at start-up",
    ),
}
