"""The store's conditional writes, on moto with the table built from template.yaml."""

from __future__ import annotations

import time

import boto3
import pytest

from qbo_connect.errors import AlreadyConsumed, AlreadyExists, LeaseHeld, LeaseLost, NotFound
from qbo_connect.events import NEEDS_REAUTHORIZATION as NEEDS_REAUTH
from qbo_connect.events import PendingEvent
from qbo_connect.store.connections import SealedTokens
from qbo_connect.store.single_use import SingleUseRepository
from qbo_connect.store.sweep_state import ShardMark
from qbo_connect.store.table import due_shard_for
from tests.helpers.store import TableRepositories


def sealed(tag: bytes) -> SealedTokens:
    return SealedTokens(
        data_key=b"wrapped-key",
        access_token_enc=b"at-" + tag,
        refresh_token_enc=b"rt-" + tag,
        access_expires_at=time.time() + 3600,
        refresh_expires_at=time.time() + 8_000_000,
    )


@pytest.fixture
def store(aws) -> TableRepositories:
    return TableRepositories(boto3.resource("dynamodb").Table(aws["table_name"]))


def create(store: TableRepositories, realm: str = "123", tenant: str = "t1"):
    return store.create_connection(
        realm_id=realm,
        tenant_id=tenant,
        environment="sandbox",
        scopes=["openid"],
        tokens=sealed(b"v1"),
        now=time.time(),
        due_at=time.time() + 100,
    )


def test_create_twice_is_refused(store):
    # Given a stored connection
    create(store)
    # When it is created again / Then the second create fails and the first is intact
    with pytest.raises(AlreadyExists):
        create(store, tenant="t2")
    assert store.get_connection("123").tenant_id == "t1"


def test_stale_commit_never_overwrites_newer_tokens(store):
    # Given two holders that both read version 1; A leases and commits version 2
    create(store)
    now = time.time()
    store.acquire_lease("123", seen_version=1, owner="A", now=now, until=now + 30)
    store.commit_refresh(
        "123", seen_version=1, owner="A", tokens=sealed(b"A"), now=now, due_at=None
    )
    # When B tries to lease and to commit with the stale version
    with pytest.raises(LeaseHeld):
        store.acquire_lease("123", seen_version=1, owner="B", now=now, until=now + 30)
    with pytest.raises(LeaseLost):
        store.commit_refresh(
            "123", seen_version=1, owner="B", tokens=sealed(b"B"), now=now, due_at=None
        )
    # Then A's tokens are what is stored
    conn = store.get_connection("123")
    assert conn.version == 2
    assert conn.refresh_token_enc == b"rt-A"
    assert conn.lease_owner is None


def test_commit_by_a_holder_whose_lease_was_taken_over_fails(store):
    # Given A's lease expired and B took it over
    create(store)
    now = time.time()
    store.acquire_lease("123", seen_version=1, owner="A", now=now, until=now + 1)
    store.acquire_lease("123", seen_version=1, owner="B", now=now + 2, until=now + 30)
    # When A commits late / Then it is refused and B's lease stands
    with pytest.raises(LeaseLost):
        store.commit_refresh(
            "123", seen_version=1, owner="A", tokens=sealed(b"A"), now=now, due_at=None
        )
    assert store.get_connection("123").lease_owner == "B"


def test_live_lease_blocks_others_and_release_records_invalid_grant(store):
    create(store)
    now = time.time()
    store.acquire_lease("123", seen_version=1, owner="A", now=now, until=now + 30)
    with pytest.raises(LeaseHeld):
        store.acquire_lease("123", seen_version=1, owner="B", now=now, until=now + 30)
    store.release_lease("123", owner="A", now=now, error="invalid_grant", invalid_grant=True)
    conn = store.get_connection("123")
    assert (conn.lease_owner, conn.invalid_grant_count, conn.last_error) == (
        None,
        1,
        "invalid_grant",
    )
    assert conn.refresh_token_enc == b"rt-v1"  # tokens untouched


def dead_event(now: float) -> PendingEvent:
    return PendingEvent.new(NEEDS_REAUTH, {"realm_id": "123", "reason": "x"}, now=now)


def test_needs_reauthorization_is_won_by_exactly_one_caller(store):
    create(store)
    now = time.time()
    store.acquire_lease("123", seen_version=1, owner="A", now=now, until=now + 30)
    event = dead_event(now)
    store.mark_needs_reauthorization(
        "123", seen_version=1, owner="A", reason="x", now=now, event=event
    )
    # Another verdict (its own event) is refused: the first one stands, with one event
    with pytest.raises(LeaseLost):
        store.mark_needs_reauthorization(
            "123", seen_version=1, owner="A", reason="x", now=now, event=dead_event(now)
        )
    conn = store.get_connection("123")
    assert conn.status == "needs_reauthorization"
    assert [e.event_id for e in conn.pending_events] == [event.event_id]
    # It stays in DueIndex until its event is delivered, then leaves it
    assert conn.due_at is not None
    assert store.clear_event("123", event.event_id)
    assert not store.clear_event("123", event.event_id)  # a second delivery clears nothing
    assert store.drop_due("123", seen_due_at=conn.due_at)
    assert store.get_connection("123").due_at is None


def test_a_retried_write_recognises_its_own_earlier_success(store):
    """boto3 retries a request whose first attempt was applied but whose answer was lost:
    the retry meets its own write and must succeed, not fail its condition."""
    create(store)
    now = time.time()
    # Lease: the retry meets our own live lease
    store.acquire_lease("123", seen_version=1, owner="A", now=now, until=now + 30)
    again = store.acquire_lease("123", seen_version=1, owner="A", now=now, until=now + 30)
    assert again.lease_owner == "A"
    with pytest.raises(LeaseHeld):
        store.acquire_lease("123", seen_version=1, owner="B", now=now, until=now + 30)
    # Commit: the retry meets our own committed version
    args = {"seen_version": 1, "owner": "A", "tokens": sealed(b"A"), "now": now, "due_at": None}
    assert store.commit_refresh("123", **args).version == 2
    assert store.commit_refresh("123", **args).version == 2
    with pytest.raises(LeaseLost):
        store.commit_refresh("123", **{**args, "owner": "B"})
    # Mark dead: the retry meets its own event
    store.acquire_lease("123", seen_version=2, owner="C", now=now, until=now + 30)
    event = dead_event(now)
    mark = {"seen_version": 2, "owner": "C", "reason": "x", "now": now, "event": event}
    store.mark_needs_reauthorization("123", **mark)
    assert store.mark_needs_reauthorization("123", **mark).status == "needs_reauthorization"
    # The worker's lease: the retry meets its own lease; another worker is refused and told
    # why by the failed write itself
    create(store, realm="126")
    due = {"now": now, "until": now + 30, "due_upto": now + 200}  # created due in 100 s
    leased, _ = store.lease_if_due("126", owner="W1", **due)
    assert leased is not None and leased.lease_owner == "W1"
    again_leased, _ = store.lease_if_due("126", owner="W1", **due)
    assert again_leased is not None and again_leased.lease_owner == "W1"
    refused, found = store.lease_if_due("126", owner="W2", **due)
    assert refused is None and found is not None and found.lease_owner == "W1"
    # Sweep run lease: the retry meets its own lease; another run is refused while it lives
    assert store.begin_sweep_run(owner="run-1", now=now, until=now + 300) is not None
    assert store.begin_sweep_run(owner="run-1", now=now, until=now + 300) is not None
    assert store.begin_sweep_run(owner="run-2", now=now + 1, until=now + 301) is None
    # Sweep state: the retry meets its own saved state (lease released, last_run ours) ...
    mark = ShardMark(watermark=now, stale_at=now, sent=frozenset({("124", 12.5)}))
    assert store.end_sweep_run(owner="run-1", now=now, shards={"DUE#03": mark})
    assert store.end_sweep_run(owner="run-1", now=now, shards={"DUE#03": mark})
    # ... and the next run's lease write returns it; a late retry of run-1's state write then
    # fails and leaves run-2's lease alone
    state = store.begin_sweep_run(owner="run-2", now=now + 1, until=now + 301)
    assert state is not None and state.shards == {
        "DUE#03": ShardMark(round(now, 3), round(now, 3), mark.sent)
    }
    assert not store.end_sweep_run(owner="run-1", now=now, shards={"DUE#03": mark})
    assert store.begin_sweep_run(owner="run-3", now=now + 2, until=now + 302) is None
    # Create: the retry meets its own created event at version 1
    created = PendingEvent.new("connection.created", {"realm_id": "125"}, now=now)
    kwargs = {
        "realm_id": "125",
        "tenant_id": "t1",
        "environment": "sandbox",
        "scopes": ["openid"],
        "tokens": sealed(b"c"),
        "now": now,
        "event": created,
    }
    store.create_connection(**kwargs)
    assert store.create_connection(**kwargs).version == 1
    with pytest.raises(AlreadyExists):
        store.create_connection(**{**kwargs, "event": dead_event(now)})


def test_a_late_commit_needs_the_unchanged_version_only(store):
    create(store)
    now = time.time()
    store.acquire_lease("123", seen_version=1, owner="A", now=now, until=now + 1)
    store.acquire_lease("123", seen_version=1, owner="B", now=now + 2, until=now + 30)
    # A's lease lapsed and B holds one, but nobody committed: A's late commit is taken
    args = {"seen_version": 1, "tokens": sealed(b"A"), "now": now, "due_at": None}
    with pytest.raises(LeaseLost):
        store.commit_refresh("123", owner="A", **args)
    assert store.commit_refresh("123", owner="A", late=True, **args).version == 2
    # and B's commit on the old version is refused: A's tokens stand
    with pytest.raises(LeaseLost):
        store.commit_refresh("123", owner="B", late=True, **args)
    assert store.get_connection("123").refresh_token_enc == b"rt-A"


def test_touch_never_moves_a_committed_due_time_from_a_stale_read(store):
    create(store)
    now = time.time()
    store.acquire_lease("123", seen_version=1, owner="A", now=now, until=now + 30)
    store.commit_refresh(
        "123", seen_version=1, owner="A", tokens=sealed(b"A"), now=now, due_at=now + 80_000
    )
    # A reader that read version 1 computes an early due time: it is not written
    assert not store.touch_last_used(
        "123", now=now, min_interval=300, due_at=now - 10, seen_version=1
    )
    assert store.get_connection("123").due_at == pytest.approx(now + 80_000, abs=0.01)
    # A reader of the current version may
    assert store.touch_last_used("123", now=now, min_interval=300, due_at=now + 50, seen_version=2)


def test_reconnect_is_refused_for_another_tenant(store):
    create(store)
    with pytest.raises(Exception) as info:
        store.reconnect_connection(
            realm_id="123",
            tenant_id="other",
            seen_version=1,
            environment="sandbox",
            scopes=[],
            tokens=sealed(b"x"),
            now=time.time(),
        )
    assert type(info.value).__name__ == "VersionConflict"
    assert store.get_connection("123").refresh_token_enc == b"rt-v1"


def test_disconnect_deletes_token_material_once(store):
    create(store)
    store.disconnect("123", now=time.time())
    conn = store.get_connection("123")
    assert conn.status == "disconnected"
    assert conn.refresh_token_enc is None and conn.access_token_enc is None
    assert conn.data_key is None
    with pytest.raises(NotFound):
        store.disconnect("123", now=time.time())


def test_single_use_items_are_consumed_exactly_once_and_expire(store):
    now = time.time()
    store.put_single_use("STATE", "secret-value", {"tenant_id": "t1"}, expires_at=now + 60)
    assert store.consume_single_use("STATE", "secret-value", now=now)["tenant_id"] == "t1"
    with pytest.raises(AlreadyConsumed):
        store.consume_single_use("STATE", "secret-value", now=now)
    store.put_single_use("STATE", "old", {}, expires_at=now - 1)
    with pytest.raises(AlreadyConsumed):  # expired: TTL is lazy, the condition is not
        store.consume_single_use("STATE", "old", now=now)
    raw = store.table.get_item(
        Key={"pk": f"STATE#{SingleUseRepository.hash_secret('secret-value')}", "sk": "STATE"}
    )["Item"]
    assert "secret-value" not in str(raw)


def test_last_used_is_written_at_most_once_per_interval(store):
    create(store)
    now = time.time()
    assert store.touch_last_used("123", now=now, min_interval=300)
    assert not store.touch_last_used("123", now=now + 10, min_interval=300)
    assert store.touch_last_used("123", now=now + 301, min_interval=300)


def test_due_index_finds_only_due_active_connections(store):
    create(store, realm="1")
    create(store, realm="2")
    store.set_due("2", seen_version=1, due_at=time.time() + 10_000)
    shard1 = due_shard_for("1", store.due_shards)
    realms, _ = store.query_due(shard1, time.time() + 200)
    assert "1" in realms and "2" not in realms


def test_list_by_tenant_paginates(store):
    for realm in ("10", "11", "12"):
        create(store, realm=realm, tenant="t9")
    create(store, realm="13", tenant="other")
    page1, cursor = store.list_connections("t9", limit=2)
    page2, cursor2 = store.list_connections("t9", limit=2, cursor=cursor)
    assert sorted(c.realm_id for c in page1 + page2) == ["10", "11", "12"]
    assert cursor2 is None or store.list_connections("t9", limit=2, cursor=cursor2)[0] == []


def test_a_disconnected_realm_can_be_connected_by_a_new_tenant(store):
    # Given tenant t1 disconnected its realm
    create(store)
    store.disconnect("123", now=time.time())
    gone = store.get_connection("123")
    # When tenant t2 connects it
    conn = store.reconnect_connection(
        realm_id="123",
        tenant_id="t2",
        seen_version=gone.version,
        environment="sandbox",
        scopes=[],
        tokens=sealed(b"t2"),
        now=time.time(),
    )
    # Then it is t2's, active, with t2's tokens and an integer version
    assert (conn.tenant_id, conn.status, conn.refresh_token_enc) == ("t2", "active", b"rt-t2")
    raw = store.table.get_item(Key={"pk": "REALM#123", "sk": "CONNECTION"})["Item"]
    assert str(raw["version"]) == str(gone.version + 1)
