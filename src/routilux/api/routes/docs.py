"""The API's own description: ``/openapi.json``, Swagger UI at ``/docs``, ReDoc at ``/redoc``.

The OpenAPI document is written by hand in ``openapi/openapi.yaml`` (shipped inside the package
as ``routilux/api/openapi.yaml``), read once and served as JSON.

Both pages work with no internet access (air-gapped hosts, CI, a laptop on a plane), so neither
loads anything from a CDN. Their scripts and styles ship inside this package, in
``routilux/api/static/``: the files as npm publishes them (``swagger-ui-dist`` for Swagger UI,
``redoc`` for ReDoc's ``redoc.standalone.js``), with their licences, listed with version, source,
licence and SHA-256 in ``static/ASSETS.toml`` (``tests/api/test_static_assets.py`` checks it).
Vendoring them replaced two PyPI packages: ``swagger-ui-bundle`` (Swagger UI 4.15.5, from 2022) and
``drf-spectacular-sidecar``, whose ReDoc copy came with Django in every install.

- Swagger UI's files (``static/swagger-ui/``) are mounted at ``/docs/assets``.
- ReDoc's (``static/redoc/``) at ``/redoc/assets``.
- ``ROUTILUX_REDOC_JS_URL`` can still point ``/redoc`` at another copy of the script (a newer
  ReDoc on an internal mirror); empty, the default, means the bundled one.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from ruamel.yaml import YAML
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from routilux.api.services import services

_PACKAGED = Path(__file__).resolve().parent.parent / "openapi.yaml"
_SOURCE_TREE = Path(__file__).resolve().parents[4] / "openapi" / "openapi.yaml"


STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
SWAGGER_UI_DIR = STATIC_DIR / "swagger-ui"
REDOC_DIR = STATIC_DIR / "redoc"

REDOC_ASSET = "/redoc/assets/redoc.standalone.js"


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
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"});
</script></body></html>"""

REDOC_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Routilux API</title></head>
<body><redoc spec-url="/openapi.json"></redoc><script src="{script}"></script></body></html>"""


async def swagger(request: Request) -> Response:
    return HTMLResponse(SWAGGER_PAGE)


def redoc_csp(script: str) -> str:
    """The /redoc page's Content-Security-Policy: nothing but this server (and the configured script).

    ReDoc's menu footer always loads the Redocly logo from Redocly's CDN; offline that is a failed
    request (the image hides itself). ``img-src 'self' data:`` stops the browser from trying at all,
    so the page makes no request off this server. Styles are injected inline by ReDoc
    (styled-components) and search runs in a ``blob:`` worker, hence those two allowances.
    """
    origin = urlsplit(script)
    script_src = f"'self' {origin.scheme}://{origin.netloc}" if origin.scheme and origin.netloc else "'self'"
    return (
        f"default-src 'self'; script-src {script_src} blob:; worker-src 'self' blob:; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'"
    )


async def redoc(request: Request) -> Response:
    script = (services(request).settings.redoc_js_url or REDOC_ASSET).replace('"', "%22")
    return HTMLResponse(
        REDOC_PAGE.replace("{script}", script), headers={"Content-Security-Policy": redoc_csp(script)}
    )


routes: list[BaseRoute] = [
    Route("/openapi.json", openapi_json, methods=["GET"], include_in_schema=False),
    Route("/docs", swagger, methods=["GET"], include_in_schema=False),
    Route("/redoc", redoc, methods=["GET"], include_in_schema=False),
    Mount("/docs/assets", app=StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-assets"),
    Mount("/redoc/assets", app=StaticFiles(directory=REDOC_DIR), name="redoc-assets"),
]
