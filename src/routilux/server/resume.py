"""At start-up, every job that was live when the server stopped comes back from its checkpoint.

A job is restored in the status it had (running, idle or paused), with its data, queues, pending
batches, timers and remaining timeout; the posts acknowledged after its checkpoint are delivered
again, in order; activations that were in flight run again (at-least-once: ``ctx.redelivered``).
Its events go on from the checkpoint's ``seq``, after one ``job_resume`` with ``reason:
"restart"``. A job that cannot come back — its flow no longer loads, its runtime is gone, its
checkpoint does not fit the flow any more — fails with a reason that says why. Jobs with no
checkpoint (``execution.durable: false``) fail as ``interrupted: server restarted``.
"""

from __future__ import annotations

import logging

import msgspec

from routilux.bus.events import utc_now
from routilux.debug.breakpoints import BreakpointSpecError
from routilux.engine import Engine, Job
from routilux.engine.checkpoint import decode_checkpoint
from routilux.errors import RoutiluxError
from routilux.server.catalog import FlowCatalog
from routilux.server.checkpoints import Checkpointer, decode_saved, restore_breakpoints
from routilux.store.base import Store

log = logging.getLogger("routilux.server")

INTERRUPTED = "interrupted: server restarted"
#: How long a replayed post may wait for room in its slot.
REPLAY_POST_SECONDS = 10.0


async def resume_jobs(engine: Engine, store: Store, catalog: FlowCatalog, checkpointer: Checkpointer) -> list[str]:
    """Restore every checkpointed live job; the ids of those resumed (the others are failed)."""
    resumed: list[str] = []
    for saved in await store.list_checkpoints():
        job: Job | None = None
        try:
            kept = decode_saved(saved.data)
            checkpoint = decode_checkpoint(bytes(kept.job))
            entry = catalog.find(checkpoint.flow_id)
            if entry is None:
                raise RoutiluxError(f"its flow '{checkpoint.flow_id}' no longer exists")
            job = engine.restore_job(entry.runnable_plan(), checkpoint,
                                     last_seq=await _last_recorded_seq(store, saved.job_id, checkpoint.seq))
            if kept.durable is not None:
                checkpointer.choose(job, kept.durable)
            restore_breakpoints(job, kept.breakpoints)
            await checkpointer.posts.replay(job, saved.posts, timeout=REPLAY_POST_SECONDS)
        except (RoutiluxError, msgspec.DecodeError, BreakpointSpecError) as exc:
            why = exc.message if isinstance(exc, RoutiluxError) else str(exc)
            reason = f"{INTERRUPTED}, and the job could not resume: {why}"
            if job is not None and not job.is_terminal:
                job.fail(reason, "interrupted")  # its record follows through the recorder
            else:
                await _fail(store, saved.job_id, reason)
            continue
        resumed.append(job.job_id)
    if resumed:
        log.warning("%d job(s) resumed from their checkpoints", len(resumed))
    return resumed


async def _last_recorded_seq(store: Store, job_id: str, since: int) -> int:
    """The last seq recorded for the job: events after its checkpoint were published (and may
    have been seen by clients) before the process stopped; the resumed job numbers after them."""
    last = since
    while True:
        batch = await store.events_since(job_id, last, 1000)
        if not batch:
            return last
        last = batch[-1].seq


async def _fail(store: Store, job_id: str, reason: str) -> None:
    log.error("job %s: %s", job_id, reason)
    record = await store.get_job(job_id)
    if record is None:
        return
    error = {"type": "interrupted", "message": reason}
    await store.put_job(msgspec.structs.replace(record, status="failed", error=error, completed_at=utc_now()))
