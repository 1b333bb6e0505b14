"""Health, runtimes, the routine catalogue and discovery."""

from __future__ import annotations

import httpx

from tests.support.rest import error_of


async def test_health(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/health")).json()
    assert body["status"] == "healthy" and body["auth_required"] is False
    assert body["stores"]["accessible"] is True and body["version"] == "0.10.0"
    assert body["monitoring"]["enabled"] is True


async def test_runtimes(client: httpx.AsyncClient, uid: str) -> None:
    listing = (await client.get("/api/runtimes")).json()
    assert listing["default_runtime_id"] == "default"
    default = next(r for r in listing["runtimes"] if r["runtime_id"] == "default")
    assert default["thread_pool_size"] == 0 and default["is_default"] is True and default["is_shutdown"] is False
    created = await client.post("/api/runtimes", json={"runtime_id": f"rt-{uid}", "thread_pool_size": 4})
    assert created.status_code == 201 and created.json()["total_threads"] == 4
    assert (await client.get(f"/api/runtimes/rt-{uid}")).json()["runtime_id"] == f"rt-{uid}"
    dup = await client.post("/api/runtimes", json={"runtime_id": f"rt-{uid}"})
    assert dup.status_code == 409 and error_of(dup)["error"] == "duplicate_runtime"
    assert (await client.post("/api/runtimes", json={"runtime_id": "x", "thread_pool_size": 1001})).status_code == 422
    assert (await client.get("/api/runtimes/nope")).status_code == 404


async def test_factory_catalogue(client: httpx.AsyncClient) -> None:
    objects = (await client.get("/api/factory/objects")).json()
    names = {o["name"] for o in objects["objects"]}
    assert {"DataSource", "DataSink", "Router"} <= names and objects["total"] == len(objects["objects"])
    data_only = (await client.get("/api/factory/objects", params={"category": "data"})).json()
    assert data_only["objects"] and all(o["category"] == "data" for o in data_only["objects"])
    source = (await client.get("/api/factory/objects/DataSource")).json()
    assert source["slots"][0]["name"] == "trigger" and source["events"] == ["output"]
    interface = (await client.get("/api/factory/objects/DataTransformer/interface")).json()
    assert "transformation" in interface["config_schema"]["properties"]
    missing = await client.get("/api/factory/objects/os.system")
    assert missing.status_code == 404 and error_of(missing)["error"] == "routine_class_not_found"


async def test_discovery_without_a_flows_dir(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/discovery/flows")
    assert response.status_code == 409 and error_of(response)["error"] == "no_flows_dir"
    jobs = (await client.get("/api/discovery/jobs")).json()
    assert all(j["status"] not in {"completed", "failed", "cancelled"} for j in jobs["jobs"])
    synced = (await client.post("/api/discovery/jobs/sync")).json()
    assert synced["synced"] >= 0


async def test_unknown_paths_and_methods(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/nothing-here")
    assert missing.status_code == 404 and error_of(missing)["error"] == "not_found"
    wrong = await client.patch("/api/flows")
    assert wrong.status_code == 405 and error_of(wrong)["error"] == "method_not_allowed"
