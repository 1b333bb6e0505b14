"""The builtins reach the default registry as entry points of the installed routilux package,
and the engine itself never imports them."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

from routilux.builtins import data, general
from routilux.engine.registry import ENTRY_POINT_GROUP


def test_every_builtin_routine_is_an_entry_point_of_routilux() -> None:
    ours = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value.startswith("routilux.")}
    expected = {
        cls.__name__: f"{module.__name__}:{cls.__name__}" for module in (data, general) for cls in module.ROUTINES
    }
    assert ours == expected


def test_the_engine_does_not_import_the_builtins_until_the_default_registry_loads_them() -> None:
    code = (
        "import sys, routilux, routilux.engine.dsl, routilux.monitor\n"
        "assert 'routilux.builtins' not in sys.modules\n"
        "from routilux.engine import default_registry\n"
        "assert 'DataSource' in default_registry()\n"
        "assert 'routilux.builtins.data' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
