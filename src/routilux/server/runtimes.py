"""The runtimes the server runs jobs on: created here, kept in the store, shared in a cluster.

:class:`Runtimes` is the one place that knows a runtime may have been created by another server
of the cluster a moment ago (the store is shared; the engine's table is per process), so the routes
never branch on cluster mode to find one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from routilux.bus.events import utc_now
from routilux.engine import Engine
from routilux.engine.runtime import Runtime
from routilux.server.errors import runtime_not_found
from routilux.store.base import RuntimeRecord, Store


class Runtimes:
    def __init__(
        self, engine: Engine, store: Store, *, announce: Callable[[str], Awaitable[None]] | None = None
    ) -> None:
        self.engine = engine
        self.store = store
        #: In a cluster: tells the other servers that the runtimes changed (they reload them).
        self.announce = announce

    async def all(self) -> list[Runtime]:
        if self.announce is not None:  # another server may have created one a moment ago
            await restore_runtimes(self.engine, self.store)
        return list(self.engine.runtimes.values())

    async def find(self, runtime_id: str) -> Runtime | None:
        runtime = self.engine.runtimes.get(runtime_id)
        if runtime is None and self.announce is not None:
            await restore_runtimes(self.engine, self.store)
            runtime = self.engine.runtimes.get(runtime_id)
        return runtime

    async def get(self, runtime_id: str) -> Runtime:
        runtime = await self.find(runtime_id)
        if runtime is None:
            raise runtime_not_found(runtime_id)
        return runtime

    async def create(
        self, runtime_id: str, thread_pool_size: int, *, is_default: bool, worker_group: str | None
    ) -> Runtime:
        """Create, store (a new default changes the others' ``is_default`` too), announce."""
        runtime = await self.engine.create_runtime(
            runtime_id, thread_pool_size, is_default=is_default, worker_group=worker_group
        )
        now = utc_now()
        for each in self.engine.runtimes.values():
            await self.store.put_runtime(
                RuntimeRecord(each.runtime_id, each.thread_pool_size, each.is_default, now, each.worker_group)
            )
        if self.announce is not None:
            await self.announce("runtimes")
        return runtime


async def restore_runtimes(engine: Engine, store: Store) -> None:
    """Create the stored runtimes this engine lacks, and take the stored default. Called at
    start-up, and in a cluster whenever another node changed the runtimes."""
    for record in await store.list_runtimes():
        if record.runtime_id not in engine.runtimes:
            await engine.create_runtime(record.runtime_id, record.thread_pool_size, is_default=record.is_default,
                                        worker_group=record.worker_group)
        elif record.is_default and engine.default_runtime_id != record.runtime_id:
            engine.runtimes[record.runtime_id].is_default = True
            if engine.default_runtime_id in engine.runtimes:
                engine.runtimes[engine.default_runtime_id].is_default = False
            engine.default_runtime_id = record.runtime_id
