"""This server as one node of a cluster (``ROUTILUX_REDIS_URL``): the parts of
:mod:`routilux.cluster`, wired to this server's engine, store and flow catalogue.

- :class:`ClusterNode` holds the node's parts (Redis client, event bridge, membership with its
  lease and reaper, message channel, and the adopter of jobs that move here or away:
  :mod:`routilux.server.adoption`) and runs them under the lifespan's task group. A graceful stop
  hands its jobs to the other nodes (:mod:`routilux.server.drain`).
- Requests another node forwards here are answered by ``serve_request``, which the API edge
  supplies (it runs them through this server's own routes); WebSocket snapshots of this node's
  jobs are answered here, without HTTP.
- Change notices (flows, runtimes, forgotten jobs) keep each node's caches in step with the shared
  store.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import msgspec
from redis.exceptions import RedisError

from routilux.cluster.channel import ForwardedRequest, ForwardedResponse, NodeChannel, OwnerUnavailable
from routilux.cluster.nodes import ClusterMembership
from routilux.cluster.redis_events import RedisEventBridge, RemoteJob
from routilux.cluster.supervise import supervised
from routilux.server.jobs import snapshot_state_of
from routilux.server.runtimes import restore_runtimes
from routilux.store.redis.connection import CONNECTION_ERRORS
from routilux.store.redis.reachability import watch

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from routilux.engine import Engine
    from routilux.server.adoption import Adopter
    from routilux.server.catalog import FlowCatalog
    from routilux.store.base import Store

log = logging.getLogger("routilux.cluster")

FORGET_PER_NOTICE: Final = 500
#: Not an HTTP route: what a node asks a job's owner for a WebSocket snapshot (through Redis only).
SNAPSHOT_PATH: Final = "/_cluster/snapshot/"
SNAPSHOT_TIMEOUT_SECONDS: Final = 2.0

RequestServer = Callable[[ForwardedRequest], Awaitable[ForwardedResponse]]


def default_node_id() -> str:
    """Readable in logs and unique per process: host, pid and a short random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class ClusterNode:
    """One server's membership of the cluster: its parts, and the task that runs them.

    Built before anything can start a job: the bridge and the membership subscribe to the bus in
    their constructors, so they see every job from its first event.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        engine: Engine,
        store: Store,
        *,
        node_id: str,
        events_per_job: int,
        lease_seconds: float,
        group: str | None,
        serve_request: RequestServer,
    ) -> None:
        self.node_id = node_id
        self.client = client
        self.engine = engine
        self.store = store
        self.serve_request = serve_request
        self.bridge = RedisEventBridge(client, engine.bus, maxlen=events_per_job, node_id=node_id)
        self.membership = ClusterMembership(client, store, engine.bus, node_id=node_id, prefix=self.bridge.prefix,
                                            lease_seconds=lease_seconds, group=group, fence=self._fence,
                                            on_assigned=self._assigned)
        #: Resumes the jobs handed here, stops those that moved away (set by the lifespan, which
        #: builds it from the recorder and checkpointer: :mod:`routilux.server.adoption`).
        self.adopter: Adopter | None = None
        #: Jobs this node is handing over (a drain): requests about them answer 503, retry.
        self.moving: set[str] = set()
        #: Set when the server starts to stop: the node leaves the node list at once.
        self.stopping = anyio.Event()
        self.channel = NodeChannel(client, node_id=node_id, prefix=self.bridge.prefix, handle=self._handle,
                                   is_alive=self.membership.is_alive, on_notice=self._on_notice)
        self._catalog: FlowCatalog | None = None

    async def run(
        self, catalog: FlowCatalog, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Join, then relay events, renew the lease, reap and answer requests until the engine
        closes the bus; then give the lease back. Notices about flows reload them in
        ``catalog``. Started with ``await tg.start(node.run, catalog)``, which returns once this
        node can send and answer requests."""
        self._catalog = catalog
        await self.membership.join()
        async with anyio.create_task_group() as tg:
            # Each part retries a lost Redis by itself (backoff, resubscribe, resume its streams);
            # the bridge and the membership are also restarted if they fail for any other reason.
            # The channel supervises itself (it must report once, when first subscribed).
            await tg.start(self.channel.run)
            tg.start_soon(supervised, "event bridge", self.bridge.run)
            if self.adopter is not None:
                tg.start_soon(self.adopter.run, catalog)
            tg.start_soon(self._withdraw_when_stopping)
            tg.start_soon(watch, self.client)  # clears the Redis-unreachable mark once Redis answers
            task_status.started()
            try:
                # ends when the bus closes: our jobs ended, released
                await supervised("membership", self.membership.run)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    try:
                        await self.membership.leave()
                    except Exception as exc:  # noqa: BLE001 - Redis lost: the lease expires by itself
                        log.error("could not give this node's lease back (it expires by itself): %s", exc)
            tg.cancel_scope.cancel()

    async def _withdraw_when_stopping(self) -> None:
        """Leave the node list as soon as the server starts to stop (before its connections
        drain), so no other node places or hands a job here meanwhile."""
        await self.stopping.wait()
        try:
            await self.membership.withdraw()
        except (RedisError, OSError) as exc:  # the drain withdraws again
            log.warning("could not leave the node list early: %s", exc)

    def _fence(self, job_ids: Sequence[str]) -> None:
        """Our lease lapsed: another node may have adopted these jobs already; stop running them
        here without failing them (those still assigned here are resumed again)."""
        if self.adopter is not None:
            self.adopter.let_go(job_ids)

    async def _assigned(self, node: str, job_ids: list[str]) -> None:
        """This node's reaper or drain handed ``job_ids`` to ``node``: wake its adopter."""
        if node == self.node_id:
            if self.adopter is not None:
                self.adopter.wake()
            return
        for start in range(0, len(job_ids), FORGET_PER_NOTICE):
            await self.notify(f"adopt:{node}:" + ",".join(job_ids[start:start + FORGET_PER_NOTICE]))

    async def _handle(self, request: ForwardedRequest) -> ForwardedResponse:
        if request.path.startswith(SNAPSHOT_PATH):
            return self._serve_snapshot(request)
        return await self.serve_request(request)

    def _serve_snapshot(self, request: ForwardedRequest) -> ForwardedResponse:
        job = self.engine.get_job(request.path[len(SNAPSHOT_PATH):])
        if job is None:
            return ForwardedResponse(request.id, 404, [])
        return ForwardedResponse(request.id, 200, [], msgspec.json.encode(snapshot_state_of(job)))

    async def ask_owner(self, node: str, path: str) -> dict[str, Any] | None:
        """``GET path`` answered by ``node`` (a job's owner), decoded; None if it does not answer
        in time or answers anything but 200."""
        request = self.channel.new_request(method="GET", path=path, query=b"", headers=[],
                                           body=b"", client=None, timeout=SNAPSHOT_TIMEOUT_SECONDS)
        try:
            answer = await self.channel.request(node, request)
        except OwnerUnavailable:
            return None
        except CONNECTION_ERRORS:  # Redis lost: the caller falls back as for a silent owner
            return None
        if answer.status != 200:
            return None
        found: dict[str, Any] = msgspec.json.decode(answer.body)
        return found

    async def remote_snapshot(self, job: RemoteJob) -> dict[str, Any] | None:
        """The owner's ``snapshot`` fields for ``job`` (routine states included), or None if it
        does not answer in time (the caller falls back on what the job's events said)."""
        return await self.ask_owner(job.node, SNAPSHOT_PATH + job.job_id)

    async def remote_metrics(self, job_id: str) -> dict[str, Any] | None:
        """The metrics of another node's job as its owner has them (it saw every event; this node
        may have started following the job late), or None if unknown or not answering."""
        job = self.bridge.remote.get(job_id)
        if job is None:
            return None
        return await self.ask_owner(job.node, f"/api/jobs/{job_id}/metrics")

    async def forget_everywhere(self, job_ids: Sequence[str]) -> None:
        """Deleted jobs: every node drops them from memory and lets go of those it owns."""
        self.forget(job_ids)
        for start in range(0, len(job_ids), FORGET_PER_NOTICE):
            await self.notify("forget:" + ",".join(job_ids[start:start + FORGET_PER_NOTICE]))

    def forget(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self.engine.forget_job(job_id)
        self.membership.release_later([j for j in job_ids if j in self.membership.owned])

    async def notify(self, notice: str) -> None:
        """Broadcast a change of shared state (``flow:<id>``, ``runtimes``) to the other nodes."""
        await self.channel.notify(f"{self.node_id} {notice}")

    async def _on_notice(self, message: str) -> None:
        sender, _, notice = message.partition(" ")
        if sender == self.node_id:
            return
        kind, _, name = notice.partition(":")
        if kind == "resync":
            if self._catalog is not None:
                await self._catalog.load_stored()
            await restore_runtimes(self.engine, self.store)
        elif kind == "flow" and self._catalog is not None:
            await self._catalog.reload(name)
        elif kind == "runtimes":
            await restore_runtimes(self.engine, self.store)
        elif kind == "forget":
            self.forget(name.split(","))
        elif kind == "adopt":
            if name.partition(":")[0] == self.node_id and self.adopter is not None:
                self.adopter.wake()
