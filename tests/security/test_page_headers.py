"""The pages Herald serves (console, chat, ops on push nodes; the API docs of auth and
collect) had no Content-Security-Policy, no frame-ancestors and no nosniff: an injected
script would have run with the console's API key, and any site could frame the pages
(issue 14). Checked on a running `herald dev`, then in Chromium: the pages still work under
their policy and the browser reports no violation."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.browser import needs_chromium, open_browser, until
from tests.support.procs import Standalone, start_standalone

PAGES = ["/", "/chat", "/ops"]


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    process = start_standalone(tmp_path_factory.mktemp("pages"))
    try:
        yield process
    finally:
        process.process.stop()


def _directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def _hash(content: bytes) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(content).digest()).decode()}'"


@pytest.mark.parametrize("path", PAGES)
async def test_each_page_runs_only_its_own_scripts_and_cannot_be_framed(dev: Standalone, path: str) -> None:
    async with httpx.AsyncClient(base_url=dev.push_http_url) as http:
        answer = await http.get(path)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    policy = _directives(answer.headers["content-security-policy"])
    assert policy["frame-ancestors"] == ["'none'"] and answer.headers["x-frame-options"] == "DENY"
    assert policy["default-src"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]
    assert "'unsafe-inline'" not in policy["style-src"]
    inline = re.findall(rb"<script>(.*?)</script>", answer.content, re.DOTALL)
    assert inline and all(_hash(block) in policy["script-src"] for block in inline)
    styles = re.findall(rb"<style>(.*?)</style>", answer.content, re.DOTALL)
    assert all(_hash(block) in policy["style-src"] for block in styles)
    assert b" style=" not in answer.content  # inline style attributes would be refused


@pytest.mark.parametrize("path", ["/herald.js", "/healthz", "/console/config", "/no-such-path"])
async def test_every_push_node_answer_says_nosniff(dev: Standalone, path: str) -> None:
    async with httpx.AsyncClient(base_url=dev.push_http_url) as http:
        answer = await http.get(path)
    assert answer.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("service", ["auth", "collect"])
async def test_the_http_apis_say_nosniff_and_their_docs_have_a_policy(dev: Standalone, service: str) -> None:
    base = dev.auth_url if service == "auth" else dev.collect_url
    async with httpx.AsyncClient(base_url=base) as http:
        answers = [await http.get("/healthz"), await http.get("/v1/no-such-path")]
        answers.append(await http.post("/v1/messages", content=b"x" * (2 * 1024 * 1024)))  # the body limit's 413
        docs = await http.get("/docs")
    assert [answer.status_code for answer in answers] == [200, 404, 413]
    assert all(answer.headers["x-content-type-options"] == "nosniff" for answer in answers)
    policy = _directives(docs.headers["content-security-policy"])
    assert policy["frame-ancestors"] == ["'none'"]
    [inline] = re.findall(rb"<script>(.*?)</script>", docs.content, re.DOTALL)
    assert _hash(inline) in policy["script-src"] and "'unsafe-inline'" not in policy["script-src"]


# --- in the browser ----------------------------------------------------------------------

# Added before any page script runs (by the browser's devtools, so the policy does not apply
# to it): every violation the page causes is kept for the test to read.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    page = open_browser()
    page.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS})
    try:
        yield page
    finally:
        page.quit()


@needs_chromium
def test_the_pages_work_under_their_policy_without_a_single_violation(dev: Standalone, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{dev.push_http_url}/")
    # The console's script runs: "use the demo app" fills the key from /demo/app (this is the loopback).
    until(lambda: browser.find_element(By.ID, "use-demo").is_displayed(), "the console")
    browser.find_element(By.ID, "use-demo").click()
    until(lambda: browser.find_element(By.ID, "key").get_attribute("value"), "the console's script to run")
    browser.get(f"{dev.push_http_url}/chat")
    until(lambda: browser.execute_script("return document.readyState") == "complete", "the chat page")
    browser.get(f"{dev.push_http_url}/ops")
    until(lambda: browser.execute_script("return document.readyState") == "complete", "the ops page")
    for path in PAGES:
        browser.get(f"{dev.push_http_url}{path}")
        until(lambda: browser.execute_script("return document.readyState") == "complete", path)
        styled = browser.execute_script("return getComputedStyle(document.body).margin")
        assert styled == "0px", f"{path}: its stylesheet was not applied"
        assert browser.execute_script("return window.__violations") == [], path


@needs_chromium
def test_a_script_injected_into_the_console_does_not_run(dev: Standalone, browser: Any) -> None:
    """What the policy is for: markup that slipped into the page cannot run script there."""
    browser.get(f"{dev.push_http_url}/")
    until(lambda: browser.execute_script("return document.readyState") == "complete", "the console")
    browser.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.__stolen = localStorage.length';"
        "document.body.appendChild(s);"
        "document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=\"window.__stolen = 1\">');"
    )
    until(lambda: len(browser.execute_script("return window.__violations")) >= 2, "the violations to be reported")
    assert browser.execute_script("return window.__stolen") is None
