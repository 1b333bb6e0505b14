"""The flows the server knows: compiled for running, persisted for restarts, revisioned for edits.

Every change goes through :meth:`FlowCatalog.change`, which validates the new flow against the
registry before anything is stored and bumps the revision, so a stale ``If-Match`` is caught and a
flow that cannot run never replaces one that can. Jobs hold their own compiled plan, so editing a
flow never disturbs the jobs already running it.

The store has the last word on revisions: every write says which revision it replaces
(``expected_revision``), so two servers sharing one store (a cluster) can never both turn
revision 3 into revision 4 — the second gets 409 ``revision_mismatch``. In a cluster each write
is also announced (``announce``), and the other servers reload that flow; a flow a server has not
heard of yet is looked up in the store (:meth:`FlowCatalog.fetch`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import anyio
import msgspec

from routilux.bus.events import utc_now
from routilux.engine import Flow, FlowPlan, Problem, Registry
from routilux.engine.plan import compile_flow, validate_flow
from routilux.engine.slots import DEFAULT_PUT_TIMEOUT, DEFAULT_SLOT_CAPACITY
from routilux.server.errors import Conflict, Invalid, NotFound, Unprocessable, flow_not_found
from routilux.store.base import FlowRecord, Store
from routilux.store.errors import FlowRevisionConflict


class SlotPort(msgspec.Struct, frozen=True):
    """One input slot of a routine in a flow, with the engine's defaults filled in."""

    name: str
    capacity: int
    put_timeout: float
    description: str = ""


class RoutinePorts(msgspec.Struct, frozen=True):
    """A routine's slots and events: from the compiled plan when the flow runs, else from its
    class's registered interface, else (an unknown class) none."""

    slots: list[SlotPort]
    events: list[str]


@dataclass
class FlowEntry:
    flow: Flow
    plan: FlowPlan | None
    revision: int
    created_at: datetime
    updated_at: datetime
    source: str | None = None
    problems: list[Problem] = field(default_factory=list)
    #: Ports taken from the plan, per routine: an entry never changes (an edit makes a new one).
    _planned_ports: dict[str, RoutinePorts] = field(default_factory=dict, repr=False, compare=False)

    @property
    def flow_id(self) -> str:
        return self.flow.flow_id

    def record(self) -> FlowRecord:
        return FlowRecord(
            flow_id=self.flow_id,
            document=self.flow.to_builtins(),
            revision=self.revision,
            created_at=self.created_at,
            updated_at=self.updated_at,
            source=self.source,
        )

    def ports(self, routine_id: str, registry: Registry) -> RoutinePorts:
        """The slots and events of ``routine_id`` (a routine of this flow), as every view of a
        routine shows them."""
        cached = self._planned_ports.get(routine_id)
        if cached is not None:
            return cached
        routine = self.plan.routines.get(routine_id) if self.plan is not None else None
        if routine is not None:
            slots = [SlotPort(name, spec.capacity or DEFAULT_SLOT_CAPACITY, spec.put_timeout or DEFAULT_PUT_TIMEOUT,
                              spec.description) for name, spec in routine.slot_specs.items()]
            ports = self._planned_ports[routine_id] = RoutinePorts(slots, list(routine.event_names))
            return ports
        class_name = self.flow.routines[routine_id].class_name
        if class_name in registry:
            info = registry.interface(class_name)
            slots = [SlotPort(s.name, s.capacity or DEFAULT_SLOT_CAPACITY, DEFAULT_PUT_TIMEOUT, s.description)
                     for s in info.slots]
            return RoutinePorts(slots, list(info.events))
        return RoutinePorts([], [])

    def runnable_plan(self) -> FlowPlan:
        if self.plan is None:
            first = self.problems[0] if self.problems else None
            detail = f"{first.location}: {first.message}" if first else "it does not validate"
            raise Invalid(
                "flow_not_runnable",
                f"flow '{self.flow_id}' cannot run: {detail}",
                flow_id=self.flow_id,
                problems=[msgspec.to_builtins(p) for p in self.problems],
            )
        return self.plan


class FlowCatalog:
    def __init__(
        self, registry: Registry, store: Store, *, announce: Callable[[str], Awaitable[None]] | None = None
    ) -> None:
        self.registry = registry
        self.store = store
        self._entries: dict[str, FlowEntry] = {}
        self._lock = anyio.Lock()
        #: In a cluster: announces ``flow:<id>`` to the other servers after each change, and
        #: marks the store as shared (another server may have changed any flow a moment ago).
        self.announce = announce

    @property
    def shared(self) -> bool:
        return self.announce is not None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, flow_id: object) -> bool:
        return flow_id in self._entries

    async def listing(self) -> list[FlowEntry]:
        """Every flow, sorted by id. In a cluster, as the shared store has them now: another
        server's change reaches this one's cache a moment later, and a listing must not lag."""
        if self.shared:
            await self.load_stored()
        return self.list()

    def list(self) -> list[FlowEntry]:
        return sorted(self._entries.values(), key=lambda e: e.flow_id)

    def find(self, flow_id: str) -> FlowEntry | None:
        return self._entries.get(flow_id)

    def get(self, flow_id: str) -> FlowEntry:
        entry = self._entries.get(flow_id)
        if entry is None:
            raise flow_not_found(flow_id)
        return entry

    async def knows(self, flow_id: str) -> bool:
        """Whether the flow exists (in a cluster, possibly created on another server just now)."""
        return flow_id in self._entries or (self.shared and await self.reload(flow_id) is not None)

    async def fetch(self, flow_id: str) -> FlowEntry:
        """Like :meth:`get`, but a flow missing here is looked up in the store first (in a
        cluster another server may have created it an instant ago)."""
        entry = self._entries.get(flow_id)
        if entry is None and self.shared:
            entry = await self.reload(flow_id)
        if entry is None:
            raise flow_not_found(flow_id)
        return entry

    async def load_stored(self) -> None:
        """Bring back every stored flow; one that no longer validates is kept, not runnable. A
        flow held here at the stored revision is kept as it is (not compiled again)."""
        records = await self.store.list_flows()
        for record in records:
            current = self._entries.get(record.flow_id)
            if current is None or current.revision != record.revision:
                self._entries[record.flow_id] = self._entry_of(record)
        if self.shared:  # a resync in a cluster: flows deleted elsewhere go too
            stored = {r.flow_id for r in records}
            for flow_id in [f for f in self._entries if f not in stored]:
                del self._entries[flow_id]

    async def reload(self, flow_id: str) -> FlowEntry | None:
        """Take the stored version of ``flow_id`` (gone from the store: gone here too)."""
        record = await self.store.get_flow(flow_id)
        if record is None:
            self._entries.pop(flow_id, None)
            return None
        current = self._entries.get(flow_id)
        if current is not None and current.revision == record.revision:
            return current
        entry = self._entries[flow_id] = self._entry_of(record)
        return entry

    def _entry_of(self, record: FlowRecord) -> FlowEntry:
        flow = msgspec.convert(record.document, Flow)
        report = validate_flow(flow, self.registry)
        plan = compile_flow(flow, self.registry) if report.valid else None
        return FlowEntry(flow, plan, record.revision, record.created_at, record.updated_at, record.source,
                         report.errors)

    async def _store(self, entry: FlowEntry, expected_revision: int) -> None:
        try:
            await self.store.put_flow(entry.record(), expected_revision=expected_revision)
        except FlowRevisionConflict as exc:
            await self.reload(entry.flow_id)
            raise _conflict(entry.flow_id, exc.current_revision, expected_revision) from None
        self._entries[entry.flow_id] = entry
        await self._announce(entry.flow_id)

    async def _announce(self, flow_id: str) -> None:
        if self.announce is not None:
            await self.announce(f"flow:{flow_id}")

    async def create(self, flow: Flow, source: str | None = None) -> FlowEntry:
        async with self._lock:
            if flow.flow_id in self._entries:
                raise _conflict(flow.flow_id, self._entries[flow.flow_id].revision, 0)
            plan = compile_flow(flow, self.registry)
            now = utc_now()
            entry = FlowEntry(flow, plan, 1, now, now, source)
            await self._store(entry, expected_revision=0)
            return entry

    async def change(
        self,
        flow_id: str,
        edit: Callable[[Flow], Flow],
        expected_revision: int | None = None,
        source: str | None = None,
    ) -> FlowEntry:
        """Apply ``edit`` to the flow, validate the result, store it with the next revision."""
        async with self._lock:
            # In a cluster, judge If-Match against the store's revision, not a cached one.
            found = await self.reload(flow_id) if self.shared else self._entries.get(flow_id)
            if found is None:
                raise flow_not_found(flow_id)
            current = found
            if expected_revision is not None and expected_revision != current.revision:
                raise Conflict(
                    "revision_mismatch",
                    f"flow '{flow_id}' is at revision {current.revision}, not {expected_revision}; reload it and retry",
                    flow_id=flow_id,
                    revision=current.revision,
                )
            flow = edit(current.flow)
            if flow.flow_id != flow_id:
                raise Unprocessable(
                    "flow_id_mismatch",
                    f"the document's flow_id '{flow.flow_id}' is not '{flow_id}'",
                    field="body.flow_id",
                )
            plan = compile_flow(flow, self.registry)  # FlowValidationError: 400 with every problem
            entry = FlowEntry(
                flow, plan, current.revision + 1, current.created_at, utc_now(), source or current.source
            )
            await self._store(entry, expected_revision=current.revision)
            return entry

    async def put(self, flow: Flow, source: str | None = None) -> Literal["created", "updated", "unchanged"]:
        """Make ``flow`` the catalogue's version of its id (files and demo flows load this way):
        create it, replace a different version with a new revision, or leave an equal one."""
        current = self._entries.get(flow.flow_id)
        if current is None:
            await self.create(flow, source=source)
            return "created"
        if current.flow == flow:
            return "unchanged"
        await self.change(flow.flow_id, lambda _old: flow, source=source)
        return "updated"

    async def delete(self, flow_id: str) -> None:
        async with self._lock:
            current = await self.fetch(flow_id)
            try:
                await self.store.delete_flow(flow_id, expected_revision=current.revision)
            except FlowRevisionConflict as exc:
                await self.reload(flow_id)
                raise _conflict(flow_id, exc.current_revision, current.revision) from None
            self._entries.pop(flow_id, None)
            await self._announce(flow_id)


def _conflict(flow_id: str, current: int | None, expected: int) -> Conflict | NotFound:
    """The store refused a write: someone else wrote this flow first."""
    if expected == 0 and current is not None:
        return Conflict("flow_exists", f"flow '{flow_id}' already exists", flow_id=flow_id)
    if current is None:
        return flow_not_found(flow_id)
    return Conflict(
        "revision_mismatch",
        f"flow '{flow_id}' is at revision {current}, not {expected}; reload it and retry",
        flow_id=flow_id,
        revision=current,
    )
