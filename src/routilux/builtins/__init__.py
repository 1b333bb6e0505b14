"""The routines that ship with Routilux (``class: DataSource`` and friends).

Each routine's ``logic`` names its slots as parameters (``input``, ``trigger``...), which is how the
engine calls it; mypy reads that as narrowing ``Routine.logic(self, ctx, **inputs)`` and reports an
incompatible override, hence ``# type: ignore[override]`` on each. They can go once the base is
declared ``logic(self, ctx, *args: Any, **inputs: Any)``, a signature mypy lets any override match.
"""

from __future__ import annotations

from routilux.engine.registry import Registry


def register_builtins(registry: Registry) -> None:
    """Register every builtin routine class under its class name."""
    from routilux.builtins import data, general

    for module in (data, general):
        for cls in module.ROUTINES:
            registry.register(cls)
