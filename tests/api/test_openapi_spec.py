"""The hand-written OpenAPI document is valid, complete, and lists exactly the app's routes.

These tests need no server: they read ``openapi/openapi.yaml`` (through the same loader the
server uses for ``/openapi.json``) and the route table of ``create_app()``. That real responses
match the document is checked by every API test, through ``spec_check.httpx_event_hook``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from routilux.api.app import create_app
from routilux.api.routes import docs
from tests.support import spec_check

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DOCS_PATHS = ("/openapi.json", "/docs", "/redoc")
CAMEL_CASE = re.compile(r"^[a-z][a-zA-Z0-9]*$")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return spec_check.load_spec()


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def walk(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    """Every (JSON pointer, value) in the document, depth first."""
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{where}/{str(key).replace('~', '~0').replace('/', '~1')}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{where}/{i}")


def resolve(spec: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node: Any = spec
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve (no {part!r})"
        node = node[part]
    return node


def deref(spec: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = resolve(spec, node["$ref"])
    return node


def schema_validator(spec: dict[str, Any], schema: dict[str, Any]) -> OAS30Validator:
    return OAS30Validator({**schema, "components": spec["components"]})


# -- 1. the document is valid OpenAPI 3.0.3 -------------------------------------------------------
def test_spec_is_valid_openapi_3_0(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.0.3"
    validate(spec)


def test_spec_uses_3_0_nullability(spec: dict[str, Any]) -> None:
    """3.0 has no type arrays (``type: [string, "null"]``): nullable fields say ``nullable: true``."""
    arrays = [where for where, node in walk(spec) if isinstance(node, dict) and isinstance(node.get("type"), list)]
    assert not arrays, f"type arrays are OpenAPI 3.1; use nullable: true at {arrays}"


# -- what generated clients need (the generators themselves run in test_sdk*.py) -----------------
#: An explicit null, the other half of ``anyOf: [{$ref: X}, NULL]``: how a nullable object is
#: written, since ``nullable`` without ``type`` is invalid in 3.0.3 and a nullable object schema
#: becomes a model named ``XType0`` in openapi-python-client.
NULL = {"type": "object", "nullable": True, "enum": [None]}
#: The language's own globals: a generated ``export type Error = ...`` shadows JavaScript's Error.
JS_GLOBALS = {"Error", "Object", "Array", "String", "Number", "Boolean", "Date", "Function", "Map", "Set",
              "Promise", "Symbol", "JSON", "Math", "RegExp"}


def test_no_int64_so_javascript_clients_get_plain_numbers(spec: dict[str, Any]) -> None:
    """``format: int64`` turns into BigInt in JS validators (``seq === 3`` false, JSON.stringify
    throws); sequence numbers are capped at 2**53 - 1 instead."""
    found = [where for where, node in walk(spec) if isinstance(node, dict) and node.get("format") == "int64"]
    assert not found, found
    assert spec["components"]["parameters"]["Since"]["schema"]["maximum"] == 2**53 - 1


def test_objects_are_never_nullable_themselves(spec: dict[str, Any]) -> None:
    found = [
        where for where, node in walk(spec)
        if isinstance(node, dict) and node.get("nullable") is True and node != NULL
        and (node.get("type") == "object" or "properties" in node or "$ref" in node)
    ]
    assert not found, f"write anyOf: [{{$ref: ...}}, {NULL}] instead: {found}"
    untyped = [where for where, node in walk(spec)
               if isinstance(node, dict) and node.get("nullable") is True and "type" not in node]
    assert not untyped, f"nullable without type (invalid in 3.0.3): {untyped}"


def request_schemas(spec: dict[str, Any]) -> dict[str, Any]:
    """Every component schema a request body reaches, by name."""
    names: dict[str, Any] = {}
    todo = [op["requestBody"]["content"]["application/json"]["schema"]
            for _m, _p, op in operations(spec) if "requestBody" in op]
    while todo:
        for _where, node in walk(todo.pop()):
            ref = node.get("$ref") if isinstance(node, dict) else None
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in names:
                    names[name] = spec["components"]["schemas"][name]
                    todo.append(names[name])
    return names


def test_request_fields_have_no_default_so_they_stay_optional(spec: dict[str, Any]) -> None:
    """openapi-typescript makes a field with a ``default`` required (``defaultNonNullable``): a
    default belongs in the field's description."""
    found = [f"{name}{where[1:]}" for name, schema in request_schemas(spec).items()
             for where, node in walk(schema) if isinstance(node, dict) and "default" in node]
    assert not found, found


def test_no_schema_is_named_like_a_javascript_global(spec: dict[str, Any]) -> None:
    assert not JS_GLOBALS & set(spec["components"]["schemas"])


async def test_served_spec_is_the_file(spec: dict[str, Any]) -> None:
    transport = httpx.ASGITransport(app=create_app())  # no lifespan: this route needs no services
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == json.loads(json.dumps(spec))
    assert docs.spec_path().name == "openapi.yaml"


# -- 2. the routes and the spec list the same operations -----------------------------------------
def app_operations() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in create_app().routes:
        if isinstance(route, Mount) or not isinstance(route, Route):
            continue  # /docs/assets: static files, not an operation
        if not route.include_in_schema or route.path in DOCS_PATHS:
            continue
        path = re.sub(r"\{([^}:]+)(:[^}]+)?\}", r"{\1}", route.path)  # {index:int} -> {index}
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET
                found.add((method, path))
    return found


def test_routes_and_spec_list_the_same_operations(spec: dict[str, Any]) -> None:
    in_app = app_operations()
    in_spec = {(method, path) for method, path, _ in operations(spec)}
    missing_in_spec = sorted(in_app - in_spec, key=lambda x: (x[1], x[0]))
    missing_in_app = sorted(in_spec - in_app, key=lambda x: (x[1], x[0]))
    message = []
    if missing_in_spec:
        message.append("routes the spec does not document:\n  " + "\n  ".join(f"{m} {p}" for m, p in missing_in_spec))
    if missing_in_app:
        message.append("operations the app does not serve:\n  " + "\n  ".join(f"{m} {p}" for m, p in missing_in_app))
    assert not message, "\n".join(message)


def test_docs_routes_are_not_in_the_spec(spec: dict[str, Any]) -> None:
    assert not [p for p in spec["paths"] if p in DOCS_PATHS or p.startswith("/docs/")]


# -- 3. every operation is complete, every schema used -------------------------------------------
def test_operation_ids_are_unique_camel_case(spec: dict[str, Any]) -> None:
    ids = [op.get("operationId") for _, _, op in operations(spec)]
    missing = [f"{m} {p}" for m, p, op in operations(spec) if not op.get("operationId")]
    assert not missing, f"operations without operationId: {missing}"
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicates, f"operationIds used more than once: {duplicates}"
    bad = [i for i in ids if not CAMEL_CASE.match(i)]
    assert not bad, f"operationIds not in camelCase: {bad}"


def test_operations_have_tags_summary_and_description(spec: dict[str, Any]) -> None:
    declared = {tag["name"] for tag in spec.get("tags", [])}
    problems = []
    for method, path, op in operations(spec):
        where = f"{method} {path} ({op.get('operationId')})"
        if not op.get("tags"):
            problems.append(f"{where}: no tags")
        elif set(op["tags"]) - declared:
            problems.append(f"{where}: undeclared tags {sorted(set(op['tags']) - declared)}")
        if not op.get("summary"):
            problems.append(f"{where}: no summary")
        if not op.get("description"):
            problems.append(f"{where}: no description")
    assert not problems, "\n".join(problems)


def test_operations_document_success_and_client_errors(spec: dict[str, Any]) -> None:
    problems = []
    for method, path, op in operations(spec):
        where = f"{method} {path} ({op.get('operationId')})"
        statuses = [str(s) for s in op.get("responses", {})]
        if not any(s.startswith("2") for s in statuses):
            problems.append(f"{where}: no 2xx response")
        takes_nothing = op.get("security") == [] and not op.get("parameters") and "requestBody" not in op
        if not any(s.startswith("4") for s in statuses) and not takes_nothing:  # liveness cannot fail
            problems.append(f"{where}: no 4xx response")
        if "default" in statuses:
            problems.append(f"{where}: a 'default' response would hide undocumented statuses")
        for status, response in op.get("responses", {}).items():
            response = deref(spec, response)
            content = response.get("content", {})
            if str(status) == "204":
                if content:
                    problems.append(f"{where}: 204 must have no content")
                continue
            if where.startswith("GET /metrics ") and str(status) == "200":
                # Prometheus' text format is the one non-JSON answer
                assert set(content) == {"text/plain"}, where
                continue
            schema = content.get("application/json", {}).get("schema")
            if not schema:
                problems.append(f"{where}: response {status} has no application/json schema")
            elif "$ref" not in schema:
                problems.append(f"{where}: response {status} should use a named component schema")
            # Health answers 503 with its own status document (what a probe reads), not an error.
            health_status = where.startswith(("GET /api/health ", "GET /api/health/live ")) and str(status) == "503"
            if str(status).startswith(("4", "5")) and schema != {"$ref": "#/components/schemas/ErrorResponse"} and not (
                health_status
            ):
                problems.append(f"{where}: error response {status} must use the ErrorResponse schema")
    assert not problems, "\n".join(problems)


def test_request_bodies_use_closed_named_schemas(spec: dict[str, Any]) -> None:
    """The server refuses unknown fields, so every request body schema says so."""
    problems = []
    for method, path, op in operations(spec):
        body = op.get("requestBody")
        if body is None:
            continue
        schema = body["content"]["application/json"]["schema"]
        if "$ref" not in schema:
            problems.append(f"{method} {path}: request body should use a named component schema")
            continue
        if deref(spec, schema).get("additionalProperties") is not False:
            problems.append(f"{method} {path}: {schema['$ref']} must say additionalProperties: false")
    assert not problems, "\n".join(problems)


def test_every_component_is_used(spec: dict[str, Any]) -> None:
    refs = Counter(
        (node["$ref"], where)
        for where, node in walk(spec)
        if isinstance(node, dict) and isinstance(node.get("$ref"), str)
    )
    unused = []
    for kind in ("schemas", "responses", "parameters", "headers"):
        for name in spec["components"].get(kind, {}):
            target = f"#/components/{kind}/{name}"
            # A reference from inside the component itself (recursion) does not count.
            if not any(ref == target and not where.startswith(target + "/") for ref, where in refs):
                unused.append(target)
    # WebSocket frames: no HTTP operation sends them; the description's "WebSockets" names them.
    described = spec["info"]["description"]
    unused = [t for t in unused
              if not (t.startswith("#/components/schemas/Ws") and f"`{t.rsplit('/', 1)[1]}`" in described)]
    assert not unused, f"components nothing refers to: {unused}"


def test_security_scheme_is_optional_api_key(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"]["ApiKeyAuth"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert {"ApiKeyAuth": []} in spec["security"] and {} in spec["security"]
    missing = [op["operationId"] for _, _, op in operations(spec)
               if op.get("security") != [] and not {"401", "403"} <= {str(s) for s in op["responses"]}]
    assert not missing, f"operations that do not document 401/403: {missing}"
    public = [op["operationId"] for _, _, op in operations(spec) if op.get("security") == []]
    assert public == ["getLiveness"], f"only the liveness probe is public: {public}"


# -- 4. every reference resolves, every example fits its schema -----------------------------------
def test_every_ref_resolves(spec: dict[str, Any]) -> None:
    broken = []
    for where, node in walk(spec):
        if isinstance(node, dict) and "$ref" in node:
            try:
                resolve(spec, node["$ref"])
            except AssertionError as exc:
                broken.append(f"{where}: {exc}")
    assert not broken, "\n".join(broken)


def examples(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example) for every media-type and parameter example."""
    for where, node in walk(spec):
        if not isinstance(node, dict) or "schema" not in node:
            continue
        if "example" in node:
            yield where, node["schema"], node["example"]
        for name, example in node.get("examples", {}).items():
            yield f"{where}/examples/{name}", node["schema"], deref(spec, example)["value"]


def test_examples_match_their_schemas(spec: dict[str, Any]) -> None:
    found = list(examples(spec))
    assert len(found) >= 20, "the main request bodies and responses should have examples"
    problems = []
    for where, schema, example in found:
        validator = schema_validator(spec, schema)
        for error in validator.iter_errors(example):
            problems.append(f"{where} at {'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}")
    assert not problems, "\n".join(problems)


# -- the checker the API tests use -----------------------------------------------------------------
JSON = {"content-type": "application/json"}
HEALTH = {
    "status": "healthy",
    "auth_required": False,
    "monitoring": {"enabled": True, "events_lost": 0},
    "stores": {"accessible": True, "flow_count": 0, "job_count": 0},
    "version": "0.10.0",
}


def health(**changes: Any) -> bytes:
    return json.dumps({**HEALTH, **changes}).encode()


def test_spec_check_accepts_a_matching_response() -> None:
    spec_check.check_response("GET", "http://127.0.0.1:1234/api/health", 200, JSON, health())


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, health(status="fine"), "'fine' is not one of"),
        (200, health(extra=1), "'extra' was unexpected"),
        (200, json.dumps({k: v for k, v in HEALTH.items() if k != "version"}).encode(), "'version' is a required"),
        (500, b'{"detail": {"error": "internal_error", "message": "x"}}', "status 500 is not documented"),
    ],
)
def test_spec_check_rejects_what_the_spec_does_not_allow(status: int, body: bytes, expected: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(expected)):
        spec_check.check_response("GET", "/api/health", status, JSON, body)


def test_spec_check_checks_documented_headers() -> None:
    job = {
        "job_id": "j1", "flow_id": "f", "runtime_id": "default", "status": "running",
        "created_at": "2026-01-18T12:00:00.123Z", "started_at": "2026-01-18T12:00:00.124Z",
        "completed_at": None, "error": None, "error_detail": None, "timeout": None, "complete_when_idle": False,
    }
    body, request = json.dumps(job).encode(), b'{"flow_id": "f"}'
    spec_check.check_response("POST", "/api/jobs", 201, {**JSON, "location": "/api/jobs/j1"}, body, request, JSON)
    with pytest.raises(AssertionError, match="Location"):
        spec_check.check_response("POST", "/api/jobs", 201, JSON, body, request, JSON)


def test_spec_check_checks_accepted_requests() -> None:
    body = json.dumps({"flows": [], "total": 0, "limit": 5000, "offset": 0}).encode()
    with pytest.raises(AssertionError, match="accepted a request the spec does not allow"):
        spec_check.check_response("GET", "/api/flows?limit=5000", 200, JSON, body)


def test_spec_check_on_routes_the_spec_does_not_have() -> None:
    not_found = b'{"detail": {"error": "not_found", "message": "no endpoint at /api/nope"}}'
    spec_check.check_response("GET", "/api/nope", 404, JSON, not_found)
    body = b'{"detail": {"error": "method_not_allowed", "message": "no"}}'
    spec_check.check_response("PATCH", "/api/flows", 405, JSON, body)
    with pytest.raises(AssertionError, match="no path of the spec matches"):
        spec_check.check_response("GET", "/api/nope", 200, JSON, b"{}")
    with pytest.raises(AssertionError, match="Error schema"):
        spec_check.check_response("GET", "/api/nope", 404, JSON, b'{"error": "not_found"}')


def test_spec_check_skips_the_docs_and_204_must_be_empty() -> None:
    for path in ("/openapi.json", "/docs", "/docs/assets/swagger-ui.css", "/redoc"):
        spec_check.check_response("GET", path, 200, {"content-type": "text/html"}, b"<html>")
    spec_check.check_response("DELETE", "/api/flows/f", 204, {}, b"")
    with pytest.raises(AssertionError, match="204 response must have no body"):
        spec_check.check_response("DELETE", "/api/flows/f", 204, JSON, b"{}")
