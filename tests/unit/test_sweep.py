"""The refresh sweep: which connections are due, enqueued once, under leases and deadlines.

moto in-process for AWS, the Intuit simulator over HTTP (tests/unit/sweep_harness.py).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from qbo_connect.store.table import due_shard_for
from qbo_connect.sweep.sweeper import (
    DEFAULT_REQUEUE_SECONDS,
    DEFAULT_STALE_FORCE_SECONDS,
)
from tests.helpers.clock import Clock
from tests.helpers.store import TableRepositories
from tests.unit.sweep_harness import (
    DAY,
    HOUR,
    KEEP_ALIVE,
    _realms,
    emf_metrics,
    realms_of,
    seed,
)


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
