"""The third-party files behind ``/docs`` and ``/redoc`` (``src/routilux/api/static/``) are exactly
the ones ``static/ASSETS.toml`` lists: same names, same SHA-256, each package with its licence, and
the app serves them from that folder.

The manifest is the record of what was vendored (package, version, npm tarball integrity, licence),
so a file that changes, appears or disappears without the manifest saying so fails here. How to
move to another version is written at the top of ``ASSETS.toml``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from routilux.api.routes import docs

STATIC = Path(docs.STATIC_DIR)
MANIFEST: dict[str, dict[str, Any]] = tomllib.loads((STATIC / "ASSETS.toml").read_text(encoding="utf-8"))
OWN_FILES = {"ASSETS.toml", ".gitattributes"}  # the static folder's own, not vendored


def test_the_manifest_names_both_bundles() -> None:
    assert set(MANIFEST) == {"swagger-ui", "redoc"}
    assert (MANIFEST["swagger-ui"]["package"], MANIFEST["redoc"]["package"]) == ("swagger-ui-dist", "redoc")
    assert {p.name for p in STATIC.iterdir() if p.is_dir()} == set(MANIFEST)
    assert {p.name for p in STATIC.iterdir() if p.is_file()} <= OWN_FILES


@pytest.mark.parametrize("folder", sorted(MANIFEST))
def test_every_file_is_listed_with_its_sha256(folder: str) -> None:
    listed: dict[str, str] = MANIFEST[folder]["sha256"]
    present = {p.name: p for p in (STATIC / folder).rglob("*") if p.is_file()}
    assert sorted(present) == sorted(listed), f"static/{folder}/ and ASSETS.toml [{folder}.sha256] disagree"
    wrong = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in present.items()
             if hashlib.sha256(path.read_bytes()).hexdigest() != listed[name]}
    assert wrong == {}, f"these files differ from ASSETS.toml (actual SHA-256 shown): {wrong}"


@pytest.mark.parametrize("folder", sorted(MANIFEST))
def test_each_package_has_version_source_and_licence(folder: str) -> None:
    entry = MANIFEST[folder]
    package, version = entry["package"], entry["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"pin an exact release, not {version!r}"
    assert entry["source"] == f"npm pack {package}@{version}"
    assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", entry["integrity"]), entry["integrity"]
    assert entry["license"] in {"MIT", "Apache-2.0"}
    assert "LICENSE" in entry["license_files"]
    for name in entry["license_files"]:
        assert name in entry["sha256"] and (STATIC / folder / name).stat().st_size > 0, name
    if entry["license"] == "Apache-2.0":  # its NOTICE travels with the files (Apache-2.0, section 4d)
        assert "NOTICE" in entry["license_files"]
    # the bundle itself says which release it is: the manifest's version is the one shipped
    bundle = {"swagger-ui": "swagger-ui-bundle.js", "redoc": "redoc.standalone.js"}[folder]
    assert f'"{version}"' in (STATIC / folder / bundle).read_text(encoding="utf-8"), version


def test_the_pages_load_only_files_that_are_shipped() -> None:
    swagger = re.findall(r'"/docs/assets/([^"]+)"', docs.SWAGGER_PAGE)
    assert sorted(swagger) == ["swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"]
    assert docs.REDOC_ASSET == "/redoc/assets/redoc.standalone.js"
    for name in swagger:
        assert name in MANIFEST["swagger-ui"]["sha256"], name
    assert "redoc.standalone.js" in MANIFEST["redoc"]["sha256"]


async def test_the_app_serves_the_vendored_files_unchanged() -> None:
    static_routes = [route for route in docs.routes if getattr(route, "name", "") in {"swagger-assets", "redoc-assets"}]
    transport = httpx.ASGITransport(app=Starlette(routes=static_routes))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for prefix, folder in (("/docs/assets", "swagger-ui"), ("/redoc/assets", "redoc")):
            for name in MANIFEST[folder]["sha256"]:
                response = await client.get(f"{prefix}/{name}")
                assert response.status_code == 200, (prefix, name)
                assert response.content == (STATIC / folder / name).read_bytes(), (prefix, name)
        assert "javascript" in (await client.get("/docs/assets/swagger-ui-bundle.js")).headers["content-type"]
        assert (await client.get("/docs/assets/swagger-ui.css")).headers["content-type"].startswith("text/css")


def test_no_dependency_brings_django_or_the_old_asset_packages() -> None:
    """What the files replaced: ``swagger-ui-bundle`` and ``drf-spectacular-sidecar`` (and with it Django)."""
    requirements = importlib.metadata.requires("routilux") or []
    names = {re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0].lower().replace("_", "-") for line in requirements}
    assert names.isdisjoint({"swagger-ui-bundle", "drf-spectacular-sidecar", "django"}), sorted(names)
    source = Path(docs.__file__).resolve().parents[2]  # src/routilux
    users = [str(p) for p in source.rglob("*.py")
             if re.search(r"^\s*(import|from)\s+(swagger_ui_bundle|drf_spectacular_sidecar|django)\b",
                          p.read_text(encoding="utf-8"), re.MULTILINE)]
    assert users == []
