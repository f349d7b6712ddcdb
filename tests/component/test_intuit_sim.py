"""Behaviour of the Intuit simulator, over real HTTP, against docs/intuit.md.

The rest of the project trusts this simulator to behave like Intuit, so these tests pin the
documented wire formats and the rotation/grace/fault model the refresh protocol is tested with.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests

from devstack.intuit_sim import ACCOUNTING_SCOPE, IntuitSimulator
from tests.helpers.threads import at_once

CLIENT_ID = "sim-test-client"
CLIENT_SECRET = "sim-test-secret"
REDIRECT_URI = "http://127.0.0.1:9/callback"
ACCOUNTING_OPENID = f"{ACCOUNTING_SCOPE} openid profile email phone address"
TIMEOUT = 5
REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """Starts at real time (so id_token exp checks still pass) and moves only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def make_sim() -> Iterator[Callable[..., IntuitSimulator]]:
    started: list[IntuitSimulator] = []

    def factory(**kwargs: Any) -> IntuitSimulator:
        kwargs.setdefault("clients", {CLIENT_ID: CLIENT_SECRET})
        kwargs.setdefault("auto_approve", True)
        sim = IntuitSimulator(**kwargs).start()
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: Callable[..., IntuitSimulator]) -> IntuitSimulator:
    return make_sim()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# ---------------------------------------------------------------- helpers


def authorize(
    sim: IntuitSimulator,
    scope: str = ACCOUNTING_SCOPE,
    state: str = "st-1",
    redirect_uri: str = REDIRECT_URI,
    client_id: str = CLIENT_ID,
) -> requests.Response:
    params = {
        "client_id": client_id,
        "response_type": "code",
        "scope": scope,
        "redirect_uri": redirect_uri,
        "state": state,
    }
    return requests.get(
        sim.endpoints["INTUIT_AUTHORIZATION_ENDPOINT"],
        params=params,
        allow_redirects=False,
        timeout=TIMEOUT,
    )


def callback_params(resp: requests.Response) -> dict[str, str]:
    assert resp.status_code == 302, resp.text
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def token_request(
    sim: IntuitSimulator,
    data: dict[str, str],
    auth: tuple[str, str] | None = (CLIENT_ID, CLIENT_SECRET),
    headers: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> requests.Response:
    return requests.post(
        sim.endpoints["INTUIT_TOKEN_ENDPOINT"],
        data=data,
        auth=auth,
        headers={"Accept": "application/json", **(headers or {})},
        timeout=timeout,
    )


def exchange(
    sim: IntuitSimulator, code: str, redirect_uri: str = REDIRECT_URI, **kwargs: Any
) -> requests.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    return token_request(sim, data, **kwargs)


def refresh(sim: IntuitSimulator, refresh_token: str, **kwargs: Any) -> requests.Response:
    return token_request(
        sim, {"grant_type": "refresh_token", "refresh_token": refresh_token}, **kwargs
    )


def connect(sim: IntuitSimulator, scope: str = ACCOUNTING_SCOPE) -> dict[str, Any]:
    code = callback_params(authorize(sim, scope=scope))["code"]
    resp = exchange(sim, code)
    assert resp.status_code == 200, resp.text
    return resp.json()


def company_info(sim: IntuitSimulator, access_token: str, realm: str) -> requests.Response:
    return requests.get(
        f"{sim.endpoints['QUICKBOOKS_API_BASE_URL']}/v3/company/{realm}/companyinfo/{realm}",
        params={"minorversion": "75"},
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        timeout=TIMEOUT,
    )


def consent_txn(page: str) -> str:
    match = re.search(r'name=txn value="([^"]+)"', page)
    assert match, page
    return match.group(1)


# ---------------------------------------------------------------- authorize


def test_auto_approve_redirects_with_code_state_and_realm(sim: IntuitSimulator) -> None:
    # Given an auto-approving simulator / When the app sends the user to authorize
    params = callback_params(authorize(sim, state="abc"))
    # Then the callback carries code, state and the default realm
    assert params["state"] == "abc"
    assert params["realmId"] == "9130357766042906"
    assert 0 < len(params["code"]) <= 512


def test_realm_id_only_with_accounting_or_payment_scope(sim: IntuitSimulator) -> None:
    assert "realmId" not in callback_params(authorize(sim, scope="openid email"))
    assert "realmId" in callback_params(authorize(sim, scope="com.intuit.quickbooks.payment"))


def test_next_realm_id_connects_another_company(sim: IntuitSimulator) -> None:
    sim.next_realm_id = "4620816365000000001"
    assert callback_params(authorize(sim))["realmId"] == "4620816365000000001"


def test_consent_page_approve(make_sim: Callable[..., IntuitSimulator]) -> None:
    # Given a simulator that shows its consent page
    sim = make_sim(auto_approve=False)
    sim.next_realm_id = "1111"
    page = authorize(sim, scope=ACCOUNTING_OPENID)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    html = page.text
    assert "id=approve" in html and ">Connect<" in html
    assert "id=deny" in html and ">Cancel<" in html
    assert CLIENT_ID not in html and sim.app_name in html and 'value="1111"' in html
    assert "src=" not in html and "<link" not in html  # no external assets
    # When the user picks another company and approves
    resp = requests.post(
        sim.endpoints["INTUIT_AUTHORIZATION_ENDPOINT"],
        data={"txn": consent_txn(html), "decision": "approve", "realm_id": "2222"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    # Then the callback has a code for that realm, and the code exchanges
    params = callback_params(resp)
    assert params["realmId"] == "2222" and params["state"] == "st-1"
    assert exchange(sim, params["code"]).status_code == 200
    # And the consent transaction is single use
    again = requests.post(
        sim.endpoints["INTUIT_AUTHORIZATION_ENDPOINT"],
        data={"txn": consent_txn(html), "decision": "approve"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert again.status_code == 400 and "Location" not in again.headers
    counters = sim.counters()
    assert counters["authorize"] == 1 and counters["authorize.decision"] == 2


def test_consent_page_deny(make_sim: Callable[..., IntuitSimulator]) -> None:
    sim = make_sim(auto_approve=False)
    page = authorize(sim, state="s p&ace")
    resp = requests.post(
        sim.endpoints["INTUIT_AUTHORIZATION_ENDPOINT"],
        data={"txn": consent_txn(page.text), "decision": "deny"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    params = callback_params(resp)
    assert params["error"] == "access_denied"
    assert params["error_description"]
    assert params["state"] == "s p&ace"
    assert "code" not in params


def test_consent_page_escapes_the_app_name(make_sim: Callable[..., IntuitSimulator]) -> None:
    evil = '<script>alert("x")</script>'
    sim = make_sim(auto_approve=False)
    sim.add_client(CLIENT_ID, CLIENT_SECRET, app_name=evil)
    page = authorize(sim)
    assert page.status_code == 200
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text


def test_invalid_scope_redirects_with_error(sim: IntuitSimulator) -> None:
    params = callback_params(authorize(sim, scope=f"{ACCOUNTING_SCOPE} com.intuit.bogus"))
    assert params["error"] == "invalid_scope"
    assert params["state"] == "st-1"
    assert "code" not in params


def test_unregistered_redirect_uri_is_never_redirected_to(
    make_sim: Callable[..., IntuitSimulator],
) -> None:
    sim = make_sim(redirect_uris=[REDIRECT_URI])
    resp = authorize(sim, redirect_uri="https://evil.example/callback")
    assert resp.status_code == 400 and "Location" not in resp.headers
    # a near miss is not an exact match
    assert authorize(sim, redirect_uri=REDIRECT_URI + "/").status_code == 400
    # an unknown client is not redirected either
    assert authorize(sim, client_id="nobody").status_code == 400
    assert authorize(sim).status_code == 302


# ---------------------------------------------------------------- token endpoint


def test_code_exchange_without_openid(sim: IntuitSimulator) -> None:
    body = connect(sim)
    assert set(body) == {
        "token_type",
        "expires_in",
        "refresh_token",
        "x_refresh_token_expires_in",
        "access_token",
    }
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["x_refresh_token_expires_in"] == 8726400
    assert body["refresh_token"].startswith("RT1-")


def test_id_token_verifies_against_jwks(sim: IntuitSimulator) -> None:
    # Given a connection made with the openid scope
    body = connect(sim, scope=ACCOUNTING_OPENID)
    id_token = body["id_token"]
    # When the client verifies it against the JWKS
    jwks_client = jwt.PyJWKClient(sim.endpoints["INTUIT_JWKS_URI"])
    key = jwks_client.get_signing_key_from_jwt(id_token)
    claims = jwt.decode(
        id_token,
        key.key,
        algorithms=["RS256"],
        audience=CLIENT_ID,
        issuer=sim.endpoints["INTUIT_ISSUER"],
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    # Then the claims are Intuit's
    assert jwt.get_unverified_header(id_token)["kid"] == key.key_id
    assert claims["aud"] == [CLIENT_ID]
    assert claims["realmid"] == "9130357766042906"
    assert claims["exp"] == claims["iat"] + 3600
    assert claims["auth_time"] <= claims["iat"]
    jwk = requests.get(sim.endpoints["INTUIT_JWKS_URI"], timeout=TIMEOUT).json()["keys"][0]
    assert jwk["alg"] == "RS256" and jwk["use"] == "sig" and jwk["kty"] == "RSA"


def test_id_token_does_not_verify_against_another_simulator(
    make_sim: Callable[..., IntuitSimulator],
) -> None:
    first, second = make_sim(), make_sim()
    id_token = connect(first, scope="openid")["id_token"]
    other_key = jwt.PyJWKClient(second.endpoints["INTUIT_JWKS_URI"]).get_signing_keys()[0]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(id_token, other_key.key, algorithms=["RS256"], audience=CLIENT_ID)


def test_code_reuse_is_invalid_grant_and_revokes_first_tokens(sim: IntuitSimulator) -> None:
    # Given a code that was exchanged once
    code = callback_params(authorize(sim))["code"]
    first = exchange(sim, code).json()
    # When it is exchanged again
    again = exchange(sim, code)
    # Then invalid_grant, and the first exchange's tokens are dead
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert refresh(sim, first["refresh_token"]).json()["error"] == "invalid_grant"
    realm = sim.default_realm_id
    assert company_info(sim, first["access_token"], realm).status_code == 401


def test_code_checks_redirect_uri_and_expiry(
    make_sim: Callable[..., IntuitSimulator], clock: FakeClock
) -> None:
    sim = make_sim(clock=clock)
    code = callback_params(authorize(sim))["code"]
    wrong = exchange(sim, code, redirect_uri="http://127.0.0.1:9/other")
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert exchange(sim, code).status_code == 200  # a mismatch does not burn the code
    stale = callback_params(authorize(sim))["code"]
    clock.advance(601)
    assert exchange(sim, stale).json()["error"] == "invalid_grant"


def test_client_authentication(sim: IntuitSimulator) -> None:
    rt = sim.issue_tokens(client_id=CLIENT_ID)["refresh_token"]
    for auth in [None, (CLIENT_ID, "wrong"), ("unknown", CLIENT_SECRET)]:
        resp = refresh(sim, rt, auth=auth)
        assert resp.status_code == 401
        assert resp.json() == {"error": "invalid_client"}
    bad_header = refresh(sim, rt, auth=None, headers={"Authorization": "Basic !!!"})
    assert bad_header.status_code == 401
    # the token is untouched by the rejected attempts
    assert refresh(sim, rt).status_code == 200


def test_request_errors(sim: IntuitSimulator) -> None:
    assert token_request(sim, {}).json()["error"] == "invalid_request"
    assert token_request(sim, {"grant_type": "password"}).json()["error"] == (
        "unsupported_grant_type"
    )
    missing = token_request(sim, {"grant_type": "refresh_token"})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    no_code = token_request(sim, {"grant_type": "authorization_code"})
    assert no_code.json()["error"] == "invalid_request"
    get = requests.get(sim.endpoints["INTUIT_TOKEN_ENDPOINT"], timeout=TIMEOUT)
    assert get.status_code == 405


def test_intuit_tid_on_every_response(sim: IntuitSimulator) -> None:
    ep = sim.endpoints
    responses = [
        authorize(sim),
        authorize(sim, client_id="nobody"),
        token_request(sim, {"grant_type": "refresh_token", "refresh_token": "x"}),
        token_request(sim, {}, auth=None),
        requests.post(ep["INTUIT_REVOCATION_ENDPOINT"], json={"token": "x"}, timeout=TIMEOUT),
        requests.get(ep["INTUIT_USERINFO_ENDPOINT"], timeout=TIMEOUT),
        requests.get(ep["INTUIT_JWKS_URI"], timeout=TIMEOUT),
        company_info(sim, "nope", "1"),
        requests.get(sim.base_url + "/no/such/path", timeout=TIMEOUT),
        requests.get(sim.base_url + "/_sim/counters", timeout=TIMEOUT),
    ]
    tids = [r.headers.get("intuit_tid") for r in responses]
    assert all(tids), tids
    assert len(set(tids)) == len(tids)


# ---------------------------------------------------------------- rotation and expiry


def test_strict_rotation_invalidates_previous_token(
    make_sim: Callable[..., IntuitSimulator],
) -> None:
    sim = make_sim(refresh_grace_seconds=0)
    first = sim.issue_tokens(client_id=CLIENT_ID)
    second = refresh(sim, first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    stale = refresh(sim, first["refresh_token"])
    assert stale.status_code == 400 and stale.json()["error"] == "invalid_grant"
    assert refresh(sim, second["refresh_token"]).status_code == 200


def test_grace_previous_token_returns_current_tokens(
    make_sim: Callable[..., IntuitSimulator], clock: FakeClock
) -> None:
    # Given a grant refreshed once, with a 24 h grace for the superseded token
    sim = make_sim(refresh_grace_seconds=86400, clock=clock)
    first = sim.issue_tokens(client_id=CLIENT_ID)
    second = refresh(sim, first["refresh_token"]).json()
    # When the previous token is used within the grace (a crash lost the second response)
    clock.advance(3600)
    replay = refresh(sim, first["refresh_token"])
    # Then it answers with the grant's current refresh token and a working access token
    assert replay.status_code == 200
    assert replay.json()["refresh_token"] == second["refresh_token"]
    realm = sim.default_realm_id
    assert company_info(sim, replay.json()["access_token"], realm).status_code == 200
    # And after the grace it is dead, while the current one still works
    clock.advance(86400)
    assert refresh(sim, first["refresh_token"]).json()["error"] == "invalid_grant"
    third = refresh(sim, second["refresh_token"]).json()
    # Only one previous token is honoured: two generations back is invalid at once
    assert refresh(sim, first["refresh_token"]).status_code == 400
    assert third["refresh_token"] != second["refresh_token"]


def test_rotate_every_seconds_keeps_value_within_window(
    make_sim: Callable[..., IntuitSimulator], clock: FakeClock
) -> None:
    sim = make_sim(rotate_every_seconds=86400, clock=clock)
    rt = sim.issue_tokens(client_id=CLIENT_ID)["refresh_token"]
    clock.advance(3600)
    same = refresh(sim, rt).json()
    assert same["refresh_token"] == rt
    clock.advance(86400)
    rotated = refresh(sim, rt).json()
    assert rotated["refresh_token"] != rt
    calls = sim.refresh_calls()
    assert [c["rotated"] for c in calls] == [False, True]


def test_expired_refresh_token_and_rolling_window(
    make_sim: Callable[..., IntuitSimulator], clock: FakeClock
) -> None:
    sim = make_sim(refresh_token_ttl=1000, rotate_every_seconds=10**9, clock=clock)
    rt = sim.issue_tokens(client_id=CLIENT_ID)["refresh_token"]
    clock.advance(900)
    body = refresh(sim, rt).json()  # rolling: extends to now + 1000
    assert body["x_refresh_token_expires_in"] == 1000
    clock.advance(900)
    assert refresh(sim, rt).status_code == 200
    clock.advance(1000)
    expired = refresh(sim, rt)
    assert expired.status_code == 400 and expired.json()["error"] == "invalid_grant"


def test_hard_expiry_header_and_cap(
    make_sim: Callable[..., IntuitSimulator], clock: FakeClock
) -> None:
    sim = make_sim(refresh_hard_ttl=10_000_000, clock=clock)
    rt = sim.issue_tokens(client_id=CLIENT_ID)["refresh_token"]
    plain = refresh(sim, rt).json()
    assert "x_refresh_token_hard_expires_in" not in plain
    clock.advance(2_000_000)
    hdr = {"x-include-refresh-token-hard-expires-in": "true"}
    body = refresh(sim, plain["refresh_token"], headers=hdr).json()
    assert body["x_refresh_token_hard_expires_in"] == 8_000_000
    assert body["x_refresh_token_expires_in"] == 8_000_000  # capped by the hard expiry
    clock.advance(8_000_000)
    assert refresh(sim, body["refresh_token"]).json()["error"] == "invalid_grant"


# ---------------------------------------------------------------- revoke, userinfo, companyinfo


def revoke(sim: IntuitSimulator, token: str, auth: Any = (CLIENT_ID, CLIENT_SECRET)) -> Any:
    return requests.post(
        sim.endpoints["INTUIT_REVOCATION_ENDPOINT"],
        json={"token": token},
        auth=auth,
        headers={"Accept": "application/json"},
        timeout=TIMEOUT,
    )


def test_revoke_kills_the_grant(sim: IntuitSimulator) -> None:
    tokens = sim.issue_tokens(client_id=CLIENT_ID)
    assert revoke(sim, tokens["refresh_token"], auth=None).status_code == 401
    assert revoke(sim, tokens["refresh_token"]).status_code == 200
    assert refresh(sim, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert company_info(sim, tokens["access_token"], sim.default_realm_id).status_code == 401
    assert revoke(sim, tokens["refresh_token"]).status_code == 400  # already revoked
    assert revoke(sim, "never-issued").status_code == 400
    # an access token revokes its grant too
    other = sim.issue_tokens(client_id=CLIENT_ID)
    assert revoke(sim, other["access_token"]).status_code == 200
    assert refresh(sim, other["refresh_token"]).status_code == 400


def test_revoke_realm(sim: IntuitSimulator) -> None:
    a = sim.issue_tokens(client_id=CLIENT_ID, realm_id="111")
    b = sim.issue_tokens(client_id=CLIENT_ID, realm_id="222")
    sim.revoke_realm("111")
    assert refresh(sim, a["refresh_token"]).json()["error"] == "invalid_grant"
    assert refresh(sim, b["refresh_token"]).status_code == 200


def test_userinfo(sim: IntuitSimulator) -> None:
    url = sim.endpoints["INTUIT_USERINFO_ENDPOINT"]
    body = connect(sim, scope=ACCOUNTING_OPENID)
    resp = requests.get(
        url, headers={"Authorization": f"Bearer {body['access_token']}"}, timeout=TIMEOUT
    )
    assert resp.status_code == 200
    info = resp.json()
    assert {"sub", "email", "emailVerified", "givenName", "familyName"} <= set(info)
    assert {"phoneNumber", "phoneNumberVerified", "address"} <= set(info)
    assert set(info["address"]) == {
        "streetAddress",
        "locality",
        "region",
        "postalCode",
        "country",
    }
    claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert info["sub"] == claims["sub"]
    bad = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=TIMEOUT)
    assert bad.status_code == 401
    assert requests.get(url, timeout=TIMEOUT).status_code == 401
    no_openid = sim.issue_tokens(client_id=CLIENT_ID)["access_token"]
    forbidden = requests.get(url, headers={"Authorization": f"Bearer {no_openid}"}, timeout=TIMEOUT)
    assert forbidden.status_code == 403


def test_companyinfo(make_sim: Callable[..., IntuitSimulator], clock: FakeClock) -> None:
    sim = make_sim(clock=clock, company_name="Acme Test Co", default_realm_id="123145")
    tokens = sim.issue_tokens(client_id=CLIENT_ID, realm_id="123145")
    ok = company_info(sim, tokens["access_token"], "123145")
    assert ok.status_code == 200
    assert ok.json()["CompanyInfo"]["CompanyName"] == "Acme Test Co"
    assert ok.json()["CompanyInfo"]["Id"] == "1"
    assert "time" in ok.json()
    assert company_info(sim, tokens["access_token"], "999").status_code == 403
    clock.advance(3600)
    expired = company_info(sim, tokens["access_token"], "123145")
    assert expired.status_code == 401
    error = expired.json()["fault"]["error"][0]
    assert "AuthenticationFailed" in error["message"] and "003200" in error["message"]
    assert expired.json()["fault"]["type"] == "AUTHENTICATION"
    assert company_info(sim, "garbage", "123145").status_code == 401


# ---------------------------------------------------------------- faults


def test_latency_fault(sim: IntuitSimulator) -> None:
    rt = sim.issue_tokens(client_id=CLIENT_ID)["refresh_token"]
    requests.get(sim.endpoints["INTUIT_JWKS_URI"], timeout=TIMEOUT)  # its key is made once
    sim.set_faults(latency_seconds=0.3)
    started = time.monotonic()
    assert refresh(sim, rt).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    requests.get(sim.endpoints["INTUIT_JWKS_URI"], timeout=TIMEOUT)  # not a matching endpoint
    assert time.monotonic() - started < 0.3


def test_5xx_fault_then_recovery(sim: IntuitSimulator) -> None:
    rt = sim.issue_tokens(client_id=CLIENT_ID)["refresh_token"]
    sim.set_faults(status_5xx=2)
    assert [refresh(sim, rt).status_code for _ in range(3)] == [503, 503, 200]
    assert sim.counters()["faults"] == 2
    outcomes = [c["outcome"] for c in sim.refresh_calls()]
    assert outcomes == ["fault:5xx", "fault:5xx", "ok"]


def test_429_fault_has_retry_after(sim: IntuitSimulator) -> None:
    rt = sim.issue_tokens(client_id=CLIENT_ID)["refresh_token"]
    sim.set_faults(rate_429=1, retry_after=7)
    throttled = refresh(sim, rt)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "7"
    assert throttled.headers["intuit_tid"]
    assert refresh(sim, rt).status_code == 200


def test_timeout_fault(sim: IntuitSimulator) -> None:
    rt = sim.issue_tokens(client_id=CLIENT_ID)["refresh_token"]
    sim.set_faults(timeouts=1, timeout_seconds=0.5)
    with pytest.raises(requests.exceptions.Timeout):
        refresh(sim, rt, timeout=0.15)
    # the attempt is visible at once, while the server is still "hanging"
    assert [c["outcome"] for c in sim.refresh_calls()] == ["fault:timeout"]
    assert refresh(sim, rt).status_code == 200  # the timed-out call did not rotate anything


def test_invalid_grant_burst_leaves_grant_intact(
    make_sim: Callable[..., IntuitSimulator],
) -> None:
    # Given a strict simulator and an outage answering invalid_grant three times
    sim = make_sim(refresh_grace_seconds=0)
    rt = sim.issue_tokens(client_id=CLIENT_ID)["refresh_token"]
    sim.set_faults(invalid_grant=3)
    # When the client keeps trying with the same token
    burst = [refresh(sim, rt) for _ in range(3)]
    # Then the burst is bare invalid_grant, and the same token works afterwards
    assert all(r.status_code == 400 and r.json() == {"error": "invalid_grant"} for r in burst)
    assert refresh(sim, rt).status_code == 200
    counters = sim.counters()
    assert counters["faults"] == 3 and counters["token.refresh_token.ok"] == 1
    assert counters["token.refresh_token.invalid_grant"] == 0


def test_faults_only_hit_selected_endpoints(sim: IntuitSimulator) -> None:
    tokens = sim.issue_tokens(client_id=CLIENT_ID)
    sim.set_faults(status_5xx=1, endpoints=("token.refresh_token",))
    code = callback_params(authorize(sim))["code"]
    assert exchange(sim, code).status_code == 200
    assert refresh(sim, tokens["refresh_token"]).status_code == 503
    sim.set_faults(status_5xx=1, endpoints=("companyinfo",))
    realm = sim.default_realm_id
    assert company_info(sim, tokens["access_token"], realm).status_code == 503
    assert company_info(sim, tokens["access_token"], realm).status_code == 200
    with pytest.raises(ValueError):
        sim.set_faults(endpoints=("nope",))


def test_probability_faults_are_repeatable(sim: IntuitSimulator) -> None:
    rt = sim.issue_tokens(client_id=CLIENT_ID, realm_id="5")["refresh_token"]
    sim.set_faults(status_5xx=100, probability=0.5, seed=42)
    first = [refresh(sim, rt).status_code for _ in range(12)]
    assert 503 in first and 200 in first


# ---------------------------------------------------------------- counters and admin API


def test_counters_and_refresh_log_never_hold_tokens(sim: IntuitSimulator) -> None:
    tokens = connect(sim)
    refresh(sim, tokens["refresh_token"])
    refresh(sim, "RT1-unknown")
    counters = sim.counters()
    assert counters["authorize"] == 1
    assert counters["token"] == 3
    assert counters["token.authorization_code"] == 1
    assert counters["token.refresh_token"] == 2
    assert counters["token.refresh_token.ok"] == 1
    assert counters["token.refresh_token.invalid_grant"] == 1
    calls = sim.refresh_calls()
    digest = hashlib.sha256(tokens["refresh_token"].encode()).hexdigest()
    assert calls[0]["refresh_token_sha256"] == digest and calls[0]["outcome"] == "ok"
    assert tokens["refresh_token"] not in json.dumps(calls)
    sim.reset_counters()
    assert sim.counters()["token"] == 0 and sim.refresh_calls() == []


def test_admin_http_api(sim: IntuitSimulator) -> None:
    admin = sim.base_url + "/_sim"

    def post(path: str, body: Any) -> requests.Response:
        return requests.post(admin + path, json=body, timeout=TIMEOUT)

    # issue tokens and configure from "another process"
    issued = post("/issue-tokens", {"client_id": CLIENT_ID, "realm_id": "77", "scopes": None})
    assert issued.status_code == 200
    tokens = issued.json()
    assert {"access_token", "refresh_token", "expires_in"} <= set(tokens)
    config = post("/config", {"refresh_grace_seconds": 0, "next_realm_id": "88"}).json()
    assert config["refresh_grace_seconds"] == 0 and sim.next_realm_id == "88"
    assert post("/config", {"bogus": 1}).status_code == 400
    # faults over HTTP
    faults = post("/faults", {"status_5xx": 1, "endpoints": ["token"]}).json()
    assert faults["status_5xx"] == 1
    assert refresh(sim, tokens["refresh_token"]).status_code == 503
    assert requests.delete(admin + "/faults", timeout=TIMEOUT).json()["status_5xx"] == 0
    assert post("/faults", {"timeouts": "many"}).status_code == 400
    new = refresh(sim, tokens["refresh_token"]).json()
    # strict grace now applies
    assert refresh(sim, tokens["refresh_token"]).status_code == 400
    calls = requests.get(admin + "/refresh-calls", timeout=TIMEOUT).json()
    assert [c["outcome"] for c in calls] == ["fault:5xx", "ok", "invalid_grant"]
    counters = requests.get(admin + "/counters", timeout=TIMEOUT).json()
    assert counters["token.refresh_token"] == 3 and counters["faults"] == 1
    # disconnect at Intuit
    assert post("/revoke-realm", {"realm_id": "77"}).json() == {"revoked_grants": 1}
    assert refresh(sim, new["refresh_token"]).status_code == 400
    assert post("/reset-counters", {}).status_code == 200
    assert requests.get(admin + "/counters", timeout=TIMEOUT).json()["token"] == 0
    # clock and clients
    assert post("/clients", {"client_id": "c2", "client_secret": "s2"}).status_code == 200
    other = sim.issue_tokens(client_id="c2")
    assert post("/advance-clock", {"seconds": 3601}).status_code == 200
    assert company_info(sim, other["access_token"], "88").status_code == 401
    grants = requests.get(admin + "/grants", timeout=TIMEOUT).json()
    assert other["refresh_token"] not in json.dumps(grants)
    assert requests.get(admin + "/nothing", timeout=TIMEOUT).status_code == 404


# ---------------------------------------------------------------- concurrency and lifecycle


def test_concurrent_refreshes_of_one_token_strict(
    make_sim: Callable[..., IntuitSimulator],
) -> None:
    # Given one refresh token and strict rotation without grace
    sim = make_sim(refresh_grace_seconds=0)
    rt = sim.issue_tokens(client_id=CLIENT_ID)["refresh_token"]
    # When 50 clients refresh it at once
    statuses = at_once(50, lambda _: refresh(sim, rt, timeout=15).status_code)
    # Then exactly one wins and every other gets invalid_grant
    assert sorted(statuses) == [200] + [400] * 49
    assert sim.counters()["token.refresh_token.ok"] == 1


def test_fault_counts_are_exact_under_concurrency(sim: IntuitSimulator) -> None:
    # Given a plan of exactly 10 failures and 30 concurrent requests
    sim.set_faults(status_5xx=10, endpoints=("jwks",))
    statuses = at_once(
        30, lambda _: requests.get(sim.endpoints["INTUIT_JWKS_URI"], timeout=15).status_code
    )
    # Then exactly 10 fail
    assert statuses.count(503) == 10 and statuses.count(200) == 20
    assert sim.counters()["jwks"] == 30


def test_port_in_use_raises_clear_error(sim: IntuitSimulator) -> None:
    port = int(sim.base_url.rsplit(":", 1)[1])
    with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
        IntuitSimulator(port=port).start()


def test_stop_releases_the_port() -> None:
    sim = IntuitSimulator(clients={CLIENT_ID: CLIENT_SECRET}).start()
    port = int(sim.base_url.rsplit(":", 1)[1])
    session = requests.Session()
    assert session.get(sim.endpoints["INTUIT_JWKS_URI"], timeout=TIMEOUT).status_code == 200
    sim.stop()
    sim.stop()  # idempotent
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(sim.endpoints["INTUIT_JWKS_URI"], timeout=TIMEOUT)


def test_cli_prints_endpoints_and_stops_on_sigint() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.intuit_sim", "--port", "0", "--auto-approve"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["endpoints"]["INTUIT_TOKEN_ENDPOINT"].startswith(info["base_url"])
        jwks = requests.get(info["endpoints"]["INTUIT_JWKS_URI"], timeout=TIMEOUT)
        assert jwks.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
