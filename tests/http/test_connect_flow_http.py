"""The hosted connect flow over HTTP, against the local stack and its Intuit simulator.

One ``python -m devstack`` subprocess serves most tests (schedules off, so nothing but the
flow writes to the table); a second one runs with 2-second link and state lifetimes for the
expiry cases. The simulator is driven through its ``/_sim/`` admin API. Every bad case asserts
the status, the page text, and that the table is unchanged (apart from the spent state where
the flow legitimately spends it).

``requests`` never sends a ``Secure`` cookie over http://, so the state cookie is copied from
``Set-Cookie`` into a ``Cookie`` header by hand, as a browser on the loopback would send it
(tests/browser proves Chromium does).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from devstack.process import DevstackProcess
from tests.helpers.stack import module_stack

COOKIE = "__Host-qbo_connect_state"
APP_PREFIX = "http://127.0.0.1:9/app/"
TIMEOUT = 10
#: Every code, state, link token, nonce and access token the tests saw (checked last).
SEEN_SECRETS: list[str] = []

pytestmark = pytest.mark.timeout(120)


# ----- fixtures and helpers ---------------------------------------------------------------------


stack = module_stack(
    "connect-http",
    parameter_overrides={"AllowedReturnUrls": APP_PREFIX},
    extra_args=["--no-schedule"],
)


short_stack = module_stack(
    "connect-http-short",
    name="short_stack",
    env={"STATE_TTL_SECONDS": "2", "CONNECT_LINK_TTL_SECONDS": "2"},
    extra_args=["--no-schedule", "--auto-approve"],
)


class Browser:
    """What a browser does in the flow, with requests and a hand-carried state cookie."""

    realms = iter(range(4620816365000000000, 4620816365000001000))

    def __init__(self, stack: DevstackProcess) -> None:
        self.stack = stack
        self.http = requests.Session()
        self.sim("POST", "/_sim/config", {"auto_approve": True})
        self.sim("DELETE", "/_sim/faults")
        self.realm = str(next(self.realms))
        self.sim("POST", "/_sim/config", {"next_realm_id": self.realm})

    def sim(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, self.stack.intuit + path, json=body, timeout=TIMEOUT)
        response.raise_for_status()
        return response.json()

    def link(self, tenant_id: str = "tenant-a", **extra: Any) -> str:
        result = self.stack.invoke(
            "ConnectionsFunction",
            {"action": "create_connect_link", "tenant_id": tenant_id, **extra},
        )
        assert "url" in result, result
        assert result["url"].startswith(self.stack.api + "/connect?session=")
        session = parse_qs(urlsplit(result["url"]).query)["session"][0]
        SEEN_SECRETS.append(session)
        return session

    def get(self, url: str, cookie: str | None = None) -> requests.Response:
        headers = {"Cookie": cookie} if cookie else {}
        return self.http.get(url, headers=headers, allow_redirects=False, timeout=TIMEOUT)

    def start(self, session: str | None) -> tuple[str, str]:
        """Land, then click "Connect to QuickBooks": (Intuit authorize URL, Cookie header)."""
        query = f"?session={session}" if session else ""
        landing = self.get(f"{self.stack.api}/connect{query}")
        assert landing.status_code == 200, landing.text
        assert "Connect to QuickBooks</button>" in landing.text
        sep = "&" if session else "?"
        response = self.get(f"{self.stack.api}/connect{query}{sep}go=1")
        assert response.status_code == 302, response.text
        set_cookie = response.headers["Set-Cookie"]
        cookie = set_cookie.split(";", 1)[0]
        assert cookie.startswith(COOKIE + "=")
        location = response.headers["Location"]
        SEEN_SECRETS.extend([cookie.split("=", 1)[1], q(location)["state"]])
        return location, cookie

    def approve(self, location: str) -> str:
        """The simulator approves (auto-approve): the callback URL it redirects to."""
        response = self.get(location)
        assert response.status_code == 302, response.text
        callback = response.headers["Location"]
        assert callback.startswith(self.stack.api + "/callback?")
        SEEN_SECRETS.extend(v for k, v in q(callback).items() if k in ("code", "state"))
        return callback

    def consent(self, location: str, decision: str) -> str:
        """Answer the simulator's consent form; the callback URL it redirects to."""
        self.sim("POST", "/_sim/config", {"auto_approve": False})
        page = self.get(location)
        assert page.status_code == 200 and "id=approve" in page.text, page.text
        txn = re.search(r'name=txn value="([^"]+)"', page.text)
        assert txn, page.text
        response = self.http.post(
            location.split("?", 1)[0],
            data={"txn": txn.group(1), "decision": decision, "realm_id": self.realm},
            allow_redirects=False,
            timeout=TIMEOUT,
        )
        assert response.status_code == 302, response.text
        callback = response.headers["Location"]
        SEEN_SECRETS.extend(v for k, v in q(callback).items() if k in ("code", "state"))
        return callback

    def connect(self, tenant_id: str = "tenant-a", **extra: Any) -> requests.Response:
        location, cookie = self.start(self.link(tenant_id, **extra))
        return self.get(self.approve(location), cookie)

    def scan(self) -> list[dict[str, Any]]:
        client = self.stack.boto3_client("dynamodb")
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.stack.endpoints["table"],
            "ConsistentRead": True,
        }
        while True:
            page = client.scan(**kwargs)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        # Usage counts of earlier calls are flushed by whichever invocation comes next (the
        # meter's buffer), so they are no part of what a request changed.
        kept = [i for i in items if not i["pk"]["S"].startswith("USAGE#")]
        return sorted(kept, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))

    def connection(self, realm: str | None = None) -> dict[str, Any] | None:
        key = f"REALM#{realm or self.realm}"
        return next(
            (i for i in self.scan() if i["pk"]["S"] == key and i["sk"]["S"] == "CONNECTION"),
            None,
        )

    def counters(self) -> dict[str, int]:
        return self.sim("GET", "/_sim/counters")

    def access_token(self, realm: str | None = None) -> str:
        result = self.stack.invoke("GetTokenFunction", {"realm_id": realm or self.realm})
        assert "access_token" in result, result
        SEEN_SECRETS.append(result["access_token"])
        return str(result["access_token"])


def q(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def state_key(callback_url: str) -> str:
    return "STATE#" + hashlib.sha256(q(callback_url)["state"].encode()).hexdigest()


def assert_unchanged(
    before: list[dict[str, Any]], after: list[dict[str, Any]], spent_state: str | None = None
) -> None:
    """The table is as it was; ``spent_state`` (a pk) may only have gained ``used_at``."""
    if spent_state is not None:
        after = [
            {k: v for k, v in i.items() if k != "used_at"} if i["pk"]["S"] == spent_state else i
            for i in after
        ]
        spent = [i for i in before if i["pk"]["S"] == spent_state]
        assert spent and "used_at" not in spent[0]
    assert after == before


def assert_page(response: requests.Response, status: int, *texts: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "Traceback" not in response.text
    for text in texts:
        assert text in response.text


@pytest.fixture
def browser(stack) -> Browser:
    return Browser(stack)


# ----- the good paths ---------------------------------------------------------------------------


def test_happy_path_stores_an_encrypted_connection(browser, stack):
    # Given a connect link for tenant-a
    session = browser.link("tenant-a")
    # When the user lands, clicks Connect, approves at Intuit and comes back
    location, cookie = browser.start(session)
    authorize = q(location)
    assert location.startswith(stack.intuit_env["INTUIT_AUTHORIZATION_ENDPOINT"] + "?")
    assert authorize["response_type"] == "code"
    assert authorize["redirect_uri"] == stack.api + "/callback"
    assert authorize["client_id"] and authorize["scope"].split()[0] == (
        "com.intuit.quickbooks.accounting"
    )
    callback = browser.approve(location)
    company = "Rivera Bikes & Co"
    browser.sim(
        "POST", "/_sim/api/company-name", {"realm_id": q(callback)["realmId"], "name": company}
    )
    response = browser.get(callback, cookie)
    # Then the success page shows the company's name (escaped), the cookie is cleared, the
    # connection is stored
    assert_page(response, 200, "QuickBooks connected", "Rivera Bikes &amp; Co", "is connected")
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    item = browser.connection()
    assert item is not None
    assert item["tenant_id"]["S"] == "tenant-a"
    # and its change feed starts now, on the reconciliation schedule (nothing older replayed)
    feed = next(
        i
        for i in browser.scan()
        if i["pk"]["S"] == f"REALM#{browser.realm}" and i["sk"]["S"] == "CHANGES"
    )
    assert feed["feed_tenant"]["S"] == "tenant-a" and feed["due_shard"]["S"].startswith("CHANGES#")
    assert abs(float(feed["watermark"]["N"]) - time.time()) < 120
    assert item["environment"]["S"] == "sandbox"
    assert item["status"]["S"] == "active"
    assert item["company_name"]["S"] == company
    assert "connected_at" in item and "refresh_hard_expires_at" in item
    assert {s["S"] for s in item["scopes"]["L"]} == set(authorize["scope"].split())
    # with no plaintext token in any attribute, and a token GetToken can hand out
    access = browser.access_token()
    assert access not in json.dumps(browser.scan(), default=str)
    assert "B" in item["access_token_enc"] and "B" in item["refresh_token_enc"]
    assert browser.counters()["token.authorization_code"] >= 1


def test_connection_created_event_goes_out(browser, stack):
    sqs = stack.boto3_client("sqs")
    queue = stack.endpoints["events_queue"]
    sqs.purge_queue(QueueUrl=queue)
    assert browser.connect("tenant-events").status_code == 200
    details = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not details:
        for message in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", []):
            body = json.loads(message["Body"])
            if body.get("detail-type") == "connection.created":
                details.append(body["detail"])
    assert any(
        d["realm_id"] == browser.realm
        and d["tenant_id"] == "tenant-events"
        and d["environment"] == "sandbox"
        for d in details
    ), details


def test_return_url_gets_realm_and_status(browser):
    response = browser.connect("tenant-a", return_url=APP_PREFIX + "done?tab=qbo")
    assert response.status_code == 302
    assert response.headers["Referrer-Policy"] == "no-referrer"
    target = response.headers["Location"]
    assert target.startswith(APP_PREFIX + "done?")
    result = q(target)
    assert {k: result[k] for k in ("tab", "realm_id", "tenant_id", "status")} == {
        "tab": "qbo",
        "realm_id": browser.realm,
        "tenant_id": "tenant-a",
        "status": "connected",
    }
    assert set(result) == {"tab", "realm_id", "tenant_id", "status", "link_id", "ts", "sig"}


def test_reconnect_by_the_same_tenant_updates_in_place(browser):
    assert browser.connect("tenant-a").status_code == 200
    first = browser.connection()
    response = browser.connect("tenant-a", return_url=APP_PREFIX + "done")
    assert q(response.headers["Location"])["status"] == "reconnected"
    second = browser.connection()
    assert float(second["version"]["N"]) == float(first["version"]["N"]) + 1
    assert second["connected_at"] == first["connected_at"]
    assert second["refresh_token_enc"] != first["refresh_token_enc"]
    assert "reconnected_at" in second


def test_reconnect_url_without_a_link_explains_what_to_do(browser):
    before = browser.scan()
    response = browser.get(f"{browser.stack.api}/reconnect?realmId={browser.realm}")
    assert_page(response, 200, "Reconnect QuickBooks from the app you came from")
    assert_unchanged(before, browser.scan())
    with_link = browser.get(f"{browser.stack.api}/reconnect?session={browser.link()}")
    assert_page(with_link, 200, "Reconnect to QuickBooks</button>")


# ----- refusals ---------------------------------------------------------------------------------


def test_realm_held_by_another_tenant_is_refused_and_nothing_is_stored(browser):
    assert browser.connect("tenant-a").status_code == 200
    location, cookie = browser.start(browser.link("tenant-b"))
    callback = browser.approve(location)
    before = browser.scan()
    response = browser.get(callback, cookie)
    assert_page(response, 403, "connected to another account", "Nothing was saved")
    assert_unchanged(before, browser.scan(), spent_state=state_key(callback))
    assert browser.connection()["tenant_id"]["S"] == "tenant-a"
    # tokens dropped, not revoked: tenant-a's grant is alive
    assert browser.counters()["revoke"] == 0
    browser.access_token()


def test_denial_gives_a_friendly_page_with_try_again(browser):
    session = browser.link("tenant-a")
    location, cookie = browser.start(session)
    callback = browser.consent(location, "deny")
    assert q(callback)["error"] == "access_denied"
    before = browser.scan()
    response = browser.get(callback, cookie)
    assert_page(response, 200, "Connection cancelled", "Nothing was saved", "Try again")
    assert f'href="connect?session={session}"' in response.text
    assert_unchanged(before, browser.scan(), spent_state=state_key(callback))
    assert browser.connection() is None
    # Try again works: the link is still valid.
    assert browser.get(f"{browser.stack.api}/connect?session={session}").status_code == 200


def test_consent_approved_through_the_form(browser):
    location, cookie = browser.start(browser.link("tenant-a"))
    response = browser.get(browser.consent(location, "approve"), cookie)
    assert_page(response, 200, "is connected")
    assert browser.connection() is not None


def test_replayed_state_is_refused_before_intuit(browser):
    location, cookie = browser.start(browser.link())
    callback = browser.approve(location)
    assert browser.get(callback, cookie).status_code == 200
    before, calls = browser.scan(), browser.counters()["token"]
    response = browser.get(callback, cookie)
    assert_page(response, 410, "This sign-in attempt was already used")
    assert_unchanged(before, browser.scan())
    assert browser.counters()["token"] == calls


@pytest.mark.parametrize(
    "cookie",
    [None, f"{COOKIE}=not-the-nonce", f"{COOKIE}=", "unrelated=1"],
    ids=["missing", "wrong", "empty", "other-cookie"],
)
def test_wrong_or_missing_cookie_is_refused_before_intuit(browser, cookie):
    location, good = browser.start(browser.link())
    callback = browser.approve(location)
    before, calls = browser.scan(), browser.counters()["token"]
    response = browser.get(callback, cookie)
    assert_page(response, 403, "This sign-in attempt cannot be verified")
    assert_unchanged(before, browser.scan())
    assert browser.counters()["token"] == calls
    # The refused request did not burn the state: the right browser still finishes.
    assert browser.get(callback, good).status_code == 200


@pytest.mark.parametrize(
    ("path", "query", "text"),
    [
        ("/callback", "code=abc&realmId=1", "“state” is missing"),
        ("/callback", "state=abc&realmId=1", "“code” is missing"),
        ("/callback", "code=abc&state=" + "s" * 600, "“state” is too long"),
        ("/callback", "code=" + "c" * 600 + "&state=abc", "“code” is too long"),
        ("/callback", "code=a&state=b&realmId=12x", "“realmId” is not valid"),
        ("/callback", "code=a&code=b&state=abc", "“code” was given more than once"),
        ("/callback", "code=a&state=x&state=y", "“state” was given more than once"),
        ("/connect", "session=a&session=b", "“session” was given more than once"),
        ("/connect", "session=" + "s" * 600, "“session” is too long"),
        ("/connect", "", "A connect link is needed"),
    ],
)
def test_bad_parameters_are_400(browser, path, query, text):
    before, calls = browser.scan(), browser.counters()["token"]
    response = browser.get(f"{browser.stack.api}{path}?{query}", f"{COOKIE}=x")
    assert_page(response, 400, text)
    assert_unchanged(before, browser.scan())
    assert browser.counters()["token"] == calls


def test_callback_with_duplicated_real_state_is_400(browser):
    location, cookie = browser.start(browser.link())
    callback = browser.approve(location)
    before = browser.scan()
    response = browser.get(callback + "&state=" + q(callback)["state"], cookie)
    assert_page(response, 400, "“state” was given more than once")
    assert_unchanged(before, browser.scan())
    assert browser.get(callback, cookie).status_code == 200


def test_unknown_and_used_links(browser):
    before = browser.scan()
    unknown = browser.get(f"{browser.stack.api}/connect?session={'A' * 43}")
    assert_page(unknown, 404, "This connect link is not valid")
    assert_unchanged(before, browser.scan())
    session = browser.link()
    location, cookie = browser.start(session)
    assert browser.get(browser.approve(location), cookie).status_code == 200
    before = browser.scan()
    used = browser.get(f"{browser.stack.api}/connect?session={session}")
    assert_page(used, 410, "This connect link was already used")
    assert_unchanged(before, browser.scan())


def test_return_url_not_allowed_is_refused_and_nothing_is_stored(browser):
    before = browser.scan()
    for url in (
        "https://evil.test/app/",
        "http://127.0.0.1:9/other/",
        "http://u:p@127.0.0.1:9/app/",
    ):
        result = browser.stack.invoke(
            "ConnectionsFunction",
            {"action": "create_connect_link", "tenant_id": "tenant-a", "return_url": url},
        )
        assert result["error"]["code"] == "invalid_request"
        assert "return_url is not allowed" in result["error"]["message"]
    assert_unchanged(before, browser.scan())


def test_intuit_failing_during_the_exchange(browser):
    browser.sim(
        "POST", "/_sim/faults", {"status_5xx": 1, "endpoints": ["token.authorization_code"]}
    )
    session = browser.link()
    location, cookie = browser.start(session)
    callback = browser.approve(location)
    before, calls = browser.scan(), browser.counters()["token.authorization_code"]
    response = browser.get(callback, cookie)
    assert_page(response, 503, "QuickBooks is not responding", "Nothing was saved", "Try again")
    assert_unchanged(before, browser.scan(), spent_state=state_key(callback))
    assert browser.connection() is None
    assert browser.counters()["token.authorization_code"] == calls + 1  # exchanged once
    # and the user can try again with the same link
    location, cookie = browser.start(session)
    assert browser.get(browser.approve(location), cookie).status_code == 200


# ----- expiry (2-second link and state lifetimes) -----------------------------------------------


def test_expired_state_is_refused_before_intuit(short_stack):
    browser = Browser(short_stack)
    location, cookie = browser.start(browser.link())
    callback = browser.approve(location)
    time.sleep(2.2)
    before, calls = browser.scan(), browser.counters()["token"]
    response = browser.get(callback, cookie)
    assert_page(response, 410, "This sign-in attempt has expired")
    assert_unchanged(before, browser.scan())
    assert browser.counters()["token"] == calls


def test_expired_link_is_gone(short_stack):
    browser = Browser(short_stack)
    session = browser.link()
    time.sleep(2.2)
    before = browser.scan()
    for url in (f"/connect?session={session}", f"/connect?session={session}&go=1"):
        response = browser.get(short_stack.api + url)
        assert_page(response, 410, "This connect link has expired")
    assert_unchanged(before, browser.scan())


# ----- logs -------------------------------------------------------------------------------------


SIM_SECRET = re.compile(r"AB11-sim-|RT1-sim-|sim-at-|eyJ[A-Za-z0-9_-]+\.eyJ")


def test_logs_hold_no_token_code_state_or_link(stack, short_stack, caplog):
    """Runs last in this module: everything above went through these two stacks."""
    assert SEEN_SECRETS, "run with the rest of the module"
    for process in (stack, short_stack):
        text = process.log_text()
        assert "connection stored" in text or process is short_stack
        leaked = [s for s in SEEN_SECRETS if s and s in text]
        assert not leaked, f"{len(leaked)} secret value(s) in the devstack log"
        # Whatever the simulator issued, even what the tests never saw (refresh tokens,
        # id_tokens), has a recognisable shape.
        assert not SIM_SECRET.search(text)
    assert not any(s in caplog.text for s in SEEN_SECRETS if s)
