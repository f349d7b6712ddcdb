"""Intuit misbehaving: 5xx, 429 with Retry-After, timeouts, invalid_grant bursts, revocation.

Through the real GetTokenFunction handler (in this process, a fresh "container" per test)
against moto server and the simulator over HTTP, strict Intuit (grace 0) unless a test says
otherwise. The rule these tests hold the vault to: a failure Intuit may recover from never
changes the stored tokens and never ends the connection; only a rejection that persists over
the configured window (or a refresh token past its known expiry) does, with one event.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.helpers.threads import at_once
from tests.reliability.conftest import Harness, token_is_valid_at_intuit

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

NEEDS_REAUTH = "connection.needs_reauthorization"
TOKEN_ATTRIBUTES = ("data_key", "access_token_enc", "refresh_token_enc", "version")


def token_state(harness: Harness, realm_id: str) -> dict[str, Any]:
    item = harness.item(realm_id)
    assert item is not None
    return {k: item.get(k) for k in TOKEN_ATTRIBUTES}


def assert_untouched_and_active(harness: Harness, realm_id: str, before: dict[str, Any]) -> None:
    assert token_state(harness, realm_id) == before
    conn = harness.connection(realm_id)
    assert conn is not None
    assert (conn.status, conn.lease_owner) == ("active", None)


def outcomes(harness: Harness) -> list[str]:
    return [c["outcome"] for c in harness.refresh_calls()]


def error_code(response: dict[str, Any]) -> str | None:
    return (response.get("error") or {}).get("code")


def codes_of_callers_at_once(callers: int, svc: Any, realm_id: str) -> list[str | None]:
    """The error code each of ``callers`` was answered (None for a token), all asking at once."""
    return at_once(callers, lambda _: error_code(svc.get_token(realm_id)))


def test_5xx_is_retried_and_an_outage_leaves_tokens_untouched(harness: Harness, service) -> None:
    svc = service()
    realm_id, _ = harness.connect(access_expires_in=0)
    before = token_state(harness, realm_id)

    # Given Intuit answers 503 to every attempt of this call (an outage)
    harness.sim.set_faults(status_5xx=3)
    # When a caller asks for a token / Then it is told to retry, and nothing changed
    assert error_code(svc.get_token(realm_id)) == "refresh_unavailable"
    assert outcomes(harness) == ["fault:5xx"] * 3  # INTUIT_MAX_ATTEMPTS
    assert_untouched_and_active(harness, realm_id, before)
    conn = harness.connection(realm_id)
    assert conn is not None and conn.last_error == "transient: 503"
    assert conn.invalid_grant_count == 0

    # Given two more 503s, fewer than the attempts a call makes
    harness.sim.reset_counters()
    harness.sim.set_faults(status_5xx=2)
    # When a caller asks / Then the retries carry it through to one successful refresh
    response = svc.get_token(realm_id)
    assert outcomes(harness) == ["fault:5xx", "fault:5xx", "ok"]
    assert token_is_valid_at_intuit(harness.sim, realm_id, response["access_token"])
    conn = harness.connection(realm_id)
    assert conn is not None and (conn.version, conn.last_error) == (2, None)


def test_concurrent_callers_during_an_outage_are_answered_and_tokens_untouched(
    harness: Harness, service
) -> None:
    svc = service()
    warm, _ = harness.connect()
    assert "access_token" in svc.get_token(warm)  # a warm container, as in production
    realm_id, _ = harness.connect(access_expires_in=0)
    before = token_state(harness, realm_id)
    # Given Intuit is down (503 to everything)
    harness.sim.set_faults(status_5xx=10_000)
    # When 8 callers ask at once
    codes = codes_of_callers_at_once(8, svc, realm_id)
    # Then every caller is answered refresh_unavailable (none hangs, none gets a stale token),
    # the lease is released, the tokens are untouched, and each caller led at most one
    # refresh attempt (3 HTTP tries): the load on Intuit is bounded by the callers
    assert codes == ["refresh_unavailable"] * 8
    assert_untouched_and_active(harness, realm_id, before)
    assert 3 <= len(outcomes(harness)) <= 8 * 3


@pytest.mark.slow
def test_429_retry_after_is_honoured(harness: Harness, service) -> None:
    # Retry-After (1 s) is within the backoff budget (2 s): the client waits it out, once
    svc = service(INTUIT_BACKOFF_MAX_SECONDS=2)
    realm_id, _ = harness.connect(access_expires_in=0)
    harness.sim.set_faults(rate_429=1, retry_after=1)
    response = svc.get_token(realm_id)
    assert "access_token" in response
    calls = harness.refresh_calls()
    assert [c["outcome"] for c in calls] == ["fault:429", "ok"]
    # The simulator saw the retry no sooner than Retry-After asked (its own clock).
    assert calls[1]["at"] - calls[0]["at"] >= 0.95


def test_429_retry_after_beyond_the_budget_is_not_retried_early(harness: Harness, service) -> None:
    # Retry-After 30 s is beyond the backoff budget: rather than come back early (or hold the
    # lease for 30 s), the call gives up and the caller is told to retry later
    svc = service()
    realm_id, _ = harness.connect(access_expires_in=0)
    before = token_state(harness, realm_id)
    harness.sim.set_faults(rate_429=5, retry_after=30)
    assert error_code(svc.get_token(realm_id)) == "refresh_unavailable"
    assert outcomes(harness) == ["fault:429"]
    assert_untouched_and_active(harness, realm_id, before)


@pytest.mark.slow
def test_timeouts_are_retried_and_leave_tokens_untouched(harness: Harness, service) -> None:
    svc = service(INTUIT_TIMEOUT_SECONDS=0.5)
    realm_id, _ = harness.connect(access_expires_in=0)
    before = token_state(harness, realm_id)

    # Given every attempt hangs longer than our timeout
    harness.sim.set_faults(timeouts=3, timeout_seconds=3)
    # When a caller asks / Then it is told to retry, and the tokens are untouched
    assert error_code(svc.get_token(realm_id)) == "refresh_unavailable"
    assert outcomes(harness) == ["fault:timeout"] * 3
    assert_untouched_and_active(harness, realm_id, before)

    # Given only the first attempt hangs
    harness.sim.reset_counters()
    harness.sim.set_faults(timeouts=1, timeout_seconds=3)
    # When a caller asks / Then the retry succeeds
    response = svc.get_token(realm_id)
    assert outcomes(harness) == ["fault:timeout", "ok"]
    assert token_is_valid_at_intuit(harness.sim, realm_id, response["access_token"])


def wait_for_refresh_outcome(harness: Harness, outcome: str, timeout: float = 10) -> None:
    """Wait until the simulator has processed a request we stopped waiting for."""
    deadline = time.monotonic() + timeout
    while outcome not in outcomes(harness):
        assert time.monotonic() < deadline, f"simulator never logged {outcome}"
        time.sleep(0.05)


@pytest.mark.parametrize("grace", [86400.0, 0.0], ids=["grace24h", "grace0"])
def test_timeout_after_intuit_processed_the_refresh(
    harness: Harness, service, grace: float
) -> None:
    # Given Intuit is slower than our timeout but does process the refresh (and rotates)
    harness.sim.configure(refresh_grace_seconds=grace)
    svc = service(INTUIT_TIMEOUT_SECONDS=0.3, INTUIT_MAX_ATTEMPTS=1)
    realm_id, issued = harness.connect(access_expires_in=0)
    before = token_state(harness, realm_id)
    harness.sim.set_faults(latency_seconds=1.0)
    assert error_code(svc.get_token(realm_id)) == "refresh_unavailable"
    wait_for_refresh_outcome(harness, "ok")  # Intuit rotated; we never saw the answer
    assert_untouched_and_active(harness, realm_id, before)
    harness.sim.clear_faults()
    # When the next caller asks
    response = svc.get_token(realm_id)
    if grace:
        # Then with Intuit's grace the stored (superseded) token still refreshes: nothing lost
        assert token_is_valid_at_intuit(harness.sim, realm_id, response["access_token"])
        assert [c.get("via_previous") for c in harness.refresh_calls()] == [False, True]
    else:
        # Then without grace it is the crash-before-commit case: flagged, tokens kept, no event
        assert error_code(response) == "refresh_unavailable"
        conn = harness.connection(realm_id)
        assert conn is not None and conn.status == "active"
        assert (conn.last_error, conn.invalid_grant_count) == ("invalid_grant", 1)
        assert harness.stored_tokens(realm_id)["refresh"] == issued["refresh_token"]


def test_invalid_grant_burst_during_an_outage_keeps_the_connection(
    harness: Harness, service
) -> None:
    svc = service()  # production window: 6 h and 3 attempts
    realm_id, _ = harness.connect(access_expires_in=0)
    before = token_state(harness, realm_id)
    # Given Intuit answers invalid_grant to a valid token (as it does during outages)
    harness.sim.set_faults(invalid_grant=4)
    # When callers keep asking during the burst
    codes = [error_code(svc.get_token(realm_id)) for _ in range(4)]
    # Then they are told to retry, the tokens are untouched, the connection stays active,
    # the rejections are counted, and no needs_reauthorization event goes out
    assert codes == ["refresh_unavailable"] * 4
    assert outcomes(harness) == ["fault:invalid_grant"] * 4
    assert_untouched_and_active(harness, realm_id, before)
    conn = harness.connection(realm_id)
    assert conn is not None
    assert (conn.last_error, conn.invalid_grant_count) == ("invalid_grant", 4)
    assert harness.aws.events.of(NEEDS_REAUTH, realm_id) == []
    # When the burst is over / Then the same stored token refreshes and the flags clear
    response = svc.get_token(realm_id)
    assert token_is_valid_at_intuit(harness.sim, realm_id, response["access_token"])
    conn = harness.connection(realm_id)
    assert conn is not None
    assert (conn.version, conn.invalid_grant_count, conn.last_error) == (2, 0, None)


def test_revoked_token_ends_in_needs_reauthorization_with_exactly_one_event(
    harness: Harness, service
) -> None:
    svc = service(INVALID_GRANT_WINDOW_SECONDS=1, INVALID_GRANT_MIN_ATTEMPTS=2)
    realm_id, _ = harness.connect(access_expires_in=0, tenant_id="tenant-revoked")
    # Given the user disconnected the app at Intuit
    harness.sim.revoke_realm(realm_id)
    # When a caller asks: one rejection is not proof, it is told to retry
    assert error_code(svc.get_token(realm_id)) == "refresh_unavailable"
    assert harness.aws.events.of(NEEDS_REAUTH, realm_id) == []
    # When 8 callers ask at once after the window has passed
    conn = harness.connection(realm_id)
    assert conn is not None and conn.invalid_grant_first_at is not None
    time.sleep(max(0.0, conn.invalid_grant_first_at + 1.1 - time.time()))
    codes = codes_of_callers_at_once(8, svc, realm_id)
    # Then all are told to reconnect, only one of them asked Intuit, and one event went out
    assert codes == ["needs_reauthorization"] * 8
    assert outcomes(harness) == ["invalid_grant", "invalid_grant"]
    conn = harness.connection(realm_id)
    assert conn is not None
    assert (conn.status, conn.reauth_reason) == ("needs_reauthorization", "invalid_grant")
    assert conn.due_at is None  # out of the sweep's index
    events = harness.aws.events.of(NEEDS_REAUTH, realm_id)
    assert len(events) == 1
    assert events[0]["detail"] == {
        "realm_id": realm_id,
        "tenant_id": "tenant-revoked",
        "reason": "invalid_grant",
        "occurred_at": events[0]["detail"]["occurred_at"],
        "event_id": events[0]["detail"]["event_id"],  # stable across redeliveries
    }
    assert len(events[0]["detail"]["event_id"]) == 32
    # and later calls (get_token, refresh) neither call Intuit nor emit again
    assert error_code(svc.get_token(realm_id)) == "needs_reauthorization"
    assert error_code(svc.connections({"action": "refresh", "realm_id": realm_id})) == (
        "needs_reauthorization"
    )
    assert len(outcomes(harness)) == 2
    assert len(harness.aws.events.of(NEEDS_REAUTH, realm_id)) == 1
