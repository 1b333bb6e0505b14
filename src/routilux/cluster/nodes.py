"""Which server owns which job, whether it is still alive, and what happens to its jobs when not.

A *node* is one server process (a gunicorn worker, a uvicorn process on some machine). Every node
joins the cluster with a **lease**: a Redis key that expires ``lease_seconds`` after its last
renewal, renewed by one task about three times per lease. A job is **owned** by the node that runs
it: the node records ``job_id -> owner`` in a hash before it answers the request that started the
job, and removes it when its engine forgets the job (a finished job stays in memory a while, and
as long as it does, its owner answers for it exactly as a single server would: its last seq, its
breakpoints; afterwards any node answers from the shared store).

Every node also runs the **reaper**: it looks for nodes whose lease expired (the process was
killed, the machine lost power, the network split) and **hands their jobs to live nodes** of the
same worker group (``ROUTILUX_WORKER_GROUP``), spread at random, instead of failing them. A job
moves only if it has a checkpoint in the shared store (``execution.durable``, the default): the
reaper rewrites its owner entry to the adopting node with the next **epoch** (see *Fencing*), moves
it between the nodes' job sets, and sends a notice; the adopting node resumes it from its
checkpoint plus the posts acknowledged after it (:mod:`routilux.server.adoption`). Notices can be
lost, so every node also checks its own job set regularly and resumes what it owns but does not
run. One reaper wins each dead node (``SET NX`` on a per-node lock), so a job moves once. A job
resumes elsewhere at most ``lease_seconds + reap_interval`` (plus its restore) after its owner died.

A job with no checkpoint (``durable: false``) cannot move: it is failed with ``interrupted: worker
lost`` as before — its record becomes ``failed`` and a synthetic ``job_end`` ends its event
stream, so every WebSocket watching it on any node sees it end.

**No live node of the group** (the only server of a group died): the dead node's durable jobs stay
assigned to it and wait, rather than fail — they are retried at every reaper pass, and move as
soon as a node of that group joins (a rolling restart whose new server is still starting). Their requests answer 503
``owner_unavailable`` meanwhile. Failing them would throw away work that a restart of that group's
server can carry on.

**Fencing.** The owner entry (:class:`Owner`) carries an ``epoch``, bumped by every change of
owner (compare-and-set on the whole entry, so two reapers or a reaper and a draining node never
both move a job). The shared store, in a cluster, checks the owner entry inside the same Lua
script as each write of a job's record, events, checkpoint or posts: a write from a node that is
no longer the owner is refused (it may be a node that stalled past its lease and was reaped while
its event loop was frozen). That node is told (``on_fenced``) and stops running the job locally —
without failing it: its new owner has it. A node that finds its own lease lapsed stops all its
jobs locally the same way (``fence``), joins again, and resumes from their checkpoints those still
assigned to it.

**Draining** (a graceful stop, ``SIGTERM``): the node withdraws from the node list (nobody places
or hands it jobs), checkpoints its live jobs, stops them locally and hands them to live nodes of
its group (:meth:`ClusterMembership.hand_over`), which adopt them at once.

Why Redis keys and not a consensus library: ownership needs one linearizable register per job
and a failure detector with a bounded delay, which Redis' single-threaded commands and key
expiry give; the cluster already depends on Redis for events.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
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
from routilux.store.redis import RedisStore
from routilux.store.redis.connection import is_connection_error
from routilux.store.redis.keys import Keys, fence_token
from routilux.store.redis.replies import as_text, stream_entries

log = logging.getLogger("routilux.cluster")

WORKER_LOST: Final = "interrupted: worker lost"
DEFAULT_LEASE_SECONDS: Final = 10.0
#: How long ended jobs' releases gather before one script lets go of them all: a busy node ends
#: hundreds of jobs a second, and one round trip each would cost more than the jobs' own writes.
RELEASE_GATHER_SECONDS: Final = 0.05


def _log_loop_failure(what: str, exc: Exception, first: bool) -> None:
    """A lost Redis is logged once per outage (at the first failure); anything unexpected each
    time, with its traceback."""
    if not is_connection_error(exc):
        log.error("could not %s (unexpected error); retrying", what, exc_info=exc)
    elif first:
        log.error("could not %s: Redis unreachable (%s); retrying until it is back", what, exc)


class Owner(msgspec.Struct, frozen=True):
    """What the cluster remembers of a running job: who runs it, and enough to write its record
    if that node dies before it wrote one. ``epoch`` grows by one at each change of owner.

    ``node`` is the first field: its JSON starts ``{"node":"<id>",``, which the store's write
    scripts compare (:func:`routilux.store.redis.keys.fence_token`) without decoding the entry."""

    node: str
    flow_id: str
    runtime_id: str
    created_at: datetime
    epoch: int = 1


class NodeInfo(msgspec.Struct, frozen=True):
    node: str
    host: str
    pid: int
    joined_at: datetime
    group: str | None = None  # ROUTILUX_WORKER_GROUP: where runtimes of that group run their jobs


_encode = msgspec.json.encode

# KEYS: owners. ARGV: the node-jobs key head, the node handing over, then per job: job_id, its
# owner entry as read (compare-and-set), the new entry, the new node. Returns the ids moved.
_SWAP_OWNER = """
local moved = {}
for i = 3, #ARGV, 4 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[1], id) == ARGV[i + 1] then
    redis.call('HSET', KEYS[1], id, ARGV[i + 2])
    redis.call('SREM', ARGV[1] .. ARGV[2], id)
    redis.call('SADD', ARGV[1] .. ARGV[i + 3], id)
    moved[#moved + 1] = id
  end
end
return moved
"""

# KEYS: owners, the releasing node's job set. ARGV: its fence token, then job ids. Deletes each
# owner entry only if it still names that node (see fence_token), and the ids from its set.
_RELEASE = """
for i = 2, #ARGV do
  local entry = redis.call('HGET', KEYS[1], ARGV[i])
  if entry and string.sub(entry, 1, #ARGV[1]) == ARGV[1] then redis.call('HDEL', KEYS[1], ARGV[i]) end
  redis.call('SREM', KEYS[2], ARGV[i])
end
return 0
"""
_decode_owner = msgspec.json.Decoder(Owner).decode
_decode_node = msgspec.json.Decoder(NodeInfo).decode


class ClusterMembership:
    """This node's lease and jobs, and the reaper of the other nodes' jobs.

    ``fence`` is called with the ids of this node's running jobs when it finds its own lease
    lapsed (see the module docstring); the server stops them locally, without failing them.
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
        on_assigned: Callable[[str, list[str]], Awaitable[None]] | None = None,
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
        #: Told ``(node, job_ids)`` when this node's reaper handed jobs to ``node`` (a notice wakes it).
        self.on_assigned = on_assigned
        self.group = group
        self.keys = Keys(prefix)
        self.nodes_key = self.keys.nodes
        self.owners_key = self.keys.owners
        self.owned: set[str] = set()  # jobs this node runs and has not seen end
        self.reaped_jobs = 0  # jobs failed by this node's reaper
        self.moved_jobs = 0  # jobs this node's reaper (or drain) handed to other nodes
        self._waiting_logged: set[str] = set()  # dead nodes whose jobs wait for a node of their group
        self._swap = client.register_script(_SWAP_OWNER)
        self._release = client.register_script(_RELEASE)
        self.renew_failures = 0  # renewals failed in a row (Redis unreachable)
        self._joined_at = utc_now()
        self._to_release: list[str] = []
        self.withdrawn = False  # draining (withdraw): off the node list, and no longer reaping
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
        # The engine stopped: every job still counted as ours ended here (those that moved were
        # dropped), so none is left for the reaper to find.
        self._to_release.extend(self.owned.difference(self._to_release))
        await self._release_now()

    async def leave(self) -> None:
        """Give the lease back on a clean shutdown. Jobs still assigned here (a drain found no
        live node of the group to take them) stay assigned, with this node listed, so the reaper
        hands them on once a node of the group is up; otherwise the node is forgotten."""
        waiting = await self.client.scard(self.jobs_key(self.node_id))
        pipe = self.client.pipeline(transaction=True)
        if waiting:
            pipe.delete(self.lease_key(self.node_id))
            pipe.hset(self.nodes_key, self.node_id, _encode(self._info()))
        else:
            pipe.delete(self.lease_key(self.node_id), self.jobs_key(self.node_id))
            pipe.hdel(self.nodes_key, self.node_id)
        await pipe.execute()

    async def withdraw(self) -> None:
        """Start of a drain: leave the node list (no job is placed or handed here any more) while
        keeping the lease (forwarded requests still reach this node until its jobs moved). It
        reaps no more either: stopped halfway through a reap, it would keep a dead node's
        reaping lock, and that node's jobs would wait for the lock to expire (3 leases)."""
        self.withdrawn = True
        await self.client.hdel(self.nodes_key, self.node_id)

    # -- ownership ----------------------------------------------------------------------------
    async def own(self, job_id: str, flow_id: str, runtime_id: str, created_at: datetime) -> None:
        """Record that this node runs ``job_id``, before the job starts (so before any of its
        events: a server that reads its announcement finds its owner) and before the client
        hears of it. On the shared Redis store of this node, through the store's writer (one
        round trip shared with the writes beside it); if that fails, whatever part reached Redis
        is released (the caller does not start the job).

        The job counts as owned here only once Redis says so: its ``job_end`` seen earlier is
        not released by :meth:`_release_ended` (the release could overtake the claim on another
        connection), so the caller releases a job that already ended itself."""
        owner = Owner(self.node_id, flow_id, runtime_id, created_at)
        store = self.store
        try:
            if isinstance(store, RedisStore) and (store.node_id, store.prefix) == (self.node_id, self.prefix):
                await store.claim_job(job_id, _encode(owner))
            else:
                pipe = self.client.pipeline(transaction=True)
                pipe.hset(self.owners_key, job_id, _encode(owner))
                pipe.sadd(self.jobs_key(self.node_id), job_id)
                await pipe.execute()
        except BaseException:
            self.release_later([job_id])
            raise
        self.owned.add(job_id)

    async def release(self, job_ids: Sequence[str]) -> None:
        """Forget the ownership of ended jobs: requests about them are served from the store."""
        self.owned.difference_update(job_ids)
        # Only entries that still name this node: a job another node adopted stays its.
        await self._release(keys=[self.owners_key, self.jobs_key(self.node_id)],
                            args=[fence_token(self.node_id), *job_ids])

    async def owner_of(self, job_id: str) -> Owner | None:
        raw = await self.client.hget(self.owners_key, job_id)
        return _decode_owner(raw) if raw is not None else None

    async def owners_of(self, job_ids: Sequence[str]) -> dict[str, Owner]:
        """The owner entries of ``job_ids`` (those that have one)."""
        raws = await self.client.hmget(self.owners_key, list(job_ids))
        return {j: _decode_owner(r) for j, r in zip(job_ids, raws, strict=True) if r is not None}

    async def fail_lost(self, job_id: str) -> bool:
        """Fail ``job_id`` (worker lost): it was handed here but cannot come back (no checkpoint)."""
        owner = await self.owner_of(job_id)
        await self.release([job_id])  # gone first, so the fencing scripts let this node write its end
        return await self._fail_job(job_id, owner)

    async def assigned_here(self, *, unless_as_known: bool = False) -> set[str]:
        """The jobs Redis says this node owns (its job set). ``unless_as_known``: an empty set if
        the set is as large as :attr:`owned` (every job in it is known here: one SCARD, not the
        whole set, for the adopter's regular check)."""
        key = self.jobs_key(self.node_id)
        if unless_as_known and await self.client.scard(key) == len(self.owned):
            return set()
        return {as_text(j) for j in await self.client.smembers(key)}

    def adopted(self, job_id: str) -> None:
        """This node now runs ``job_id``, which was handed to it (its entry says so already)."""
        self.owned.add(job_id)

    def dropped(self, job_ids: Sequence[str]) -> None:
        """This node stopped running ``job_ids`` without ending them (they moved)."""
        self.owned.difference_update(job_ids)

    async def hand_over(self, job_ids: Sequence[str]) -> dict[str, list[str]]:
        """Give this node's ``job_ids`` to live nodes of its group (a drain), spread over them;
        ``{node: job_ids}`` of those moved. None move if no other node of the group is live."""
        targets = [n.node for n in await self.live_nodes() if n.group == self.group and n.node != self.node_id]
        moved = await self._move(self.node_id, list(job_ids), targets)
        self.dropped([j for ids in moved.values() for j in ids])
        return moved

    async def _move(self, node: str, job_ids: list[str], targets: list[str]) -> dict[str, list[str]]:
        """Reassign ``node``'s ``job_ids`` to ``targets`` round-robin from a random start, each
        with the next epoch, if its entry is still ``node``'s (compare-and-set); tells each
        target (``on_assigned``). ``{target: job_ids}`` of those moved."""
        if not job_ids or not targets:
            return {}
        raws = await self.client.hmget(self.owners_key, job_ids)
        start = random.randrange(len(targets))
        args: list[bytes | str] = [self.keys.node_jobs(""), node]
        chosen: dict[str, str] = {}
        for i, (job_id, raw) in enumerate(zip(job_ids, raws, strict=True)):
            if raw is None:
                continue
            owner = _decode_owner(raw)
            if owner.node != node:
                continue
            target = targets[(start + i) % len(targets)]
            new = msgspec.structs.replace(owner, node=target, epoch=owner.epoch + 1)
            args += [job_id, raw, _encode(new), target]
            chosen[job_id] = target
        if not chosen:
            return {}
        done = {as_text(j) for j in await self._swap(keys=[self.owners_key], args=args)}
        moved: dict[str, list[str]] = {}
        for job_id, target in chosen.items():
            if job_id in done:
                moved.setdefault(target, []).append(job_id)
        self.moved_jobs += len(done)
        if self.on_assigned is not None:
            for target, ids in moved.items():
                await self.on_assigned(target, ids)
        return moved

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
            await anyio.sleep(RELEASE_GATHER_SECONDS)
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
            "have handed its %d job(s) to other nodes; stopping them here, joining again, and resuming from "
            "their checkpoints those still assigned here",
            self.lease_seconds, len(lost),
        )
        if lost and self.fence is not None:
            self.fence(lost)
        self.dropped(lost)
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
        if self.withdrawn:  # draining: the nodes that stay reap (see withdraw)
            return []
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
        """Hand the dead ``node``'s durable jobs to live nodes of its group, fail the others
        (the module docstring); returns the ids failed."""
        raw_info = await self.client.hget(self.nodes_key, node)
        group = _decode_node(raw_info).group if raw_info is not None else None
        job_ids = sorted(as_text(j) for j in await self.client.smembers(self.jobs_key(node)))
        owners: dict[str, Owner | None] = {}
        if job_ids:
            raws = await self.client.hmget(self.owners_key, job_ids)
            owners = {j: _decode_owner(r) if r is not None else None for j, r in zip(job_ids, raws, strict=True)}
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hexists(self.keys.checkpoints, job_id)
        durable = {j for j, has in zip(job_ids, await pipe.execute(), strict=True) if has}
        mine = [j for j in job_ids if (o := owners[j]) is None or o.node == node]  # others moved already
        targets = [n.node for n in await self.live_nodes() if n.group == group]
        movable = [j for j in mine if j in durable and owners[j] is not None]
        moved = await self._move(node, movable, targets)
        moved_ids = {j for ids in moved.values() for j in ids}
        waiting = [j for j in movable if j not in moved_ids] if not targets else []
        doomed = [j for j in mine if j not in movable]
        if doomed:
            # Gone first, so the fencing scripts let this node write their end.
            await self.client.hdel(self.owners_key, *doomed)
        failed = [j for j in doomed if await self._fail_job(j, owners[j])]
        pipe = self.client.pipeline(transaction=True)
        if waiting:
            handled = [j for j in job_ids if j not in waiting]
            if handled:
                pipe.srem(self.jobs_key(node), *handled)
            # Try again at the next pass (a node of the group may be starting: a rolling restart).
            pipe.pexpire(self.keys.reaping(node), max(1, int(self.reap_interval * 1000)))
            if node not in self._waiting_logged:
                self._waiting_logged.add(node)
                log.warning("node %s stopped renewing its lease; no live node of worker group %s can take its "
                            "%d durable job(s): they wait for one", node, group or "(none)", len(waiting))
        else:
            pipe.delete(self.jobs_key(node))
            pipe.hdel(self.nodes_key, node)
            self._waiting_logged.discard(node)
        await pipe.execute()
        if moved_ids or failed:
            log.warning("node %s stopped renewing its lease; %d job(s) handed to %s, %d without a checkpoint "
                        "failed: %s", node, len(moved_ids), ", ".join(sorted(moved)) or "nobody", len(failed),
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
