"""The errors a store raises on purpose. Each names the store's location, so an operator reading
a log line knows which file to look at, and never has to decode a raw ``sqlite3`` traceback."""

from __future__ import annotations

from typing import Any

from routilux.engine.errors import RoutiluxError


class StoreError(RoutiluxError):
    """The store cannot do what was asked: it cannot be opened, read or written."""

    code = "store_error"

    def __init__(self, message: str, *, location: str | None = None, **context: Any) -> None:
        if location is not None:
            context["location"] = location
        super().__init__(message, **context)
        self.location = location


class StoreClosedError(StoreError):
    """The store was used before :meth:`open` or after :meth:`close`."""

    code = "store_closed"


class StoreOverloaded(StoreError):
    """Too many events are waiting to be written; nothing of the rejected call was kept.

    The caller still owns the events it tried to record. The intended reaction is to
    ``await store.wait_for_room()`` and try again (a bus subscriber doing so lets the bus account
    for what it could not deliver, with ``seq`` ranges) — never to drop them silently.
    """

    code = "store_overloaded"


class StoreInUseError(StoreError):
    """Another process is already serving from this store, so this one must not.

    Routilux keeps every live job in the memory of the process that runs it; the store only
    records them. Two processes on one SQLite file (gunicorn with several workers, or a second
    server started by mistake) would each answer for their own jobs only — 404 for the other's,
    stale states, WebSockets that never see half the events — and the newcomer would even mark
    the other's running jobs as interrupted. Refusing to start is the only honest answer until a
    shared backend exists. ``holder_pid`` is the process that holds the store, when known.
    """

    code = "store_in_use"
