"""The WebSocket endpoints.

- ``/api/ws/jobs/{job_id}/monitor``: every event of one job (``?since=<seq>`` replays first).
- ``/api/ws/jobs/{job_id}/debug``: the debugger's view of one job.
- ``/api/ws/flows/{flow_id}/monitor``: every job of one flow, including jobs started later.
- ``/api/ws``: subscribe/unsubscribe to jobs and flows by message.

The order on connect is fixed: authenticate (close 1008 if the key is missing or wrong — before
anything about ids is revealed), check the id (close 1008 if unknown), subscribe, send the
``snapshot``, replay, then stream live events. A store that cannot be reached while the job is
looked up (in a cluster: Redis lost) closes the socket with 1013 (try again later).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from routilux.api.body import MAX_SEQ
from routilux.api.middleware.auth import SUBPROTOCOL, key_matches, websocket_key
from routilux.api.services import services
from routilux.api.ws import frames
from routilux.api.ws.fanout import TRY_AGAIN_LATER
from routilux.api.ws.session import Session, Sessions, snapshot_frame
from routilux.bus import TERMINAL_STATUSES
from routilux.engine import Job
from routilux.engine.flow import is_valid_id
from routilux.server.services import Services
from routilux.store.base import JobRecord
from routilux.store.errors import StoreError

if TYPE_CHECKING:
    pass

POLICY_VIOLATION: Final = 1008
DEBUG_TYPES: Final = frozenset(
    {"routine_start", "routine_end", "slot_call", "breakpoint_hit", "debug_step", "job_pause", "job_resume", "job_end"}
)


def _shown(an_id: str) -> str:
    """An id as a close reason may quote it: a reason holds at most 123 bytes (RFC 6455 §5.5),
    and a longer one makes the close itself fail (the client would see 1006, not 1008)."""
    return an_id if len(an_id) <= 90 and an_id.isascii() else an_id[:60].encode("ascii", "replace").decode() + "..."


def _sessions(ws: WebSocket) -> Sessions:
    sessions: Sessions = ws.app.state.sessions
    return sessions


async def _admit(ws: WebSocket) -> Services | None:
    """Accept, then authenticate; a refused client sees close code 1008 with a reason."""
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    svc = services(ws)
    if svc.settings.api_key_enabled:
        key = websocket_key(ws.query_params.get("api_key"), ws.scope["headers"], offered)
        if not key:
            await ws.close(
                POLICY_VIOLATION,
                "API key is required (api_key query parameter, X-API-Key header or subprotocol apikey.<key>)",
            )
            return None
        if not key_matches(key, svc.settings.api_keys):
            await ws.close(POLICY_VIOLATION, "the API key is not valid")
            return None
    return svc


def _since(ws: WebSocket) -> int | None | str:
    raw = ws.query_params.get("since")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 16 or int(raw) > MAX_SEQ:
        return f"since must be a sequence number (0, 1, 2, ... up to {MAX_SEQ})"
    return int(raw)


async def _job_socket(ws: WebSocket, types: frozenset[str] | None) -> None:
    svc = await _admit(ws)
    if svc is None:
        return
    job_id = ws.path_params["job_id"]
    try:
        found = await svc.jobs.watchable(job_id)
    except StoreError:  # the store (in a cluster: Redis) cannot be reached; nothing was sent yet
        await ws.close(TRY_AGAIN_LATER, "the server's store cannot be reached right now; retry later")
        return
    if found is None:
        await ws.close(POLICY_VIOLATION, f"unknown job '{_shown(job_id)}'")
        return
    since = _since(ws)
    if isinstance(since, str):
        await ws.close(POLICY_VIOLATION, since)
        return
    mark = svc.engine.bus.published
    reader = svc.engine.bus.feeds.reader(job_ids=[job_id], types=types, capacity=svc.settings.ws_send_queue)
    session = Session(ws, svc, _sessions(ws), reader)
    session.close_when_job_ends = True
    if types is None:  # the monitor socket (not the debug one) carries metrics frames too
        session.metrics_job_id = job_id
    frame, last_seq = await snapshot_frame(found, svc)
    session.stream.control(frame)
    if since is None and last_seq is not None:
        session.stream.skip_through(job_id, last_seq)
    if since is not None:
        session.stream.begin_replay(job_id)  # live events wait until the replay is out

        async def replay() -> None:
            await session.replay(job_id, since, mark, types)

        session.before_streaming = replay
    if isinstance(found, JobRecord) or (isinstance(found, Job) and found.is_terminal) or (
        not isinstance(found, Job) and found.status in TERMINAL_STATUSES
    ):
        session.linger()
    await session.run()


async def job_monitor(ws: WebSocket) -> None:
    await _job_socket(ws, None)


async def job_debug(ws: WebSocket) -> None:
    await _job_socket(ws, DEBUG_TYPES)


async def flow_monitor(ws: WebSocket) -> None:
    svc = await _admit(ws)
    if svc is None:
        return
    flow_id = ws.path_params["flow_id"]
    if not is_valid_id(flow_id) or not await svc.catalog.knows(flow_id):
        await ws.close(POLICY_VIOLATION, f"unknown flow '{_shown(flow_id)}'")
        return
    reader = svc.engine.bus.feeds.reader(flow_ids=[flow_id], capacity=svc.settings.ws_send_queue)
    await Session(ws, svc, _sessions(ws), reader).run()


async def generic(ws: WebSocket) -> None:
    svc = await _admit(ws)
    if svc is None:
        return
    subscription = svc.engine.bus.feeds.reader(capacity=svc.settings.ws_send_queue)  # follows nothing yet
    session = Session(ws, svc, _sessions(ws), subscription)

    async def on_message(body: dict[str, Any]) -> None:
        kind = body["type"]
        if kind not in ("subscribe", "unsubscribe"):
            session.reply_error("unknown_type", f"unknown message type '{kind}'; use subscribe, unsubscribe or ping")
            return
        job_id, flow_id = body.get("job_id"), body.get("flow_id")
        if (job_id is None) == (flow_id is None):
            session.reply_error("invalid_message", f"{kind} needs exactly one of 'job_id' or 'flow_id'")
            return
        target = job_id if job_id is not None else flow_id
        if not isinstance(target, str) or not is_valid_id(target):
            session.reply_error("invalid_id", "ids are 1-128 of letters, digits, '_', '.', '-'")
            return
        since = body.get("since")
        if since is not None and (job_id is None or not isinstance(since, int) or isinstance(since, bool)
                                  or not 0 <= since <= MAX_SEQ):
            session.reply_error("invalid_since",
                                f"'since' is a sequence number (0 to {MAX_SEQ}), for job subscriptions")
            return
        key = {"job_id": job_id} if job_id is not None else {"flow_id": flow_id}
        if kind == "unsubscribe":
            if job_id is not None:
                subscription.remove_job(job_id)
                session.stream.forget(job_id)
            else:
                subscription.remove_flow(flow_id)  # type: ignore[arg-type]
            session.stream.control(frames.control("unsubscribed", **key))
            return
        count = len(subscription.job_ids) + len(subscription.flow_ids)
        already = job_id in subscription.job_ids if job_id is not None else flow_id in subscription.flow_ids
        if not already and count >= svc.settings.ws_max_subscriptions:
            session.reply_error(
                "too_many_subscriptions", f"a socket may hold {svc.settings.ws_max_subscriptions} subscriptions", **key
            )
            return
        if job_id is not None:
            found = await svc.jobs.watchable(job_id)
            if found is None:
                session.reply_error("unknown_job", f"unknown job '{job_id}'", **key)
                return
            mark = svc.engine.bus.published
            # The sender is running: hold the job's live events until its snapshot is out (asking
            # another server for it takes a moment), then the replay or what came after it.
            session.stream.begin_replay(job_id)
            subscription.add_job(job_id)
            session.stream.control(frames.control("subscribed", **key))
            frame, last_seq = await snapshot_frame(found, svc)
            session.stream.control(frame)
            if since is not None:
                await session.replay(job_id, since, mark)  # nothing is dropped
            else:
                await session.stream.end_replay(job_id, [], last_seq or 0)
        else:
            if not await svc.catalog.knows(flow_id):  # type: ignore[arg-type]
                session.reply_error("unknown_flow", f"unknown flow '{flow_id}'", **key)
                return
            subscription.add_flow(flow_id)  # type: ignore[arg-type]
            session.stream.control(frames.control("subscribed", **key))

    session.on_message = on_message
    await session.run()


routes: list[BaseRoute] = [
    WebSocketRoute("/api/ws/jobs/{job_id}/monitor", job_monitor),
    WebSocketRoute("/api/ws/jobs/{job_id}/debug", job_debug),
    WebSocketRoute("/api/ws/flows/{flow_id}/monitor", flow_monitor),
    WebSocketRoute("/api/ws", generic),
]
