"""The API's own description: ``/openapi.json``, Swagger UI at ``/docs``, ReDoc at ``/redoc``.

The OpenAPI document is written by hand in ``openapi/openapi.yaml`` (shipped inside the package
as ``routilux/api/openapi.yaml``), read once and served as JSON. Swagger UI's assets come from the
``swagger-ui-bundle`` package, so ``/docs`` works with no internet access.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import msgspec
from ruamel.yaml import YAML
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from routilux.api.services import services

_PACKAGED = Path(__file__).resolve().parent.parent / "openapi.yaml"
_SOURCE_TREE = Path(__file__).resolve().parents[4] / "openapi" / "openapi.yaml"


def spec_path() -> Path:
    """The spec shipped in the package, or the repository's copy in a source checkout."""
    return _PACKAGED if _PACKAGED.is_file() else _SOURCE_TREE


@functools.cache
def load_spec() -> dict[str, Any]:
    return YAML(typ="safe", pure=True).load(spec_path().read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@functools.cache
def _spec_json() -> bytes:
    return msgspec.json.encode(load_spec())


async def openapi_json(request: Request) -> Response:
    return Response(_spec_json(), media_type="application/json")


SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Routilux API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"});
</script></body></html>"""

REDOC_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Routilux API</title></head>
<body><redoc spec-url="/openapi.json"></redoc><script src="{script}"></script></body></html>"""


async def swagger(request: Request) -> Response:
    return HTMLResponse(SWAGGER_PAGE)


async def redoc(request: Request) -> Response:
    script = services(request).settings.redoc_js_url.replace('"', "%22")
    return HTMLResponse(REDOC_PAGE.replace("{script}", script))


routes: list[BaseRoute] = [
    Route("/openapi.json", openapi_json, methods=["GET"], include_in_schema=False),
    Route("/docs", swagger, methods=["GET"], include_in_schema=False),
    Route("/redoc", redoc, methods=["GET"], include_in_schema=False),
    Mount("/docs/assets", app=StaticFiles(directory=swagger_ui_path), name="swagger-assets"),
]
