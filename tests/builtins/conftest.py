import pytest
from builtin_helpers import builtin_registry

from routilux.engine import Registry


@pytest.fixture
def registry() -> Registry:
    """A registry holding exactly the builtin routines."""
    return builtin_registry()
