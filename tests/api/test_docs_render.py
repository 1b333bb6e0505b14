"""``/docs`` (Swagger UI) and ``/redoc`` render in a real headless Chromium with no internet access,
and Swagger's "Try it out" calls the live API, with and without an API key.

A 200 from ``GET /docs`` proves only that some HTML went out; whether the page *renders* depends on
scripts, styles and the spec loading in a browser. So this drives Debian's ``chromium`` through
Playwright (its Python package brings the driver; the browser is the system one, via
``executable_path`` — Playwright's own browser download is not used) against real servers on
127.0.0.1. Every request for anything that is not on 127.0.0.1 is aborted *and recorded*, and each
test asserts the record is empty: a CDN script, a web font or Swagger's online validator badge would
make the page depend on the internet, and that is the failure this file exists to catch.

Chromium is installed with apt when missing (we run as root in CI; ``.ci/run`` installs it up
front too). If it cannot be installed or launched the tests fail — they never skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright

from tests.support.servers import ServerProcess

KEY = "docs-render-key"
TIMEOUT_MS = 15_000  # one bounded wait for any page element; the suite takes ~15 s in all
LIST_FLOWS = "#operations-flows-listFlows"  # Swagger UI's id: operations-{tag}-{operationId}
expect.set_options(timeout=TIMEOUT_MS)


def chromium_path() -> str:
    """The system Chromium, installed with apt when it is missing (fails, never skips)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, check=False)
        assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}"
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but no chromium is on PATH"
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium refuses its sandbox.
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                              args=["--no-sandbox", "--disable-gpu"], timeout=30_000)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("docs") / "open.db").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("docs") / "secured.db", api_key=KEY,
                           ROUTILUX_API_KEY_ENABLED="true", ROUTILUX_API_KEY=KEY).start()
    yield server
    server.stop()


class OfflinePage:
    """A page in its own browser context where only 127.0.0.1 is reachable; ``blocked`` lists the
    URLs it tried to reach anywhere else."""

    def __init__(self, browser: Browser) -> None:
        self.blocked: list[str] = []
        self.context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.route("**/*", self._gate)
        self.page: Page = self.context.new_page()

    def _gate(self, route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("internetdisconnected")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def offline(browser: Browser) -> Iterator[OfflinePage]:
    page = OfflinePage(browser)
    yield page
    page.close()
    assert page.blocked == [], f"the page reached for the internet: {page.blocked}"


def open_swagger(page: Page, server: ServerProcess) -> None:
    page.goto(server.url + "/docs", wait_until="load")
    expect(page.locator(LIST_FLOWS)).to_be_visible()


def try_list_flows(page: Page) -> str:
    """Expand GET /api/flows, press "Try it out" then "Execute"; the status Swagger shows."""
    operation = page.locator(LIST_FLOWS)
    if operation.locator(".try-out__btn").count() == 0:
        operation.locator(".opblock-summary-control").click()
        operation.locator(".try-out__btn").click()
    responses = operation.locator(".live-responses-table")
    if operation.locator(".btn-clear").count():  # an earlier answer would otherwise be read as this one
        operation.locator(".btn-clear").click()
        expect(responses).to_have_count(0)
    operation.locator(".btn.execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status").first
    expect(status).to_have_text(re.compile(r"^\s*\d{3}\s*$"), use_inner_text=True)
    return status.inner_text().strip()[:3]


def test_swagger_ui_renders_the_operation_list_offline(
    offline: OfflinePage, open_server: ServerProcess, tmp_path: Path
) -> None:
    page = offline.page
    open_swagger(page, open_server)
    summary = page.locator(f"{LIST_FLOWS} .opblock-summary")
    expect(summary.locator(".opblock-summary-method")).to_have_text("GET")
    expect(summary.locator(".opblock-summary-path")).to_have_attribute("data-path", "/api/flows")
    expect(page.locator(".info .title")).to_contain_text("Routilux")
    assert page.locator(".opblock").count() > 50  # every operation, not a stub page
    shot = tmp_path / "docs.png"
    page.screenshot(path=str(shot), full_page=False)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, len(data)  # a blank page is ~5 kB


def test_try_it_out_calls_the_api(offline: OfflinePage, open_server: ServerProcess) -> None:
    open_swagger(offline.page, open_server)
    assert try_list_flows(offline.page) == "200"
    body = offline.page.locator(f"{LIST_FLOWS} .live-responses-table .response-col_description pre").first
    expect(body).to_contain_text('"flows"')


def test_try_it_out_with_an_api_key_through_authorize(offline: OfflinePage, secured_server: ServerProcess) -> None:
    page = offline.page
    open_swagger(page, secured_server)
    assert try_list_flows(page) == "401"  # no key yet: the server refuses, Swagger shows it

    page.locator(".auth-wrapper .btn.authorize").click()
    dialog = page.locator(".dialog-ux .modal-ux")
    dialog.locator("input[type=text], input[type=password]").first.fill(KEY)
    dialog.locator(".auth-btn-wrapper .btn.authorize").click()
    expect(dialog.locator(".auth-btn-wrapper .btn-done, .auth-btn-wrapper .btn.logout").first).to_be_visible()
    dialog.locator(".auth-btn-wrapper .btn-done").click()

    assert try_list_flows(page) == "200"


def test_redoc_renders_the_operation_list_offline(offline: OfflinePage, open_server: ServerProcess) -> None:
    page = offline.page
    page.goto(open_server.url + "/redoc", wait_until="load")
    menu_item = page.locator('[data-item-id="tag/flows/operation/listFlows"]').first
    expect(menu_item).to_contain_text("List flows")
    heading = page.locator('h2:has-text("List flows")').first
    expect(heading).to_be_visible()
    assert page.locator('[data-item-id*="/operation/"]').count() > 50
