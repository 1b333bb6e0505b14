"""``sqlite3`` errors turned into :class:`~routilux.store.errors.StoreError` naming the file, with
a hint for the two mistakes an operator makes most (a missing directory, a file that is not a
Routilux database), so nobody has to decode a raw ``sqlite3`` traceback."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

from routilux.store.errors import StoreError

MEMORY: Final[str] = ":memory:"


def sqlite_error(location: str, what: str, exc: sqlite3.Error) -> StoreError:
    """``what`` failed at ``location`` (a path or ``:memory:``) because of ``exc``."""
    message = f"{what} at {location}: {exc}"
    if location != MEMORY and "unable to open" in str(exc) and not Path(location).parent.is_dir():
        message += f" (the directory {Path(location).parent} does not exist)"
    elif "not a database" in str(exc) or "malformed" in str(exc):
        message += " (the file is not a Routilux SQLite database, or it is corrupt)"
    return StoreError(message, location=location, sqlite_error=str(exc))
