"""The API's own description: ``/openapi.json``, Swagger UI at ``/docs``, ReDoc at ``/redoc``.

The OpenAPI document is written by hand in ``openapi/openapi.yaml`` (shipped inside the package
as ``routilux/api/openapi.yaml``), read once and served as JSON.

Both pages work with no internet access (air-gapped hosts, CI, a laptop on a plane), so neither
loads anything from a CDN and nothing is vendored into this repository:

- Swagger UI's assets come from the ``swagger-ui-bundle`` package, mounted at ``/docs/assets``.
- ReDoc's ``redoc.standalone.js`` comes from ``drf-spectacular-sidecar``, mounted at
  ``/redoc/assets``. No PyPI package ships ReDoc on its own; this one is maintained (it follows
  ReDoc's releases, monthly), BSD-licensed and ships the upstream bundle unchanged with its
  licence. Its price is a ``Django`` dependency in the ``api`` extra: the package's
  ``__init__`` imports Django, so we locate its files with :func:`importlib.util.find_spec`,
  which does not import it — Django is installed but never loaded. The alternatives were worse:
  the framework plugins that ship ReDoc (``fastapi-offline``, ``flask-openapi3-redoc``,
  ``star-openapi-redoc``) pull in a whole other web framework too and lag ReDoc's releases, and
  fetching the npm package at build time would make a wheel build need the npm registry.
- ``ROUTILUX_REDOC_JS_URL`` can still point ``/redoc`` at another copy of the script (a newer
  ReDoc on an internal mirror); empty, the default, means the bundled one.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def redoc_bundle_dir() -> Path:
    """The folder holding ``redoc.standalone.js`` in ``drf-spectacular-sidecar`` (module docstring)."""
    spec = importlib.util.find_spec("drf_spectacular_sidecar")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("drf-spectacular-sidecar is not installed: pip install 'routilux[api]'")
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "static" / "drf_spectacular_sidecar" / "redoc" / "bundles"


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
    Mount("/docs/assets", app=StaticFiles(directory=swagger_ui_path), name="swagger-assets"),
    Mount("/redoc/assets", app=StaticFiles(directory=redoc_bundle_dir()), name="redoc-assets"),
]
