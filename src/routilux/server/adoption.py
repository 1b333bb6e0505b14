"""Jobs that move between the servers of a cluster: adopting the ones handed here, and letting go
of the ones this server may no longer run.

**Adopting.** A job is handed to this node by the reaper (its owner died) or by a draining node
(:mod:`routilux.cluster.nodes`): its owner entry names this node and it is in this node's job set.
A notice (``adopt:<node>:<ids>``) wakes :class:`Adopter` at once; since a notice can be lost, the
adopter also checks the job set every ``interval`` seconds for jobs it owns but does not run.
Each is resumed exactly as a restart resumes a job (:func:`routilux.server.resume.resume_one`):
from its last checkpoint plus the posts acknowledged after it, in order; activations that were in
flight run again (at-least-once, ``ctx.redelivered``); its events go on after the last ``seq`` of
its stream, after one ``job_resume`` with ``reason: "moved"``. A handed job with no checkpoint
left is either over (its record is terminal: the ownership is let go) or cannot come back (it is
failed, ``interrupted: worker lost``).

**Letting go** (:meth:`Adopter.let_go`). When the store refuses a write because another node owns
the job now, or this node's lease lapsed, the job stops here *without ending*: no ``job_end``, no
record (:meth:`routilux.engine.Engine.abandon_job`); the recorder and the checkpointer forget it;
WebSockets on this server keep watching it through the event relay, which follows it from the
last seq they saw. Every ``interval * 5`` seconds the adopter also compares the owner entries of
the jobs it runs with itself, so an idle job that writes nothing is let go too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import anyio

from routilux.bus.status import TERMINAL_STATUSES
from routilux.server.resume import resume_one
from routilux.store.redis.connection import is_connection_error

if TYPE_CHECKING:
    from routilux.cluster.nodes import ClusterMembership
    from routilux.cluster.redis_events import RedisEventBridge
    from routilux.engine import Engine
    from routilux.server.catalog import FlowCatalog
    from routilux.server.checkpoints import Checkpointer
    from routilux.server.eventlog import Recorder
    from routilux.store.base import Store

log = logging.getLogger("routilux.cluster")

MOVED: Final = "moved"
LOST: Final = "interrupted: worker lost"
#: Seconds between two checks of this node's job set (a lost notice costs at most this).
DEFAULT_INTERVAL: Final = 1.0
#: Every this many checks, the owner entries of the jobs running here are compared with this node.
OWNERSHIP_EVERY: Final = 5


class Adopter:
    """Resumes the jobs handed to this node; stops those that moved away (module docstring)."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        membership: ClusterMembership,
        bridge: RedisEventBridge,
        recorder: Recorder,
        checkpointer: Checkpointer,
        *,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.engine = engine
        self.store = store
        self.membership = membership
        self.bridge = bridge
        self.recorder = recorder
        self.checkpointer = checkpointer
        self.interval = interval
        self.catalog: FlowCatalog | None = None  # set by run()
        self.adopted = 0  # jobs resumed here after a move (logs, tests)
        self.let_go_count = 0
        self._wanted = anyio.Event()
        self._round = anyio.Event()  # set at the end of each check (adopt_now waits for one)
        self._follow: list[tuple[str, str, int]] = []  # let go, to follow through the relay
        #: Set by a drain: this node takes no job any more (what is assigned here waits for the reaper).
        self.closed = False

    # -- adopting -----------------------------------------------------------------------------
    def wake(self) -> None:
        """A notice said jobs were handed here: check now."""
        self._wanted.set()

    async def adopt_now(self, timeout: float = 3.0) -> None:
        """Check now and wait (at most ``timeout``) until the check is done: a request found a
        job assigned here that does not run yet."""
        done = self._round
        self.wake()
        with anyio.move_on_after(timeout):
            await done.wait()

    async def run(self, catalog: FlowCatalog) -> None:
        """Check this node's job set whenever woken and every ``interval``, until cancelled."""
        self.catalog = catalog
        rounds = 0
        failing = False  # the last round failed because Redis could not be reached
        while True:
            with anyio.move_on_after(self.interval):
                await self._wanted.wait()
            self._wanted = anyio.Event()
            rounds += 1
            done, self._round = self._round, anyio.Event()
            try:
                await self._follow_let_go()
                await self.check()
                if rounds % OWNERSHIP_EVERY == 0:
                    await self.verify_ownership()
                failing = False
            except Exception as exc:  # noqa: BLE001 - Redis or the store failed: the next round retries
                if not is_connection_error(exc):
                    log.exception("checking the jobs assigned to this node failed; retrying in %g s", self.interval)
                elif not failing:  # a lost Redis: once per outage
                    log.error("checking the jobs assigned to this node failed: Redis unreachable (%s); retrying "
                              "every %g s", exc, self.interval)
                failing = True
            finally:
                done.set()

    async def check(self) -> list[str]:
        """Resume the jobs assigned here that do not run here; their ids."""
        if self.closed:
            return []
        assigned = await self.membership.assigned_here(unless_as_known=True)
        waiting = sorted(j for j in assigned if j not in self.membership.owned and self._not_running(j))
        if not waiting:
            return []
        return await self.adopt(waiting)

    def _not_running(self, job_id: str) -> bool:
        job = self.engine.get_job(job_id)
        return job is None or job.is_terminal

    async def adopt(self, job_ids: Sequence[str]) -> list[str]:
        """Resume ``job_ids`` (assigned here) from their checkpoints; the ids resumed."""
        assert self.catalog is not None
        started = time.monotonic()
        saved = {j: await self.store.get_checkpoint(j) for j in job_ids}
        durable = {j: cp for j, cp in saved.items() if cp is not None}
        for job_id in job_ids:
            if job_id not in durable:
                await self._no_checkpoint(job_id)
        if not durable:
            return []
        last_seqs = await self.store.last_event_seqs(list(durable))
        posts = await self.store.posts_after_many({j: cp.posts for j, cp in durable.items()})
        # Whatever this server still had to record of an earlier life of these jobs here is
        # queued (or dropped, for jobs let go) before they are recorded again.
        await self.recorder.caught_up(self.engine.bus.published)
        resumed: list[str] = []
        for job_id, cp in durable.items():
            if self.closed:
                break
            await self.bridge.take_over(job_id)  # their events are this server's from now on
            self.recorder.unsuspend([job_id])
            self.checkpointer.posts.moved.discard(job_id)
            job = await resume_one(self.engine, self.store, self.catalog, self.checkpointer, cp,
                                   last_seqs.get(job_id, 0), posts.get(job_id, []), reason=MOVED, interrupted=LOST)
            self.membership.adopted(job_id)
            if job is not None:
                resumed.append(job_id)
        self.adopted += len(resumed)
        if resumed:
            log.warning("%d job(s) moved here resumed from their checkpoints in %.0f ms: %s", len(resumed),
                        (time.monotonic() - started) * 1000, ", ".join(resumed[:10]))
        return resumed

    async def _no_checkpoint(self, job_id: str) -> None:
        """A job assigned here has no checkpoint: it ended (let go of it), or it cannot come back."""
        record = await self.store.get_job(job_id)
        if record is None or record.status in TERMINAL_STATUSES:
            await self.membership.release([job_id])
            return
        await self.membership.fail_lost(job_id)

    # -- letting go ---------------------------------------------------------------------------
    def let_go(
        self, job_ids: Sequence[str], *, follow: bool = True, why: str = "are owned by another node now"
    ) -> list[str]:
        """Stop running ``job_ids`` here without ending them (they moved); the ids stopped.
        Synchronous: called from the store's writer and the lease task. ``follow``: keep this
        server's sockets on them through the event relay."""
        stopped: list[str] = []
        for job_id in job_ids:
            job = self.engine.get_job(job_id)
            if job is None or job.is_terminal:
                continue
            self.recorder.suspend([job_id])
            self.checkpointer.posts.moved.add(job_id)
            self.checkpointer.drop(job_id)
            last_seq, flow_id = job.last_seq, job.flow_id
            if self.engine.abandon_job(job_id):
                stopped.append(job_id)
                if follow:
                    self._follow.append((job_id, flow_id, last_seq))
        self.membership.dropped(job_ids)
        if stopped:
            self.let_go_count += len(stopped)
            log.warning("%d job(s) %s; stopped here (not failed): %s", len(stopped), why, ", ".join(stopped[:10]))
            self.wake()
        return stopped

    async def _follow_let_go(self) -> None:
        """Sockets here watching jobs that moved away go on with their new owner's events."""
        pending, self._follow = self._follow, []
        for job_id, flow_id, last_seq in pending:
            owner = await self.membership.owner_of(job_id)
            if owner is not None and owner.node != self.membership.node_id:
                self.bridge.follow(job_id, flow_id, owner.node, after=last_seq)

    async def verify_ownership(self) -> list[str]:
        """Let go of the jobs running here whose owner entry names another node; their ids."""
        running = [j for j in self.membership.owned if not self._not_running(j)]
        if not running:
            return []
        owners = await self.membership.owners_of(running)
        lost = [j for j in running if (o := owners.get(j)) is not None and o.node != self.membership.node_id]
        return self.let_go(lost) if lost else []
