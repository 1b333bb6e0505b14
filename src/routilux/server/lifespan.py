"""The composition root of the server: :func:`open_services` builds every part, in order, with its
collaborators as constructor arguments, and is the structured-concurrency root of their tasks.

On the way in it opens the store (marking jobs that were running when the process died as failed,
on a single server), starts the engine, the recorder that writes job history, the retention
pruner and the metrics aggregator, joins the cluster when there is one, and restores runtimes and
flows. On the way out, leaving the engine cancels every running job and closes the bus; the
recorder writes those final records and ends, the pruner and the node with it, and the store is
closed last.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio

from routilux.engine import Engine, EngineSettings, Registry, default_registry
from routilux.server.catalog import FlowCatalog
from routilux.server.checkpoints import Checkpointer
from routilux.server.control import JobControl
from routilux.server.demo_flows import register_demo_flows
from routilux.server.evaluations import Evaluations
from routilux.server.eventlog import EventHistory, EventLog, Recorder
from routilux.server.flow_files import sync_flows
from routilux.server.jobs import JobLocator
from routilux.server.metrics import start_metrics
from routilux.server.resume import resume_jobs
from routilux.server.retention import JobPruner
from routilux.server.runtimes import Runtimes, restore_runtimes
from routilux.server.services import Services
from routilux.server.settings import Settings
from routilux.store import open_store
from routilux.store.base import Store
from routilux.store.errors import StoreError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from routilux.server.cluster_node import ClusterNode, RequestServer

log = logging.getLogger("routilux.server")



async def _connect_redis(settings: Settings) -> aioredis.Redis | None:
    """The Redis client of a cluster node (``ROUTILUX_REDIS_URL``), or None for a single server,
    which never imports a Redis client."""
    if settings.redis_url is None:
        return None
    import redis.exceptions

    from routilux.store.redis.connection import connect, shown_url
    from routilux.store.redis.persistence import warn_without_persistence

    try:
        client = await connect(settings.redis_url)
    except (redis.exceptions.RedisError, OSError, ValueError) as exc:
        raise StoreError(f"cannot reach Redis at ROUTILUX_REDIS_URL={shown_url(settings.redis_url)}: {exc}") from None
    await warn_without_persistence(client, shown_url(settings.redis_url))  # Redis is the store: can it lose it?
    return client


def _open_store(settings: Settings, client: aioredis.Redis | None, node_id: str) -> Store:
    if client is None:
        return open_store(settings.db, events_per_job=settings.events_per_job, synchronous=settings.db_synchronous)
    from routilux.store.redis import RedisStore  # one store for every node of the cluster

    # fence_writes: a node's writes for a job another node owns now are refused (cluster/nodes.py)
    return RedisStore(client, events_per_job=settings.events_per_job, node_id=node_id, fence_writes=True)


def _node(
    client: aioredis.Redis, engine: Engine, store: Store, settings: Settings, node_id: str,
    serve_request: RequestServer,
) -> ClusterNode:
    from routilux.server.cluster_node import ClusterNode

    return ClusterNode(client, engine, store, node_id=node_id, events_per_job=settings.events_per_job,
                       lease_seconds=settings.cluster_lease_seconds, group=settings.worker_group,
                       serve_request=serve_request)


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    serve_request: RequestServer,
    registry: Registry | None = None,
    store: Store | None = None,
) -> AsyncIterator[Services]:
    """Every part of the server, running, for as long as the context is open.

    ``serve_request`` answers requests other nodes of a cluster forward here (the API edge runs
    them through its routes). ``registry``/``store`` override the defaults (tests, embedding).
    """
    client = await _connect_redis(settings)
    node_id = settings.node_id or ""
    if client is not None and not node_id:
        from routilux.server.cluster_node import default_node_id

        node_id = default_node_id()
    the_store = store if store is not None else _open_store(settings, client, node_id)
    try:
        await the_store.open()
    except BaseException:
        if client is not None:
            await client.aclose()
        raise
    try:
        engine = Engine(
            registry=registry if registry is not None else default_registry(),
            settings=EngineSettings(shared_pool_size=settings.shared_pool_size),
        )
        async with anyio.create_task_group() as tg, engine:
            services = await _start(tg, settings, engine, the_store, client, node_id, serve_request)
            try:
                yield services
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(settings.shutdown_seconds):
                    await _set_aside(services)
        # Leaving the engine cancelled every job still running and closed the bus; the recorder
        # wrote those final records (not of the jobs set aside), then ended, and the task group
        # waited for it.
    finally:
        try:
            await the_store.close()
        finally:
            if client is not None:
                with anyio.CancelScope(shield=True):
                    await client.aclose()


async def _set_aside(services: Services) -> None:
    """A graceful stop: checkpoint every durable live job (all together, one commit) and stop
    recording them, so that the engine's shutdown does not end them: they resume at the next
    start — or, in a cluster, at once on other nodes (:mod:`routilux.server.drain`). Jobs that are
    not durable are cancelled by the shutdown, as they always were."""
    checkpointer = services.control.checkpointer
    if checkpointer is None:
        return
    if services.cluster_node is not None:
        from routilux.server.drain import drain

        try:
            await drain(services, services.cluster_node)
        except Exception:  # noqa: BLE001 - Redis or the store failed: the jobs wait for the reaper
            log.exception("draining this node failed; its jobs stay assigned to it and move once its lease expires")
        return
    live = [job for job in services.engine.jobs.values() if not job.is_terminal and checkpointer.is_durable(job)]
    try:
        written = await checkpointer.save(live, force=True)
    except Exception:  # noqa: BLE001 - the store failed: these jobs end as they always did
        log.exception("could not checkpoint the live jobs on the way out; they will be failed at the next start")
        return
    services.recorder.suspend(job.job_id for job in live)
    if written:
        log.warning("%d live job(s) checkpointed; they resume at the next start", written)


def _adopt(node: ClusterNode, engine: Engine, store: Store, recorder: Recorder, checkpointer: Checkpointer) -> None:
    """Give the cluster node its adopter (jobs moving in and out), and tell it about the writes the
    shared store refuses because another node owns the job now."""
    from routilux.server.adoption import Adopter
    from routilux.store.redis import RedisStore

    adopter = node.adopter = Adopter(engine, store, node.membership, node.bridge, recorder, checkpointer)
    if isinstance(store, RedisStore):
        store.on_fenced = adopter.let_go


async def _start(
    tg: anyio.abc.TaskGroup, settings: Settings, engine: Engine, store: Store, client: aioredis.Redis | None,
    node_id: str, serve_request: RequestServer,
) -> Services:
    # In a cluster the node subscribes to the bus first, before any job can start.
    node = _node(client, engine, store, settings, node_id, serve_request) if client is not None else None
    announce = node.notify if node is not None else None
    is_remote = node.bridge.is_remote if node is not None else None
    history = EventHistory(settings.history_per_job, settings.history_max_bytes)
    # Retention (ROUTILUX_JOBS_KEEP / _MAX_AGE_SECONDS): woken by the recorder's job ends.
    pruner = JobPruner(store, engine, history, keep=settings.jobs_keep, max_age_seconds=settings.jobs_max_age_seconds)
    recorder = Recorder(
        engine, store, history, is_remote=is_remote, on_job_end=pruner.job_ended,
        on_forget=(lambda job_id: node.membership.release_later([job_id])) if node is not None else None,
    )
    tg.start_soon(recorder.run)
    tg.start_soon(pruner.run, recorder.finished)  # ends with the recorder
    # Jobs outlive the process on a single server, and move to another node in a cluster.
    checkpointer = Checkpointer(
        engine, store, interval=settings.checkpoint_seconds, every_activations=settings.checkpoint_every,
        events_queued=recorder.caught_up)
    tg.start_soon(checkpointer.run)
    tg.start_soon(checkpointer.keep)
    if node is not None:
        _adopt(node, engine, store, recorder, checkpointer)
    catalog = FlowCatalog(engine.registry, store, announce=announce)
    metrics = await start_metrics(tg, engine, store, catalog, node)
    await restore_runtimes(engine, store)
    await catalog.load_stored()
    if node is None:
        # A single server owns every job in its store: the live ones resume from their
        # checkpoints, the others are failed. In a cluster the others' jobs are running: a dead
        # node's jobs move to live nodes (routilux.cluster.nodes), and the jobs assigned to this
        # node (a restart with the same ROUTILUX_NODE_ID) are resumed by its adopter.
        # Restored jobs live as long as the process, like what is frozen below: collecting while
        # thousands are built, and once more before freezing them, only rescans them (40% of a
        # restart's CPU). So what the start made so far is collected, the jobs are restored with
        # the collector off and frozen as they are (a restore drops no cycles: 10,000 idle jobs
        # leave no unreachable object).
        gc.collect()
        collecting = gc.isenabled()
        gc.disable()
        try:
            await resume_jobs(engine, store, catalog, checkpointer)
            gc.freeze()
        finally:
            if collecting:
                gc.enable()
    if settings.flows_dir is not None:
        result = await sync_flows(catalog, settings.flows_dir)
        for error in result["errors"]:
            log.error("flow file %s does not load: %s", error["file"], error["problems"])
    if settings.debugger_mode:  # ROUTILUX_DEBUGGER_MODE: flows a debugger UI can show at once
        await register_demo_flows(catalog)
    services = Services(
        settings=settings,
        engine=engine,
        store=store,
        catalog=catalog,
        runtimes=Runtimes(engine, store, announce=announce),
        jobs=JobLocator(engine, store, bridge=node.bridge if node else None,
                        membership=node.membership if node else None),
        control=JobControl(engine, store, checkpointer=checkpointer, membership=node.membership if node else None),
        recorder=recorder,
        events=EventLog(recorder, bridge=node.bridge if node else None),
        metrics=metrics,
        evaluations=Evaluations(settings.evaluate_concurrency),
        cluster_node=node,
    )
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise pause every request.
    gc.collect()
    gc.freeze()
    # Fewer young collections means fewer promotions into the old generation, whose full passes
    # (tens of ms with thousands of jobs) stall every request.
    gc.set_threshold(20_000, 50, 100)
    if node is not None:  # answers forwarded requests from here on: the services exist
        await tg.start(node.run, catalog)
    return services
