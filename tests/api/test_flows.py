"""Flows over HTTP: every way to create one, read, export, replace, edit, validate, delete."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.rest import create_flow, error_of, etl_yaml


async def test_create_from_yaml_dsl_and_read_it_back(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = f"etl-{uid}"
    created = await create_flow(client, flow_id=flow_id, dsl=etl_yaml(flow_id))
    assert created["flow_id"] == flow_id and created["revision"] == 1 and created["runnable"] is True
    assert created["created_at"].endswith("Z")
    assert created["routines"]["source"] == {
        "routine_id": "source", "class_name": "DataSource", "slots": ["trigger"], "events": ["output"],
        "config": {"items": ["a", "b", "c"]}, "policy": None, "error_handler": None,
    }
    assert created["connections"][0] == {
        "connection_id": "source.output->clean.input", "index": 0, "source_routine": "source",
        "source_event": "output", "target_routine": "clean", "target_slot": "input",
    }
    got = await client.get(f"/api/flows/{flow_id}")
    assert got.status_code == 200 and got.json() == created
    assert got.headers["etag"] == '"1"'


async def test_create_from_flow_id_alone_json_text_and_dsl_dict(client: httpx.AsyncClient, uid: str) -> None:
    empty = await create_flow(client, flow_id=f"empty-{uid}")
    assert empty["routines"] == {} and empty["connections"] == []
    doc = {"flow_id": f"j-{uid}", "routines": {"s": {"class": "DataSink"}}}
    from_text = await create_flow(client, dsl=json.dumps(doc))
    assert list(from_text["routines"]) == ["s"]
    doc["flow_id"] = f"d-{uid}"
    from_dict = await create_flow(client, dsl_dict=doc)
    assert from_dict["flow_id"] == f"d-{uid}"
    no_id = await create_flow(client, flow_id=f"n-{uid}", dsl_dict={"routines": {"s": {"class": "DataSink"}}})
    assert no_id["flow_id"] == f"n-{uid}"  # the body's id fills a document without one


async def test_creating_an_existing_flow_is_409(client: httpx.AsyncClient, uid: str) -> None:
    await create_flow(client, flow_id=f"dup-{uid}")
    again = await client.post("/api/flows", json={"flow_id": f"dup-{uid}"})
    assert again.status_code == 409
    assert error_of(again)["error"] == "flow_exists"


@pytest.mark.parametrize(
    ("body", "status", "code", "where"),
    [
        ({}, 422, "validation_error", "body"),
        ({"flow_id": "a b"}, 422, "validation_error", "body.flow_id"),
        ({"flow_id": "x", "colour": 1}, 422, "validation_error", "body.colour"),
        ({"dsl": 42}, 422, "validation_error", "body.dsl"),
        ({"dsl": "x", "dsl_dict": {}}, 422, "validation_error", "body"),
        ({"flow_id": "one", "dsl_dict": {"flow_id": "two"}}, 422, "flow_id_mismatch", "body.flow_id"),
    ],
)
async def test_bad_create_bodies_say_what_and_where(
    client: httpx.AsyncClient, body: dict, status: int, code: str, where: str
) -> None:
    response = await client.post("/api/flows", json=body)
    assert response.status_code == status
    detail = error_of(response)
    assert detail["error"] == code
    assert detail.get("field") == where


async def test_bad_dsl_is_400_with_every_problem_located(client: httpx.AsyncClient, uid: str) -> None:
    dsl = f"""
flow_id: bad-{uid}
routines:
  a: {{class: os.system}}
  b: {{class: DataTransformer, config: {{transformation: shout}}}}
connections:
  - {{from: a.output, to: nowhere.input}}
"""
    response = await client.post("/api/flows", json={"dsl": dsl})
    assert response.status_code == 400
    detail = error_of(response)
    assert detail["error"] == "invalid_flow"
    locations = {p["location"]: p for p in detail["problems"]}
    assert "import path" in locations["routines.a.class"]["message"]
    assert "routines.b.config.transformation" in locations
    assert locations["connections[0].to"]["code"] == "unknown_routine"
    syntax = await client.post("/api/flows", json={"dsl": "flow_id: [unclosed"})
    assert syntax.status_code == 400 and error_of(syntax)["problems"][0]["code"] == "syntax"
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    response = await client.post("/api/flows", json={"dsl": "flow_id: bomb\n" + bomb})
    assert response.status_code == 400
    assert error_of(response)["problems"][0]["code"] in {"too_many_aliases", "too_many_nodes"}


async def test_malformed_json_and_oversized_bodies(client: httpx.AsyncClient) -> None:
    broken = await client.post("/api/flows", content=b'{"flow_id": ', headers={"content-type": "application/json"})
    assert broken.status_code == 400 and error_of(broken)["error"] == "invalid_json"
    empty = await client.post("/api/flows", content=b"", headers={"content-type": "application/json"})
    assert empty.status_code == 400 and error_of(empty)["error"] == "invalid_json"
    huge = await client.post("/api/flows", json={"dsl": "x" * (2 * 1024 * 1024)})
    assert huge.status_code == 413 and error_of(huge)["error"] == "payload_too_large"

    async def chunks():
        for _ in range(40):
            yield b"x" * 65536

    streamed = await client.post("/api/flows", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


async def test_unknown_and_invalid_ids(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/flows/no-such-flow")
    assert missing.status_code == 404
    assert error_of(missing) == {
        "error": "flow_not_found",
        "message": "flow 'no-such-flow' not found; GET /api/flows lists the flows",
        "flow_id": "no-such-flow",
    }
    invalid = await client.get("/api/flows/" + "x" * 200)
    assert invalid.status_code == 422 and error_of(invalid)["field"] == "path.flow_id"


async def test_list_is_paginated_with_a_total(client: httpx.AsyncClient, uid: str) -> None:
    for n in range(3):
        await create_flow(client, flow_id=f"page-{uid}-{n}")
    everything = (await client.get("/api/flows", params={"limit": 1000})).json()
    ours = [f["flow_id"] for f in everything["flows"] if f["flow_id"].startswith(f"page-{uid}")]
    assert ours == [f"page-{uid}-{n}" for n in range(3)]
    page = (await client.get("/api/flows", params={"limit": 1, "offset": 1})).json()
    assert len(page["flows"]) == 1 and page["total"] == everything["total"] and page["offset"] == 1
    bad = await client.get("/api/flows", params={"limit": 0})
    assert bad.status_code == 422 and error_of(bad)["field"] == "query.limit"


@pytest.mark.parametrize("fmt", ["yaml", "json"])
async def test_export_round_trips(client: httpx.AsyncClient, uid: str, fmt: str) -> None:
    flow_id = f"exp-{fmt}-{uid}"
    await create_flow(client, dsl=etl_yaml(flow_id))
    exported = (await client.get(f"/api/flows/{flow_id}/dsl", params={"format": fmt})).json()
    assert exported["format"] == fmt and exported["flow_id"] == flow_id
    await client.delete(f"/api/flows/{flow_id}")
    again = await create_flow(client, dsl=exported["dsl"])
    original = (await client.get(f"/api/flows/{flow_id}")).json()
    assert again["routines"] == original["routines"] and again["connections"] == original["connections"]
    bad = await client.get(f"/api/flows/{flow_id}/dsl", params={"format": "xml"})
    assert bad.status_code == 422


async def test_replace_with_if_match_detects_stale_revisions(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = f"put-{uid}"
    await create_flow(client, dsl=etl_yaml(flow_id))
    new = {"flow_id": flow_id, "routines": {"only": {"class": "DataSink"}}}
    replaced = await client.put(f"/api/flows/{flow_id}", json={"dsl_dict": new}, headers={"If-Match": '"1"'})
    assert replaced.status_code == 200 and replaced.json()["revision"] == 2
    assert list(replaced.json()["routines"]) == ["only"]
    stale = await client.put(f"/api/flows/{flow_id}", json={"dsl_dict": new}, headers={"If-Match": '"1"'})
    assert stale.status_code == 409
    assert error_of(stale)["error"] == "revision_mismatch" and error_of(stale)["revision"] == 2
    invalid = await client.put(f"/api/flows/{flow_id}", json={"dsl_dict": {"routines": {"x": {"class": "Nope"}}}})
    assert invalid.status_code == 400
    assert (await client.get(f"/api/flows/{flow_id}")).json()["revision"] == 2  # untouched
    missing = await client.put(f"/api/flows/nope-{uid}", json={"dsl_dict": new})
    assert missing.status_code == 404


async def test_editing_routines_and_connections_validates_and_bumps_the_revision(
    client: httpx.AsyncClient, uid: str
) -> None:
    flow_id = f"edit-{uid}"
    await create_flow(client, flow_id=flow_id)
    added = await client.post(f"/api/flows/{flow_id}/routines",
                              json={"routine_id": "src", "class_name": "DataSource", "config": {"items": [1]}})
    assert added.status_code == 201 and added.json()["revision"] == 2
    await client.post(f"/api/flows/{flow_id}/routines", json={"routine_id": "sink", "class_name": "DataSink"})
    unknown = await client.post(f"/api/flows/{flow_id}/routines", json={"routine_id": "x", "class_name": "Nope"})
    assert unknown.status_code == 400 and "Available:" in error_of(unknown)["problems"][0]["message"]
    dup = await client.post(f"/api/flows/{flow_id}/routines", json={"routine_id": "src", "class_name": "DataSink"})
    assert dup.status_code == 409
    bad_config = await client.post(f"/api/flows/{flow_id}/routines",
                                   json={"routine_id": "t", "class_name": "DataTransformer", "config": {"x": 1}})
    assert bad_config.status_code == 400
    assert error_of(bad_config)["problems"][0]["location"] == "routines.t.config.x"
    conn = await client.post(f"/api/flows/{flow_id}/connections", json={
        "source_routine": "src", "source_event": "output", "target_routine": "sink", "target_slot": "input"})
    assert conn.status_code == 201 and conn.json()["revision"] == 4
    wrong_port = await client.post(f"/api/flows/{flow_id}/connections", json={
        "source_routine": "src", "source_event": "nope", "target_routine": "sink", "target_slot": "input"})
    assert wrong_port.status_code == 400 and error_of(wrong_port)["problems"][0]["code"] == "unknown_event"
    listed = (await client.get(f"/api/flows/{flow_id}/connections")).json()
    assert listed["total"] == 1 and listed["connections"][0]["connection_id"] == "src.output->sink.input"
    routines = (await client.get(f"/api/flows/{flow_id}/routines")).json()  # a bare map, by routine id
    assert set(routines) == {"src", "sink"}
    stale = await client.delete(f"/api/flows/{flow_id}/connections/0", headers={"If-Match": "2"})
    assert stale.status_code == 409
    removed = await client.delete(f"/api/flows/{flow_id}/connections/0")
    assert removed.status_code == 200 and removed.json()["connections"] == []
    assert (await client.delete(f"/api/flows/{flow_id}/connections/5")).status_code == 404
    assert (await client.delete(f"/api/flows/{flow_id}/connections/-1")).status_code == 422
    gone = await client.delete(f"/api/flows/{flow_id}/routines/src")
    assert gone.status_code == 200 and list(gone.json()["routines"]) == ["sink"]
    assert (await client.delete(f"/api/flows/{flow_id}/routines/src")).status_code == 404


async def test_validate_reports_errors_and_warnings(client: httpx.AsyncClient, uid: str) -> None:
    flow_id = f"val-{uid}"
    await create_flow(client, dsl=etl_yaml(flow_id))
    report = (await client.post(f"/api/flows/{flow_id}/validate")).json()
    assert report["valid"] is True and report["errors"] == []
    assert {"location": "routines.source.slots.trigger", "code": "unconnected_slot",
            "message": "no connection feeds this slot; it receives data only when posted"} in report["warnings"]


async def test_delete_then_404(client: httpx.AsyncClient, uid: str) -> None:
    await create_flow(client, flow_id=f"del-{uid}")
    deleted = await client.delete(f"/api/flows/del-{uid}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await client.get(f"/api/flows/del-{uid}")).status_code == 404
    assert (await client.delete(f"/api/flows/del-{uid}")).status_code == 404
