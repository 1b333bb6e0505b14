"""Cross-site requests, over a real server with the default CORS origins (localhost ones): what a
page on another website can make its visitors' browsers send is refused with 403
``cross_site_request`` — unsafe requests and WebSocket handshakes alike — while listed origins,
the server's own origin and non-browser clients (no ``Origin``) are served as before."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.types import Message, Scope
from websockets.exceptions import InvalidStatus

from routilux.api.middleware.cross_site import CrossSiteMiddleware
from tests.support.rest import create_flow, error_of, slow_flow, start_job
from tests.support.servers import ServerProcess
from tests.support.ws import open_ws, recv

FOREIGN = "https://evil.example"
LISTED = "http://localhost:3000"  # one of ROUTILUX_CORS_ORIGINS' defaults


async def running_job(client: httpx.AsyncClient, uid: str) -> str:
    flow_id = f"slow-{uid}"
    await create_flow(client, dsl_dict=slow_flow(flow_id, 30))
    return str((await start_job(client, flow_id=flow_id))["job_id"])


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert error_of(response)["error"] == "cross_site_request"


# -- unsafe requests ------------------------------------------------------------------------------
async def test_a_cross_site_cleanup_is_refused_and_deletes_nothing(client: httpx.AsyncClient, uid: str) -> None:
    job_id = await running_job(client, uid)
    await client.post(f"/api/jobs/{job_id}/cancel")
    body = {"older_than_seconds": 0}
    assert_refused(await client.post("/api/jobs/cleanup", json=body, headers={"Origin": FOREIGN}))
    assert_refused(await client.post("/api/jobs/cleanup", json=body, headers={"Sec-Fetch-Site": "cross-site"}))
    assert (await client.get(f"/api/jobs/{job_id}")).status_code == 200


@pytest.mark.parametrize("action", ["pause", "resume", "cancel", "complete", "fail"])
@pytest.mark.parametrize("headers", [{"Origin": FOREIGN}, {"Origin": "null"},
                                     {"Origin": FOREIGN, "Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}],
                         ids=["origin", "null-origin", "origin-and-fetch-site", "fetch-site", "same-site"])
async def test_cross_site_control_posts_are_refused_and_change_nothing(
    client: httpx.AsyncClient, uid: str, action: str, headers: dict[str, str]
) -> None:
    job_id = await running_job(client, uid)
    assert_refused(await client.post(f"/api/jobs/{job_id}/{action}", headers=headers))
    assert (await client.get(f"/api/jobs/{job_id}")).json()["status"] in ("running", "idle")  # untouched
    await client.post(f"/api/jobs/{job_id}/cancel")


async def test_cross_site_deletes_and_puts_are_refused(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = f"slow-{uid}"
    await create_flow(client, dsl_dict=slow_flow(flow_id))
    assert_refused(await client.delete(f"/api/flows/{flow_id}", headers={"Origin": FOREIGN}))
    assert_refused(await client.put(f"/api/flows/{flow_id}", json={}, headers={"Origin": FOREIGN}))
    assert (await client.get(f"/api/flows/{flow_id}")).status_code == 200


@pytest.mark.parametrize("headers", [
    {},  # curl, SDKs, servers
    {"Origin": LISTED, "Sec-Fetch-Site": "same-site"},  # a dashboard on a listed origin
    {"Origin": "HTTP://LOCALHOST:3000"},  # origins compare without regard to case
    {"Sec-Fetch-Site": "same-origin", "Origin": FOREIGN},  # the browser vouches for it
    {"Sec-Fetch-Site": "none"},  # typed by the user
], ids=["no-origin", "listed", "listed-upper-case", "same-origin-by-the-browser", "user-initiated"])
async def test_requests_from_allowed_places_are_served(
    client: httpx.AsyncClient, uid: str, headers: dict[str, str]
) -> None:
    job_id = await running_job(client, uid)
    response = await client.post(f"/api/jobs/{job_id}/cancel", headers=headers)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


async def test_a_page_of_the_server_itself_is_same_origin(server: ServerProcess, client: httpx.AsyncClient,
                                                          uid: str) -> None:
    job_id = await running_job(client, uid)
    response = await client.post(f"/api/jobs/{job_id}/cancel", headers={"Origin": server.url})
    assert response.status_code == 200


async def test_safe_methods_from_anywhere_are_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/jobs", headers={"Origin": FOREIGN, "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers  # CORS still keeps the answer from the page


# -- WebSocket handshakes -------------------------------------------------------------------------
async def test_a_websocket_from_a_foreign_origin_is_refused_with_403_before_the_upgrade(
    server: ServerProcess,
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with open_ws(server, "/api/ws", origin=FOREIGN):
            pass
    assert refused.value.response.status_code == 403
    assert b"cross_site_request" in refused.value.response.body


@pytest.mark.parametrize("origin", [None, LISTED], ids=["no-origin", "listed"])
async def test_a_websocket_without_origin_or_from_a_listed_one_is_accepted(
    server: ServerProcess, origin: str | None
) -> None:
    options: dict[str, Any] = {} if origin is None else {"origin": origin}
    async with open_ws(server, "/api/ws", **options) as ws:
        await ws.send('{"type": "ping"}')
        assert await recv(ws) == {"type": "pong"}


# -- the rule itself, where every origin is allowed ------------------------------------------------
async def middleware_answer(origins: list[str], scope: dict[str, Any]) -> int:
    """The status the middleware answers ``scope`` with (200: passed to the app)."""
    sent: list[Message] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await CrossSiteMiddleware(app, origins)(scope, receive, send)
    return int(sent[0].get("status", 0)) if sent and "status" in sent[0] else -1


def scope(method: str, headers: dict[str, str], kind: str = "http") -> dict[str, Any]:
    return {"type": kind, "method": method, "scheme": "http" if kind == "http" else "ws", "path": "/api/jobs",
            "headers": [(k.lower().encode(), v.encode()) for k, v in {"Host": "api.example", **headers}.items()],
            "extensions": {"websocket.http.response": {}}}


async def test_a_star_allows_every_origin_but_a_list_only_its_own() -> None:
    foreign = {"Origin": FOREIGN, "Sec-Fetch-Site": "cross-site"}
    assert await middleware_answer(["*"], scope("POST", foreign)) == 200
    assert await middleware_answer(["*"], scope("GET", foreign, "websocket")) == 200
    assert await middleware_answer(["*"], scope("POST", {"Sec-Fetch-Site": "cross-site"})) == 200
    assert await middleware_answer([LISTED], scope("POST", foreign)) == 403
    assert await middleware_answer([LISTED], scope("GET", foreign, "websocket")) == 403
    assert await middleware_answer([LISTED], scope("POST", {"Origin": "http://api.example"})) == 200
    assert await middleware_answer([LISTED], scope("GET", {"Origin": "http://api.example"}, "websocket")) == 200
    assert await middleware_answer([LISTED], scope("PATCH", {"Origin": "https://api.example"})) == 403  # scheme
