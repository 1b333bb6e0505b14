"""The errors a store raises on purpose. Each names the store's location, so an operator reading
a log line knows which file to look at, and never has to decode a raw ``sqlite3`` traceback."""

from __future__ import annotations

from typing import Any

from routilux.errors import RoutiluxError


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


class OwnershipLost(StoreError):
    """A write for a job was refused because another server of the cluster owns the job now (it
    was handed over while this one stalled, or drained): this server must stop running it.
    ``job_id`` names the job. Nothing of the write was kept."""

    code = "ownership_lost"


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


class FlowRevisionConflict(StoreError):
    """A conditional flow write lost a race: the stored flow is not at the revision the caller
    read, so writing would silently undo someone else's change (another server process, or
    another request of this one).

    ``put_flow(..., expected_revision=n)`` and ``delete_flow(..., expected_revision=n)`` raise it.
    ``current_revision`` is what the store holds now (``None``: the flow does not exist), so the
    caller can reload and retry, or answer HTTP 409 with it.
    """

    code = "flow_revision_conflict"

    def __init__(
        self,
        flow_id: str,
        *,
        expected_revision: int,
        current_revision: int | None,
        location: str | None = None,
    ) -> None:
        if current_revision is None:
            now = "does not exist"
        else:
            now = f"is at revision {current_revision}"
        wanted = "not to exist yet" if expected_revision == 0 else f"to be at revision {expected_revision}"
        super().__init__(
            f"flow '{flow_id}' was expected {wanted}, but it {now}; reload it and retry",
            location=location,
            flow_id=flow_id,
            expected_revision=expected_revision,
            current_revision=current_revision,
        )
        self.flow_id = flow_id
        self.expected_revision = expected_revision
        self.current_revision = current_revision

    @classmethod
    def check(
        cls, flow_id: str, expected_revision: int | None, current_revision: int | None, *, location: str | None = None
    ) -> None:
        """Raise unless ``current_revision`` satisfies ``expected_revision``: ``None`` accepts
        anything, ``0`` means "must not exist" (``current_revision is None``), ``n > 0`` means
        "must be exactly ``n``". Every store applies the rule through this one function."""
        if expected_revision is None:
            return
        if expected_revision == 0 and current_revision is None:
            return
        if expected_revision > 0 and current_revision == expected_revision:
            return
        raise cls(flow_id, expected_revision=expected_revision, current_revision=current_revision, location=location)


def check_expected_revision(expected_revision: int | None) -> None:
    """Refuse a malformed ``expected_revision`` when it is handed over (not deep in a writer)."""
    if expected_revision is None:
        return
    if not isinstance(expected_revision, int) or isinstance(expected_revision, bool) or expected_revision < 0:
        raise ValueError(f"expected_revision must be None or a whole number >= 0 (got {expected_revision!r})")
