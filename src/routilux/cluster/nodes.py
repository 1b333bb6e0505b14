"""Which server owns which job, whether it is still alive, and what happens to its jobs when not.

A *node* is one server process (a gunicorn worker, a uvicorn process on some machine). Every node
joins the cluster with a **lease**: a Redis key that expires ``lease_seconds`` after its last
renewal, renewed by one task about three times per lease. A job is **owned** by the node that runs
it: the node records ``job_id -> owner`` in a hash before it answers the request that started the
job, and removes it when its engine forgets the job (a finished job stays in memory a while, and
as long as it does, its owner answers for it exactly as a single server would: its last seq, its
breakpoints; afterwards any node answers from the shared store).

Every node also runs the **reaper**: it looks for nodes whose lease expired (the process was
killed, the machine lost power, the network split) and fails their unfinished jobs with
``interrupted: worker lost`` — the job record in the shared store becomes ``failed``, and a
synthetic ``job_end`` is appended to the job's event stream, so every WebSocket watching the job
on any node sees it end. One reaper wins each dead node (``SET NX`` on a per-node lock), so a job
is failed once. A job becomes ``failed`` at most ``lease_seconds + reap_interval`` after its owner
died.

A node whose own lease lapsed (its event loop stalled longer than the lease, Redis was
unreachable) may already have been reaped: its jobs are failed for everyone else. It therefore
fails those jobs itself the moment it notices (``fence``) and joins again with a new lease, rather
than go on running jobs the cluster has written off.

Why Redis keys and not a consensus library: ownership needs one linearizable register per job
and a failure detector with a bounded delay, which Redis' single-threaded commands and key
expiry give; the cluster already depends on Redis for events.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final

import anyio
import msgspec
import redis.asyncio as aioredis

from routilux.bus import Event, EventBus, SubscriptionClosed
from routilux.bus.events import encode_json, utc_now
from routilux.bus.status import TERMINAL_STATUSES
from routilux.store.backoff import Backoff
from routilux.store.base import JobRecord, Store, StoredEvent
from routilux.store.redis.connection import is_connection_error
from routilux.store.redis.keys import Keys
from routilux.store.redis.replies import as_text, stream_entries

log = logging.getLogger("routilux.cluster")

WORKER_LOST: Final = "interrupted: worker lost"
DEFAULT_LEASE_SECONDS: Final = 10.0


def _log_loop_failure(what: str, exc: Exception, first: bool) -> None:
    """A lost Redis is logged once per outage (at the first failure); anything unexpected each
    time, with its traceback."""
    if not is_connection_error(exc):
        log.error("could not %s (unexpected error); retrying", what, exc_info=exc)
    elif first:
        log.error("could not %s: Redis unreachable (%s); retrying until it is back", what, exc)


class Owner(msgspec.Struct, frozen=True):
    """What the cluster remembers of a running job: who runs it, and enough to write its record
    if that node dies before it wrote one."""

    node: str
    flow_id: str
    runtime_id: str
    created_at: datetime


class NodeInfo(msgspec.Struct, frozen=True):
    node: str
    host: str
    pid: int
    joined_at: datetime
    group: str | None = None  # ROUTILUX_WORKER_GROUP: where runtimes of that group run their jobs


_encode = msgspec.json.encode
_decode_owner = msgspec.json.Decoder(Owner).decode
_decode_node = msgspec.json.Decoder(NodeInfo).decode


class ClusterMembership:
    """This node's lease and jobs, and the reaper of the other nodes' jobs.

    ``fence`` is called with the ids of this node's running jobs when it finds its own lease
    lapsed (see the module docstring); the server fails them.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        store: Store,
        bus: EventBus,
        *,
        node_id: str,
        prefix: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        group: str | None = None,
        fence: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.node_id = node_id
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self.lease_ms = max(100, int(lease_seconds * 1000))
        self.renew_interval = lease_seconds / 3
        self.reap_interval = min(1.0, lease_seconds / 4)
        self.fence = fence
        self.group = group
        self.keys = Keys(prefix)
        self.nodes_key = self.keys.nodes
        self.owners_key = self.keys.owners
        self.owned: set[str] = set()  # jobs this node runs and has not seen end
        self.reaped_jobs = 0
        self.renew_failures = 0  # renewals failed in a row (Redis unreachable)
        self._joined_at = utc_now()
        self._to_release: list[str] = []
        self._release_wanted = anyio.Event()
        # Only to learn when the bus closes (the engine stopped): then this node leaves.
        self._subscription = bus.subscribe(types=("job_end",), buffer=1000)

    # -- names --------------------------------------------------------------------------------
    def lease_key(self, node: str) -> str:
        return self.keys.lease(node)

    def jobs_key(self, node: str) -> str:
        return self.keys.node_jobs(node)

    def job_stream(self, job_id: str) -> str:
        return self.keys.stream(job_id)

    # -- lifetime -----------------------------------------------------------------------------
    async def join(self) -> None:
        """Take this node's lease; called before the server accepts requests."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.nodes_key, self.node_id, _encode(self._info()))
        pipe.set(self.lease_key(self.node_id), b"1", px=self.lease_ms)
        await pipe.execute()

    def _info(self) -> NodeInfo:
        return NodeInfo(self.node_id, socket.gethostname(), os.getpid(), self._joined_at, self.group)

    async def run(self) -> None:
        """Renew the lease, reap dead nodes and release forgotten jobs until the local bus
        closes; then release what is left."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew_forever)
            tg.start_soon(self._reap_forever)
            tg.start_soon(self._release_forever)
            await self._until_the_bus_closes()
            tg.cancel_scope.cancel()
        await self._release_now()

    async def leave(self) -> None:
        """Give the lease back on a clean shutdown (our jobs ended and were released already)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.lease_key(self.node_id), self.jobs_key(self.node_id))
        pipe.hdel(self.nodes_key, self.node_id)
        await pipe.execute()

    # -- ownership ----------------------------------------------------------------------------
    async def own(self, job_id: str, flow_id: str, runtime_id: str, created_at: datetime) -> None:
        """Record that this node runs ``job_id`` (before the client hears of the job).

        The job counts as owned here only once Redis says so: its ``job_end`` seen earlier is
        not released by :meth:`_release_ended` (the release could overtake the claim on another
        connection), so the caller releases a job that already ended itself."""
        owner = Owner(self.node_id, flow_id, runtime_id, created_at)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.owners_key, job_id, _encode(owner))
        pipe.sadd(self.jobs_key(self.node_id), job_id)
        await pipe.execute()
        self.owned.add(job_id)

    async def release(self, job_ids: Sequence[str]) -> None:
        """Forget the ownership of ended jobs: requests about them are served from the store."""
        self.owned.difference_update(job_ids)
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.owners_key, *job_ids)
        pipe.srem(self.jobs_key(self.node_id), *job_ids)
        await pipe.execute()

    async def owner_of(self, job_id: str) -> Owner | None:
        raw = await self.client.hget(self.owners_key, job_id)
        return _decode_owner(raw) if raw is not None else None

    async def is_alive(self, node: str) -> bool:
        return bool(await self.client.exists(self.lease_key(node)))

    async def live_nodes(self, group: str | None = None) -> list[NodeInfo]:
        """The nodes holding a lease now (of ``group`` only, if given)."""
        nodes = [_decode_node(raw) for raw in (await self.client.hgetall(self.nodes_key)).values()]
        if group is not None:
            nodes = [n for n in nodes if n.group == group]
        pipe = self.client.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(self.lease_key(node.node))
        alive = await pipe.execute()
        return [node for node, up in zip(nodes, alive, strict=True) if up]

    async def pick_node(self, group: str) -> str | None:
        """A live node of ``group`` to place a job on (spread at random), or None."""
        nodes = await self.live_nodes(group)
        return random.choice(nodes).node if nodes else None

    def release_later(self, job_ids: Sequence[str]) -> None:
        """The engine forgot these jobs: requests about them are for the store from now on.
        Called from synchronous code; the releasing task writes them in batches."""
        self._to_release.extend(job_ids)
        self._release_wanted.set()

    async def _release_forever(self) -> None:
        while True:
            await self._release_wanted.wait()
            self._release_wanted = anyio.Event()
            await self._release_now()

    async def _release_now(self) -> None:
        batch, self._to_release = self._to_release, []
        if not batch:
            return
        try:
            await self.release(batch)
        except Exception as exc:  # noqa: BLE001 - Redis lost, or anything else: this loop goes on
            # The entries stay; a request for such a job reaches this node, which serves it from
            # its store; if this node dies, the reaper skips jobs already terminal.
            log.error("could not release %d forgotten job(s) in Redis: %s", len(batch), exc)

    async def _until_the_bus_closes(self) -> None:
        sub = self._subscription
        while True:
            try:
                await sub.receive_batch()
            except SubscriptionClosed:
                return

    # -- the lease ----------------------------------------------------------------------------
    async def _renew_forever(self) -> None:
        """Renew the lease every ``renew_interval``; after a failure (Redis lost), retry sooner,
        with a capped, jittered backoff, so the lease is renewed as soon as Redis is back, and
        announce this node again then (its entry in the nodes hash may be older than Redis' data).
        Nothing ends this loop but cancellation: every failure is logged and retried."""
        backoff = Backoff(cap=min(1.0, self.renew_interval))
        failing = False
        while True:
            await anyio.sleep(backoff.next() if failing else self.renew_interval)
            try:
                renewed = await self.client.set(self.lease_key(self.node_id), b"1", px=self.lease_ms, xx=True)
                if not renewed:
                    await self._lease_lost()
                elif failing:
                    await self.client.hset(self.nodes_key, self.node_id, _encode(self._info()))
                    log.warning("this node's lease is renewed again after %d failed attempt(s)", backoff.failures)
                failing = False
                backoff.reset()
            except Exception as exc:  # noqa: BLE001 - see the docstring
                _log_loop_failure("renew this node's lease", exc, not failing)
                failing = True
            self.renew_failures = backoff.failures if failing else 0

    async def _lease_lost(self) -> None:
        lost = sorted(self.owned)
        log.error(
            "this node's lease had expired (stalled for over %.1fs or Redis unreachable): the cluster may "
            "have failed its %d running job(s); failing them here too and joining again",
            self.lease_seconds, len(lost),
        )
        if lost and self.fence is not None:
            self.fence(lost)
        await self.join()

    # -- the reaper ---------------------------------------------------------------------------
    async def _reap_forever(self) -> None:
        """Reap every ``reap_interval``. A failure (Redis or the store unreachable, or anything
        unexpected) is logged and the next round tries again: the loop never ends by itself.

        After this node could not reach Redis, it does not reap for one lease: the other nodes
        lost Redis too, their leases may have run out meanwhile, and they renew them within a
        renew interval of Redis' return. Reaping at once would fail their live jobs."""
        failures = 0
        hold_until = 0.0
        while True:
            await anyio.sleep(self.reap_interval)
            try:
                if failures or anyio.current_time() < hold_until:
                    await self.client.ping()
                    if failures:
                        hold_until = anyio.current_time() + self.lease_seconds
                        failures = 0
                    continue
                await self.reap_once()
            except Exception as exc:  # noqa: BLE001 - see the docstring
                _log_loop_failure("check the other nodes' leases", exc, failures == 0)
                failures += 1

    async def reap_once(self) -> list[str]:
        """Fail the jobs of every node whose lease expired; returns the ids failed."""
        nodes = [as_text(n) for n in await self.client.hkeys(self.nodes_key)]
        others = [n for n in nodes if n != self.node_id]
        if not others:
            return []
        pipe = self.client.pipeline(transaction=False)
        for node in others:
            pipe.exists(self.lease_key(node))
        alive = await pipe.execute()
        failed: list[str] = []
        for node, up in zip(others, alive, strict=True):
            if up:
                continue
            lock = self.keys.reaping(node)
            if not await self.client.set(lock, self.node_id.encode(), nx=True, px=self.lease_ms * 3):
                continue  # another node is reaping it
            failed += await self._reap(node)
        return failed

    async def _reap(self, node: str) -> list[str]:
        job_ids = sorted(as_text(j) for j in await self.client.smembers(self.jobs_key(node)))
        failed: list[str] = []
        for job_id in job_ids:
            raw = await self.client.hget(self.owners_key, job_id)
            owner = _decode_owner(raw) if raw is not None else None
            if owner is not None and owner.node != node:
                continue
            if await self._fail_job(job_id, owner):
                failed.append(job_id)
        pipe = self.client.pipeline(transaction=True)
        if job_ids:
            pipe.hdel(self.owners_key, *job_ids)
        pipe.delete(self.jobs_key(node))
        pipe.hdel(self.nodes_key, node)
        await pipe.execute()
        if failed:
            log.warning("node %s stopped renewing its lease; failed its %d job(s): %s", node, len(failed),
                        ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else ""))
        self.reaped_jobs += len(failed)
        return failed

    async def _fail_job(self, job_id: str, owner: Owner | None) -> bool:
        """Mark ``job_id`` failed (worker lost) in the store and end its event stream."""
        now = utc_now()
        error = {"type": "interrupted", "message": WORKER_LOST}
        record = await self.store.get_job(job_id)
        if record is None:
            if owner is None:
                return False
            record = JobRecord(job_id=job_id, flow_id=owner.flow_id, runtime_id=owner.runtime_id,
                               status="running", created_at=owner.created_at)
        if record.status in TERMINAL_STATUSES:
            return False  # it ended; only the release was lost
        await self.store.put_job(msgspec.structs.replace(record, status="failed", error=error, completed_at=now))
        last = stream_entries(await self.client.xrevrange(self.job_stream(job_id), count=1))
        last_seq = int(last[0][0].split(b"-", 1)[0]) if last else 0
        flow_id = record.flow_id
        event = Event(last_seq + 1, "job_end", job_id, flow_id, None, now,
                      {"status": "failed", "error": error, "unconsumed": 0})
        self.store.record_events([StoredEvent(job_id, event.seq, "job_end", encode_json(event))])
        await self.store.flush()
        return True
