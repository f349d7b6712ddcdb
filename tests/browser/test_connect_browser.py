"""The connect flow in a real headless Chromium: landing, Intuit consent, success.

Uses the Debian Chromium (``/usr/bin/chromium``) through Playwright's ``executable_path``;
Playwright's own browser download is never used. A screenshot of each page is kept under
``test-artifacts/screenshots/`` (gitignored).

This also settles the ``__Host-`` cookie on the local stack: the stack is plain
http://127.0.0.1, and Chromium treats loopback origins as potentially trustworthy, so it
accepts and sends back a ``Secure`` (and ``__Host-``-prefixed) cookie there. The success page
is only reachable if it did: the callback answers 403 without the cookie.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.devstack_process import DevstackProcess, start_devstack

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
COOKIE = "__Host-qbo_connect_state"
REALM = "4620816365009999"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"Chromium not found at {CHROMIUM} (install the Debian chromium package)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + ": the browser test must run in CI")
    pytest.skip(message)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[DevstackProcess]:
    _require_chromium()
    process = start_devstack(
        tmp_path_factory.mktemp("connect-browser"), extra_args=["--no-schedule"]
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def test_user_clicks_through_landing_consent_and_success(stack, chromium):
    import requests

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    requests.post(
        stack.intuit + "/_sim/config",
        json={"auto_approve": False, "next_realm_id": REALM},
        timeout=10,
    ).raise_for_status()
    link = stack.invoke(
        "ConnectionsFunction", {"action": "create_connect_link", "tenant_id": "t-b"}
    )
    assert link["url"].startswith(stack.api + "/connect?session=")

    context = chromium.new_context(viewport={"width": 390, "height": 844})  # a phone
    page = context.new_page()
    csp_errors: list[str] = []
    page.on(
        "console",
        lambda msg: csp_errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    try:
        # Landing page
        response = page.goto(link["url"])
        assert response is not None and response.status == 200
        button = page.get_by_role("button", name="Connect to QuickBooks")
        assert button.is_visible()
        assert page.locator("h1").inner_text() == "Connect to QuickBooks"
        assert page.evaluate("document.documentElement.lang") == "en"
        # The inline style is allowed by its CSP hash (the button is styled, not default grey).
        background = button.evaluate("b => getComputedStyle(b).backgroundColor")
        assert background == "rgb(44, 160, 28)"
        page.screenshot(path=str(SCREENSHOTS / "connect-1-landing.png"), full_page=True)

        # Click: state cookie set, redirect to the simulator's consent page
        button.focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")  # keyboard-operable
        assert page.url.startswith(stack.intuit + "/connect/oauth2?")
        cookies = {c["name"]: c for c in context.cookies(stack.api)}
        assert COOKIE in cookies, "Chromium refused the __Host- cookie on http://127.0.0.1"
        state_cookie = cookies[COOKIE]
        assert state_cookie["secure"] and state_cookie["httpOnly"]
        assert state_cookie["sameSite"] == "Lax" and state_cookie["path"] == "/"
        assert page.locator("#approve").is_visible()
        page.screenshot(path=str(SCREENSHOTS / "connect-2-consent.png"), full_page=True)

        # Approve at "Intuit": back through the callback to the success page
        with page.expect_navigation(url=lambda url: url.startswith(stack.api + "/callback")):
            page.click("#approve")
        assert page.locator("h1").inner_text() == "QuickBooks connected"
        assert "Sandbox Company_US_1" in page.inner_text("main")
        page.screenshot(path=str(SCREENSHOTS / "connect-3-success.png"), full_page=True)
        # The cookie is gone and nothing broke the page's policy.
        assert COOKIE not in {c["name"] for c in context.cookies(stack.api)}
        assert csp_errors == []
    finally:
        context.close()

    item = stack.boto3_client("dynamodb").get_item(
        TableName=stack.endpoints["table"],
        Key={"pk": {"S": f"REALM#{REALM}"}, "sk": {"S": "CONNECTION"}},
    )["Item"]
    assert item["tenant_id"]["S"] == "t-b"
    for name in ("connect-1-landing.png", "connect-2-consent.png", "connect-3-success.png"):
        assert (SCREENSHOTS / name).stat().st_size > 1000
