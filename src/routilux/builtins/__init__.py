"""The routines that ship with Routilux (``class: DataSource`` and friends)."""

from __future__ import annotations

from routilux.engine.registry import Registry


def register_builtins(registry: Registry) -> None:
    """Register every builtin routine class under its class name."""
    from routilux.builtins import data, general

    for module in (data, general):
        for cls in module.ROUTINES:
            registry.register(cls)
