"""The live chains page in a real browser: Playwright drives Debian's chromium against a real mitmdump's
operator listener while uv 0.5.25 installs through the proxy, and while curl fetches from a redirector
whose Location carries markup, quotes and terminal escapes. Screenshots for docs/ come from here too
(CREDHOP_SCREENSHOTS=DIR)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.harness import Mitmdump, free_port, run, tool
from tests.e2e.test_captures import CHROMIUM_FLAGS
from tests.e2e.test_clients import CLIENTS, PACKAGE
from tests.fixtures.registry import Redirector, Response
from tests.secrets_check import assert_no_leak

# raw in the Location: markup and quotes in the user name (which credhop refuses to read, and masks) and
# in the path, and a terminal escape
HOSTILE_USER = "\"'><script>window.pwned=1"


@pytest.fixture
def sync_api():
    return pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' (Playwright)")


def browser(sync_api, tmp_path: Path):
    """A headless chromium that never uses the proxy: the page is read straight from the listener."""
    playwright = sync_api.sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=tool("CREDHOP_CHROMIUM", "chromium"), headless=True,
                                          args=[*CHROMIUM_FLAGS, "--no-proxy-server"])
    return playwright, chromium


def shot(page, name: str) -> None:
    where = os.environ.get("CREDHOP_SCREENSHOTS")
    if where:
        page.screenshot(path=str(Path(where) / name), full_page=True)


def test_a_failed_uv_install_shows_on_the_live_page_within_two_seconds(sync_api, registry_factory, tmp_path,
                                                                       forms):
    # observe mode changes nothing: uv's follow-up without the credential gets the registry's 401
    registry = registry_factory("https", 401)
    port = free_port()
    options = {"credhop_observe": "true", "credhop_metrics": f"127.0.0.1:{port}", "credhop_instance": "gw-1"}
    with Mitmdump(tmp_path / "proxy", registry.test_ca, options=options) as proxy:
        playwright, chromium = browser(sync_api, tmp_path)
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/", timeout=15_000)
            page.wait_for_selector("#live.live:not(.off)", timeout=10_000)  # the event stream is open
            assert page.locator("section.chain").count() == 0
            page.evaluate("window.stayed = true")  # gone if the page reloads instead of redrawing

            result = CLIENTS["uv-0.5.25"](registry, tmp_path / "client", proxy)
            assert result.returncode != 0
            ended = time.monotonic()
            page.wait_for_selector("section.chain.verdict-failed", timeout=2_000)
            shown_after = time.monotonic() - ended
            failed = page.locator("section.chain.verdict-failed").first
            assert "CH101" in failed.inner_text()
            hint = failed.locator(".finding .fix").first
            assert hint.is_visible() and hint.inner_text().startswith("fix:"), hint.inner_text()
            assert page.evaluate("window.stayed") is True and not errors, errors

            # the filters, as a user clicks them
            page.check("input[name=failed]")
            page.click("button[type=submit]")
            page.wait_for_load_state()
            assert page.locator("section.chain").count() == page.locator("section.chain.verdict-failed").count() >= 1
            shot(page, "live-chains.png")
            everything = page.content()
        finally:
            chromium.close()
            playwright.stop()
    assert shown_after < 2.0
    assert_no_leak(everything + proxy.output, forms, "the live page and mitmdump's output")


class HostileRedirector(Redirector):
    """Answers each request with the next of `locations`: markup, quotes and terminal escapes in them."""

    def __init__(self, locations: list[str], **kw) -> None:
        super().__init__(target="", **kw)
        self.locations = list(locations)

    def _redirect(self, location: str) -> Response:
        return Response(302, [("Location", self.locations.pop(0))], b"")


def test_hostile_text_from_the_network_shows_as_text_and_no_script_runs(sync_api, registry_factory, pki,
                                                                         tmp_path, token, forms):
    registry = registry_factory("https", 404)
    port = free_port()
    index = f"127.0.0.2:{registry.index.port}"
    locations = [f"https://{HOSTILE_USER}:{token}@{index}/simple/\"'><script>window.pwned=2</script>/",
                 f"https://aws:{token}@{index}/simple/\x1b[2J\x1b[31mred/"]  # a control character: it does not
    hostile = HostileRedirector(locations, tls=pki.server_context()).start()
    try:
        options = {"credhop_metrics": f"127.0.0.1:{port}", "credhop_plain_redirects": "record"}
        with Mitmdump(tmp_path / "proxy", registry.test_ca, options=options) as proxy:
            for _ in locations:
                curl = run([tool("CREDHOP_CURL", "curl"), "-sS", "-o", "/dev/null", "--proxy", proxy.url,
                            "--cacert", str(proxy.ca_cert), f"{hostile.url}/simple/{PACKAGE}/"],
                           {"HOME": str(tmp_path)}, tmp_path)
                assert curl.returncode == 0, curl.output
            assert sum(r["event"] == "redirect" for r in proxy.records()) == 2
            playwright, chromium = browser(sync_api, tmp_path)
            try:
                page = chromium.new_page()
                dialogs: list[str] = []
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
                page.goto(f"http://127.0.0.1:{port}/", timeout=15_000)
                page.wait_for_function("document.querySelectorAll('section.chain').length == 2", timeout=5_000)
                text = page.locator("main").inner_text()
                html = page.content()
                assert "\"\\'><script>window.pwned=2</script>" in text, text  # shown, as text (in a repr)
                assert "window.pwned=1" not in text  # the user name credhop would not read: masked
                assert page.evaluate("typeof window.pwned") == "undefined" and not dialogs
                assert page.locator("main script, main img").count() == 0
                shot(page, "live-chains-hostile.png")
                assert "\x1b" not in html and "\\x1b[2J" in text  # the escape, spelled out
            finally:
                chromium.close()
                playwright.stop()
        assert_no_leak(html + text + proxy.output, forms, "the live page")
    finally:
        hostile.stop()
