"""Routilux: an event-driven workflow engine with a live control plane.

The public Python API is re-exported here; see :mod:`routilux.engine` for the pieces.
"""

from routilux.engine import *  # noqa: F403
from routilux.engine import __all__ as _engine_all

__version__ = "0.10.0"
__all__ = [*_engine_all, "__version__"]
