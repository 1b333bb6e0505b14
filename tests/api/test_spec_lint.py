"""``@redocly/cli lint`` — the linter of the Redocly tools many teams run on their specs, with
its built-in recommended rules — finds no error in ``openapi/openapi.yaml``.

It checks what the Python validators do not: for instance that ``nullable`` has a ``type``
beside it (OpenAPI 3.0.3), which generators rely on. Warnings are allowed (they are style, such as
example values its validator cannot read); errors are not.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import node

SPEC = Path(__file__).resolve().parents[2] / "openapi" / "openapi.yaml"


def test_redocly_lint_finds_no_error(tmp_path: Path) -> None:
    redocly = node.install() / ".bin" / "redocly"
    done = node.run([redocly, "lint", SPEC, "--format=json"], cwd=tmp_path, timeout=180)
    start = done.stdout.find("{")
    assert start >= 0, f"redocly printed no report ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    report = json.loads(done.stdout[start:])
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    shown = [f"{p['ruleId']}: {p['message']} at {[loc['pointer'] for loc in p['location']]}" for p in errors]
    assert report["totals"]["errors"] == 0 and not errors, "\n".join(shown)
    assert done.returncode == 0, done.stderr
