"""The refreshing process is SIGKILLed at each step of the protocol; another process recovers.

Crash points (tests/reliability/worker.py wraps the production method of each step):

- ``after_lease``: the lease is taken, Intuit was not called;
- ``after_intuit``: Intuit answered (and rotated the refresh token), nothing was committed;
- ``after_commit``: the new tokens are committed, the caller was never answered.

The lease of a dead holder must expire before anyone can take over, so these tests run with a
9 s lease (``REFRESH_LEASE_SECONDS``), the shortest Settings accepts for the compressed Intuit
and AWS timeouts they also set (one attempt each: 1 s + 3 x 2.5 s). With Intuit's 24 h grace
nothing is ever lost. With grace 0 only ``after_intuit`` loses the connection, because the one
refresh token Intuit still honours died with the process; the vault then flags it
(``last_error``, ``invalid_grant_count``) and, once the rejection has persisted over the
window, marks it ``needs_reauthorization`` with one ``connection.needs_reauthorization`` event.
It is never left "active and broken" unflagged.
"""

from __future__ import annotations

import time

import pytest

from tests.reliability.conftest import Harness, Workers, token_is_valid_at_intuit

GRACE_24H = 86400.0
LEASE = {
    "REFRESH_LEASE_SECONDS": 9,
    "LEASE_WAIT_SECONDS": 15,
    "INTUIT_TIMEOUT_SECONDS": 1,
    "INTUIT_MAX_ATTEMPTS": 1,
    "AWS_MAX_ATTEMPTS": 1,
    "AWS_CONNECT_TIMEOUT_SECONDS": 0.5,
    "AWS_READ_TIMEOUT_SECONDS": 2,
}
# The rejection window of the grace-0 case, shrunk from hours to a second for the test.
WINDOW = {"INVALID_GRANT_WINDOW_SECONDS": 1, "INVALID_GRANT_MIN_ATTEMPTS": 2}
NEEDS_REAUTH = "connection.needs_reauthorization"


def crash_refresh(harness: Harness, workers: Workers, step: str) -> tuple[str, dict]:
    """An expired realm whose refreshing process dies at ``step``; returns (realm, issued)."""
    realm_id, issued = harness.connect(access_expires_in=0)
    harness.sim.reset_counters()
    run = workers.run([realm_id], crash_at=step, env=LEASE)
    assert run.killed, f"worker was not killed (rc={run.returncode}): {run.stderr[-2000:]}"
    assert run.crashed_at == step
    assert run.results == []  # the caller was never answered
    return realm_id, issued


def assert_left_under_a_dead_lease(harness: Harness, realm_id: str) -> None:
    """The crash left the connection leased at version 1, due just after the lease expires:
    the sweep comes back even if no caller does (recovery does not wait for the keep-alive)."""
    conn = harness.connection(realm_id)
    assert conn is not None and conn.lease_owner is not None and conn.version == 1
    assert conn.lease_until is not None and conn.due_at is not None
    assert conn.lease_until < conn.due_at <= conn.lease_until + 30


@pytest.fixture(params=[GRACE_24H, 0.0], ids=["grace24h", "grace0"])
def any_grace(request: pytest.FixtureRequest, harness: Harness) -> float:
    """The test runs with Intuit's 24 h grace, then with a strict Intuit (grace 0): what it
    checks must hold either way."""
    grace = float(request.param)
    harness.sim.configure(refresh_grace_seconds=grace)
    return grace


def refresh_outcomes(harness: Harness) -> list[tuple[str, bool]]:
    return [(c["outcome"], bool(c.get("via_previous"))) for c in harness.refresh_calls()]


@pytest.mark.slow
def test_crash_after_lease_before_intuit_is_recovered_by_the_next_process(
    harness: Harness, workers: Workers, any_grace: float
) -> None:
    # Given the refreshing process died holding the lease, before it called Intuit
    realm_id, issued = crash_refresh(harness, workers, "after_lease")
    assert_left_under_a_dead_lease(harness, realm_id)
    assert harness.sim.counters()["token.refresh_token"] == 0
    # When another process asks for a token
    run = workers.run([realm_id], env=LEASE)
    # Then it waits out the dead lease, refreshes with the stored token and gets a valid one
    (result,) = run.results
    token = result["response"]["access_token"]
    assert token != issued["access_token"]
    assert token_is_valid_at_intuit(harness.sim, realm_id, token)
    assert refresh_outcomes(harness) == [("ok", False)]
    conn = harness.connection(realm_id)
    assert conn is not None
    assert (conn.version, conn.status, conn.lease_owner) == (2, "active", None)


@pytest.mark.slow
def test_crash_after_commit_loses_nothing_and_causes_no_second_refresh(
    harness: Harness, workers: Workers, any_grace: float
) -> None:
    # Given the refreshing process committed the new tokens and died before answering
    realm_id, _ = crash_refresh(harness, workers, "after_commit")
    committed = harness.stored_tokens(realm_id)
    conn = harness.connection(realm_id)
    assert conn is not None and (conn.version, conn.lease_owner) == (2, None)
    # When another process asks for a token
    run = workers.run([realm_id], env=LEASE)
    # Then it gets the committed token at once: no second refresh reached Intuit
    (result,) = run.results
    assert result["response"]["access_token"] == committed["access"]
    assert token_is_valid_at_intuit(harness.sim, realm_id, committed["access"])
    assert refresh_outcomes(harness) == [("ok", False)]
    # and the committed refresh token is the live one, even for a strict Intuit
    harness.sim.configure(refresh_grace_seconds=0)
    assert harness.vault.refresh(realm_id).version == 3


@pytest.mark.slow
def test_crash_between_intuit_answer_and_commit_with_24h_grace_loses_nothing(
    harness: Harness, workers: Workers
) -> None:
    # Given Intuit (24 h grace) rotated the refresh token and the process died before committing
    harness.sim.configure(refresh_grace_seconds=GRACE_24H)
    realm_id, issued = crash_refresh(harness, workers, "after_intuit")
    assert harness.stored_tokens(realm_id)["refresh"] == issued["refresh_token"]  # now stale
    assert_left_under_a_dead_lease(harness, realm_id)
    # When another process asks for a token
    run = workers.run([realm_id], env=LEASE)
    # Then it refreshes with the stored (superseded) token inside Intuit's grace and succeeds
    (result,) = run.results
    token = result["response"]["access_token"]
    assert token_is_valid_at_intuit(harness.sim, realm_id, token)
    assert refresh_outcomes(harness) == [("ok", False), ("ok", True)]
    # and what it stored is Intuit's current refresh token: it keeps working in strict mode
    harness.sim.configure(refresh_grace_seconds=0)
    assert harness.vault.refresh(realm_id).version == 3
    assert harness.vault.refresh(realm_id).version == 4
    assert harness.sim.counters()["token.refresh_token.invalid_grant"] == 0


@pytest.mark.slow
def test_crash_between_intuit_answer_and_commit_without_grace_is_flagged_then_marked_once(
    harness: Harness, workers: Workers
) -> None:
    # Given a strict Intuit (grace 0) rotated the refresh token and the process died before
    # committing: the only refresh token Intuit still honours died with it
    realm_id, issued = crash_refresh(harness, workers, "after_intuit")

    # When the next process tries (production window: hours)
    first = workers.run([realm_id], env=LEASE)
    # Then its caller gets refresh_unavailable, the tokens are untouched, and the connection
    # carries the flag that metrics, get_connection and the sweep all see: never silent
    (result,) = first.results
    assert result["response"]["error"]["code"] == "refresh_unavailable"
    conn = harness.connection(realm_id)
    assert conn is not None and conn.invalid_grant_first_at is not None
    assert (conn.status, conn.version, conn.lease_owner) == ("active", 1, None)
    assert (conn.last_error, conn.invalid_grant_count) == ("invalid_grant", 1)
    assert harness.stored_tokens(realm_id)["refresh"] == issued["refresh_token"]
    assert harness.aws.events.of(NEEDS_REAUTH, realm_id) == []

    # When the rejection persists once the window (shrunk to 1 s here) has passed
    time.sleep(max(0.0, conn.invalid_grant_first_at + 1.1 - time.time()))
    later = workers.run([realm_id], calls=2, env={**LEASE, **WINDOW})
    # Then the connection is marked needs_reauthorization, callers are told so, one event
    codes = [r["response"].get("error", {}).get("code") for r in later.results]
    assert codes == ["needs_reauthorization", "needs_reauthorization"]
    assert refresh_outcomes(harness) == [
        ("ok", False),  # the crashed process's refresh: Intuit rotated
        ("invalid_grant", False),  # the stale stored token: flagged, not yet dead
        ("invalid_grant", False),  # rejected again after the window: dead
    ]
    conn = harness.connection(realm_id)
    assert conn is not None
    assert (conn.status, conn.reauth_reason, conn.lease_owner) == (
        "needs_reauthorization",
        "invalid_grant",
        None,
    )
    events = harness.aws.events.of(NEEDS_REAUTH, realm_id)
    assert len(events) == 1
    assert events[0]["detail"]["tenant_id"] == "tenant-a"
    assert events[0]["detail"]["reason"] == "invalid_grant"
