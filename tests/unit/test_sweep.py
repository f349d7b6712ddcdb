"""The refresh sweep and worker: moto in-process for AWS, the Intuit simulator over HTTP.

Connections are seeded with tokens the simulator really issued and a due time computed by the
real due policy; every Intuit call is counted at the simulator.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from qbo_connect.config import Settings
from qbo_connect.contracts import RefreshMessage
from qbo_connect.intuit import ClientCredentials, IntuitClient, TokenSet
from qbo_connect.store.connections import Connection
from qbo_connect.store.table import connection_key, due_shard_for
from qbo_connect.sweep.sweeper import (
    DEFAULT_REQUEUE_SECONDS,
    DEFAULT_STALE_FORCE_SECONDS,
    Sweeper,
)
from qbo_connect.sweep.worker import RefreshWorker
from qbo_connect.telemetry import metrics
from qbo_connect.vault import due as due_policy
from qbo_connect.vault.history import History
from qbo_connect.vault.observer import refresh_observer
from qbo_connect.vault.protocol import TokenVault
from tests.helpers.store import TableRepositories
from tests.reliability.conftest import token_is_valid_at_intuit
from tests.unit.builders import RecordingEvents, make_settings, make_vault

REPO_ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600.0
DAY = 86400.0
#: A connection not refreshed for this long is due (the keep-alive, the service's default).
KEEP_ALIVE = Settings.keep_alive_hours * HOUR
_realms = itertools.count(1000)


# ----- builders ------------------------------------------------------------------------------


class Context:
    """The bits of the Lambda context the handlers and Powertools use."""

    function_name = "test-function"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    memory_limit_in_mb = 512
    aws_request_id = "req-1"
    log_group_name = "/aws/lambda/test-function"
    log_stream_name = "stream"

    def __init__(self, remaining_ms: int = 300_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def seed(
    vault: TokenVault,
    sim: Any,
    *,
    refreshed_ago: float = 0.0,
    used_ago: float | None = None,
    access_left: float = 3600.0,
    hard_left: float | None = None,
    realm_id: str | None = None,
    tenant_id: str = "tenant-a",
) -> Connection:
    """A connection with simulator-issued tokens, in the state described, due by the policy."""
    realm_id = realm_id or str(next(_realms))
    body = sim.issue_tokens(client_id="test-client", realm_id=realm_id)
    now = time.time()
    refreshed_at = now - refreshed_ago
    tokens = TokenSet(
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
        expires_in=int(refreshed_ago + access_left),
        refresh_token_expires_in=body["x_refresh_token_expires_in"],
        refresh_token_hard_expires_in=(
            None if hard_left is None else int(refreshed_ago + hard_left)
        ),
        obtained_at=refreshed_at,
    )
    sealed = vault.seal(realm_id, tokens)
    used_at = None if used_ago is None else now - used_ago
    due_at = due_policy.next_due_at(
        settings=vault.settings,
        now=now,
        last_refreshed_at=refreshed_at,
        access_expires_at=sealed.access_expires_at,
        last_used_at=used_at,
        refresh_hard_expires_at=sealed.refresh_hard_expires_at,
    )
    vault.connections.create_connection(
        realm_id=realm_id,
        tenant_id=tenant_id,
        environment="sandbox",
        scopes=["com.intuit.quickbooks.accounting"],
        tokens=sealed,
        now=refreshed_at,
        due_at=due_at,
    )
    if used_at is not None:
        vault.connections.touch_last_used(
            realm_id, now=used_at, min_interval=0, due_at=due_at, seen_version=1
        )
    conn = vault.connections.get_connection(realm_id)
    assert conn is not None
    return conn


class Harness:
    """A vault, a queue, a sweeper and a worker over the same moto account and simulator."""

    def __init__(self, aws: dict[str, str], sim: Any, **settings: Any) -> None:
        self.sim = sim
        self.events = RecordingEvents()
        self.settings = make_settings(aws, sim, **settings)
        self.vault = make_vault(self.settings, events=self.events, observer=refresh_observer())
        self.store = TableRepositories(
            self.vault.connections.table, due_shards=self.settings.due_shards
        )
        self.sqs = boto3.client("sqs")
        self.queue_url = self.sqs.create_queue(
            QueueName=f"refresh-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "60"}
        )["QueueUrl"]
        self.batch_sizes: list[int] = []
        self.dynamodb_ops: list[str] = []
        self.sqs.meta.events.register(
            "provide-client-params.sqs.SendMessageBatch",
            lambda params, **_: self.batch_sizes.append(len(params["Entries"])),
        )
        self.store.table.meta.client.meta.events.register(
            "before-call.dynamodb.*",
            lambda model, **_: self.dynamodb_ops.append(model.name),
        )
        self.worker = RefreshWorker(vault=self.vault, settings=self.settings, metrics=metrics)

    def sweeper(self, **kwargs: Any) -> Sweeper:
        kwargs.setdefault("sqs", self.sqs)
        return Sweeper(
            connections=self.store.connections,
            sweep_state=self.store.sweep_state,
            queue_url=self.queue_url,
            shards=self.settings.due_shards,
            metrics=kwargs.pop("metrics", lambda: metrics),
            **kwargs,
        )

    def sweep(self, **kwargs: Any) -> dict[str, Any]:
        return self.sweeper(**kwargs).run(remaining_ms=lambda: 300_000).as_dict()

    def drain(self) -> list[dict[str, Any]]:
        """Receive and delete every message: the queue is empty afterwards."""
        messages = self.receive_all()
        for m in messages:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return messages

    def receive_all(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not batch:
                return messages
            messages.extend(batch)

    def work(self, messages: list[dict[str, Any]], context: Any = None) -> list[str]:
        """Run the worker over the messages in batches of 10; returns the failed message ids."""
        failed: list[str] = []
        for start in range(0, len(messages), 10):
            event = sqs_event(messages[start : start + 10])
            response = self.worker.handle(event, context or Context())
            failed += [f["itemIdentifier"] for f in response["batchItemFailures"]]
        return failed

    def refreshes_by_token(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for call in self.sim.refresh_calls():
            key = call["refresh_token_sha256"]
            counts[key] = counts.get(key, 0) + 1
        return counts


def sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:refresh",
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


def emf_metrics(text: str) -> dict[str, float]:
    """Sum every metric in the EMF lines Powertools printed."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        doc = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = doc[metric["Name"]]
                values = value if isinstance(value, list) else [value]
                totals[metric["Name"]] = totals.get(metric["Name"], 0.0) + sum(values)
    return totals


def sha256(value: str) -> str:
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
def h(aws, sim) -> Harness:
    metrics.clear_metrics()
    return Harness(aws, sim)


# ----- the sweep -----------------------------------------------------------------------------


class Clock:
    """An injected wall clock: tests move it instead of sleeping."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def realms_of(messages: list[dict[str, Any]]) -> list[str]:
    return sorted(json.loads(m["Body"])["realm_id"] for m in messages)


def test_due_policy_selects_keep_alive_keep_warm_and_expiring_but_not_the_rest(h):
    # Given connections in every state the policy distinguishes
    due = {
        "keep_alive": seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR),
        "keep_warm": seed(h.vault, h.sim, refreshed_ago=HOUR - 200, used_ago=60, access_left=200),
        "expiring": seed(h.vault, h.sim, refreshed_ago=HOUR, hard_left=20 * DAY),
    }
    not_due = {
        "fresh": seed(h.vault, h.sim, refreshed_ago=HOUR),
        "warm_but_not_used": seed(h.vault, h.sim, refreshed_ago=HOUR - 200, access_left=200),
        "used_long_ago": seed(
            h.vault, h.sim, refreshed_ago=HOUR - 200, used_ago=3 * HOUR, access_left=200
        ),
        "hard_expiry_far": seed(h.vault, h.sim, refreshed_ago=HOUR, hard_left=90 * DAY),
    }
    # When the sweep runs
    h.dynamodb_ops.clear()
    result = h.sweep()
    # Then exactly the due ones are on the queue, each once, with the message shape
    bodies = [json.loads(m["Body"]) for m in h.receive_all()]
    assert sorted(b["realm_id"] for b in bodies) == sorted(c.realm_id for c in due.values())
    assert result["due"] == result["enqueued"] == 3
    assert result["failed"] == result["requeued"] == result["skipped"] == 0
    assert result["complete"] is True and result["stood_aside"] is False
    assert result["shards"] == 16
    for body in bodies:
        assert set(body) == {"realm_id", "due_at", "enqueued_at"}
        assert body["due_at"] <= body["enqueued_at"]
    # and the sweep only queried the index and wrote its run state twice (the run lease, then
    # the state): no write per connection, never a Scan, not even a GetItem
    assert sorted(set(h.dynamodb_ops)) == ["Query", "UpdateItem"]
    assert h.dynamodb_ops.count("UpdateItem") == 2
    assert not_due  # (kept for readability of the Given)
    # and no connection item was written: versions and due times are as seeded
    for conn in due.values():
        after = h.store.get_connection(conn.realm_id)
        assert (after.version, after.due_at) == (conn.version, conn.due_at)


def test_batches_of_ten_and_each_connection_enqueued_once(h):
    connections = [seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR) for _ in range(23)]
    h.batch_sizes.clear()
    result = h.sweep(page_size=7)  # pages smaller than a batch: batches still fill up to 10
    messages = h.receive_all()
    realms = [json.loads(m["Body"])["realm_id"] for m in messages]
    assert sorted(realms) == sorted(c.realm_id for c in connections)
    assert result["enqueued"] == 23
    assert all(size <= 10 for size in h.batch_sizes)
    assert sum(h.batch_sizes) == 23
    assert len(h.batch_sizes) <= 23 // 10 + 16  # at most one partial batch per shard


def test_the_next_run_skips_what_was_enqueued_but_enqueues_a_new_due_time(h):
    connections = [seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR) for _ in range(12)]
    clock = Clock()
    # When a run enqueues them, and the next runs come 10 and 20 seconds later (the worker has
    # not got to them: they are still due, at the same due time)
    first = h.sweep(clock=clock)
    clock.advance(10)
    second = h.sweep(clock=clock)
    # Then the first enqueued each once and the second none of them
    assert first["enqueued"] == 12
    assert (second["due"], second["skipped"], second["enqueued"]) == (12, 12, 0)
    assert realms_of(h.drain()) == sorted(c.realm_id for c in connections)
    # When one connection is rescheduled (e.g. a failed refresh's backoff ran out): a new due
    # instance, which the next run enqueues while it still skips the others
    moved = connections[0]
    h.store.set_due(moved.realm_id, seen_version=moved.version, due_at=clock.now + 5)
    clock.advance(10)
    third = h.sweep(clock=clock)
    assert (third["enqueued"], third["skipped"]) == (1, 11)
    [message] = h.drain()
    assert json.loads(message["Body"])["realm_id"] == moved.realm_id
    assert json.loads(message["Body"])["due_at"] == pytest.approx(clock.now - 5, abs=0.01)


def test_an_entry_the_index_showed_late_is_enqueued_by_the_next_run(h):
    late = seed(h.vault, h.sim, refreshed_ago=HOUR)  # not due: the first run cannot see it
    older = seed(h.vault, h.sim, refreshed_ago=HOUR)
    clock = Clock()
    first_at = clock.now
    assert h.sweep(clock=clock)["enqueued"] == 0
    # Given an entry written just before the first run but only visible after it (inside the
    # settle window), and one written long before it (outside: not a lag, a stale entry)
    h.store.set_due(late.realm_id, seen_version=late.version, due_at=first_at - 20)
    h.store.set_due(older.realm_id, seen_version=older.version, due_at=first_at - 60)
    # When the next run comes a little later
    clock.advance(60)
    second = h.sweep(clock=clock)
    # Then it enqueues the late one; the older one waits for the stale pass
    assert realms_of(h.drain()) == [late.realm_id]
    assert (second["enqueued"], second["requeued"]) == (1, 0)
    # which, with the queue empty, sends both as they are still due (the late one's message
    # was taken off the queue above and never processed)
    clock.advance(DEFAULT_REQUEUE_SECONDS)
    third = h.sweep(clock=clock)
    assert realms_of(h.drain()) == sorted([late.realm_id, older.realm_id])
    assert third["requeued"] == 2


def test_the_stale_pass_re_enqueues_what_is_still_due_only_when_the_queue_is_empty(h, capsys):
    conn = seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    clock = Clock()
    assert h.sweep(clock=clock)["enqueued"] == 1
    h.drain()  # its message is lost (e.g. it went to the dead-letter queue)
    # Within requeue_seconds: nothing again, the pair is remembered or below the range
    clock.advance(60)
    assert h.sweep(clock=clock)["enqueued"] == 0
    # After requeue_seconds, while the queue holds a message (another connection's, in flight)
    clock.advance(DEFAULT_REQUEUE_SECONDS)
    h.sqs.send_message(QueueUrl=h.queue_url, MessageBody='{"realm_id":"1"}')
    busy = h.sweep(clock=clock)
    assert (busy["enqueued"], busy["requeued"]) == (0, 0)
    assert realms_of(h.drain()) == ["1"]
    # Once the queue is empty, the next run sends it again, once
    clock.advance(300)
    capsys.readouterr()
    idle = h.sweep(clock=clock)
    assert (idle["enqueued"], idle["requeued"]) == (1, 1)
    assert emf_metrics(capsys.readouterr().out)["ConnectionsRequeued"] == 1
    assert realms_of(h.drain()) == [conn.realm_id]
    # and not at the next run: the stale pass ran, the next one is requeue_seconds away
    clock.advance(300)
    assert h.sweep(clock=clock)["requeued"] == 0
    assert h.drain() == []
    # A queue that never empties does not strand it: past stale_force_seconds it goes again
    h.sqs.send_message(QueueUrl=h.queue_url, MessageBody='{"realm_id":"2"}')
    clock.advance(DEFAULT_REQUEUE_SECONDS)
    assert h.sweep(clock=clock)["requeued"] == 0
    clock.advance(DEFAULT_STALE_FORCE_SECONDS)
    assert h.sweep(clock=clock)["requeued"] == 1
    assert realms_of(h.drain()) == sorted(["2", conn.realm_id])


class AtomicTable:
    """The table with conditional writes applied one at a time, as DynamoDB applies them.

    moto evaluates a ConditionExpression and applies the update in separate steps without a
    lock, so two threads can both pass the same condition; real DynamoDB cannot. The run lease
    relies on that atomicity, so the test supplies it.
    """

    def __init__(self, table: Any) -> None:
        self._table = table
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def update_item(self, **kwargs: Any) -> Any:
        with self._lock:
            return self._table.update_item(**kwargs)


def test_a_concurrent_run_stands_aside_and_nothing_is_enqueued_twice(h):
    connections = [seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR) for _ in range(30)]
    h.store = TableRepositories(AtomicTable(h.store.table), due_shards=h.settings.due_shards)
    # Given a run that is still sending when a second one starts (a schedule event delivered
    # twice, or a run that outlived the interval)
    sending = threading.Event()
    second_done = threading.Event()

    class SlowSqs:
        def __getattr__(self, name: str) -> Any:
            return getattr(h.sqs, name)

        def send_message_batch(self, **kwargs: Any) -> Any:
            sending.set()
            assert second_done.wait(10)
            return h.sqs.send_message_batch(**kwargs)

    results: dict[str, dict[str, Any]] = {}
    first = threading.Thread(target=lambda: results.update(first=h.sweep(sqs=SlowSqs())))
    first.start()
    assert sending.wait(10)
    results["second"] = h.sweep()
    second_done.set()
    first.join()
    # Then the second stood aside, and each connection went on the queue exactly once
    assert results["second"]["stood_aside"] is True
    assert results["second"]["due"] == results["second"]["enqueued"] == 0
    assert results["first"]["enqueued"] == 30 and results["first"]["stood_aside"] is False
    assert realms_of(h.receive_all()) == sorted(c.realm_id for c in connections)
    # and a run after both finds them enqueued already
    third = h.sweep()
    assert (third["stood_aside"], third["enqueued"], third["skipped"]) == (False, 0, 30)


def test_a_run_lease_whose_holder_died_lapses(h):
    conn = seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    clock = Clock()
    # A run took the lease and crashed: it never saved its state nor released the lease
    assert h.store.begin_sweep_run(owner="dead", now=clock.now, until=clock.now + 310)
    assert h.sweep(clock=clock)["stood_aside"] is True
    clock.advance(311)
    after = h.sweep(clock=clock)
    assert (after["stood_aside"], after["enqueued"]) == (False, 1)
    assert realms_of(h.drain()) == [conn.realm_id]


def test_a_run_lease_applied_whose_answer_was_lost_is_recognised_by_the_retry(h):
    conn = seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR)
    client = h.store.table.meta.client
    lost: list[str] = []

    def lose_the_answer(request_dict: dict[str, Any], attempts: int, **_: Any) -> int | None:
        """DynamoDB applied the write, the answer never arrived: botocore retries it as is."""
        body = request_dict.get("body") or b""
        body = body.decode() if isinstance(body, bytes) else str(body)
        for marker in (":v_run_until", ":v_last_run"):  # the lease write, then the state write
            if marker in body and marker not in lost and attempts == 1:
                lost.append(marker)
                return 0  # retry now
        return None

    client.meta.events.register_first("needs-retry.dynamodb.UpdateItem", lose_the_answer)
    h.dynamodb_ops.clear()
    try:
        result = h.sweep()
    finally:
        client.meta.events.unregister("needs-retry.dynamodb.UpdateItem", lose_the_answer)
    # Both writes were sent twice, and each retry met its own write: the run went ahead
    assert lost == [":v_run_until", ":v_last_run"]
    assert (result["stood_aside"], result["enqueued"]) == (False, 1)
    assert realms_of(h.receive_all()) == [conn.realm_id]
    # and saved its state: the next run skips the connection, and the lease is free
    again = h.sweep()
    assert (again["stood_aside"], again["enqueued"], again["skipped"]) == (False, 0, 1)


def test_partial_send_failures_are_left_for_the_next_run_with_nothing_lost_or_doubled(h):
    connections = [seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR) for _ in range(12)]
    real_sqs = h.sqs
    calls = {"n": 0}

    rejected = {c.realm_id for c in connections[:3]}

    class FlakySqs:
        """SendMessageBatch rejects the entries of three realms (a sender fault: no retry), and
        the second and third calls fail as a whole (the retry of a failed call fails too)."""

        def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
            calls["n"] += 1
            if calls["n"] in (2, 3):
                from botocore.exceptions import EndpointConnectionError

                raise EndpointConnectionError(endpoint_url="http://sqs")
            entries = kwargs["Entries"]
            bad = [e for e in entries if json.loads(e["MessageBody"])["realm_id"] in rejected]
            kept = [e for e in entries if e not in bad]
            successful = []
            if kept:
                successful = real_sqs.send_message_batch(
                    QueueUrl=kwargs["QueueUrl"], Entries=kept
                ).get("Successful", [])
            failed = [
                {"Id": e["Id"], "SenderFault": True, "Code": "InvalidParameterValue"} for e in bad
            ]
            return {"Successful": successful, "Failed": failed}

    # (the runs come a minute after they became due: only the watermark, not the settle
    # window, can keep the failed ones inside the next run's range)
    clock = Clock(time.time() + 60)
    first = h.sweep(sqs=FlakySqs(), parallelism=1, clock=clock)
    sent = [json.loads(m["Body"])["realm_id"] for m in h.receive_all()]
    assert first["due"] == 12
    assert first["enqueued"] == len(sent)
    assert first["failed"] == 12 - len(sent) > 0
    # The shard kept its watermark below the failed ones, which are not remembered as sent, so
    # the next normal run enqueues exactly them and skips the rest
    clock.advance(10)
    second = h.sweep(clock=clock)
    resent = [json.loads(m["Body"])["realm_id"] for m in h.receive_all()]
    assert second["enqueued"] == first["failed"]
    assert sorted(sent + resent) == sorted(c.realm_id for c in connections)


def realms_in_one_shard(count: int, shard: str = "DUE#03") -> list[str]:
    """Fresh realm ids that all land in ``shard`` (of the harness's 16)."""
    found: list[str] = []
    while len(found) < count:
        realm_id = str(next(_realms))
        if due_shard_for(realm_id, 16) == shard:
            found.append(realm_id)
    return found


def test_the_sweep_stops_before_its_deadline_and_the_next_run_does_the_rest(h):
    # All in one shard, so the deadline stops the run in the middle of it, whatever the
    # starting shard
    connections = [
        seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR, realm_id=realm_id)
        for realm_id in realms_in_one_shard(40)
    ]
    ticks = itertools.count()

    def slow_clock() -> float:  # every look at the clock costs a second
        return float(next(ticks))

    # 40 s budget, 15 s safety margin: about 25 visits fit (the runs come a minute after the
    # connections became due: only the watermark keeps the rest inside the next run's range)
    clock = Clock(time.time() + 60)
    first = h.sweeper(monotonic=slow_clock, parallelism=1, clock=clock).run(
        remaining_ms=lambda: 40_000
    )
    assert first.complete is False
    assert 0 < first.enqueued < 40
    clock.advance(10)
    second = h.sweep(clock=clock)
    assert second["complete"] is True
    assert first.enqueued + second["enqueued"] == 40
    realms = [json.loads(m["Body"])["realm_id"] for m in h.receive_all()]
    assert sorted(realms) == sorted(c.realm_id for c in connections)


def test_a_shard_whose_query_failed_keeps_its_state_and_the_next_run_reads_it(h):
    stuck = [
        seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR, realm_id=realm_id)
        for realm_id in realms_in_one_shard(5)
    ]
    others = [
        seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR, realm_id=realm_id)
        for realm_id in realms_in_one_shard(6, "DUE#04")
    ]
    real_query = h.store.connections.query_due_after
    failures = {"left": 1}

    def query(shard: str, **kwargs: Any) -> Any:
        if shard == "DUE#03" and failures["left"]:
            failures["left"] -= 1
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
                "Query",
            )
        return real_query(shard, **kwargs)

    h.store.connections.query_due_after = query  # type: ignore[method-assign]
    # (a minute after they became due: a watermark moved to "now" would leave them behind)
    clock = Clock(time.time() + 60)
    first = h.sweep(clock=clock)
    assert (first["complete"], first["shards"], first["enqueued"]) == (False, 15, len(others))
    clock.advance(10)
    second = h.sweep(clock=clock)
    assert (second["complete"], second["enqueued"]) == (True, len(stuck))
    assert realms_of(h.drain()) == sorted(c.realm_id for c in stuck + others)


def test_the_remembered_pairs_are_capped_with_duplicates_not_losses_beyond_the_cap(h):
    connections = [seed(h.vault, h.sim, refreshed_ago=KEEP_ALIVE + HOUR) for _ in range(12)]
    clock = Clock()
    first = h.sweep(clock=clock, max_remembered=5)
    clock.advance(10)
    second = h.sweep(clock=clock, max_remembered=5)
    # The run kept 5 pairs: those it skips; the other 7 go out once more, none is lost
    assert first["enqueued"] == 12
    assert (second["skipped"], second["enqueued"]) == (5, 7)
    assert set(realms_of(h.drain())) == {c.realm_id for c in connections}


# ----- the worker ----------------------------------------------------------------------------


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
    }
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
