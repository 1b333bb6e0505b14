import pytest

from routilux.engine import Registry
from tests.support.builtin_flows import builtin_registry


@pytest.fixture
def registry() -> Registry:
    """A registry holding exactly the builtin routines."""
    return builtin_registry()
