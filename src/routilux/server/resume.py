"""At start-up, every job that was live when the server stopped comes back from its checkpoint.

A job is restored in the status it had (running, idle or paused), with its data, queues, pending
batches, timers and remaining timeout; the posts acknowledged after its checkpoint are delivered
again, in order; activations that were in flight run again (at-least-once: ``ctx.redelivered``).
Its events go on from the checkpoint's ``seq``, after one ``job_resume`` with ``reason:
"restart"``. A job that cannot come back — its flow no longer loads, its runtime is gone, its
checkpoint does not fit the flow any more — fails with a reason that says why. Jobs with no
checkpoint (``execution.durable: false``) fail as ``interrupted: server restarted``.

The store is read three times in all, whatever the number of jobs: the checkpoints, the last
recorded ``seq`` of every job, the posts after every checkpoint. Restoring a job awaits nothing
unless it has posts to replay, and its stored checkpoint stays the current one until the job
changes (:meth:`Checkpointer.restored`), so a restart writes only each job's ``job_resume`` and
record (through the recorder, in batches).
"""

from __future__ import annotations

import logging

import anyio
import msgspec

from routilux.bus.events import utc_now
from routilux.debug.breakpoints import BreakpointSpecError
from routilux.engine import Engine, Job
from routilux.engine.checkpoint import decode_checkpoint
from routilux.errors import RoutiluxError
from routilux.server.catalog import FlowCatalog
from routilux.server.checkpoints import Checkpointer, decode_saved, restore_breakpoints
from routilux.store.base import CheckpointRecord, Store, StoredPost

log = logging.getLogger("routilux.server")

INTERRUPTED = "interrupted: server restarted"
#: How long a replayed post may wait for room in its slot.
REPLAY_POST_SECONDS = 10.0
#: Jobs restored between two yields to the event loop: the bus subscribers (recorder,
#: checkpointer, metrics) take their events in batches of about this size as the restore goes.
YIELD_EVERY = 200


async def resume_jobs(engine: Engine, store: Store, catalog: FlowCatalog, checkpointer: Checkpointer) -> list[str]:
    """Restore every checkpointed live job; the ids of those resumed. The other live jobs of the
    store are failed: those with no checkpoint first (before the restored jobs' records and
    events keep the store's writer busy), then each job that cannot come back, with its reason."""
    saved_jobs = await store.list_checkpoints()
    interrupted = await store.mark_interrupted(INTERRUPTED, keep=[saved.job_id for saved in saved_jobs])
    if interrupted:
        log.warning("%d job(s) were live when the server stopped and had no checkpoint; marked failed",
                    len(interrupted))
    if not saved_jobs:
        return []
    # Events after a checkpoint were published (and may have been seen by clients) before the
    # process stopped: a resumed job numbers after the last one recorded.
    last_seqs = await store.last_event_seqs([saved.job_id for saved in saved_jobs])
    posts = await store.posts_after_many({saved.job_id: saved.posts for saved in saved_jobs})
    resumed: list[str] = []
    for i, saved in enumerate(saved_jobs):
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await anyio.lowlevel.checkpoint()
        job = await resume_one(engine, store, catalog, checkpointer, saved, last_seqs.get(saved.job_id, 0),
                               posts.get(saved.job_id, []))
        if job is not None:
            resumed.append(job.job_id)
    if resumed:
        log.warning("%d job(s) resumed from their checkpoints", len(resumed))
    return resumed


async def resume_one(
    engine: Engine, store: Store, catalog: FlowCatalog, checkpointer: Checkpointer, saved: CheckpointRecord,
    last_seq: int, posts: list[StoredPost], *, reason: str = "restart", interrupted: str = INTERRUPTED,
) -> Job | None:
    """One job back from ``saved`` (and ``posts``, those after it), or None if it was failed
    (with ``interrupted`` and why it could not resume). Its ``job_resume`` says ``reason``:
    "restart" here, "moved" when another server of a cluster adopts it
    (:mod:`routilux.server.adoption`)."""
    job: Job | None = None
    try:
        kept = decode_saved(saved.data)
        checkpoint = decode_checkpoint(bytes(kept.job))
        entry = catalog.find(checkpoint.flow_id)
        if entry is None:
            raise RoutiluxError(f"its flow '{checkpoint.flow_id}' no longer exists")
        job = engine.restore_job(entry.runnable_plan(), checkpoint, last_seq=last_seq, reason=reason)
        if kept.durable is not None:
            checkpointer.choose(job, kept.durable)
        checkpointer.restored(job)
        restore_breakpoints(job, kept.breakpoints)
        await checkpointer.posts.replay(job, saved.posts, posts, timeout=REPLAY_POST_SECONDS)
    except (RoutiluxError, msgspec.DecodeError, BreakpointSpecError) as exc:
        why = exc.message if isinstance(exc, RoutiluxError) else str(exc)
        failure = f"{interrupted}, and the job could not resume: {why}"
        if job is not None and not job.is_terminal:
            job.fail(failure, "interrupted")  # its record follows through the recorder
        else:
            await _fail(store, saved.job_id, failure)
        return None
    return job


async def _fail(store: Store, job_id: str, reason: str) -> None:
    log.error("job %s: %s", job_id, reason)
    record = await store.get_job(job_id)
    if record is None:
        return
    error = {"type": "interrupted", "message": reason}
    await store.put_job(msgspec.structs.replace(record, status="failed", error=error, completed_at=utc_now()))
