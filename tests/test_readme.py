"""The README stays true: its configuration table, its DSL example and its walk-through."""

from __future__ import annotations

import re
from pathlib import Path

from routilux.engine import default_registry
from routilux.engine.dsl import load_flow
from routilux.engine.plan import validate_flow
from routilux.server.settings import VARIABLES

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_two_setup_commands_are_there() -> None:
    assert "make run" in README and "make test" in README


def test_every_configuration_variable_is_documented() -> None:
    for name in [*VARIABLES, "ROUTILUX_API_KEY", "ROUTILUX_API_KEYS", "ROUTILUX_ROUTINE_MODULES"]:
        assert f"`{name}`" in README, name


def test_the_configuration_table_is_written_from_the_settings() -> None:
    """Each variable's row says exactly what ``settings.VARIABLES`` says: default and meaning."""
    for name, (_field, _parse, default, meaning) in VARIABLES.items():
        row = f"| `{name}` | `{default}` | {meaning} |"
        assert row in README, f"README's configuration table should have the row\n{row}"


def test_the_dsl_example_is_a_valid_flow() -> None:
    block = re.search(r"## DSL reference\n\n```yaml\n(.*?)```", README, re.DOTALL)
    assert block is not None
    report = validate_flow(load_flow(block.group(1)), default_registry())
    assert report.errors == []
