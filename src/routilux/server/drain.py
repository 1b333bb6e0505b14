"""A cluster node's graceful stop (``SIGTERM``): its live jobs move to the other nodes, none fails.

By the time the lifespan ends, the HTTP server has stopped taking connections, told the services
to start no job (``stop_taking_work``) and closed this server's WebSockets with 1001 (clients
reconnect elsewhere with ``since``: the new owner continues the seq). Then :func:`drain`:

1. leaves the node list, so nobody places or hands a job here any more (the lease stays:
   requests other nodes forward here are still answered);
2. marks the durable live jobs as moving: a request about one answers 503 ``owner_unavailable``
   with ``Retry-After`` (other nodes wait and retry it on the new owner by themselves, see
   :mod:`routilux.api.middleware.forwarding`);
3. takes each job's post lock (a post half delivered finishes first), checkpoints them all at
   once, and stops them here without ending them (:meth:`routilux.server.adoption.Adopter.let_go`);
4. writes the checkpoints and everything the recorder queued (their events up to the checkpoint,
   the acknowledged posts), then hands the jobs to live nodes of its worker group (a
   compare-and-set on each owner entry, next epoch), which adopt them at once on a notice.

Jobs that are not durable (``durable: false``) cannot move: the engine's shutdown cancels them, as
on a single server. If no other node of the group is live — after waiting a few seconds for one
(:data:`SUCCESSOR_WAIT_SECONDS`: on ``kill -HUP`` the new workers join just after the old ones are
told to stop) — the jobs stay assigned to this node,
which stays listed without a lease, and the reaper hands them to the first node of the group that
joins (see :mod:`routilux.cluster.nodes`). All of it is bounded by ``ROUTILUX_SHUTDOWN_SECONDS``
(the lifespan's bound on the way out); if the checkpoints cannot be written the jobs stay assigned
here the same way and move from their previous checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from routilux.server.cluster_node import ClusterNode
    from routilux.server.services import Services

log = logging.getLogger("routilux.cluster")

#: How long a drain waits for a live node to hand its jobs to when there is none yet (``kill -HUP``:
#: gunicorn stops the old workers the moment it forks the new ones, which join a second or two
#: later). Without the wait the jobs would wait for the reaper: the lease and its per-node lock.
SUCCESSOR_WAIT_SECONDS = 5.0
SUCCESSOR_POLL_SECONDS = 0.1


async def drain(services: Services, node: ClusterNode) -> int:
    """Hand this node's durable live jobs to the other nodes (module docstring); how many moved."""
    checkpointer = services.control.checkpointer
    adopter = node.adopter
    if checkpointer is None or adopter is None:
        return 0
    started = time.monotonic()
    adopter.closed = True  # nothing is adopted here any more
    await node.membership.withdraw()
    wait = min(SUCCESSOR_WAIT_SECONDS, services.settings.shutdown_seconds / 2)
    live = [job for job in services.engine.jobs.values() if not job.is_terminal and checkpointer.is_durable(job)]
    if not live:
        return await _hand_over_strays(services, node, set(), wait)
    ids = [job.job_id for job in live]
    node.moving.update(ids)
    try:
        async with contextlib.AsyncExitStack() as held:
            for job in live:  # no post is half done: delivered and queued for the store, or not begun
                await held.enter_async_context(checkpointer.posts.lock(job.job_id))
            taken = await checkpointer.take(live, force=True)
            adopter.let_go(ids, follow=False, why="are moving off this stopping node")  # at once: nothing
            # runs here after its checkpoint
        await checkpointer.write(taken)
        await services.store.flush()
        moved = await _hand_over(node, ids, wait)
    finally:
        node.moving.difference_update(ids)
    count = sum(len(v) for v in moved.values())
    log.warning("drained: %d of %d live job(s) checkpointed and handed to %s in %.0f ms%s", count, len(ids),
                ", ".join(f"{n} ({len(v)})" for n, v in sorted(moved.items())) or "nobody",
                (time.monotonic() - started) * 1000,
                "" if count == len(ids) else "; the others wait for a node of this worker group")
    return count + await _hand_over_strays(services, node, set(ids), wait)


async def _hand_over_strays(services: Services, node: ClusterNode, tried: set[str], wait: float) -> int:
    """Hand on the jobs another node's drain gave this one as its own drain began (``kill -HUP``
    stops every old worker at once, and this one was still listed): it adopts nothing now, and
    left here they would wait for the reaper once this node is gone. Only jobs with a checkpoint
    that do not run here and were not ``tried`` already; how many moved."""
    membership = node.membership
    assigned = await node.client.smembers(membership.jobs_key(node.node_id))
    strays = sorted(j for j in (a.decode() if isinstance(a, bytes) else str(a) for a in assigned)
                    if j not in tried and services.engine.get_job(j) is None)
    if not strays:
        return 0
    pipe = node.client.pipeline(transaction=False)
    for job_id in strays:
        pipe.hexists(membership.keys.checkpoints, job_id)
    strays = [j for j, has in zip(strays, await pipe.execute(), strict=True) if has]
    if not strays:
        return 0
    moved = await _hand_over(node, strays, wait)
    count = sum(len(v) for v in moved.values())
    log.warning("drained: %d of %d job(s) handed here as this node stopped went on to %s", count, len(strays),
                ", ".join(f"{n} ({len(v)})" for n, v in sorted(moved.items())) or "nobody")
    return count


async def _hand_over(node: ClusterNode, ids: list[str], wait: float) -> dict[str, list[str]]:
    """Hand ``ids`` to live nodes of this node's group; while some are left because no node of
    the group is live, try again for up to ``wait`` seconds (see :data:`SUCCESSOR_WAIT_SECONDS`).
    ``{node: job_ids}`` of those moved."""
    moved: dict[str, list[str]] = {}
    left = list(ids)
    deadline = time.monotonic() + wait
    while True:
        for target, job_ids in (await node.membership.hand_over(left)).items():
            moved.setdefault(target, []).extend(job_ids)
        done = {j for job_ids in moved.values() for j in job_ids}
        left = [j for j in left if j not in done]
        if not left or time.monotonic() >= deadline:
            return moved
        await anyio.sleep(SUCCESSOR_POLL_SECONDS)
