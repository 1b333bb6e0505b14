"""The README's curl walk-throughs run as written (against a test server instead of :20555)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def _block(after: str) -> str:
    found = re.search(re.escape(after) + r".*?```sh\n(.*?)```", README, re.S)
    assert found is not None, after
    return found.group(1)


def _run(script: str, server) -> str:  # type: ignore[no-untyped-def]
    address = server.url.removeprefix("http://")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script.replace("localhost:20555", address)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_http_walkthrough(server) -> None:  # type: ignore[no-untyped-def]
    script = _block("### Walk-through with curl").replace("flow_id: greet", "flow_id: greet-readme") \
        .replace('"flow_id": "greet"', '"flow_id": "greet-readme"').replace("flows/greet/", "flows/greet-readme/")
    out = _run(script, server)
    assert '"status":"completed"' in out
    assert '"data": "HELLO"' in out  # the state shows the sink's item
    assert "flow_id: greet-readme" in out  # the exported YAML


def test_the_debugging_walkthrough(server) -> None:  # type: ignore[no-untyped-def]
    script = _block("A walk-through (with `make run`").replace('"dbg"', '"dbg-readme"')
    script += '\ncurl -s localhost:20555/api/jobs/$JOB_ID/state\n'
    out = _run(script, server)
    assert '{"result":1000,"type":"int"}' in out
    assert '"keep":[{"data":10,"index":0},{"data":1000,"index":1}]' in out
