"""The Intuit client against the simulator over real HTTP."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
import requests

from qbo_connect.config import IntuitEndpoints
from qbo_connect.errors import (
    IdTokenInvalid,
    IntuitTransientError,
    InvalidClient,
    InvalidGrant,
)
from qbo_connect.intuit import ClientCredentials, IntuitClient
from tests.unit.builders import sim_endpoints

REDIRECT = "https://app.example.com/callback"


def client(sim, secret: str = "test-secret", **kwargs) -> IntuitClient:
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("backoff_max", 0.05)
    kwargs.setdefault("timeout", 2.0)
    return IntuitClient(sim_endpoints(sim), ClientCredentials("test-client", secret), **kwargs)


def authorize(sim, c: IntuitClient, scopes: list[str]) -> dict[str, list[str]]:
    url = c.authorize_url(scopes=scopes, redirect_uri=REDIRECT, state="s-123")
    response = requests.get(url, allow_redirects=False, timeout=5)
    assert response.status_code in (302, 303)
    return parse_qs(urlparse(response.headers["Location"]).query)


def test_code_exchange_with_openid_gives_a_valid_id_token(sim):
    c = client(sim)
    query = authorize(sim, c, ["com.intuit.quickbooks.accounting", "openid", "email"])
    assert query["state"] == ["s-123"] and query["realmId"]
    tokens = c.exchange_code(query["code"][0], REDIRECT)
    assert tokens.access_token and tokens.refresh_token and tokens.id_token
    assert tokens.expires_in == 3600 and tokens.refresh_token_expires_in > 0
    assert tokens.refresh_token_hard_expires_in  # we send the header that asks for it
    claims = c.validate_id_token(tokens.id_token)
    assert claims["realmid"] == query["realmId"][0]
    assert claims["aud"] == ["test-client"] or claims["aud"] == "test-client"
    assert c.userinfo(tokens.access_token)["email"]
    assert c.company_info(query["realmId"][0], tokens.access_token)["CompanyName"]


def test_a_code_is_single_use(sim):
    c = client(sim)
    query = authorize(sim, c, ["com.intuit.quickbooks.accounting"])
    c.exchange_code(query["code"][0], REDIRECT)
    with pytest.raises(InvalidGrant) as info:
        c.exchange_code(query["code"][0], REDIRECT)
    assert info.value.intuit_tid  # support needs it
    assert query["code"][0] not in str(info.value)


def test_tampered_id_token_is_rejected(sim):
    c = client(sim)
    query = authorize(sim, c, ["openid"])
    tokens = c.exchange_code(query["code"][0], REDIRECT)
    header, payload, signature = tokens.id_token.split(".")
    tampered = ".".join([header, payload[:-4] + "AAAA", signature])
    with pytest.raises(IdTokenInvalid):
        c.validate_id_token(tampered)
    other = IntuitClient(sim_endpoints(sim), ClientCredentials("another-client", "x"))
    with pytest.raises(IdTokenInvalid):  # wrong audience
        other.validate_id_token(tokens.id_token)


def test_refresh_rotation_and_revoke(sim):
    sim.configure(refresh_grace_seconds=0)
    c = client(sim)
    body = sim.issue_tokens(client_id="test-client", realm_id="555")
    rotated = c.refresh(body["refresh_token"])
    assert rotated.refresh_token != body["refresh_token"]
    with pytest.raises(InvalidGrant):
        c.refresh(body["refresh_token"])
    c.revoke(rotated.refresh_token)
    with pytest.raises(InvalidGrant):
        c.refresh(rotated.refresh_token)


def test_wrong_secret_is_invalid_client_and_never_echoed(sim):
    body = sim.issue_tokens(client_id="test-client", realm_id="556")
    with pytest.raises(InvalidClient) as info:
        client(sim, secret="not-the-secret").refresh(body["refresh_token"])
    assert "not-the-secret" not in str(info.value)
    assert body["refresh_token"] not in str(info.value)


def test_transient_failures_are_retried_with_backoff_then_reported(sim):
    body = sim.issue_tokens(client_id="test-client", realm_id="557")
    sim.set_faults(status_5xx=2)
    sleeps: list[float] = []
    c = client(sim, max_attempts=3, sleep=sleeps.append)
    assert c.refresh(body["refresh_token"]).access_token  # third attempt succeeds
    assert len(sleeps) == 2
    sim.set_faults(rate_429=5, retry_after=0.2)
    patient = client(sim, max_attempts=3, backoff_max=0.5, sleep=sleeps.append)
    sleeps.clear()
    with pytest.raises(IntuitTransientError) as info:
        patient.refresh(body["refresh_token"])
    assert info.value.status == 429 and sleeps == [0.2, 0.2]  # Retry-After honoured
    # A Retry-After longer than the backoff budget is not slept through (it would outlive the
    # lease): the call fails at once and the caller comes back later.
    sim.set_faults(rate_429=5, retry_after=30)
    sleeps.clear()
    with pytest.raises(IntuitTransientError) as info:
        patient.refresh(body["refresh_token"])
    assert info.value.retry_after == 30 and sleeps == []


def test_timeouts_are_transient(sim):
    body = sim.issue_tokens(client_id="test-client", realm_id="558")
    sim.set_faults(timeouts=1, timeout_seconds=2.0)
    c = client(sim, timeout=0.3, max_attempts=2)
    assert c.refresh(body["refresh_token"]).access_token  # retried after the timeout


def test_code_exchange_is_not_retried_after_a_5xx(sim):
    c = client(sim)
    query = authorize(sim, c, ["com.intuit.quickbooks.accounting"])
    sim.set_faults(status_5xx=1, endpoints=("token",))
    with pytest.raises(IntuitTransientError):
        c.exchange_code(query["code"][0], REDIRECT)
    assert sim.counters()["token.authorization_code"] == 1


def test_connection_refused_is_transient():
    dead = IntuitEndpoints("sandbox", *(["http://127.0.0.1:9"] * 7))
    c = IntuitClient(dead, ClientCredentials("a", "b"), max_attempts=2, sleep=lambda s: None)
    with pytest.raises(IntuitTransientError):
        c.refresh("whatever")
