"""The refresh worker: one refresh per due message, acknowledgements, failures and handlers.

moto in-process for AWS, the Intuit simulator over HTTP (tests/unit/sweep_harness.py).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from typing import Any

import pytest

from qbo_connect.contracts import RefreshMessage
from qbo_connect.intuit import ClientCredentials, IntuitClient
from qbo_connect.store.table import connection_key
from qbo_connect.telemetry import metrics
from qbo_connect.vault.history import History
from tests.reliability.conftest import token_is_valid_at_intuit
from tests.unit.sweep_harness import (
    DAY,
    HOUR,
    KEEP_ALIVE,
    REPO_ROOT,
    Context,
    emf_metrics,
    seed,
    sqs_event,
)


def test_one_sweep_refreshes_exactly_the_due_ones_once_and_the_next_sweep_none(h):
    due = [seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR) for _ in range(12)]
    fresh = [seed(h.vault, h.sim, refreshed_ago=HOUR) for _ in range(5)]
    before = {c.realm_id: c for c in due + fresh}
    h.sim.reset_counters()
    # When a sweep runs and the worker drains the queue
    h.sweep()
    failed = h.work(h.receive_all())
    # Then every due connection was refreshed once, with its stored token
    assert failed == []
    assert h.sim.counters()["token.refresh_token"] == 12
    assert all(n == 1 for n in h.refreshes_by_token().values())
    for conn in due:
        after = h.store.get_connection(conn.realm_id)
        assert after.version == conn.version + 1
        # the commit set the real next due time
        assert after.due_at > time.time() + KEEP_ALIVE - HOUR
    for conn in fresh:
        assert h.store.get_connection(conn.realm_id).version == before[conn.realm_id].version
    # and a second sweep right after finds nothing
    again = h.sweep()
    assert again["due"] == again["enqueued"] == 0
    assert h.work(h.receive_all()) == []
    assert h.sim.counters()["token.refresh_token"] == 12


def test_duplicate_and_stale_messages_are_acknowledged_without_calling_intuit(h):
    conn = seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    h.sweep()
    messages = h.receive_all()
    assert len(messages) == 1
    body = messages[0]["Body"]
    # the same message delivered twice (SQS is at least once): one refresh
    assert h.worker.process(body) == "refreshed"
    assert h.worker.process(body) == "skipped_not_due"
    # a message for a connection that is gone, or was never stored
    h.vault.connections.disconnect(conn.realm_id, now=time.time())
    assert h.worker.process(body) == "skipped_gone"
    assert h.worker.process(json.dumps({"realm_id": "4242"})) == "skipped_gone"
    assert h.sim.counters()["token.refresh_token"] == 1


def test_a_leased_connection_is_skipped(h):
    conn = seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    now = time.time()
    h.store.acquire_lease(
        conn.realm_id, seen_version=conn.version, owner="someone", now=now, until=now + 60
    )
    h.sim.reset_counters()
    assert h.worker.process(json.dumps({"realm_id": conn.realm_id})) == "skipped_leased"
    assert h.sim.counters()["token.refresh_token"] == 0


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        "{}",
        '{"realm_id": "abc"}',
        '{"realm_id": "1", "due_at": "x"}',
        '{"realm_id": "1", "claimed_due_at": "x"}',
    ],
)
def test_malformed_messages_are_acknowledged_and_logged(h, body, capsys, caplog):
    event = {
        "Records": [
            {
                "messageId": "m1",
                "receiptHandle": "r",
                "body": body,
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:refresh",
                "awsRegion": "us-east-1",
            }
        ]
    }
    assert h.worker.handle(event, Context()) == {"batchItemFailures": []}
    metrics.flush_metrics()
    assert "malformed refresh message dropped" in caplog.text
    assert emf_metrics(capsys.readouterr().out).get("MalformedMessage") == 1


def _parse(body: str) -> RefreshMessage:
    return RefreshMessage.from_payload(json.loads(body))


def test_the_refresh_message_contract_reads_the_sweep_body():
    message = _parse('{"realm_id":"123","due_at":1.5,"enqueued_at":2}')
    assert (message.realm_id, message.due_at) == ("123", 1.5)
    # a message from before the sweep stopped claiming (in flight during an upgrade) still works
    legacy = _parse('{"realm_id":"123","due_at":1.5,"enqueued_at":2,"claimed_due_at":900}')
    assert (legacy.realm_id, legacy.due_at, legacy.claimed_due_at) == ("123", 1.5, 900.0)


def test_intuit_outage_fails_the_item_for_a_retry_and_keeps_it_due(h):
    ok = seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    h.sweep()
    messages = h.receive_all()
    down = seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    h.sweep()
    messages += h.receive_all()
    # Intuit answers 503 to every attempt of the second refresh (3 attempts)
    h.work(messages[:1])
    h.sim.set_faults(status_5xx=3)
    started = time.time()
    failed = h.work(messages[1:])
    finished = time.time()
    assert failed == [messages[1]["MessageId"]]
    conn = h.store.get_connection(down.realm_id)
    assert conn.version == down.version and conn.lease_owner is None  # tokens untouched
    # and it is due again after a bounded, jittered backoff (60 s base: 30-60 s the first time)
    assert conn.refresh_failures == 1
    assert started + 30 <= conn.due_at <= finished + 60
    # The redelivered message is acknowledged without calling Intuit: the backoff decides
    h.sim.clear_faults()
    h.sim.reset_counters()
    assert h.work(messages[1:]) == []
    assert h.sim.counters().get("token", 0) == 0
    # Once the backoff has passed, the sweep enqueues it again and it refreshes
    h.store.set_due(down.realm_id, seen_version=down.version, due_at=time.time() - 1)
    h.sweep()
    assert h.work(h.receive_all()) == []
    conn = h.store.get_connection(down.realm_id)
    assert (conn.version, conn.refresh_failures) == (down.version + 1, 0)
    assert h.store.get_connection(ok.realm_id).version == ok.version + 1


def test_configuration_error_fails_the_item(h):
    seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    bad = IntuitClient(h.settings.intuit, ClientCredentials("test-client", "wrong"))
    h.vault.intuit_client = lambda: bad
    h.sweep()
    messages = h.receive_all()
    assert h.work(messages) == [messages[0]["MessageId"]]


def test_needs_reauthorization_is_acknowledged_with_one_event(h, capsys):
    conn = seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    h.store.table.update_item(
        Key=connection_key(conn.realm_id),
        UpdateExpression="SET refresh_expires_at = :t",
        ExpressionAttributeValues={":t": int(time.time()) - 1},
    )
    h.sim.revoke_realm(conn.realm_id)
    h.sweep()
    messages = h.receive_all()
    # Acknowledged: retrying cannot help, the connection is flagged and its event went out
    assert h.work(messages) == []
    assert h.work(messages) == []  # a redelivery changes nothing
    assert h.store.get_connection(conn.realm_id).status == "needs_reauthorization"
    assert h.events.of("connection.needs_reauthorization") == [
        {"realm_id": conn.realm_id, "tenant_id": "tenant-a", "reason": "refresh_token_expired"}
    ]
    assert len(h.events.event_ids) == 1 and len(h.events.event_ids[0]) == 32
    assert h.sweep()["due"] == 0  # flagged connections leave the index (the sweep flushes)
    totals = emf_metrics(capsys.readouterr().out)
    assert totals["InvalidGrant"] == 1 and totals["RefreshFailed"] == 1


def test_expiring_events_go_out_once_per_threshold(h):
    # Given a connection 20 days from its refresh token's hard expiry, and one 5 days from it
    twenty = seed(h.vault, h.sim, refreshed_ago=HOUR, hard_left=20 * DAY, tenant_id="t20")
    five = seed(h.vault, h.sim, refreshed_ago=HOUR, hard_left=5 * DAY, tenant_id="t5")
    # When the sweep and the worker run, with every message delivered twice
    h.sweep()
    messages = h.receive_all()
    assert h.work(messages + messages) == []
    # Then each got one event, for the tightest threshold it crossed
    expiring = {e["realm_id"]: e for e in h.events.of("connection.expiring")}
    assert len(h.events.of("connection.expiring")) == 2
    assert expiring[twenty.realm_id]["threshold_days"] == 30
    assert expiring[twenty.realm_id]["days_left"] == 20
    assert expiring[twenty.realm_id]["tenant_id"] == "t20"
    assert expiring[twenty.realm_id]["hard_expires_at"].endswith("Z")
    assert expiring[five.realm_id]["threshold_days"] == 7
    assert expiring[five.realm_id]["days_left"] == 5
    assert h.store.get_connection(five.realm_id).expiring_notified == (7, 30)
    # and the next due time skips the notified thresholds (20-day one: due again at 7 days,
    # or the keep-alive, whichever is first)
    conn = h.store.get_connection(twenty.realm_id)
    assert conn.due_at > time.time() + KEEP_ALIVE - HOUR
    assert h.sweep()["due"] == 0
    assert len(h.events.of("connection.expiring")) == 2


def test_records_are_deferred_when_the_invocation_is_nearly_out_of_time(h):
    seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    h.sweep()
    messages = h.receive_all()
    h.sim.reset_counters()
    failed = h.work(messages, context=Context(remaining_ms=5_000))
    assert failed == [messages[0]["MessageId"]]
    assert h.sim.counters()["token.refresh_token"] == 0


def test_sweep_and_worker_metrics_are_emitted(h, capsys):
    for _ in range(3):
        seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    seed(h.vault, h.sim, refreshed_ago=HOUR)
    capsys.readouterr()
    h.sweep()  # one EMF document per run
    sweep_totals = emf_metrics(capsys.readouterr().out)
    assert sweep_totals["ConnectionsDue"] == 3
    assert sweep_totals["ConnectionsEnqueued"] == 3
    assert sweep_totals["EnqueueFailed"] == 0
    assert sweep_totals["SweepIncomplete"] == 0
    assert "SweepDuration" in sweep_totals
    messages = h.receive_all()
    h.work(messages + messages[:1])
    metrics.flush_metrics()
    worker_totals = emf_metrics(capsys.readouterr().out)
    assert worker_totals["RefreshSucceeded"] == 3
    assert worker_totals["RefreshSkipped"] == 1
    assert "RefreshFailed" not in worker_totals


def test_a_sweep_refresh_costs_two_writes_and_no_read(h):
    """The worker's whole DynamoDB cost for a routine refresh: the lease write (which checks the
    connection is due and returns it) and the commit (which also carries the history run)."""
    h.vault.history = History(h.store.history)
    conns = [seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR) for _ in range(3)]
    h.sweep()
    messages = h.receive_all()
    h.dynamodb_ops.clear()
    assert h.work(messages) == []
    assert h.dynamodb_ops == ["UpdateItem", "UpdateItem"] * 3
    for conn in conns:
        after = h.store.get_connection(conn.realm_id)
        assert after.version == conn.version + 1
        assert after.raw["refresh_run"]["count"] == 1
    # A duplicate costs the one failed conditional write, and no Intuit call
    h.dynamodb_ops.clear()
    h.sim.reset_counters()
    assert h.work(messages[:1]) == []
    assert h.dynamodb_ops == ["UpdateItem"]
    assert h.sim.counters()["token.refresh_token"] == 0


def test_a_worker_that_died_under_the_lease_is_replaced_by_the_redelivered_message(h):
    conn = seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    h.sweep()
    body = h.receive_all()[0]["Body"]
    # Given a worker that took the lease and died (its lease write is all that happened)
    due_at = h.store.get_connection(conn.realm_id).due_at
    now = time.time()
    dead, _ = h.store.lease_if_due(
        conn.realm_id, owner="dead-worker", now=now, until=now + 1.0, due_upto=due_at
    )
    assert dead is not None
    # Then its due time is as it was, and a message arriving under the live lease is skipped
    assert h.store.get_connection(conn.realm_id).due_at == due_at
    assert h.worker.process(body) == "skipped_leased"
    # When SQS redelivers the dead worker's message after the lease expired
    time.sleep(1.1)
    h.sim.reset_counters()
    assert h.worker.process(body) == "refreshed"
    # Then it refreshed once, with the stored token, and the connection is scheduled again
    after = h.store.get_connection(conn.realm_id)
    assert after.version == conn.version + 1 and after.lease_owner is None
    assert after.due_at > time.time() + HOUR
    assert h.sim.counters()["token.refresh_token"] == 1


def test_an_idle_keep_alive_stores_no_access_token_and_a_reader_refreshes_inline(h):
    idle = seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    warm = seed(h.vault, h.sim, refreshed_ago=HOUR - 200, used_ago=60, access_left=200)
    h.sweep()
    assert h.work(h.receive_all()) == []
    # The idle one kept only its refresh token: a smaller item, nothing for a reader to use
    idle_after = h.store.get_connection(idle.realm_id)
    assert idle_after.version == idle.version + 1
    assert idle_after.access_token_enc is None and idle_after.access_expires_at == 0
    assert idle_after.metadata()["access_expires_at"] is None
    assert len(idle_after.raw) < len(h.store.get_connection(warm.realm_id).raw)
    # The warm one (read a minute ago) kept its access token: its reader needs no refresh
    h.sim.reset_counters()
    warm_token = h.vault.get_token(warm.realm_id)
    assert h.sim.counters()["token.refresh_token"] == 0
    assert warm_token.expires_at > time.time() + 3000
    # A reader of the idle one refreshes inline once, and gets a token QuickBooks accepts
    token = h.vault.get_token(idle.realm_id)
    assert h.sim.counters()["token.refresh_token"] == 1
    assert token_is_valid_at_intuit(h.sim, idle.realm_id, token.access_token)
    assert h.vault.get_token(idle.realm_id).access_token == token.access_token
    assert h.sim.counters()["token.refresh_token"] == 1


def test_routine_refreshes_are_one_history_row_until_a_failure_ends_the_run(h):
    h.vault.history = History(h.store.history)
    conn = seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    # When the sweep refreshes it three times (made due again in between)
    for _ in range(3):
        h.sweep(clock=time.time)
        assert h.work(h.receive_all()) == []
        latest = h.store.get_connection(conn.realm_id)
        h.store.set_due(conn.realm_id, seen_version=latest.version, due_at=time.time() - 1)
    # Then no history item was written: the run on the connection counts them
    assert h.store.get_history(conn.realm_id, limit=10, now=time.time()) == []
    rows = h.vault.history.entries(conn.realm_id, conn=h.store.get_connection(conn.realm_id))
    assert [(r["source"], r["outcome"], r["count"]) for r in rows] == [("sweep", "refreshed", 3)]
    assert rows[0]["version"] == conn.version + 3
    # When the next refresh fails (Intuit down on every attempt)
    h.sim.set_faults(status_5xx=3)
    h.sweep()
    assert len(h.work(h.receive_all())) == 1
    # Then the run became an item and the failure follows it; the connection holds no run
    after = h.store.get_connection(conn.realm_id)
    assert "refresh_run" not in after.raw
    rows = h.vault.history.entries(conn.realm_id, conn=after)
    assert [(r["source"], r["outcome"]) for r in rows] == [
        ("sweep", "transient"),
        ("sweep", "refreshed"),
    ]
    assert rows[1]["count"] == 3 and rows[1]["detail"].startswith("3 refreshes since ")


def test_an_expiring_notice_is_recorded_only_with_a_successful_refresh(h):
    conn = seed(h.vault, h.sim, refreshed_ago=HOUR, hard_left=5 * DAY)
    # Intuit is down: the refresh fails, and no notice is recorded or sent
    h.sim.set_faults(status_5xx=3)
    h.sweep()
    messages = h.receive_all()
    assert h.work(messages) == [messages[0]["MessageId"]]
    assert h.store.get_connection(conn.realm_id).expiring_notified == ()
    assert h.events.of("connection.expiring") == []
    # Once it is back, the retry refreshes and records the notice with its one event
    h.sim.clear_faults()
    latest = h.store.get_connection(conn.realm_id)
    h.store.set_due(conn.realm_id, seen_version=latest.version, due_at=time.time() - 1)
    h.sweep()
    assert h.work(h.receive_all()) == []
    after = h.store.get_connection(conn.realm_id)
    assert after.version == conn.version + 1 and after.expiring_notified == (7, 30)
    assert [e["threshold_days"] for e in h.events.of("connection.expiring")] == [7]
    assert after.pending_events == ()


# ----- the handlers, wired as in Lambda --------------------------------------------------------


def _load_handler(name: str) -> Any:
    path = REPO_ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"test_handler_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _clear_runtime_caches() -> None:
    from qbo_connect import wiring

    wiring.reset()


@pytest.fixture
def wired(h, monkeypatch):
    env = {
        "TABLE_NAME": h.settings.table_name,
        "TOKEN_KEY_ID": h.settings.token_key_id,
        "INTUIT_CLIENT_SECRET_ID": h.settings.client_secret_id,
        "REFRESH_QUEUE_URL": h.queue_url,
        "INTUIT_TIMEOUT_SECONDS": "2",
        **h.sim.endpoints,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _clear_runtime_caches()
    yield h
    _clear_runtime_caches()


def test_handlers_run_sweep_and_worker_end_to_end(wired, capsys):
    h = wired
    due = [seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR) for _ in range(4)]
    seed(h.vault, h.sim, refreshed_ago=HOUR)
    sweep_app = _load_handler("refresh_sweep")
    worker_app = _load_handler("refresh_worker")
    scheduled = json.loads((REPO_ROOT / "events" / "refresh_sweep.json").read_text())
    capsys.readouterr()
    # When the scheduled sweep runs and the worker gets the queue's messages
    counts = sweep_app.lambda_handler(scheduled, Context())
    response = worker_app.lambda_handler(sqs_event(h.receive_all()), Context(300_000))
    # Then the counts, the refreshes and the metrics line up
    assert counts["due"] == counts["enqueued"] == 4
    assert counts["complete"] is True and counts["shards"] == 16
    assert set(counts) == {
        "due",
        "enqueued",
        "requeued",
        "failed",
        "skipped",
        "shards",
        "complete",
        "stood_aside",
        "duration_ms",
        "reconcile",
    }
    # No realm's change feed is due (none was connected through the adoption path)
    assert counts["reconcile"]["enabled"] is True and counts["reconcile"]["due"] == 0
    assert response == {"batchItemFailures": []}
    for conn in due:
        assert h.store.get_connection(conn.realm_id).version == conn.version + 1
    totals = emf_metrics(capsys.readouterr().out)
    assert totals["ConnectionsDue"] == 4
    assert totals["RefreshSucceeded"] == 4


def test_sample_worker_event_parses():
    event = json.loads((REPO_ROOT / "events" / "refresh_worker.json").read_text())
    message = _parse(event["Records"][0]["body"])
    assert message.realm_id == "9130357766042906"
    assert message.due_at is not None
