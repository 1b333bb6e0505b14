"""The registry: names, not import paths; Python, entry points and ROUTILUX_ROUTINE_MODULES."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from routilux.engine import Registry, Routine, UnknownRoutineClass
from tests.support.routines import Collect, Relay, make_registry


@pytest.fixture
def sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``tmp_path`` on ``sys.path`` for this test (the plugin modules it writes are imported from there)."""
    monkeypatch.syspath_prepend(tmp_path)
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("rtx_")]:
        del sys.modules[name]


def test_register_by_call_and_by_decorator_and_lookup() -> None:
    registry = Registry()
    registry.register(Relay)

    @registry.register(name="Custom")
    class Other(Routine):
        slots = ["input"]

    assert registry.names() == ["Custom", "Relay"]
    assert registry.get("Custom") is Other
    registry.register(Relay)  # the same class again is fine
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Collect, name="Relay")
    with pytest.raises(TypeError):
        registry.register(object)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="may not contain"):
        registry.register(Collect, name="a.b")


def test_unknown_names_and_import_paths_are_refused_with_the_list_of_what_exists() -> None:
    registry = make_registry()
    with pytest.raises(UnknownRoutineClass) as caught:
        registry.get("Nope")
    assert "unknown routine class 'Nope'" in caught.value.message
    assert "Relay" in caught.value.message
    with pytest.raises(UnknownRoutineClass, match="looks like an import path"):
        registry.get("os.system")
    with pytest.raises(UnknownRoutineClass, match="import path"):
        registry.get("subprocess:Popen")


def test_interface_shows_ports_config_schema_policy_and_description() -> None:
    class RateConfig(msgspec.Struct, frozen=True):
        rate: float = 1.5
        label: str = "x"

    class Rated(Routine):
        """Does rated things.

        More text that is not part of the summary."""

        slots = ["a", "b"]
        events = ["out"]
        Config = RateConfig
        category = "demo"

        async def logic(self, ctx, a, b):
            pass

    registry = Registry()
    registry.register(Rated)
    info = registry.interface("Rated")
    assert info.name == "Rated" and info.description == "Does rated things." and info.category == "demo"
    assert [s.name for s in info.slots] == ["a", "b"] and info.events == ["out"]
    assert info.config_schema["properties"]["rate"] == {"type": "number", "default": 1.5}
    assert info.policy == {"type": "immediate"} and info.is_async


def test_modules_from_the_environment_register_their_routines(sys_path: Path) -> None:
    (sys_path / "rtx_plain.py").write_text(textwrap.dedent("""
        from routilux.engine import Routine
        class Doubler(Routine):
            slots = ["input"]
            events = ["output"]
        class _Helper:  # not a routine
            pass
    """))
    (sys_path / "rtx_hooked.py").write_text(textwrap.dedent("""
        from routilux.engine import Routine
        class Hidden(Routine):
            slots = ["input"]
        def register(registry):
            registry.register(Hidden, name="Exposed")
    """))
    registry = Registry()
    loaded = registry.load_modules_from_env({"ROUTILUX_ROUTINE_MODULES": " rtx_plain , rtx_hooked,"})
    assert loaded == ["Doubler", "Exposed"]
    assert "Hidden" not in registry


def test_entry_points_register_classes_under_their_names(sys_path: Path) -> None:
    (sys_path / "rtx_ep.py").write_text(
        "from routilux.engine import Routine\nclass FromPlugin(Routine):\n    slots = ['input']\n"
    )
    dist = sys_path / "rtx_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rtx-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[routilux.routines]\nPluginRoutine = rtx_ep:FromPlugin\n")
    registry = Registry()
    loaded = registry.load_entry_points()
    assert "PluginRoutine" in loaded
    assert "DataSource" in loaded  # routilux's own builtins are entry points of the group too
    assert registry.get("PluginRoutine").__name__ == "FromPlugin"


def test_the_default_registry_has_the_builtins() -> None:
    from routilux.engine import default_registry

    names = default_registry().names()
    for name in ("DataSource", "DataValidator", "DataTransformer", "DataMultiplier", "DataAggregator",
                 "SlowProcessor", "ErrorGenerator", "DataSink", "Mapper", "Filter", "Router", "Batcher", "Delay"):
        assert name in names
