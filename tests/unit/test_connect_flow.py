"""The connect flow's logic (connect_flow.ConnectFlow) without HTTP in front of it.

AWS is moto in-process (the table from template.yaml); Intuit is the simulator over real HTTP,
so the authorize redirect, the code exchange, the id_token and CompanyInfo are the real thing.
"""

from __future__ import annotations

import hashlib
import html
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests

from qbo_connect.connect import pages
from qbo_connect.connect.base import OPEN_MODE_TENANT
from qbo_connect.connect.copy_table import COPY
from qbo_connect.connect.outcomes import Outcome
from qbo_connect.connect.request import COOKIE_NAME, Request, read_params
from qbo_connect.connect.return_url import return_url_allowed, sign, with_result
from qbo_connect.errors import ConfigurationError, InvalidRequest, ParameterError
from tests.helpers.clock import Clock
from tests.helpers.store import connect_flow
from tests.unit.builders import RecordingEvents, make_settings, make_vault

BASE = "https://connect.example.test"
APP = "https://app.example.test/integrations/"
REALM = "9130357766042906"
RETURN_KEY = b"k" * 48
ACCOUNTING = "com.intuit.quickbooks.accounting"


def approve(location: str) -> str:
    """The simulator approves (auto-approve) and redirects: the callback's query."""
    response = requests.get(location, allow_redirects=False, timeout=5)
    assert response.status_code == 302, response.text
    callback = response.headers["Location"]
    assert callback.startswith(BASE + "/callback?")
    return urlsplit(callback).query


class Harness:
    """A ConnectFlow on moto + the simulator, and the steps a browser would take."""

    def __init__(self, aws: dict[str, str], sim: Any, **overrides: Any) -> None:
        overrides.setdefault("public_base_url", BASE)
        overrides.setdefault("allowed_return_urls", (APP,))
        self.sim = sim
        self.settings = make_settings(aws, sim, **overrides)
        self.events = RecordingEvents()
        self.vault = make_vault(self.settings, events=self.events)
        self.clock = Clock()
        self.flow = connect_flow(self.vault, clock=self.clock, return_key=lambda: RETURN_KEY)
        self.table = boto3.resource("dynamodb").Table(aws["table_name"])

    def scan(self) -> list[dict[str, Any]]:
        return sorted(self.table.scan()["Items"], key=lambda i: (i["pk"], i["sk"]))

    def link(self, tenant_id: str = "tenant-a", **payload: Any) -> str:
        url = self.flow.create_link({"tenant_id": tenant_id, **payload})["url"]
        return parse_qs(urlsplit(url).query)["session"][0]

    def get(self, query: str, *, reconnect: bool = False) -> pages.HttpResult:
        return self.flow.connect(Request(query, (), "api.example.test"), reconnect=reconnect)

    def start(self, session: str | None) -> tuple[str, str]:
        """Click "Connect to QuickBooks": (authorize URL, Cookie header value)."""
        query = f"session={session}&go=1" if session else "go=1"
        result = self.get(query)
        assert result.status == 302, result.body
        (cookie,) = result.cookies
        return result.headers["Location"], f"{cookie.name}={cookie.value}"

    def authorize(self, location: str) -> str:
        return approve(location)

    def callback(self, query: str, cookie: str | None) -> pages.HttpResult:
        cookies = (cookie,) if cookie else ()
        return self.flow.callback(Request(query, cookies, "api.example.test"))

    def connect(self, tenant_id: str = "tenant-a", **payload: Any) -> pages.HttpResult:
        session = self.link(tenant_id, **payload)
        location, cookie = self.start(session)
        return self.callback(self.authorize(location), cookie)


@pytest.fixture
def h(aws, sim) -> Harness:
    return Harness(aws, sim)


def dump(items: Any) -> str:
    """Every attribute as text (binary attributes as latin-1), to search for plaintext."""

    def default(value: Any) -> str:
        raw = getattr(value, "value", value)
        return raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)

    return json.dumps(items, default=default)


def q(query: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(query).items()}


# ----- create_connect_link ----------------------------------------------------------------------


def test_link_is_random_stored_only_as_a_hash_and_expires_in_30_minutes(h):
    # When a link is created
    result = h.flow.create_link({"tenant_id": "tenant-a"})
    # Then its URL is the public base + /connect with a 256-bit token
    assert result["url"].startswith(BASE + "/connect?session=")
    token = parse_qs(urlsplit(result["url"]).query)["session"][0]
    assert len(token) >= 43
    expires = time.mktime(time.strptime(result["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(expires - time.timezone - (h.clock.now + 1800)) < 2
    # and the table holds only its SHA-256
    (item,) = h.scan()
    assert item["pk"] == "LINK#" + hashlib.sha256(token.encode()).hexdigest()
    assert token not in dump(item)
    assert item["tenant_id"] == "tenant-a"
    assert item["scopes"] == list(h.settings.scopes)


def test_link_base_falls_back_to_connect_base_url_and_needs_one(aws, sim):
    h = Harness(aws, sim, public_base_url="", connect_base_url="https://abc.execute-api.test")
    assert h.flow.create_link({"tenant_id": "t"})["url"].startswith(
        "https://abc.execute-api.test/connect?session="
    )
    h = Harness(aws, sim, public_base_url="", connect_base_url="")
    with pytest.raises(ConfigurationError):
        h.flow.create_link({"tenant_id": "t"})


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"tenant_id": ""},
        {"tenant_id": "bad tenant"},
        {"tenant_id": "t", "return_url": "https://evil.test/"},
        {"tenant_id": "t", "scopes": ["com.intuit.quickbooks.payroll"]},
        {"tenant_id": "t", "scopes": [1]},
    ],
)
def test_link_requests_that_are_refused_store_nothing(h, payload):
    with pytest.raises(InvalidRequest):
        h.flow.create_link(payload)
    assert h.scan() == []


def test_return_url_is_refused_when_no_prefix_is_configured(aws, sim):
    h = Harness(aws, sim, allowed_return_urls=())
    with pytest.raises(InvalidRequest, match="none are configured"):
        h.flow.create_link({"tenant_id": "t", "return_url": APP + "done"})


def test_link_may_ask_for_allowed_extra_scopes(h):
    session = h.link(scopes="com.intuit.quickbooks.payment phone")
    location, _ = h.start(session)
    scope = q(urlsplit(location).query)["scope"].split()
    assert scope == [*h.settings.scopes, "com.intuit.quickbooks.payment", "phone"]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        (APP + "done?x=1", True),
        (APP, True),
        ("https://app.example.test/integrations", False),  # above the prefix path
        ("https://app.example.test/other/", False),
        ("http://app.example.test/integrations/x", False),  # scheme differs
        ("https://app.example.test.evil.test/integrations/x", False),
        ("https://user:pw@app.example.test/integrations/x", False),
        ("https://app.example.test@evil.test/integrations/x", False),
        ("https://app.example.test/integrations/../admin", False),
        ("https://app.example.test/integrations/%2e%2e/admin", False),
        ("javascript:alert(1)//app.example.test/integrations/", False),
        ("https://app.example.test/integrations/\nx", False),
        ("https://app.example.test:99999/integrations/", False),
        ("https://app.example.test/integrations/" + "a" * 3000, False),
    ],
)
def test_return_url_prefix_matching_is_on_the_parsed_url(url, allowed):
    assert return_url_allowed(url, [APP]) is allowed


def test_return_url_gets_the_signed_result_and_keeps_its_query():
    url = with_result(
        APP + "done?tab=qbo&status=old&sig=forged#frag",
        key=RETURN_KEY,
        realm_id="123",
        tenant_id="tenant-a",
        status="connected",
        link_id="ab" * 16,
        now=1_700_000_000.5,
    )
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    sig = query.pop("sig")
    assert query == {
        "tab": ["qbo"],
        "realm_id": ["123"],
        "tenant_id": ["tenant-a"],
        "status": ["connected"],
        "link_id": ["ab" * 16],
        "ts": ["1700000000"],
    }
    assert sig == [sign(RETURN_KEY, "123", "tenant-a", "connected", "ab" * 16, "1700000000")]
    assert parts.fragment == "frag"


# ----- parameters -------------------------------------------------------------------------------


def test_parameters_duplicated_oversized_or_blank():
    limits = {"state": 10, "code": 10}
    assert read_params("state=a&code=b&other=1&other=2", limits) == {"state": "a", "code": "b"}
    assert read_params("state=&code=b", limits) == {"code": "b"}
    with pytest.raises(ParameterError, match="more than once"):
        read_params("state=a&state=b", limits)
    with pytest.raises(ParameterError, match="too long"):
        read_params("state=" + "x" * 11, limits)
    with pytest.raises(ParameterError, match="too long"):
        read_params("x=" + "y" * 5000, limits)


# ----- GET /connect -----------------------------------------------------------------------------


def test_landing_page_has_a_button_and_the_security_headers(h):
    session = h.link()
    result = h.get(f"session={session}")
    assert result.outcome == Outcome.LANDING
    assert result.status == 200
    assert '<html lang="en">' in result.body
    assert 'name="viewport"' in result.body
    assert "<h1>The app you came from wants to connect to your QuickBooks company</h1>" in (
        result.body
    )
    assert "<li>your accounting data: customers, invoices" in result.body
    assert 'id="sandbox"' in result.body
    assert '<button type="submit" class="button" id="connect">Connect to QuickBooks</button>' in (
        result.body
    )
    assert 'action="connect"' in result.body
    assert "http" not in result.body.split("<body>")[1]  # no external assets, no absolute URLs
    headers = result.headers
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "base-uri 'none'" in csp and f"'{pages.STYLE_HASH}'" in csp
    assert f"form-action 'self' {h.sim.base_url}" in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    assert result.cookies == []
    # Opening the landing page creates no state and does not use the link.
    assert [i["sk"] for i in h.scan()] == ["LINK"]
    assert h.get(f"session={session}").status == 200


def test_style_hash_matches_the_inline_style(h):
    import base64

    body = h.get(f"session={h.link()}").body
    style = body.split("<style>")[1].split("</style>")[0]
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"sha256-{digest}" == pages.STYLE_HASH


def test_go_creates_a_hashed_state_a_host_cookie_and_redirects_to_intuit(h):
    session = h.link(return_url=APP + "done")
    result = h.get(f"session={session}&go=1")
    assert result.status == 302
    location = result.headers["Location"]
    assert location.startswith(h.settings.intuit.authorization + "?")
    params = q(urlsplit(location).query)
    assert params["client_id"] == "test-client"
    assert params["response_type"] == "code"
    assert params["redirect_uri"] == BASE + "/callback"
    assert params["scope"] == " ".join(h.settings.scopes)
    state = params["state"]
    assert len(state) >= 43
    (cookie,) = result.cookies
    text = str(cookie)
    assert text.startswith(COOKIE_NAME + "=")
    for attribute in ("Path=/", "HttpOnly", "Secure", "SameSite=Lax", "Max-Age=600"):
        assert attribute in text
    assert "Domain" not in text
    nonce, _, link_token = cookie.value.partition(".")
    assert link_token == session
    items = {i["sk"]: i for i in h.scan()}
    stored = items["STATE"]
    assert stored["pk"] == "STATE#" + hashlib.sha256(state.encode()).hexdigest()
    assert stored["nonce_hash"] == hashlib.sha256(nonce.encode()).hexdigest()
    assert stored["link_hash"] == hashlib.sha256(session.encode()).hexdigest()
    assert stored["tenant_id"] == "tenant-a"
    assert stored["return_url"] == APP + "done"
    assert float(stored["expires_at"]) == pytest.approx(h.clock.now + 600, abs=1)
    dumped = dump(h.scan())
    for secret in (state, nonce, session):
        assert secret not in dumped
    assert result.headers["Referrer-Policy"] == "no-referrer"


def test_redirect_uri_defaults_to_the_api_domain(aws, sim):
    h = Harness(aws, sim, public_base_url="", connect_base_url="https://x.test")
    location, _ = h.start(h.link())
    assert q(urlsplit(location).query)["redirect_uri"] == "https://api.example.test/callback"


@pytest.mark.parametrize(
    ("query", "status", "outcome"),
    [
        ("", 400, Outcome.LINK_REQUIRED),
        ("session=" + "A" * 43, 404, Outcome.LINK_UNKNOWN),
        ("session=<script>", 404, Outcome.LINK_UNKNOWN),
        ("session=" + "A" * 513, 400, Outcome.BAD_REQUEST),
        ("session=a&session=b", 400, Outcome.BAD_REQUEST),
        ("go=2", 400, Outcome.BAD_REQUEST),
    ],
)
def test_connect_refusals(h, query, status, outcome):
    result = h.get(query)
    assert result.outcome == outcome
    assert result.status == status
    assert f"<h1>{html.escape(COPY[outcome].en.title)}</h1>" in result.body
    assert "<script>" not in result.body
    assert result.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert h.scan() == []


def test_expired_link_is_gone(h):
    session = h.link()
    h.clock.now += 1801
    result = h.get(f"session={session}")
    assert (result.status, result.outcome) == (410, "link_expired")
    assert "This connect link has expired" in result.body


def test_used_link_is_gone_after_a_connection_was_stored(h):
    session = h.link()
    location, cookie = h.start(session)
    assert h.callback(h.authorize(location), cookie).status == 200
    result = h.get(f"session={session}")
    assert (result.status, result.outcome) == (410, "link_used")
    assert "already used" in result.body


def test_reconnect_without_a_link_explains_where_to_reconnect(h):
    result = h.get("realmId=123", reconnect=True)
    assert result.outcome == Outcome.RECONNECT_INFO
    assert result.status == 200
    assert "Reconnect QuickBooks from the app you came from" in result.body
    assert h.scan() == []


def test_reconnect_with_a_link_is_the_connect_page(h):
    result = h.get(f"session={h.link()}", reconnect=True)
    assert result.status == 200
    assert "Reconnect to QuickBooks</button>" in result.body


def test_open_mode_connects_the_default_tenant_without_a_link(aws, sim):
    h = Harness(aws, sim, connect_mode="open")
    landing = h.get("")
    assert landing.status == 200 and "Connect to QuickBooks" in landing.body
    assert h.get("", reconnect=True).status == 200
    location, cookie = h.start(None)
    assert "." not in cookie.split("=", 1)[1]
    result = h.callback(h.authorize(location), cookie)
    assert result.status == 200
    assert h.vault.connections.get_connection(REALM).tenant_id == OPEN_MODE_TENANT


# ----- GET /callback: success -------------------------------------------------------------------


def test_happy_path_stores_encrypted_tokens_and_shows_success(h):
    session = h.link()
    location, cookie = h.start(session)
    callback_query = h.authorize(location)
    result = h.callback(callback_query, cookie)
    # Then the success page names the company and clears the cookie
    assert result.status == 200, result.body
    assert "Sandbox Company_US_1" in result.body and "is connected" in result.body
    (cleared,) = result.cookies
    assert cleared.name == COOKIE_NAME and "Max-Age=0" in str(cleared)
    # and the connection is stored with tenant, realm, scopes, expiries and company name
    conn = h.vault.connections.get_connection(REALM)
    assert conn.tenant_id == "tenant-a"
    assert conn.environment == "sandbox"
    assert set(conn.scopes) == set(h.settings.scopes)
    assert conn.company_name == "Sandbox Company_US_1"
    assert conn.connected_at and conn.version == 1 and conn.status == "active"
    assert conn.access_expires_at > time.time() + 3000
    assert conn.refresh_expires_at > time.time() + 86400
    assert conn.refresh_hard_expires_at and conn.refresh_hard_expires_at > time.time() + 86400
    assert conn.due_at is not None
    # with no plaintext token anywhere in the table
    access = h.vault.get_token(REALM, 0).access_token
    dumped = dump(h.scan())
    code = q(callback_query)["code"]
    for secret in (access, code, q(callback_query)["state"], session):
        assert secret not in dumped
    # one event, and the link is used
    assert h.events.of("connection.created") == [
        {
            "realm_id": REALM,
            "tenant_id": "tenant-a",
            "environment": "sandbox",
            "scopes": sorted(h.settings.scopes),
        }
    ]
    link_item = next(i for i in h.scan() if i["sk"] == "LINK")
    assert "used_at" in link_item
    assert h.sim.counters()["token.authorization_code"] == 1


def test_return_url_gets_the_realm_and_status(h):
    result = h.connect(return_url=APP + "done?tab=1")
    assert result.status == 302
    target = result.headers["Location"]
    assert target.startswith(APP + "done?")
    result_query = q(urlsplit(target).query)
    assert {k: result_query[k] for k in ("tab", "realm_id", "tenant_id", "status")} == {
        "tab": "1",
        "realm_id": REALM,
        "tenant_id": "tenant-a",
        "status": "connected",
    }
    assert result.headers["Referrer-Policy"] == "no-referrer"
    second = h.connect(return_url=APP + "done")
    assert q(urlsplit(second.headers["Location"]).query)["status"] == "reconnected"


def test_reconnect_by_the_same_tenant_updates_in_place(h):
    assert h.connect().status == 200
    before = h.vault.connections.get_connection(REALM)
    result = h.connect(scopes=["com.intuit.quickbooks.payment"])
    assert result.status == 200 and "is reconnected" in result.body
    after = h.vault.connections.get_connection(REALM)
    assert after.version == before.version + 1
    assert after.connected_at == before.connected_at
    assert after.refresh_token_enc != before.refresh_token_enc
    assert "com.intuit.quickbooks.payment" in after.scopes
    assert len(h.events.of("connection.reconnected")) == 1


def test_realm_of_another_tenant_is_refused_and_nothing_changes(h):
    assert h.connect("tenant-a").status == 200
    before = h.scan()
    session = h.link("tenant-b")
    location, cookie = h.start(session)
    result = h.callback(h.authorize(location), cookie)
    assert result.status == 403
    assert "connected to another account" in result.body
    conn = h.vault.connections.get_connection(REALM)
    assert conn.tenant_id == "tenant-a" and conn.version == 1
    assert [i for i in h.scan() if i["sk"] == "CONNECTION"] == [
        i for i in before if i["sk"] == "CONNECTION"
    ]
    assert h.events.of("connection.reconnected") == []
    # The fresh tokens are dropped, not revoked: tenant-a's grant stays alive.
    assert h.sim.counters()["revoke"] == 0
    assert not any(g["revoked"] for g in h.sim.grants())
    # and tenant-b's link was not used up
    assert h.get(f"session={session}").status == 200


def test_company_name_falls_back_to_userinfo(h):
    h.sim.set_faults(status_5xx=5, endpoints=["companyinfo"])
    assert h.connect().status == 200
    assert h.vault.connections.get_connection(REALM).company_name == "Sim User"


def test_company_name_failures_never_lose_the_tokens(h):
    h.sim.set_faults(status_5xx=5, endpoints=["companyinfo", "userinfo"])
    result = h.connect()
    assert result.status == 200 and "(ID 9130357766042906)" in result.body
    assert h.vault.connections.get_connection(REALM).company_name is None


def test_company_name_is_escaped(h):
    h.sim.configure(company_name="<script>alert(1)</script> & Co")
    result = h.connect()
    assert "<script>alert" not in result.body
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in result.body


# ----- GET /callback: refusals before Intuit ----------------------------------------------------


def intuit_calls(sim) -> int:
    return sim.counters()["token"]


@pytest.mark.parametrize(
    "query",
    [
        "code=abc",
        "state=abc",
        "code=abc&state=" + "s" * 513,
        "code=" + "c" * 513 + "&state=abc",
        "code=a&code=b&state=abc",
        "code=a&state=abc&state=abd",
        "code=a&state=abc&realmId=12ab",
    ],
)
def test_bad_callback_parameters_are_400(h, query):
    result = h.callback(query, f"{COOKIE_NAME}=x")
    assert result.outcome == Outcome.BAD_REQUEST
    assert result.status == 400
    assert "This request is not valid" in result.body
    assert intuit_calls(h.sim) == 0


def test_unknown_state_is_400(h):
    result = h.callback("code=abc&state=" + "S" * 43 + "&realmId=1", f"{COOKIE_NAME}=x")
    assert (result.status, result.outcome) == (400, "state_unknown")
    assert "not recognised" in result.body


def test_replayed_state_is_410_and_exchanges_nothing(h):
    location, cookie = h.start(h.link())
    query = h.authorize(location)
    assert h.callback(query, cookie).status == 200
    before = h.scan()
    result = h.callback(query, cookie)
    assert (result.status, result.outcome) == (410, "state_used")
    assert "already used" in result.body
    assert h.sim.counters()["token.authorization_code"] == 1
    assert h.scan() == before


def test_expired_state_is_410(h):
    location, cookie = h.start(h.link())
    query = h.authorize(location)
    h.clock.now += 601
    result = h.callback(query, cookie)
    assert (result.status, result.outcome) == (410, "state_expired")
    assert intuit_calls(h.sim) == 0
    assert h.vault.connections.get_connection(REALM) is None


@pytest.mark.parametrize(
    "cookie",
    [
        None,
        f"{COOKIE_NAME}=",
        f"{COOKIE_NAME}=wrong-nonce",
        "other=1",
    ],
)
def test_missing_or_wrong_cookie_is_403_and_does_not_burn_the_state(h, cookie):
    location, good = h.start(h.link())
    query = h.authorize(location)
    result = h.callback(query, cookie)
    assert result.status == 403
    assert "cannot be verified" in result.body
    assert intuit_calls(h.sim) == 0
    assert h.vault.connections.get_connection(REALM) is None
    # The right browser can still finish: the refused request did not consume the state.
    assert h.callback(query, good).status == 200


def test_cookie_with_the_right_nonce_but_another_link_is_403(h):
    location, good = h.start(h.link())
    nonce = good.split("=", 1)[1].split(".")[0]
    other = h.link()
    result = h.callback(h.authorize(location), f"{COOKIE_NAME}={nonce}.{other}")
    assert result.status == 403


def callback_with_realm(h: Harness, realm_param: str) -> pages.HttpResult:
    """The user consents; Intuit's redirect carries ``realm_param`` as its realm (or none)."""
    location, cookie = h.start(h.link())
    params = q(h.authorize(location))
    return h.callback(f"code={params['code']}&state={params['state']}{realm_param}", cookie)


def test_realm_is_required_with_the_accounting_scope(h):
    result = callback_with_realm(h, "")
    assert (result.status, result.outcome) == (400, "realm_missing")
    assert intuit_calls(h.sim) == 0


def test_realm_must_match_the_id_token_else_the_tokens_are_revoked(h):
    result = callback_with_realm(h, "&realmId=123")
    assert (result.status, result.outcome) == (403, "realm_not_proven")
    assert "Nothing was saved" in result.body
    assert h.vault.connections.get_connection("123") is None
    assert h.vault.connections.get_connection(REALM) is None
    assert [g["revoked"] for g in h.sim.grants()] == [True]


# ----- GET /callback: Intuit said no or failed --------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "text"),
    [
        ("access_denied", 200, "Connection cancelled"),
        ("invalid_scope", 400, "refused the requested permissions"),
        ("server_error", 502, "could not complete the connection"),
    ],
)
def test_intuit_errors_give_a_friendly_page_with_try_again(h, error, status, text):
    session = h.link()
    location, cookie = h.start(session)
    state = q(urlsplit(location).query)["state"]
    result = h.callback(f"error={error}&error_description=x&state={state}", cookie)
    assert result.status == status
    assert text in result.body and "Nothing was saved" in result.body
    assert f'href="connect?session={session}"' in result.body
    assert "Try again" in result.body
    assert intuit_calls(h.sim) == 0
    assert h.vault.connections.get_connection(REALM) is None
    # The state is spent; trying again works.
    assert h.callback(f"error={error}&state={state}", cookie).status == 410
    assert h.get(f"session={session}").status == 200


def test_exchange_outage_is_503_nothing_stored_and_not_retried(h):
    h.sim.set_faults(status_5xx=1, endpoints=["token.authorization_code"])
    result = h.connect()
    assert (result.status, result.outcome) == (503, "exchange_unavailable")
    assert "QuickBooks is not responding" in result.body and "Nothing was saved" in result.body
    assert h.sim.counters()["token.authorization_code"] == 1
    assert [i["sk"] for i in h.scan() if i["sk"] == "CONNECTION"] == []
    assert h.events.published == []


def test_exchange_invalid_grant_is_502(h):
    h.sim.set_faults(invalid_grant=1, endpoints=["token.authorization_code"])
    result = h.connect()
    assert (result.status, result.outcome) == (502, "exchange_refused")
    assert h.vault.connections.get_connection(REALM) is None


def test_nothing_secret_is_logged(h, caplog, capsys):
    # Everything the service logs (its own loggers at DEBUG, libraries at INFO: urllib3's
    # DEBUG lines are the test's own requests to the simulator, whose URLs carry the state).
    caplog.set_level("INFO")
    caplog.set_level("DEBUG", logger="qbo-connect")
    session = h.link()
    location, cookie = h.start(session)
    query = h.authorize(location)
    assert h.callback(query, cookie).status == 200
    h.callback(query, cookie)  # a replay, logged as refused
    access = h.vault.get_token(REALM, 0).access_token
    logs = caplog.text + capsys.readouterr().out
    assert "connection stored" in logs or "callback refused" in logs
    params = q(query)
    for secret in (session, params["code"], params["state"], access, cookie.split("=", 1)[1]):
        assert secret not in logs


# ----- the handlers with the sample events (events/*.json) --------------------------------------


@pytest.fixture
def handlers(aws, sim, monkeypatch):
    """Both HTTP handlers loaded by file path, with settings from env vars (as in Lambda)."""
    import importlib.util
    from pathlib import Path

    from qbo_connect import wiring

    root = Path(__file__).resolve().parents[2]
    env = {
        "TABLE_NAME": aws["table_name"],
        "TOKEN_KEY_ID": aws["key_id"],
        "INTUIT_CLIENT_SECRET_ID": aws["secret_id"],
        "PUBLIC_BASE_URL": BASE,
        "POWERTOOLS_TRACE_DISABLED": "true",
        **sim.endpoints,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    reset = wiring.reset
    reset()
    modules = {}
    for name in ("connect", "callback"):
        spec = importlib.util.spec_from_file_location(
            f"test_{name}_app", root / "functions" / name / "app.py"
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[name] = module
    yield modules, root / "events"
    reset()


class Context:
    function_name = "test"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test"
    aws_request_id = "req-1"


@pytest.mark.parametrize(
    ("handler", "event", "status", "text"),
    [
        ("connect", "connect.json", 404, "This connect link is not valid"),
        ("connect", "reconnect.json", 200, "Reconnect QuickBooks from"),
        ("connect", "disconnected.json", 200, "QuickBooks est déconnecté"),
        ("callback", "callback.json", 400, "This sign-in attempt is not recognised"),
        ("callback", "callback_denied.json", 400, "This sign-in attempt is not recognised"),
    ],
)
def test_sample_events_get_deliberate_pages(handlers, handler, event, status, text):
    modules, events_dir = handlers
    payload = json.loads((events_dir / event).read_text())
    result = modules[handler].lambda_handler(payload, Context())
    assert result["statusCode"] == status
    assert text in result["body"]
    assert result["headers"]["Content-Type"] == "text/html; charset=utf-8"
    assert result["headers"]["Referrer-Policy"] == "no-referrer"


def test_handlers_run_the_whole_flow_and_answer_unknown_paths(handlers, sim):
    modules, events_dir = handlers
    from qbo_connect.wiring import operations

    session = parse_qs(
        urlsplit(operations.connect_links().create_link({"tenant_id": "t-h"})["url"]).query
    )["session"][0]
    event = json.loads((events_dir / "connect.json").read_text())
    event["rawQueryString"] = f"session={session}&go=1"
    redirect = modules["connect"].lambda_handler(event, Context())
    assert redirect["statusCode"] == 302
    (cookie,) = redirect["cookies"]
    assert cookie.startswith(COOKIE_NAME + "=") and "HttpOnly; Secure; SameSite=Lax" in cookie
    query = approve(redirect["headers"]["Location"])
    event = json.loads((events_dir / "callback.json").read_text())
    event["rawQueryString"] = query
    event["cookies"] = [cookie.split(";", 1)[0]]
    done = modules["callback"].lambda_handler(event, Context())
    assert done["statusCode"] == 200 and "is connected" in done["body"]
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/elsewhere"
    assert modules["callback"].lambda_handler(event, Context())["statusCode"] == 404
