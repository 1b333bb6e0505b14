"""Node.js tools for the tests that use the spec as JavaScript users do: generate a TypeScript
client (openapi-typescript + openapi-fetch, checked by ``tsc --strict``) and lint the spec
(``@redocly/cli lint``).

The npm packages are pinned in ``tests/support/npm/package.json`` and, with every dependency,
``package-lock.json``. They are installed with ``npm ci`` into ``build/npm/<hash of the two
files>/`` — the repository's ignored build area, never committed — once per version of the
files, and reused by every later run (npm's own download cache lives there too, so a changed
pin downloads only what changed). ``.ci/run`` installs Debian's ``nodejs`` and ``npm``, so in
CI these tests always run; on a machine without ``node``/``npm`` they are skipped, saying why.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ROOT / "tests" / "support" / "npm"
CACHE = ROOT / "build" / "npm"
MIN_NODE = 18  # Debian 12's nodejs; the pinned packages' engines accept it
INSTALL_TIMEOUT = 900.0  # a cold install downloads ~85 MB; a warm one copies from npm's cache

#: What the tools run with: no telemetry or update checks (they would reach the network), no colour.
QUIET_ENV = {
    "REDOCLY_TELEMETRY": "off",
    "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
    "NO_UPDATE_NOTIFIER": "1",
    "NO_COLOR": "1",
    "FORCE_COLOR": "0",
}


def node_env() -> dict[str, str]:
    return {**os.environ, **QUIET_ENV}


def _programs() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed (.ci/run installs Debian's nodejs and npm; "
                    "`apt-get install nodejs npm` does it here)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    major = int(version.strip().lstrip("v").split(".")[0] or 0) if version.strip() else 0
    if major < MIN_NODE:
        pytest.skip(f"node {version.strip() or '(unknown)'} is older than {MIN_NODE}, which the pinned tools need")
    return node, npm


def install() -> Path:
    """The pinned packages' ``node_modules`` (installed on first use); skips the test without node."""
    _node, npm = _programs()
    files = [PACKAGES / "package.json", PACKAGES / "package-lock.json"]
    key = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
    target = CACHE / key
    modules = target / "node_modules"
    stamp = target / ".installed"
    if stamp.exists():
        return modules
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session of this checkout may be installing
        if not stamp.exists():
            target.mkdir(exist_ok=True)
            for f in files:
                shutil.copy(f, target / f.name)
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline", "--loglevel=error",
                 "--cache", str(CACHE / "_cache")],
                cwd=target, env=node_env(), capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False,
            )
            assert done.returncode == 0, f"npm ci failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            stamp.touch()
    return modules


def run(argv: list[str | Path], *, cwd: Path, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run a node tool to completion (bounded), with :data:`QUIET_ENV`; the caller checks it."""
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=node_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
