"""The flows the server knows: compiled for running, persisted for restarts, revisioned for edits.

Every change goes through :meth:`FlowCatalog.change`, which validates the new flow against the
registry before anything is stored and bumps the revision, so a stale ``If-Match`` is caught and a
flow that cannot run never replaces one that can. Jobs hold their own compiled plan, so editing a
flow never disturbs the jobs already running it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import anyio
import msgspec

from routilux.api.errors import APIError, not_found
from routilux.bus.events import utc_now
from routilux.engine import Flow, FlowPlan, Problem, Registry
from routilux.engine.plan import compile_flow, validate_flow
from routilux.store.base import FlowRecord, Store


@dataclass
class FlowEntry:
    flow: Flow
    plan: FlowPlan | None
    revision: int
    created_at: datetime
    updated_at: datetime
    source: str | None = None
    problems: list[Problem] = field(default_factory=list)

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

    def runnable_plan(self) -> FlowPlan:
        if self.plan is None:
            first = self.problems[0] if self.problems else None
            detail = f"{first.location}: {first.message}" if first else "it does not validate"
            raise APIError(
                400,
                "flow_not_runnable",
                f"flow '{self.flow_id}' cannot run: {detail}",
                flow_id=self.flow_id,
                problems=[msgspec.to_builtins(p) for p in self.problems],
            )
        return self.plan


class FlowCatalog:
    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self._entries: dict[str, FlowEntry] = {}
        self._lock = anyio.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, flow_id: object) -> bool:
        return flow_id in self._entries

    def list(self) -> list[FlowEntry]:
        return sorted(self._entries.values(), key=lambda e: e.flow_id)

    def find(self, flow_id: str) -> FlowEntry | None:
        return self._entries.get(flow_id)

    def get(self, flow_id: str) -> FlowEntry:
        entry = self._entries.get(flow_id)
        if entry is None:
            raise not_found("flow", flow_id, "GET /api/flows lists the flows")
        return entry

    async def load_stored(self) -> None:
        """Bring back every stored flow; one that no longer validates is kept, not runnable."""
        for record in await self.store.list_flows():
            flow = msgspec.convert(record.document, Flow)
            report = validate_flow(flow, self.registry)
            plan = compile_flow(flow, self.registry) if report.valid else None
            self._entries[flow.flow_id] = FlowEntry(
                flow, plan, record.revision, record.created_at, record.updated_at, record.source, report.errors
            )

    async def create(self, flow: Flow, source: str | None = None) -> FlowEntry:
        async with self._lock:
            if flow.flow_id in self._entries:
                raise APIError(409, "flow_exists", f"flow '{flow.flow_id}' already exists", flow_id=flow.flow_id)
            plan = compile_flow(flow, self.registry)
            now = utc_now()
            entry = FlowEntry(flow, plan, 1, now, now, source)
            await self.store.put_flow(entry.record())
            self._entries[flow.flow_id] = entry
            return entry

    async def change(
        self, flow_id: str, edit: Callable[[Flow], Flow], expected_revision: int | None = None, source: str | None = None
    ) -> FlowEntry:
        """Apply ``edit`` to the flow, validate the result, store it with the next revision."""
        async with self._lock:
            current = self.get(flow_id)
            if expected_revision is not None and expected_revision != current.revision:
                raise APIError(
                    409,
                    "revision_mismatch",
                    f"flow '{flow_id}' is at revision {current.revision}, not {expected_revision}; reload it and retry",
                    flow_id=flow_id,
                    revision=current.revision,
                )
            flow = edit(current.flow)
            if flow.flow_id != flow_id:
                raise APIError(
                    422, "flow_id_mismatch", f"the document's flow_id '{flow.flow_id}' is not '{flow_id}'", field="body.flow_id"
                )
            plan = compile_flow(flow, self.registry)  # FlowValidationError: 400 with every problem
            entry = FlowEntry(
                flow, plan, current.revision + 1, current.created_at, utc_now(), source or current.source
            )
            await self.store.put_flow(entry.record())
            self._entries[flow_id] = entry
            return entry

    async def delete(self, flow_id: str) -> None:
        async with self._lock:
            self.get(flow_id)
            await self.store.delete_flow(flow_id)
            del self._entries[flow_id]
