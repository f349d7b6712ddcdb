"""The simulator's consent page in a real headless Chromium at phone widths (320 and 390 px).

A newcomer trying the connect flow on a phone sees this page first: it must name the app (not
its client id), need no sideways scrolling and keep its buttons large enough to tap.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.intuit_sim import ACCOUNTING_SCOPE, IntuitSimulator

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CLIENT_ID = "sim-consent-client-id"
# One long word: the page must wrap it rather than scroll sideways.
APP_NAME = "AcmeBooksSynchronisationServiceForVeryLongNames"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Chromium not found at {CHROMIUM}: the browser tests must run in CI")
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.parametrize("width", [320, 390])
def test_consent_page_fits_a_phone_and_names_the_app(chromium: Any, width: int) -> None:
    with IntuitSimulator(clients={CLIENT_ID: "secret"}) as sim:
        sim.add_client(CLIENT_ID, "secret", app_name=APP_NAME)
        context = chromium.new_context(viewport={"width": width, "height": 740})
        try:
            page = context.new_page()
            page.goto(
                sim.endpoints["INTUIT_AUTHORIZATION_ENDPOINT"]
                + f"?client_id={CLIENT_ID}&response_type=code&scope={ACCOUNTING_SCOPE}"
                + "&redirect_uri=http://127.0.0.1:9/callback&state=s"
            )
            assert APP_NAME in page.inner_text("h1")
            assert CLIENT_ID not in page.content()
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"scrolls sideways by {overflow}px at {width}px"
            for button in ("#approve", "#deny"):
                box = page.locator(button).bounding_box()
                assert box is not None and box["height"] >= 44 and box["x"] + box["width"] <= width
            font_px = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
            assert font_px >= 16
        finally:
            context.close()
