"""The hosted pages in a real headless Chromium, at desktop and phone widths, checked by axe-core.

It walks landing -> Intuit's consent -> success with every branding parameter set, the signed
redirect to a return URL (verified with the stack's return-signing key), and each error page
(in English at 1280 and 390 px, some in Canadian French at 320 px).

Uses the Debian Chromium (``/usr/bin/chromium``) through Playwright's ``executable_path``;
Playwright's own browser download is never used. axe-core comes from npm (pinned in
``tests/browser/package-lock.json``, installed by ``make install``) and is injected into each
page by the test through the DevTools protocol, which the pages' strict CSP does not apply to.
Every page must have no axe violation of impact ``serious`` or ``critical``.

A screenshot of every page at every width is kept under ``test-artifacts/screenshots/``
(gitignored; CI keeps the folder as an artifact).

The stack runs with every branding parameter set (``AppName``, ``AppLogoUrl``, ``AccentColor``,
``SupportUrl``, ``PrivacyUrl``). The logo points at a closed loopback port: it never loads
(there is no network here), but its ``alt`` text and the CSP's ``img-src`` are still checked.

This also settles the ``__Host-`` cookie on the local stack: the stack is plain
http://127.0.0.1, and Chromium treats loopback origins as potentially trustworthy, so it
accepts and sends back a ``Secure`` (and ``__Host-``-prefixed) cookie there. The success page
is only reachable if it did: the callback answers 403 without the cookie.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from devstack.process import DevstackProcess, start_devstack

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
AXE = REPO_ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
COOKIE = "__Host-qbo_connect_state"
WIDTHS = {"desktop": 1280, "phone": 390}
APP_NAME = "Acme Books"
LOGO = "https://127.0.0.1:9/brand/logo.png"
SUPPORT = "https://acme.example/help"
PRIVACY = "https://acme.example/privacy"
# QuickBooks green: white text on it fails WCAG contrast (3.4:1), so the pages must pick black.
ACCENT = "#2ca01c"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _require(path: Path, what: str) -> None:
    if path.exists():
        return
    message = f"{what} not found at {path}"
    if _in_ci():
        pytest.fail(message + ": the browser tests must run in CI")
    pytest.skip(message)


class _ReturnTarget(BaseHTTPRequestHandler):
    """The app's page a connect link returns to; it records what it was sent."""

    seen: list[str] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        body = (
            b'<!doctype html><html lang="en"><head><title>Acme Books</title></head>'
            b"<body><main><h1>Back in Acme Books</h1></main></body></html>"
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def return_target() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ReturnTarget)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/integrations/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, return_target) -> Iterator[DevstackProcess]:
    _require(CHROMIUM, "Chromium")
    with start_devstack(
        tmp_path_factory.mktemp("connect-browser"),
        extra_args=["--no-schedule"],
        parameter_overrides={
            "AppName": APP_NAME,
            "AppLogoUrl": LOGO,
            "AccentColor": ACCENT,
            "SupportUrl": SUPPORT,
            "PrivacyUrl": PRIVACY,
            "AllowedReturnUrls": return_target,
        },
    ) as process:
        yield process


@pytest.fixture(scope="module")
def axe_source() -> str:
    _require(AXE, "axe-core (run `make install`)")
    return AXE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    _require(CHROMIUM, "Chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class Browser:
    """One context at one width; collects CSP reports and checks each page."""

    def __init__(self, chromium: Any, axe_source: str, width: str, **options: Any) -> None:
        self.width = width
        self.axe_source = axe_source
        self.context = chromium.new_context(
            viewport={"width": WIDTHS.get(width, 320), "height": 844}, **options
        )
        self.page = self.context.new_page()
        self.csp_errors: list[str] = []
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.csp_errors.append(message.text)

    def check(self, name: str) -> list[dict[str, Any]]:
        """Screenshot, then axe-core: fail on any serious or critical violation."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.width}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000
        self.page.evaluate(self.axe_source)
        result = self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        )
        serious = [
            {"id": v["id"], "impact": v["impact"], "nodes": [n["html"] for n in v["nodes"]]}
            for v in result
            if v["impact"] in ("serious", "critical")
        ]
        assert serious == [], f"{name} at {self.width}: " + json.dumps(serious, indent=1)
        # Usable without sideways scrolling at this width.
        overflow = self.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} at {self.width} scrolls sideways by {overflow}px"
        return result

    def close(self) -> None:
        self.context.close()


#: The simulated company's name on the success page.
COMPANY = "Rivera Bikes"


def _sim(stack: DevstackProcess, **config: Any) -> None:
    import requests

    requests.post(stack.intuit + "/_sim/config", json=config, timeout=10).raise_for_status()


def _link(stack: DevstackProcess, tenant: str, **payload: Any) -> str:
    link = stack.invoke(
        "ConnectionsFunction", {"action": "create_connect_link", "tenant_id": tenant, **payload}
    )
    assert link["url"].startswith(stack.api + "/connect?session="), link
    return str(link["url"])


def _header_and_footer(page: Any) -> None:
    assert page.locator("header .app").inner_text() == APP_NAME
    assert page.locator("header img").get_attribute("alt") == f"{APP_NAME} logo"
    assert page.locator("#sandbox").is_visible()
    assert page.locator("#privacy").get_attribute("href") == PRIVACY


@pytest.mark.parametrize("width", list(WIDTHS))
def test_landing_consent_success_with_branding(stack, chromium, axe_source, width):
    realm = {"desktop": "4620816365009001", "phone": "4620816365009002"}[width]
    _sim(stack, auto_approve=False, next_realm_id=realm)
    import requests

    requests.post(
        stack.intuit + "/_sim/api/company-name",
        json={"realm_id": realm, "name": COMPANY},
        timeout=10,
    ).raise_for_status()
    url = _link(stack, f"tenant-{width}", tenant_name="Bob's Bikes")
    browser = Browser(chromium, axe_source, width)
    page = browser.page
    try:
        # Landing page: who asks, for which account, what access; branded, sandbox marked,
        # the button readable on the accent colour.
        response = page.goto(url)
        assert response is not None and response.status == 200
        csp = response.headers["content-security-policy"]
        assert "img-src https://127.0.0.1:9;" in csp
        assert page.evaluate("document.documentElement.lang") == "en"
        assert page.locator("h1").inner_text() == (
            "Acme Books wants to connect to your QuickBooks company"
        )
        main = page.inner_text("main")
        assert "Your account at Acme Books: Bob's Bikes" in main
        access = page.locator("main li").all_inner_texts()
        assert access[0].startswith("your accounting data") and "your email address" in access
        _header_and_footer(page)
        button = page.get_by_role("button", name="Connect to QuickBooks")
        assert button.is_visible()
        colors = button.evaluate(
            "b => [getComputedStyle(b).backgroundColor, getComputedStyle(b).color]"
        )
        assert colors == ["rgb(44, 160, 28)", "rgb(0, 0, 0)"]
        browser.check("connect-1-landing")

        # Keyboard: state cookie set, redirect to the simulator's consent page.
        button.focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url.startswith(stack.intuit + "/connect/oauth2?")
        cookies = {c["name"]: c for c in browser.context.cookies(stack.api)}
        assert COOKIE in cookies, "Chromium refused the __Host- cookie on http://127.0.0.1"
        state_cookie = cookies[COOKIE]
        assert state_cookie["secure"] and state_cookie["httpOnly"]
        assert state_cookie["sameSite"] == "Lax" and state_cookie["path"] == "/"
        page.screenshot(path=str(SCREENSHOTS / f"{width}-connect-2-consent.png"), full_page=True)

        # Approve at "Intuit": back through the callback to the success page.
        with page.expect_navigation(url=lambda u: u.startswith(stack.api + "/callback")):
            page.click("#approve")
        assert page.locator("h1").inner_text() == "QuickBooks connected"
        main = page.inner_text("main")
        assert COMPANY in main and APP_NAME in main
        assert "What happens next" in main
        _header_and_footer(page)
        browser.check("connect-3-success")
        assert COOKIE not in {c["name"] for c in browser.context.cookies(stack.api)}
        assert browser.csp_errors == []
    finally:
        browser.close()

    item = stack.boto3_client("dynamodb").get_item(
        TableName=stack.endpoints["table"],
        Key={"pk": {"S": f"REALM#{realm}"}, "sk": {"S": "CONNECTION"}},
    )["Item"]
    assert item["tenant_id"]["S"] == f"tenant-{width}"


def test_a_return_url_ends_the_flow_with_the_signed_redirect(
    stack, chromium, axe_source, return_target
):
    """Intuit may skip its consent page: then the form, /connect, Intuit, /callback and the
    redirect to the app are one chain of redirects that the landing form's form-action must
    allow to its end. The app can verify what it was sent with the return-signing key."""
    from qbo_connect.connect.return_url import sign

    realm = "4620816365009003"
    _sim(stack, auto_approve=True, next_realm_id=realm)
    url = _link(stack, "tenant-return", return_url=return_target + "done?x=1")
    browser = Browser(chromium, axe_source, "desktop")
    page = browser.page
    try:
        page.goto(url)
        with page.expect_navigation(url=lambda u: u.startswith(return_target)):
            page.get_by_role("button", name="Connect to QuickBooks").click()
        assert page.locator("h1").inner_text() == "Back in Acme Books"
        query = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
        assert query["realm_id"] == realm and query["status"] == "connected"
        assert query["tenant_id"] == "tenant-return" and query["x"] == "1"
        secret = stack.boto3_client("secretsmanager").get_secret_value(
            SecretId=stack.endpoints["return_signing_secret"]
        )["SecretString"]
        expected = sign(
            secret.strip().encode(),
            query["realm_id"],
            query["tenant_id"],
            query["status"],
            query["link_id"],
            query["ts"],
        )
        assert query["sig"] == expected
        assert browser.csp_errors == []

        # The link is spent: opening it again says so, and offers the way back to the app.
        response = page.goto(url)
        assert response is not None and response.status == 410
        assert page.locator("h1").inner_text() == "This connect link was already used"
        back = page.locator("#return")
        assert back.inner_text() == "Return to Acme Books"
        assert back.get_attribute("href") == return_target + "done?x=1"
        browser.check("page-link-used-with-return")
    finally:
        browser.close()


ERROR_PAGES = [
    # name, path and query, status, title
    ("link-required", "/connect", 400, "A connect link is needed"),
    ("link-unknown", "/connect?session=" + "A" * 43, 404, "This connect link is not valid"),
    ("reconnect-info", "/reconnect", 200, "Reconnect QuickBooks from Acme Books"),
    (
        "state-unknown",
        "/callback?state=" + "B" * 43 + "&code=c",
        400,
        "This sign-in attempt is not recognised",
    ),
    ("bad-request", "/callback?code=c", 400, "This request is not valid"),
    ("disconnected", "/disconnected?realmId=4620816365000000", 200, "QuickBooks disconnected"),
]


@pytest.mark.parametrize("width", list(WIDTHS))
def test_each_page_that_is_not_the_happy_path(stack, chromium, axe_source, width):
    browser = Browser(chromium, axe_source, width)
    page = browser.page
    try:
        for name, path, status, title in ERROR_PAGES:
            response = page.goto(stack.api + path)
            assert response is not None and response.status == status, name
            if title:
                assert page.locator("h1").inner_text() == title, name
            _header_and_footer(page)
            if status >= 400:
                reference = page.locator("#reference").inner_text()
                assert reference.startswith("Reference: ") and len(reference) > 20
                assert page.locator("#support").get_attribute("href") == SUPPORT
            browser.check(f"page-{name}")

        # go=1 typed or pasted (Sec-Fetch-Site: none) is not our button: the landing page, 403.
        response = page.goto(_link(stack, f"tenant-typed-{width}") + "&go=1")
        assert response is not None and response.status == 403
        assert "must be started from this page" in page.inner_text("main")
        browser.check("page-cross-site-refused")

        # Cancel at "Intuit": the cancelled page offers "Try again" with the same link.
        _sim(stack, auto_approve=False)
        page.goto(_link(stack, f"tenant-cancel-{width}"))
        page.get_by_role("button", name="Connect to QuickBooks").click()
        page.wait_for_selector("#deny")
        with page.expect_navigation(url=lambda u: u.startswith(stack.api + "/callback")):
            page.click("#deny")
        assert page.locator("h1").inner_text() == "Connection cancelled"
        assert page.locator("#action").inner_text() == "Try again"
        browser.check("page-denied")
        assert browser.csp_errors == []
    finally:
        browser.close()

    # Every error page's reference id is in the stack's log, next to its outcome.
    log = stack.log_text()
    assert '"reference"' in log


def test_pages_in_canadian_french_and_at_320px(stack, chromium, axe_source):
    browser = Browser(chromium, axe_source, "narrow", locale="fr-CA")
    page = browser.page
    try:
        page.goto(_link(stack, "tenant-fr", tenant_name="Les Vélos de Bob"))
        assert page.evaluate("document.documentElement.lang") == "fr-CA"
        assert page.locator("h1").inner_text() == (
            "Acme Books veut se connecter à votre entreprise QuickBooks"
        )
        assert page.get_by_role("button", name="Se connecter à QuickBooks").is_visible()
        browser.check("fr-landing")
        response = page.goto(stack.api + "/connect?session=" + "C" * 43)
        assert response is not None and response.status == 404
        assert page.locator("#reference").inner_text().startswith("Référence")
        browser.check("fr-link-unknown")
        response = page.goto(stack.api + "/disconnected?realmId=4620816365000000")
        assert response is not None and response.status == 200
        assert page.locator("h1").inner_text() == "QuickBooks est déconnecté"
        assert page.locator("#privacy").inner_text() == "Confidentialité"
        browser.check("fr-disconnected")
    finally:
        browser.close()
