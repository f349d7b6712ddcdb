"""Tenant isolation, finding by finding (moto in-process, the Intuit simulator over HTTP).

Each test attacks one way a tenant could reach a company that is not theirs, or a way the
connect flow could be abused, and checks that nothing is stored and nothing leaks.
"""

from __future__ import annotations

import ast
import io
import re
import threading
import time
from logging import StreamHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from qbo_connect import validation
from qbo_connect.connect.outcomes import Outcome
from qbo_connect.connect.request import Request
from qbo_connect.connect.return_url import return_url_allowed
from qbo_connect.contracts import GetTokenRequest
from qbo_connect.errors import DecryptionError, InvalidRequest, NotConnected
from qbo_connect.vault.records import REFRESH_FIELD
from tests.helpers.store import connections_service
from tests.unit.builders import connect
from tests.unit.test_connect_flow import RETURN_KEY, Harness, q

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNTING = "com.intuit.quickbooks.accounting"
REALM_A = "4620816365100000001"
REALM_B = "4620816365100000002"


@pytest.fixture
def h(aws, sim) -> Harness:
    return Harness(aws, sim)


def connections_items(h: Harness) -> list[dict[str, Any]]:
    return [i for i in h.scan() if i["sk"] == "CONNECTION"]


def callback_query(h: Harness, session: str, realm: str) -> tuple[str, str]:
    """Land, click, approve ``realm`` at Intuit: (callback query, cookie)."""
    h.sim.configure(next_realm_id=realm)
    location, cookie = h.start(session)
    return h.authorize(location), cookie


# ----- 1. realm squatting at the callback ---------------------------------------------------------


@pytest.fixture
def accounting_only(aws, sim) -> Harness:
    """Scopes without openid: no id_token, so only CompanyInfo can prove the realm."""
    return Harness(aws, sim, scopes=(ACCOUNTING,))


def test_edited_realm_id_without_openid_stores_nothing_and_revokes(accounting_only):
    h = accounting_only
    # Given a user who approved their own company A at Intuit
    query, cookie = callback_query(h, h.link("tenant-attacker"), REALM_A)
    assert q(query)["realmId"] == REALM_A
    # When they edit realmId to another company's id before coming back
    edited = query.replace(f"realmId={REALM_A}", f"realmId={REALM_B}")
    result = h.callback(edited, cookie)
    # Then the connection is refused, nothing is stored, and the grant is revoked at Intuit
    assert (result.status, result.outcome) == (403, "realm_not_proven")
    assert "Nothing was saved" in result.body
    assert connections_items(h) == []
    assert [(g["realm_id"], g["revoked"]) for g in h.sim.grants()] == [(REALM_A, True)]
    assert h.sim.counters()["revoke.ok"] == 1
    assert h.events.published == []
    # and the link is not spent: the real flow still works with it
    link_item = next(i for i in h.scan() if i["sk"] == "LINK")
    assert "used_at" not in link_item


def test_unedited_flow_without_openid_is_proven_by_companyinfo(accounting_only):
    h = accounting_only
    query, cookie = callback_query(h, h.link(), REALM_A)
    result = h.callback(query, cookie)
    assert (result.status, result.outcome) == (200, "created")
    (item,) = connections_items(h)
    assert item["realm_id"] == REALM_A and item["company_name"] == h.sim.company_name_for(REALM_A)
    assert h.sim.counters()["companyinfo"] >= 1
    assert h.sim.counters().get("revoke", 0) == 0


def test_companyinfo_unavailable_fails_closed_without_revoking(accounting_only):
    h = accounting_only
    session = h.link()
    query, cookie = callback_query(h, session, REALM_A)
    h.sim.set_faults(status_5xx=1, endpoints=["companyinfo"])
    result = h.callback(query, cookie)
    assert (result.status, result.outcome) == (503, "realm_check_unavailable")
    assert "Try again" in result.body and "Nothing was saved" in result.body
    assert connections_items(h) == []
    assert [g["revoked"] for g in h.sim.grants()] == [False]
    # and trying again with the same link works once Intuit is back
    query, cookie = callback_query(h, session, REALM_A)
    assert h.callback(query, cookie).status == 200


@pytest.mark.parametrize(
    "realm",
    ["5151%0A", "5151%0D%0A", "%205151", "5151%00", "+5151", "%D9%A5%D9%A1", "0" + REALM_A],
)
def test_realm_id_must_be_digits_and_nothing_else(h, realm):
    query, cookie = callback_query(h, h.link(), REALM_A)
    tampered = query.replace(f"realmId={REALM_A}", f"realmId={realm}")
    before = h.scan()
    result = h.callback(tampered, cookie)
    assert (result.status, result.outcome) == (400, Outcome.BAD_REQUEST)
    assert h.scan() == before
    assert h.sim.counters()["token"] == 0


def test_invoke_realm_ids_with_a_trailing_newline_are_refused(h):
    service = connections_service(h.vault)
    for payload in ({"realm_id": "5151\n"}, {"realm_id": " 5151"}, {"realm_id": "5151\r\n"}):
        with pytest.raises(Exception, match="no leading zero"):
            service.get_connection(payload)


def test_a_realm_id_has_one_spelling_so_a_padded_one_is_no_second_key(h):
    # Given a connection of realm A
    connect(h.vault, h.sim, realm_id=REALM_A, tenant_id="tenant-a")
    service = connections_service(h.vault)
    # Then a zero-padded or over-long spelling of a realm id is refused everywhere it enters,
    # so it can never become a second item (its own lease and tokens) for the same company
    for realm in ("0" + REALM_A, "00" + REALM_A, "0", "1" * 21):
        with pytest.raises(InvalidRequest, match="no leading zero"):
            service.get_connection({"realm_id": realm})
        with pytest.raises(InvalidRequest):
            GetTokenRequest.from_payload({"realm_id": realm})
        assert not validation.is_realm_id(realm)
    assert validation.is_realm_id("1" * 20) and validation.is_realm_id("1")


# ----- 2. realm squatting by import ---------------------------------------------------------------


def test_import_of_realm_a_token_as_realm_b_is_refused_revoked_and_stores_nothing(h):
    service = connections_service(h.vault)
    foreign = h.sim.issue_tokens(client_id="test-client", realm_id=REALM_A)
    h.sim.reset_counters()
    result = _invoke(
        service.import_connection,
        {"realm_id": REALM_B, "tenant_id": "tenant-b", "refresh_token": foreign["refresh_token"]},
    )
    assert result["error"]["code"] == "invalid_request"
    assert "not for realm" in result["error"]["message"]
    assert foreign["refresh_token"] not in str(result)
    assert connections_items(h) == []
    assert h.sim.counters()["companyinfo"] == 1
    assert [(g["realm_id"], g["revoked"]) for g in h.sim.grants()] == [(REALM_A, True)]
    assert h.events.published == []


def test_import_as_the_right_realm_works(h):
    service = connections_service(h.vault)
    foreign = h.sim.issue_tokens(client_id="test-client", realm_id=REALM_A)
    result = service.import_connection(
        {"realm_id": REALM_A, "tenant_id": "tenant-a", "refresh_token": foreign["refresh_token"]}
    )
    assert result["connection"]["realm_id"] == REALM_A
    assert result["connection"]["company_name"] == h.sim.company_name_for(REALM_A)
    assert [g["revoked"] for g in h.sim.grants()] == [False]
    assert h.vault.get_token(REALM_A, tenant_id="tenant-a").access_token


def test_import_fails_closed_when_companyinfo_is_unavailable(h):
    service = connections_service(h.vault)
    foreign = h.sim.issue_tokens(client_id="test-client", realm_id=REALM_A)
    h.sim.set_faults(status_5xx=1, endpoints=["companyinfo"])
    result = _invoke(
        service.import_connection,
        {"realm_id": REALM_A, "tenant_id": "tenant-a", "refresh_token": foreign["refresh_token"]},
    )
    assert result["error"]["code"] == "refresh_unavailable"
    assert connections_items(h) == []
    assert [g["revoked"] for g in h.sim.grants()] == [False]


def test_import_dry_run_stores_nothing_and_calls_nothing_at_intuit(h):
    service = connections_service(h.vault)
    connect(h.vault, h.sim, realm_id=REALM_A, tenant_id="tenant-owner")
    foreign = h.sim.issue_tokens(client_id="test-client", realm_id=REALM_B)
    h.sim.reset_counters()
    before = h.scan()

    def dry(realm: str, tenant: str) -> dict[str, Any]:
        return service.import_connection(
            {
                "realm_id": realm,
                "tenant_id": tenant,
                "refresh_token": foreign["refresh_token"],
                "dry_run": True,
            }
        )

    assert dry(REALM_B, "tenant-b") == {
        "dry_run": True,
        "realm_id": REALM_B,
        "tenant_id": "tenant-b",
        "outcome": "created",
    }
    assert dry(REALM_A, "tenant-b")["reason"] == "other_tenant"
    assert dry(REALM_A, "tenant-owner")["reason"] == "already_connected"
    assert {dry(REALM_A, t)["outcome"] for t in ("tenant-b", "tenant-owner")} == {"refused"}
    assert h.scan() == before
    assert h.sim.counters() == {} or sum(h.sim.counters().values()) == 0


# ----- 4. single use is atomic --------------------------------------------------------------------


def test_two_concurrent_callbacks_on_one_link_store_one_connection(h):
    # Given two browsers that both started a flow with the same link (different companies)
    session = h.link("tenant-a")
    first = callback_query(h, session, REALM_A)
    second = callback_query(h, session, REALM_B)
    # When both come back at the same moment (a slow exchange: both pass every early check)
    h.sim.set_faults(latency_seconds=0.3, endpoints=["token.authorization_code"])
    barrier = threading.Barrier(2)
    results: list[Any] = [None, None]

    def run(i: int, query: str, cookie: str) -> None:
        barrier.wait()
        results[i] = h.callback(query, cookie)

    threads = [
        threading.Thread(target=run, args=(i, query, cookie))
        for i, (query, cookie) in enumerate((first, second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Then exactly one connection is stored and the other browser gets a clear page
    assert len(connections_items(h)) == 1
    statuses = sorted((r.status, r.outcome) for r in results)
    assert statuses == [(200, "created"), (410, "link_used")]
    loser = next(r for r in results if r.status == 410)
    assert "This connect link was already used" in loser.body
    assert len(h.events.published) == 1


# ----- 3. go=1 needs a same-origin navigation; the landing page names who -------------------------


def _connect_with_fetch_site(h: Harness, query: str, fetch_site: str | None) -> Any:
    return h.flow.connect(Request(query, (), "api.example.test", fetch_site=fetch_site))


@pytest.mark.parametrize("fetch_site", ["cross-site", "same-site", "none"])
def test_cross_site_go_is_refused_with_the_landing_page(h, fetch_site):
    session = h.link()
    before = h.scan()
    result = _connect_with_fetch_site(h, f"session={session}&go=1", fetch_site)
    assert (result.status, result.outcome) == (403, "cross_site_refused")
    assert "connecting must be started from this page" in result.body
    assert 'id="connect"' in result.body  # the landing page's own button is offered
    assert result.cookies == [] and "Location" not in result.headers
    assert h.scan() == before


@pytest.mark.parametrize("fetch_site", ["same-origin", None])
def test_same_origin_or_headerless_go_goes_to_intuit(h, fetch_site):
    result = _connect_with_fetch_site(h, f"session={h.link()}&go=1", fetch_site)
    assert result.status == 302
    assert result.headers["Location"].startswith(h.settings.intuit.authorization)


def test_sec_fetch_site_is_read_from_the_event_headers():
    event = {"rawQueryString": "go=1", "headers": {"Sec-Fetch-Site": "Cross-Site"}}
    assert Request.from_event(APIGatewayProxyEventV2(event)).fetch_site == "cross-site"
    assert Request.from_event(APIGatewayProxyEventV2({"rawQueryString": ""})).fetch_site is None


def test_landing_page_names_the_app_and_the_tenant_escaped(aws, sim):
    h = Harness(aws, sim, app_name="Books <b>& Co")
    session = h.link(tenant_name='Acme "<script>alert(1)</script>"')
    result = h.get(f"session={session}")
    assert result.status == 200
    assert result.outcome == Outcome.LANDING
    assert "Books &lt;b&gt;&amp; Co wants to connect to your QuickBooks company" in result.body
    assert "Acme &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in result.body
    assert "<script>" not in result.body and "<b>" not in result.body


def test_tenant_name_must_be_printable_and_short(h):
    for name in ("a\nb", "x" * 101):
        with pytest.raises(Exception, match="tenant_name"):
            h.flow.create_link({"tenant_id": "t", "tenant_name": name})


# ----- 5. tenancy checked by the service; the return redirect signed ------------------------------


def test_get_token_with_another_tenants_id_answers_not_connected(h):
    connect(h.vault, h.sim, realm_id=REALM_A, tenant_id="tenant-a")
    assert h.vault.get_token(REALM_A, tenant_id="tenant-a").access_token
    with pytest.raises(NotConnected) as other:
        h.vault.get_token(REALM_A, tenant_id="tenant-b")
    with pytest.raises(NotConnected) as unknown:
        h.vault.get_token(REALM_B, tenant_id="tenant-b")
    assert other.value.message.replace(REALM_A, "R") == unknown.value.message.replace(REALM_B, "R")


def test_every_realm_action_applies_the_tenant_guard(h):
    service = connections_service(h.vault)
    connect(h.vault, h.sim, realm_id=REALM_A, tenant_id="tenant-a")
    h.sim.reset_counters()
    before = h.scan()
    for action in (service.get_connection, service.refresh, service.disconnect):
        result = _invoke(action, {"realm_id": REALM_A, "tenant_id": "tenant-b"})
        assert result["error"]["code"] == "not_connected", action
    assert h.scan() == before
    assert sum(h.sim.counters().values()) == 0  # no refresh, no revoke
    owner = {"realm_id": REALM_A, "tenant_id": "tenant-a"}
    assert service.get_connection(owner)["connection"]["tenant_id"] == "tenant-a"
    assert service.refresh(owner)["connection"]["realm_id"] == REALM_A
    assert service.disconnect(owner)["revoked"] is True


def test_disconnect_never_disconnects_a_connection_that_changed_hands(h):
    connect(h.vault, h.sim, realm_id=REALM_A, tenant_id="tenant-b")
    with pytest.raises(Exception, match="condition failed"):
        h.vault.connections.disconnect(REALM_A, now=time.time(), tenant_id="tenant-a")
    assert h.vault.connections.get_connection(REALM_A).status == "active"


def readme_snippet() -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(
        r"<!-- return-signature-snippet:start -->\n```python\n(.*?)```\n"
        r"<!-- return-signature-snippet:end -->",
        text,
        re.S,
    )
    assert block, "README lost its return-signature snippet"
    return block.group(1)


def verify_with_readme(url: str, key: str, **kwargs: Any) -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(readme_snippet(), "README.md", "exec"), namespace)
    return namespace["verify_return"](url, key, **kwargs)


def test_return_redirect_signature_verifies_with_the_readme_snippet(h):
    session = h.link(return_url="https://app.example.test/integrations/done?tab=1")
    location, cookie = h.start(session)
    result = h.callback(h.authorize(location), cookie)
    assert result.status == 302
    target = result.headers["Location"]
    verified = verify_with_readme(target, RETURN_KEY.decode())
    assert verified is not None
    assert (verified["realm_id"], verified["tenant_id"], verified["status"]) == (
        h.sim.next_realm_id,
        "tenant-a",
        "connected",
    )
    link_id = h.flow.create_link({"tenant_id": "x"})["link_id"]
    assert len(verified["link_id"]) == len(link_id) == 32
    # Tampering with any signed value, or a wrong key, or a stale time fails verification
    query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
    for name, value in (
        ("realm_id", REALM_B),
        ("tenant_id", "tenant-b"),
        ("status", "reconnected"),
        ("link_id", "0" * 32),
        ("ts", str(int(query["ts"]) + 1)),
        ("sig", "0" * 64),
    ):
        forged = target.split("?")[0] + "?" + urlencode({**query, name: value})
        assert verify_with_readme(forged, RETURN_KEY.decode()) is None, name
    assert verify_with_readme(target, "another-key-" * 4) is None
    assert verify_with_readme(target, RETURN_KEY.decode(), max_age=-1) is None


# ----- 6. return_url prefix matching on path segments ---------------------------------------------

PREFIX = "https://app.example.com/integrations"


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com/integrationsEVIL",
        "https://app.example.com/integrations/..;/x",
        "https://app.example.com/integrations/%252e%252e/x",
        "https://app.example.com/integrations//evil.com",
        "https://app.example.com/integrations/%2e%2E/x",
        "https://app.example.com/integrations/.%2e/x",
        "https://app.example.com/integrations/a%2fb",
        "https://app.example.com/integrations/a%5C..",
        "https://app.example.com/integrations/./x",
        "https://app.example.com/integrations;x=1/y",
        "https://app.example.com/integrations/x/../../admin",
        "https://app.example.com//integrations/x",
        "https://app.example.com/Integrations/x",
        # nothing outside printable ASCII reaches the Location header
        "https://app.example.com/integrations/x\x85y",  # C1 NEL
        "https://app.example.com/integrations/x\x9b31m",  # C1 CSI
        "https://app.example.com/integrations/\u202egnp.exe",  # bidi override
        "https://app.example.com/integrations/caf\u00e9",
        "https://app.example.com/integrations?next=\u2028x",
        "https://app.\u0435xample.com/integrations",  # a Cyrillic "e" in the host
        "https://app.example.com/integrations/\ud800",  # a lone surrogate
    ],
)
def test_return_url_prefix_tricks_are_refused(url):
    assert return_url_allowed(url, [PREFIX]) is False


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com/integrations",
        "https://app.example.com/integrations/",
        "https://app.example.com/integrations/quickbooks?tab=1&x=%2F",
        "https://APP.example.com/integrations/a%20b",
    ],
)
def test_return_url_under_the_prefix_is_allowed(url):
    assert return_url_allowed(url, [PREFIX]) is True


def test_create_link_refuses_the_prefix_tricks(aws, sim):
    h = Harness(aws, sim, allowed_return_urls=(PREFIX,))
    for url in ("https://app.example.com/integrationsEVIL", PREFIX + "//evil.com"):
        with pytest.raises(Exception, match="return_url is not allowed"):
            h.flow.create_link({"tenant_id": "t", "return_url": url})
    assert h.scan() == []


# ----- 7. event logging forced off in every handler -----------------------------------------------


def test_every_handler_forces_event_logging_off():
    for app in sorted((REPO_ROOT / "functions").glob("*/app.py")):
        tree = ast.parse(app.read_text(encoding="utf-8"))
        handler = next(
            n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "lambda_handler"
        )
        decorators = [
            d
            for d in handler.decorator_list
            if isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "inject_lambda_context"
        ]
        assert decorators, f"{app}: no inject_lambda_context"
        log_event = {k.arg: k.value for k in decorators[0].keywords}.get("log_event")
        assert isinstance(log_event, ast.Constant) and log_event.value is False, app


def test_import_event_is_not_logged_even_when_powertools_is_told_to(aws, sim, monkeypatch):
    from devstack.handlers import LambdaContext, load_handler
    from qbo_connect import telemetry, wiring

    env = {
        "TABLE_NAME": aws["table_name"],
        "TOKEN_KEY_ID": aws["key_id"],
        "INTUIT_CLIENT_SECRET_ID": aws["secret_id"],
        "POWERTOOLS_LOGGER_LOG_EVENT": "true",
        "POWERTOOLS_EVENT_HANDLER_DEBUG": "true",
        "POWERTOOLS_LOG_LEVEL": "DEBUG",
        **sim.endpoints,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    wiring.reset()
    # Everything the service's logger writes (its handlers' stream, wherever it pointed).
    captured = io.StringIO()
    handlers = [h for h in telemetry.logger._logger.handlers if isinstance(h, StreamHandler)]
    streams = [handler.setStream(captured) for handler in handlers]
    try:
        module = load_handler("connections", module_prefix="log_event_forced_on")
        foreign = sim.issue_tokens(client_id="test-client", realm_id=REALM_A)
        payload = {
            "action": "import_connection",
            "realm_id": REALM_A,
            "tenant_id": "tenant-a",
            "refresh_token": foreign["refresh_token"],
        }
        result = module.lambda_handler(payload, LambdaContext.for_function("ConnectionsFunction"))
    finally:
        for handler, stream in zip(handlers, streams, strict=True):
            handler.setStream(stream)
        wiring.reset()
    assert result["connection"]["realm_id"] == REALM_A
    logs = captured.getvalue()
    assert "connection imported" in logs  # the logs were captured
    assert foreign["refresh_token"] not in logs
    assert foreign["access_token"] not in logs


# ----- 8. no superseded refresh token to swap ---------------------------------------------------
# The finding: the superseded refresh token was sealed under the refresh token's own label, so
# the two ciphertexts were swappable. The vault no longer keeps it at all (tokens.py says why),
# which removes the swap; items written before lose it at their next refresh.


def test_no_superseded_refresh_token_is_stored(h):
    connect(h.vault, h.sim, realm_id=REALM_A)
    refreshed = h.vault.refresh(REALM_A)
    assert refreshed.previous_refresh_token_enc is None
    item = h.table.get_item(Key={"pk": f"REALM#{REALM_A}", "sk": "CONNECTION"})["Item"]
    assert "previous_refresh_token_enc" not in item


def test_items_written_before_lose_their_superseded_token_at_the_next_refresh(h):
    # Given an item carrying the old swappable blob (sealed under the refresh token's label)
    conn, _ = connect(h.vault, h.sim, realm_id=REALM_A)
    old = h.vault.cipher.seal(REALM_A, conn.data_key, REFRESH_FIELD, "RT-superseded-long-ago")
    h.table.update_item(
        Key={"pk": f"REALM#{REALM_A}", "sk": "CONNECTION"},
        UpdateExpression="SET previous_refresh_token_enc = :p",
        ExpressionAttributeValues={":p": old},
    )
    # When it is refreshed, then the blob is gone and the current token still opens only as such
    refreshed = h.vault.refresh(REALM_A)
    item = h.table.get_item(Key={"pk": f"REALM#{REALM_A}", "sk": "CONNECTION"})["Item"]
    assert "previous_refresh_token_enc" not in item
    current = refreshed.refresh_token_enc
    assert h.vault.cipher.open(REALM_A, refreshed.data_key, REFRESH_FIELD, current)
    with pytest.raises(DecryptionError):
        h.vault.cipher.open(REALM_A, refreshed.data_key, "access_token", current)


# ----- helpers ------------------------------------------------------------------------------------


def _invoke(action: Any, payload: dict[str, Any]) -> dict[str, Any]:
    from qbo_connect.invoke import respond

    return respond(lambda: action(payload))


# ----- a realm that changes hands starts a new tenure ---------------------------------------------


def _tenure_a_then_b(h: Harness) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Tenant A connects, fails a refresh, disconnects; tenant B connects the same realm."""
    service = connections_service(h.vault, clock=h.clock)
    a = {"realm_id": REALM_A, "tenant_id": "tenant-a"}
    b = {"realm_id": REALM_A, "tenant_id": "tenant-b"}
    h.sim.configure(next_realm_id=REALM_A)
    assert h.connect("tenant-a").status == 200
    h.sim.set_faults(status_5xx=10, endpoints=["token"])
    with pytest.raises(Exception, match=r"unavailable|transient|Intuit"):
        service.refresh(a)
    h.sim.clear_faults()
    failed = service.get_connection(a)["connection"]
    assert failed["last_error"] is not None and failed["failed_attempts"] >= 1
    service.disconnect(a)
    h.clock.now += 3600
    h.sim.configure(next_realm_id=REALM_A)
    assert h.connect("tenant-b").status == 200
    return service, a, b


def test_a_new_owner_sees_nothing_of_the_previous_tenure(h):
    service, a, b = _tenure_a_then_b(h)
    conn = service.get_connection(b)["connection"]
    assert conn["tenant_id"] == "tenant-b"
    assert conn["connected_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h.clock.now))
    assert conn["last_error"] is None and conn["failing_since"] is None
    assert conn["failed_attempts"] == 0 and conn["health"] == "healthy"
    (listed,) = service.list_connections({"tenant_id": "tenant-b"})["connections"]
    assert listed == conn
    rows = service.connection_history(b)["history"]
    assert [(r["source"], r["outcome"]) for r in rows] == [("callback", "connected")]
    item = next(i for i in connections_items(h))
    leftovers = {"last_error_class", "last_error_at", "last_error_tid", "failing_since"}
    assert not leftovers & set(item) and "reconnected_at" not in item
    # and the previous owner sees nothing of the new one's
    for action in (service.get_connection, service.connection_history):
        assert _invoke(action, a)["error"]["code"] == "not_connected"
    assert service.list_connections({"tenant_id": "tenant-a"})["connections"] == []


def test_the_same_tenant_reconnecting_keeps_its_tenure_and_history(h):
    service = connections_service(h.vault, clock=h.clock)
    a = {"realm_id": REALM_A, "tenant_id": "tenant-a"}
    h.sim.configure(next_realm_id=REALM_A)
    assert h.connect("tenant-a").status == 200
    first = service.get_connection(a)["connection"]["connected_at"]
    h.clock.now += 1  # rows recorded within one clock reading have no order among them
    service.disconnect(a)
    h.clock.now += 60
    h.sim.configure(next_realm_id=REALM_A)
    assert h.connect("tenant-a").status == 200
    assert service.get_connection(a)["connection"]["connected_at"] == first
    outcomes = [r["outcome"] for r in service.connection_history(a)["history"]]
    assert outcomes == ["reconnected", "disconnected", "connected"]


def test_a_retried_takeover_meets_its_own_success(h):
    """boto3 retries a takeover whose answer was lost: the retry finds its own write."""
    from qbo_connect.events import PendingEvent

    connect(h.vault, h.sim, realm_id=REALM_A, tenant_id="tenant-a")
    h.vault.connections.disconnect(REALM_A, now=time.time())
    seen = h.vault.connections.get_connection(REALM_A)
    body = h.sim.issue_tokens(client_id="test-client", realm_id=REALM_A)
    from qbo_connect.intuit import TokenSet

    tokens = TokenSet(
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
        expires_in=3600,
        refresh_token_expires_in=body["x_refresh_token_expires_in"],
        obtained_at=time.time(),
    )
    event = PendingEvent.new("connection.created", {"realm_id": REALM_A}, now=time.time())
    kwargs: dict[str, Any] = dict(
        realm_id=REALM_A,
        tenant_id="tenant-b",
        seen_version=seen.version,
        environment="sandbox",
        scopes=[ACCOUNTING],
        tokens=h.vault.seal(REALM_A, tokens),
        now=time.time(),
        event=event,
        new_tenure=True,
    )
    first = h.vault.connections.reconnect_connection(**kwargs)
    again = h.vault.connections.reconnect_connection(**kwargs)
    assert again.version == first.version == seen.version + 1
    assert again.tenant_id == "tenant-b" and again.raw["tenure_since"] == pytest.approx(
        kwargs["now"], abs=0.01
    )


def test_rows_written_before_tenures_are_bounded_by_the_newest_connect(h):
    """Items and rows from before the upgrade: no ``tenure_since``, no owner on the rows."""
    from qbo_connect.store.history import HistoryRepository
    from qbo_connect.vault.history import History

    service = connections_service(h.vault, clock=h.clock)
    connect(h.vault, h.sim, realm_id=REALM_A, tenant_id="tenant-b")
    h.table.update_item(
        Key={"pk": f"REALM#{REALM_A}", "sk": "CONNECTION"},
        UpdateExpression="REMOVE tenure_since",
    )
    base = h.clock.now
    old = iter([base - 500, base - 400, base - 300, base - 200])
    legacy = History(HistoryRepository(h.table), clock=lambda: next(old))
    legacy.record(REALM_A, source="callback", outcome="connected")  # tenant A's tenure
    legacy.record(REALM_A, source="operator", outcome="disconnected")
    legacy.record(REALM_A, source="callback", outcome="connected")  # tenant B's
    legacy.record(REALM_A, source="get_token", outcome="transient", intuit_tid="1-b")
    rows = service.connection_history({"realm_id": REALM_A, "tenant_id": "tenant-b"})["history"]
    assert [r["outcome"] for r in rows] == ["transient", "connected"]
