"""The fleet-level invalid_grant breaker, over HTTP against the local stack.

Intuit answers invalid_grant during outages. Each connection is declared dead only when its
rejections persist over ``InvalidGrantWindowMinutes``; here that window is 0 (through
``--parameter-overrides``, as ``sam deploy`` takes it), so without the breaker three rejections
would kill a connection. An outage that rejects all 50 connections must kill none; once
refreshes succeed again, a connection that really was revoked among healthy ones is still
declared dead, with its one event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from devstack.process import start_devstack
from tests.reliability.aws_faults_stack import NEEDS_REAUTH, STACK_ENV, FaultStack

CONNECTIONS = 50
ATTEMPTS = 3  # INVALID_GRANT_MIN_ATTEMPTS (the default)


@pytest.fixture
def fleet(tmp_path) -> Iterator[FaultStack]:
    with start_devstack(
        tmp_path,
        parameter_overrides={"InvalidGrantWindowMinutes": "0"},
        env=STACK_ENV,
        extra_args=("--no-schedule", "--no-connect-link", "--refresh-grace", "0"),
    ) as stack:
        fleet = FaultStack(stack, None, stack.aws)
        fleet.reset()
        yield fleet
        log = stack.log_text()
        assert not [t for t in fleet.issued if t in log], "a token leaked into the stack's log"


def code(response: dict[str, Any]) -> str | None:
    return (response.get("error") or {}).get("code")


def suspended_verdicts(log: str) -> float:
    """Sum of the InvalidGrantVerdictSuspended metric over the EMF lines of the log."""
    total = 0.0
    decoder = json.JSONDecoder()
    for line in log.splitlines():
        start = line.find('{"_aws"')
        if start < 0:
            continue
        doc, _ = decoder.raw_decode(line[start:])  # threads may share a log line
        value = doc.get("InvalidGrantVerdictSuspended", 0)
        total += sum(value) if isinstance(value, list) else float(value)
    return total


def test_an_outage_longer_than_the_window_kills_no_connection_but_a_revocation_does(
    fleet: FaultStack,
) -> None:
    # Given 50 connections whose access tokens expired
    realms = [fleet.seed(access_left=0)[0] for _ in range(CONNECTIONS)]
    # When Intuit answers invalid_grant to every refresh, and every connection is tried as
    # many times as a verdict needs (the window is 0: the rejection has "persisted")
    fleet.sim("POST", "faults", {"invalid_grant": 100_000})
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(ATTEMPTS):
            codes = list(pool.map(lambda r: code(fleet.get_token(r)), realms))
            assert codes == ["refresh_unavailable"] * CONNECTIONS
    # Then none was declared dead: every verdict was suspended, the metric says so, and no
    # needs_reauthorization event went out
    assert fleet.invalid_grants() == CONNECTIONS * ATTEMPTS
    statuses = {fleet.connection(r).status for r in realms}
    assert statuses == {"active"}
    assert all(fleet.connection(r).invalid_grant_count == ATTEMPTS for r in realms)
    # (the local stack runs invocations in threads that share one metrics registry, so the
    # EMF sum is not exact; that the metric is emitted is what the alarm needs)
    assert suspended_verdicts(fleet.stack.log_text()) > 0
    assert all(fleet.events(NEEDS_REAUTH, r) == [] for r in realms)

    # When the outage ends, but one company's user revoked the app meanwhile
    fleet.sim("DELETE", "faults")
    revoked, healthy = realms[0], realms[1:]
    fleet.sim("POST", "revoke-realm", {"realm_id": revoked})
    tokens = [fleet.get_token(r) for r in healthy]
    assert all("access_token" in t for t in tokens)
    fleet.issued.update(t["access_token"] for t in tokens)
    # Then the healthy ones refresh and the revoked one is declared dead at its next
    # rejection: refreshes succeed again, so verdicts are no longer suspended
    assert code(fleet.get_token(revoked)) == "needs_reauthorization"
    assert {fleet.connection(r).status for r in healthy} == {"active"}
    conn = fleet.connection(revoked)
    assert (conn.status, conn.reauth_reason) == ("needs_reauthorization", "invalid_grant")
    events = fleet.events(NEEDS_REAUTH, revoked)
    assert [e["detail"]["reason"] for e in events] == ["invalid_grant"]
