"""Tenant isolation over HTTP, against the local stack and its Intuit simulator.

The stack runs with ``Scopes=com.intuit.quickbooks.accounting`` (no openid, so no id_token:
the callback's ``realmId`` can only be proven with a CompanyInfo call), an ``AppName`` and an
allowed return_url prefix, all set with ``--parameter-overrides`` as an operator would.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from devstack.process import DevstackProcess
from tests.helpers.stack import module_stack
from tests.http.test_connect_flow_http import Browser, assert_page, q
from tests.unit.test_tenant_isolation import verify_with_readme

APP_PREFIX = "http://127.0.0.1:9/app"
APP_NAME = "Books <b>& Co"
ACCOUNTING = "com.intuit.quickbooks.accounting"
#: Every token value the tests saw (checked against the stack's log last).
SEEN: list[str] = []

pytestmark = pytest.mark.timeout(180)


stack = module_stack(
    "tenant-isolation",
    parameter_overrides={
        "Scopes": ACCOUNTING,
        "AllowedReturnUrls": APP_PREFIX,
        "AppName": APP_NAME,
    },
    extra_args=["--no-schedule"],
)


@pytest.fixture
def browser(stack) -> Browser:
    return Browser(stack)


def connections(browser: Browser) -> list[dict[str, Any]]:
    return [i for i in browser.scan() if i["sk"]["S"] == "CONNECTION"]


def client_id(stack: DevstackProcess) -> str:
    secret = stack.boto3_client("secretsmanager").get_secret_value(
        SecretId=stack.endpoints["secret"]
    )
    return str(json.loads(secret["SecretString"])["client_id"])


def grants(browser: Browser, realm: str) -> list[dict[str, Any]]:
    return [g for g in browser.sim("GET", "/_sim/grants") if g["realm_id"] == realm]


def other_realm(browser: Browser) -> str:
    return str(int(browser.realm) + 500)


# ----- realm squatting at the callback ----------------------------------------------------------


def test_edited_realm_id_stores_nothing_and_the_tokens_are_revoked(browser):
    # Given a user with a link who approves their own company at Intuit
    location, cookie = browser.start(browser.link("tenant-squatter"))
    callback = browser.approve(location)
    assert q(callback)["realmId"] == browser.realm
    assert q(location)["scope"] == ACCOUNTING
    # When they edit realmId to another company's id
    victim = other_realm(browser)
    edited = callback.replace(f"realmId={browser.realm}", f"realmId={victim}")
    before = [i for i in browser.scan() if i["sk"]["S"] != "STATE"]
    response = browser.get(edited, cookie)
    # Then nothing is stored under either id, and the simulator saw the tokens revoked
    assert_page(response, 403, "could not be verified", "Nothing was saved")
    assert [i for i in browser.scan() if i["sk"]["S"] != "STATE"] == before
    assert browser.connection(victim) is None and browser.connection() is None
    assert [g["revoked"] for g in grants(browser, browser.realm)] == [True]
    assert grants(browser, victim) == []


def test_realm_id_with_a_trailing_newline_is_refused(browser):
    location, cookie = browser.start(browser.link())
    callback = browser.approve(location)
    tampered = callback.replace(f"realmId={browser.realm}", f"realmId={browser.realm}%0A")
    before, calls = browser.scan(), browser.counters()["token"]
    response = browser.get(tampered, cookie)
    assert_page(response, 400, "“realmId” is not valid")
    assert browser.scan() == before
    assert browser.counters()["token"] == calls
    # the untampered callback still completes, once
    assert browser.get(callback, cookie).status_code == 200
    assert len([i for i in connections(browser) if i["realm_id"]["S"] == browser.realm]) == 1


# ----- realm squatting by import ----------------------------------------------------------------


def test_import_as_another_realm_is_refused_as_the_right_realm_works(browser, stack):
    tokens = browser.sim(
        "POST",
        "/_sim/issue-tokens",
        {"client_id": client_id(stack), "realm_id": browser.realm, "scopes": [ACCOUNTING]},
    )
    SEEN.extend([tokens["refresh_token"], tokens["access_token"]])
    victim = other_realm(browser)
    request = {"action": "import_connection", "tenant_id": "tenant-import"}
    # dry_run: what would happen, with nothing stored and no call to Intuit
    before, counters = browser.scan(), browser.counters()
    dry = stack.invoke(
        "ConnectionsFunction",
        {**request, "realm_id": victim, "refresh_token": tokens["refresh_token"], "dry_run": True},
    )
    assert dry == {
        "dry_run": True,
        "realm_id": victim,
        "tenant_id": "tenant-import",
        "outcome": "created",
    }
    assert browser.scan() == before and browser.counters() == counters
    # As realm B: refused, nothing stored, the grant revoked
    refused = stack.invoke(
        "ConnectionsFunction",
        {**request, "realm_id": victim, "refresh_token": tokens["refresh_token"]},
    )
    assert refused["error"]["code"] == "invalid_request", refused
    assert browser.scan() == before
    assert [g["revoked"] for g in grants(browser, browser.realm)] == [True]
    # As realm A (a fresh grant, the first one is revoked): stored
    fresh = browser.sim(
        "POST",
        "/_sim/issue-tokens",
        {"client_id": client_id(stack), "realm_id": browser.realm, "scopes": [ACCOUNTING]},
    )
    SEEN.extend([fresh["refresh_token"], fresh["access_token"]])
    imported = stack.invoke(
        "ConnectionsFunction",
        {**request, "realm_id": browser.realm, "refresh_token": fresh["refresh_token"]},
    )
    assert imported["connection"]["realm_id"] == browser.realm, imported
    assert imported["connection"]["tenant_id"] == "tenant-import"


# ----- links are single use under concurrency ---------------------------------------------------


def test_two_concurrent_callbacks_on_one_link_store_one_connection(browser, stack):
    # Given one link opened in two browsers, each approving a different company
    session = browser.link("tenant-race")
    first_browser, second_browser = browser, Browser(stack)
    flows = []
    for who in (first_browser, second_browser):
        who.sim("POST", "/_sim/config", {"next_realm_id": who.realm})
        location, cookie = who.start(session)
        flows.append((who, who.approve(location), cookie))
    # When both callbacks arrive together (a slow exchange lets both pass every early check)
    browser.sim(
        "POST",
        "/_sim/faults",
        {"latency_seconds": 0.5, "endpoints": ["token.authorization_code"]},
    )
    barrier = threading.Barrier(2)
    responses: list[requests.Response | None] = [None, None]

    def run(i: int) -> None:
        who, callback, cookie = flows[i]
        barrier.wait()
        responses[i] = who.get(callback, cookie)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    browser.sim("DELETE", "/_sim/faults")
    # Then one connection is stored; the other browser gets a clear page
    stored = [
        i
        for i in connections(browser)
        if i["realm_id"]["S"] in (first_browser.realm, second_browser.realm)
    ]
    assert len(stored) == 1
    codes = sorted(r.status_code for r in responses if r is not None)
    assert codes == [200, 410]
    loser = next(r for r in responses if r is not None and r.status_code == 410)
    assert_page(loser, 410, "This connect link was already used")


# ----- go=1 and the landing page ----------------------------------------------------------------


def test_cross_site_go_is_refused_and_the_landing_page_names_app_and_tenant(browser, stack):
    session = browser.link("tenant-a", tenant_name="Acme <i>Ltd</i>")
    before = browser.scan()
    url = f"{stack.api}/connect?session={session}&go=1"
    # A cross-site top-level navigation (how another site would start it): the local stack
    # lets navigations through to the service, which must refuse it itself.
    cross_site = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    refused = browser.http.get(url, headers=cross_site, allow_redirects=False, timeout=10)
    assert_page(refused, 403, "connecting must be started from this page")
    assert "Set-Cookie" not in refused.headers and "Location" not in refused.headers
    assert browser.scan() == before
    landing = browser.get(f"{stack.api}/connect?session={session}")
    assert_page(
        landing,
        200,
        "Books &lt;b&gt;&amp; Co wants to connect to your QuickBooks company",
        "Your account at Books &lt;b&gt;&amp; Co: Acme &lt;i&gt;Ltd&lt;/i&gt;",
    )
    assert "<i>" not in landing.text and "<b>" not in landing.text
    same_origin = browser.http.get(
        url, headers={"Sec-Fetch-Site": "same-origin"}, allow_redirects=False, timeout=10
    )
    assert same_origin.status_code == 302


# ----- tenant guard and the signed return redirect ----------------------------------------------


def test_get_token_with_another_tenants_id_answers_not_connected(browser, stack):
    assert browser.connect("tenant-owner").status_code == 200
    own = stack.invoke("GetTokenFunction", {"realm_id": browser.realm, "tenant_id": "tenant-owner"})
    SEEN.append(own["access_token"])
    other = stack.invoke(
        "GetTokenFunction", {"realm_id": browser.realm, "tenant_id": "tenant-other"}
    )
    unknown = stack.invoke("GetTokenFunction", {"realm_id": other_realm(browser)})
    assert other["error"]["code"] == unknown["error"]["code"] == "not_connected"
    for action in ("get_connection", "refresh", "disconnect"):
        answer = stack.invoke(
            "ConnectionsFunction",
            {"action": action, "realm_id": browser.realm, "tenant_id": "tenant-other"},
        )
        assert answer["error"]["code"] == "not_connected", (action, answer)
    assert browser.connection()["status"]["S"] == "active"


def _connections(stack: DevstackProcess, action: str, tenant: str, realm: str) -> Any:
    payload = {"action": action, "tenant_id": tenant}
    if action != "list_connections":
        payload["realm_id"] = realm
    return stack.invoke("ConnectionsFunction", payload)


def test_a_new_owner_sees_nothing_of_the_previous_tenure(browser, stack):
    realm = browser.realm
    # Tenant A connects, a refresh fails at Intuit (its last error is recorded), A disconnects
    assert browser.connect("tenant-first").status_code == 200
    browser.sim("POST", "/_sim/faults", {"status_5xx": 10, "endpoints": ["token"]})
    failed = _connections(stack, "refresh", "tenant-first", realm)
    browser.sim("DELETE", "/_sim/faults")
    assert "error" in failed, failed
    a_conn = _connections(stack, "get_connection", "tenant-first", realm)["connection"]
    assert a_conn["last_error"] is not None, a_conn
    a_rows = _connections(stack, "connection_history", "tenant-first", realm)["history"]
    assert _connections(stack, "disconnect", "tenant-first", realm)["status"] == "disconnected"
    # Tenant B connects the same company with its own link
    browser.sim("POST", "/_sim/config", {"next_realm_id": realm})
    assert browser.connect("tenant-second").status_code == 200

    b_conn = _connections(stack, "get_connection", "tenant-second", realm)["connection"]
    (listed,) = _connections(stack, "list_connections", "tenant-second", realm)["connections"]
    b_rows = _connections(stack, "connection_history", "tenant-second", realm)["history"]
    assert b_conn["tenant_id"] == listed["tenant_id"] == "tenant-second"
    assert b_conn["last_error"] is None and listed["last_error"] is None
    assert b_conn["failing_since"] is None and b_conn["failed_attempts"] == 0
    assert [(r["source"], r["outcome"]) for r in b_rows] == [("callback", "connected")]
    # No timestamp of A's tenure is in anything B is shown
    a_times = {a_conn["connected_at"], a_conn["last_error"]["at"]} | {r["at"] for r in a_rows}
    a_times.discard(b_conn["connected_at"])  # one second can hold both: compare the rows too
    shown_to_b = json.dumps([b_conn, listed, b_rows])
    assert not [t for t in a_times if t and t in shown_to_b]
    assert not {r["outcome"] for r in b_rows} & {"disconnected", "transient", "refreshed"}
    # and A sees nothing of B's
    for action in ("get_connection", "connection_history"):
        answer = _connections(stack, action, "tenant-first", realm)
        assert answer["error"]["code"] == "not_connected", (action, answer)
    assert _connections(stack, "list_connections", "tenant-first", realm)["connections"] == []


def test_return_redirect_is_signed_and_a_tampered_one_fails_the_readme_check(browser, stack):
    response = browser.connect("tenant-sig", return_url=APP_PREFIX + "/done?tab=qbo")
    assert response.status_code == 302
    target = response.headers["Location"]
    key = stack.boto3_client("secretsmanager").get_secret_value(
        SecretId=stack.endpoints["return_signing_secret"]
    )["SecretString"]
    assert len(key) == 64 and re.fullmatch(r"[A-Za-z0-9]+", key)
    verified = verify_with_readme(target, key)
    assert verified is not None
    assert verified["realm_id"] == browser.realm and verified["tenant_id"] == "tenant-sig"
    assert verified["status"] == "connected" and verified["tab"] == "qbo"
    query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
    tampered = target.split("?")[0] + "?" + urlencode({**query, "realm_id": other_realm(browser)})
    assert verify_with_readme(tampered, key) is None


def test_return_url_prefix_tricks_are_refused(browser, stack):
    before = browser.scan()
    for url in (
        APP_PREFIX + "EVIL",
        APP_PREFIX + "/..;/x",
        APP_PREFIX + "/%252e%252e/x",
        APP_PREFIX + "//evil.com",
    ):
        result = stack.invoke(
            "ConnectionsFunction",
            {"action": "create_connect_link", "tenant_id": "tenant-a", "return_url": url},
        )
        assert result["error"]["code"] == "invalid_request", url
    assert browser.scan() == before


# ----- logs -------------------------------------------------------------------------------------


def test_logs_hold_no_token(stack):
    """Runs last in this module: everything above went through this stack."""
    assert SEEN, "run with the rest of the module"
    text = stack.log_text()
    assert "connection stored" in text
    assert not [s for s in SEEN if s in text]
    assert not re.search(r"AB11-sim-|RT1-sim-|sim-at-|eyJ[A-Za-z0-9_-]+\.eyJ", text)
