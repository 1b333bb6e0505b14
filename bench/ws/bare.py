"""The bare Starlette baseline of the WebSocket bench (``python -m bench.ws --serve-bare --port P``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from bench.server import HOST
from bench.ws.frames import FLOW_ID, PONG, ROUTINE_ID


# =============================================================================================
# The bare Starlette baseline (served by ``python -m bench.ws --serve-bare --port P``)
# =============================================================================================
def bare_app() -> Any:
    """One ``/ws`` route (a snapshot frame, then everything broadcast; answers ``ping``), and
    ``POST /start {"rate", "n"}`` broadcasting ``n`` paced frames shaped like Routilux ``log``
    events. Each connection: an unbounded deque and a sender task; each frame encoded once."""
    from collections import deque

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    encoder = msgspec.json.Encoder()
    job_id = "0" * 32
    conns: set[Conn] = set()
    state = {"seq": 0, "tasks": set()}

    class Conn:
        __slots__ = ("frames", "ready")

        def __init__(self) -> None:
            self.frames: deque[str] = deque()
            self.ready = asyncio.Event()

        def put(self, text: str) -> None:
            self.frames.append(text)
            self.ready.set()

    def frame(type_: str, data: dict[str, Any]) -> str:
        state["seq"] += 1
        return encoder.encode(
            {
                "seq": state["seq"],
                "type": type_,
                "job_id": job_id,
                "flow_id": FLOW_ID,
                "routine_id": ROUTINE_ID,
                "timestamp": "2025-01-01T12:00:00.123456Z",
                "data": data,
            }
        ).decode()

    def broadcast(text: str) -> None:
        for conn in conns:
            conn.put(text)

    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        conn = Conn()
        conns.add(conn)
        conn.put(encoder.encode({"type": "snapshot", "job_id": job_id, "last_seq": state["seq"]}).decode())

        async def sender() -> None:
            frames = conn.frames
            while True:
                while frames:
                    await ws.send_text(frames.popleft())
                conn.ready.clear()
                await conn.ready.wait()

        task = asyncio.get_running_loop().create_task(sender())
        try:
            while True:
                message = await ws.receive_text()
                if message.startswith('{"type":"ping"'):
                    conn.put(PONG.decode())
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            conns.discard(conn)
            task.cancel()

    async def source(rate: float, n: int) -> None:
        clock, wall = time.perf_counter, time.time
        t0 = clock()
        i = 0
        while i < n:
            due = min(n, int((clock() - t0) * rate) + 1)
            while i < due:
                broadcast(frame("log", {"level": "info", "message": "tick", "fields": {"i": i, "t": wall()}}))
                i += 1
            if i < n:
                await asyncio.sleep(max(0.0, t0 + i / rate - clock()))
        broadcast(frame("routine_end", {"status": "ok"}))

    async def start(request: Request) -> Response:
        body = await request.json()
        task = asyncio.get_running_loop().create_task(source(float(body["rate"]), int(body["n"])))
        state["tasks"].add(task)  # type: ignore[attr-defined]
        task.add_done_callback(state["tasks"].discard)  # type: ignore[attr-defined]
        return JSONResponse({"started": True, "seq": state["seq"]}, 202)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "connections": len(conns)})

    return Starlette(
        routes=[
            WebSocketRoute("/ws", ws_endpoint),
            Route("/start", start, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def serve_bare(port: int) -> None:
    """Run the baseline the way ``routilux.api.main`` runs Routilux: ``uvicorn.Config`` defaults."""
    import uvicorn

    config = uvicorn.Config(bare_app(), host=HOST, port=port, log_level="warning", lifespan="on")
    uvicorn.Server(config).run()


