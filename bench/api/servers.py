"""The servers the API bench measures: the bare Starlette baseline (:mod:`bench.bare_app`) and
Routilux, each one uvicorn process on a free loopback port (optionally under cProfile).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

from tests.support.processes import REPO

from bench.server import HOST, ServerProcess, free_port

# Targets of the issue, for this 2-core machine.
TARGET_GET_JOB_RATIO: Final[float] = 0.50  # of the bare endpoint's req/s
TARGET_POST_JOBS_PER_S: Final[float] = 1_000.0
TARGET_LIST_P99_MS: Final[float] = 20.0
TARGET_SECURED_RATIO: Final[float] = 0.70  # auth + rate limiting on, of the same server with both off
BENCH_KEY: Final[str] = "bench-key-0123456789abcdef"
STORED_JOBS: Final[int] = 10_000  # jobs stored when GET /api/jobs?limit=100 is measured

POST_FLOW: Final[str] = "bench_post"
FLOWS: Final[int] = 10
STORED_SAMPLE: Final[int] = 500  # oldest posted jobs read back by id from the store
UVICORN_FLAGS: Final[tuple[str, ...]] = (
    "--loop", "uvloop", "--log-level", "warning", "--no-access-log", "--lifespan", "on",
)
#: ``--http`` of the bare baseline, and of Routilux: its protocol with the limits at the socket
#: (``routilux.api.transport``), as ``python -m routilux.api.main`` and the gunicorn worker serve.
#: ``python -m bench.api --routilux-http httptools`` measures Routilux without them, for their cost.
BARE_HTTP: Final = "httptools"
ROUTILUX_HTTP: Final = "routilux.api.transport.protocol:GuardedHTTPProtocol"


# ---------------------------------------------------------------------------------------------
# Server processes
# ---------------------------------------------------------------------------------------------
_PROFILE_BOOT = """\
import cProfile, signal, sys
import uvicorn.main
out, args = sys.argv[1], sys.argv[2:]
# uvicorn re-raises the signal that stopped it once it has shut down; with the default handler
# that would kill the process before the profile is written.
signal.signal(signal.SIGTERM, lambda *_: None)
profiler = cProfile.Profile()
profiler.enable()
try:
    uvicorn.main.main(args, standalone_mode=False)
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


class Server(ServerProcess):
    """One uvicorn process serving ``app`` on a free loopback port; stopped by :meth:`stop`."""

    def __init__(
        self,
        name: str,
        app: str,
        *,
        ready_path: str,
        workdir: Path,
        env: dict[str, str] | None = None,
        app_dir: Path | None = None,
        profile_to: Path | None = None,
        http: str = BARE_HTTP,
    ) -> None:
        port = free_port()
        self.profile_to = profile_to
        args = [app, "--host", HOST, "--port", str(port), "--http", http, *UVICORN_FLAGS]
        if app_dir is not None:
            args += ["--app-dir", str(app_dir)]
        if profile_to is None:
            argv = [sys.executable, "-m", "uvicorn", *args]
        else:
            argv = [sys.executable, "-c", _PROFILE_BOOT, str(profile_to), *args]
        # The server sees no ROUTILUX_* variable of ours (API keys, rate limits...) but its own.
        base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTILUX_")}
        super().__init__(name, port, argv, {**base, **(env or {})}, ready_path, workdir / f"{name}.{port}.log")

    def rss_mb(self) -> float:
        return self.rss_bytes() / 1e6


def bare_server(workdir: Path) -> Server:
    return Server("bare", "bench.bare_app:app", ready_path="/job", workdir=workdir, app_dir=REPO)


def routilux_server(workdir: Path, *, profile_to: Path | None = None, secured: bool = False,
                    http: str = ROUTILUX_HTTP) -> Server:
    """Routilux; ``secured``: API key and rate limiting on (a limit nobody reaches)."""
    name = "routilux" if profile_to is None else f"routilux-profiled-{profile_to.stem}"
    name += "-secured" if secured else ""
    db = workdir / f"{name}.db"
    # Retention off: a repeated POST measurement waits for every posted job to be listed as
    # completed, which the default (keep 10,000 finished jobs) would never let happen.
    env = {"ROUTILUX_DB": str(db), "ROUTILUX_API_RELOAD": "false", "ROUTILUX_LOG_LEVEL": "warning",
           "ROUTILUX_JOBS_KEEP": "100000000"}
    if secured:
        env |= {"ROUTILUX_API_KEY_ENABLED": "true", "ROUTILUX_API_KEY": BENCH_KEY,
                "ROUTILUX_RATE_LIMIT_ENABLED": "true", "ROUTILUX_RATE_LIMIT_PER_MINUTE": "1000000"}
        return Server(name, "routilux.api.main:app", ready_path="/api/health/live", workdir=workdir, env=env,
                      http=http)
    return Server(name, "routilux.api.main:app", ready_path="/api/health", workdir=workdir, env=env,
                  profile_to=profile_to, http=http)


