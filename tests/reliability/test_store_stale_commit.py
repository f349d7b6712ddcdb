"""Stale writers over HTTP: a commit on an old version or a lost lease never overwrites.

tests/unit/test_store.py pins the store's conditions on in-process moto. Here the same rules
are held against moto server over HTTP with many threads racing, plus two cases that only
show up end to end: an SDK retry replaying a commit DynamoDB already applied, and a holder
whose lease ran out while Intuit was still answering (a paused holder): nobody committed, so
its late commit on the unchanged version is taken, and both callers get a token that is valid
for what they asked, never the expired one it set out to replace.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from qbo_connect.errors import LeaseHeld, LeaseLost
from qbo_connect.intuit import TokenSet
from qbo_connect.store.connections import SealedTokens
from tests.helpers.threads import at_once
from tests.reliability.conftest import Harness, token_is_valid_at_intuit

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")


def sealed(harness: Harness, realm_id: str, tag: str) -> SealedTokens:
    """Real sealed tokens (under the connection's data key) whose plaintext we know."""
    conn = harness.connection(realm_id)
    assert conn is not None
    now = time.time()
    tokens = TokenSet(
        access_token=f"sim-at-stale-test-{tag}-{realm_id}",
        refresh_token=f"RT1-sim-stale-test-{tag}-{realm_id}",
        expires_in=3600,
        refresh_token_expires_in=8_726_400,
        obtained_at=now,
    )
    harness.ledger.add(tokens.access_token, tokens.refresh_token)
    return harness.vault.seal(realm_id, tokens, data_key=conn.data_key)


def commit(harness: Harness, realm_id: str, owner: str, now: float) -> dict[str, Any]:
    """The arguments of ``owner``'s commit of version 1 (fresh sealed tokens tagged ``owner``);
    the same dict passed twice is the same request replayed."""
    return {
        "seen_version": 1,
        "owner": owner,
        "tokens": sealed(harness, realm_id, owner),
        "now": now,
        "due_at": None,
    }


def test_racing_lease_acquisitions_on_one_version_have_one_winner(harness: Harness) -> None:
    realm_id, _ = harness.connect()
    now = time.time()

    def take(index: int) -> str | None:
        """The owner if it took the lease, None if it met another's."""
        owner = f"owner-{index}"
        try:
            harness.store.acquire_lease(
                realm_id, seen_version=1, owner=owner, now=now, until=now + 30
            )
        except LeaseHeld:
            return None
        return owner

    won = [owner for owner in at_once(16, take) if owner is not None]
    assert len(won) == 1
    conn = harness.connection(realm_id)
    assert conn is not None and conn.lease_owner == won[0]


def test_stale_commit_never_overwrites_a_newer_token(harness: Harness) -> None:
    # Given A leased version 1 and committed version 2
    realm_id, _ = harness.connect()
    now = time.time()
    harness.store.acquire_lease(realm_id, seen_version=1, owner="A", now=now, until=now + 30)
    commit_a = commit(harness, realm_id, "A", now)
    harness.store.commit_refresh(realm_id, **commit_a)
    # When B, who read version 1 too, commits / Then it is refused
    with pytest.raises(LeaseLost):
        harness.store.commit_refresh(realm_id, **commit(harness, realm_id, "B", now))
    # When A's own commit is replayed (an SDK retry after DynamoDB applied the first: the
    # same request) / Then it meets its own write and succeeds, changing nothing
    assert harness.store.commit_refresh(realm_id, **commit_a).version == 2
    # but not once someone leased the version it produced: that lease stands
    harness.store.acquire_lease(realm_id, seen_version=2, owner="C", now=now, until=now + 30)
    with pytest.raises(LeaseLost):
        harness.store.commit_refresh(realm_id, **commit_a)
    assert (harness.connection(realm_id) or pytest.fail()).lease_owner == "C"
    harness.store.release_lease(realm_id, owner="C", now=now)
    # Then A's first commit is what is stored
    conn = harness.connection(realm_id)
    assert conn is not None and (conn.version, conn.lease_owner) == (2, None)
    assert harness.stored_tokens(realm_id)["refresh"] == f"RT1-sim-stale-test-A-{realm_id}"


def test_late_commit_after_a_takeover_is_refused_and_the_taker_wins(harness: Harness) -> None:
    # Given A's lease expired and B took it over
    realm_id, issued = harness.connect()
    now = time.time()
    harness.store.acquire_lease(realm_id, seen_version=1, owner="A", now=now - 10, until=now - 5)
    harness.store.acquire_lease(realm_id, seen_version=1, owner="B", now=now, until=now + 30)
    # When A commits late / Then it is refused, before and after B commits
    with pytest.raises(LeaseLost):
        harness.store.commit_refresh(realm_id, **commit(harness, realm_id, "A", now))
    conn = harness.connection(realm_id)
    assert conn is not None and conn.lease_owner == "B" and conn.version == 1
    assert harness.stored_tokens(realm_id)["refresh"] == issued["refresh_token"]
    harness.store.commit_refresh(realm_id, **commit(harness, realm_id, "B", now))
    with pytest.raises(LeaseLost):
        harness.store.commit_refresh(realm_id, **commit(harness, realm_id, "A", now))
    assert harness.stored_tokens(realm_id)["refresh"] == f"RT1-sim-stale-test-B-{realm_id}"


def expires_in(response: dict[str, Any]) -> float:
    at = datetime.strptime(response["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return at.timestamp() - time.time()


def wait_until(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.02)


@pytest.mark.slow
def test_holder_that_lost_its_lease_mid_refresh_never_hands_out_the_expired_token(
    harness: Harness, service
) -> None:
    """A's lease (2 s) runs out while Intuit takes 2.6 s to answer it; B takes over and its
    refresh (1 s) is still in flight when A's answer arrives. A's commit meets B's lease; the
    version is unchanged (nobody committed), so A commits late: its tokens, issued for the
    stored refresh token of that version, are the newest. B's commit then meets the moved
    version and B's caller reads A's token. Neither caller may get the expired token back as
    if it were fresh (one did, before an earlier fix in tokens.py).

    Settings refuses a lease shorter than the worst case under it; a lease that lapses under a
    live holder happens only to a paused process, so the test forces a 2 s lease on the
    container's settings after they were checked."""
    # Given Intuit's 24 h grace (both refreshes succeed at Intuit) and a lease shorter than
    # Intuit's answer to A
    harness.sim.configure(refresh_grace_seconds=86400)
    svc = service(LEASE_WAIT_SECONDS=15, INTUIT_TIMEOUT_SECONDS=5)
    from qbo_connect.config import get_settings

    object.__setattr__(get_settings(), "lease_seconds", 2.0)
    realm_id, issued = harness.connect(access_expires_in=0)
    harness.sim.set_faults(latency_seconds=2.6)
    responses: dict[str, dict[str, Any]] = {}

    def ask(name: str) -> None:
        responses[name] = svc.get_token(realm_id, 300)

    # When A leads a refresh that Intuit answers slowly ...
    a = threading.Thread(target=ask, args=("A",))
    a.start()
    wait_until(lambda: harness.sim.counters()["token.refresh_token"] == 1)
    harness.sim.set_faults(latency_seconds=1.0)  # B's request will be answered sooner
    conn = harness.connection(realm_id)
    assert conn is not None and conn.lease_until is not None
    # ... and B takes over once A's lease has run out
    wait_until(lambda: time.time() > conn.lease_until + 0.05)
    b = threading.Thread(target=ask, args=("B",))
    b.start()
    a.join()
    b.join()
    # Then both callers got the one committed token (A's late commit; B's was refused on the
    # moved version), valid for at least what they asked, never the expired token
    stored = harness.stored_tokens(realm_id)
    for name in ("A", "B"):
        response = responses[name]
        assert "access_token" in response, f"{name}: {response}"
        assert response["access_token"] != issued["access_token"], f"{name} got the old token"
        assert expires_in(response) >= 300, f"{name} got a token about to expire"
        assert response["access_token"] == stored["access"]
    assert token_is_valid_at_intuit(harness.sim, realm_id, stored["access"])
    conn = harness.connection(realm_id)
    assert conn is not None and (conn.version, conn.lease_owner) == (2, None)
    assert [c["outcome"] for c in harness.refresh_calls()] == ["ok", "ok"]
