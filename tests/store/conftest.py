"""Fixtures for the store suite: every store kind, opened and closed by one owner task."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from store_helpers import KINDS, build, held


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_store(kind: str, tmp_path: Path) -> Callable[..., Any]:
    """``async with make_store(**options) as store:`` — a store of this test's kind."""
    return lambda **options: held(build(kind, tmp_path, **options))


@pytest.fixture
async def store(kind: str, tmp_path: Path) -> AsyncIterator[Any]:
    async with held(build(kind, tmp_path)) as opened:
        yield opened
