"""Change marks and watermarks: once per change across both paths, the outbox rule, on moto."""

from __future__ import annotations

import boto3
import pytest

from qbo_connect.changes import SOURCE_CDC, SOURCE_WEBHOOK, change_event_id
from qbo_connect.store.change_marks import MIN_TTL_SECONDS, PUBLISHED, ChangeMarks

NOW = 1_800_000_000.0
T = NOW - 3600


@pytest.fixture
def marks(aws) -> ChangeMarks:
    table = boto3.resource("dynamodb").Table(aws["table_name"])
    return ChangeMarks(table, ttl_seconds=86400, tolerance_seconds=2.0)


def claim(marks: ChangeMarks, t: float, source: str = SOURCE_WEBHOOK, eid: str = "") -> bool:
    return marks.claim(
        "r1",
        "Customer",
        "7",
        change_time=t,
        event_id=eid or change_event_id("r1", "Customer", "7", t),
        source=source,
        now=NOW,
    )


def test_event_id_is_stable_per_change_and_differs_between_changes():
    assert change_event_id("r1", "Customer", "7", T) == change_event_id("r1", "Customer", "7", T)
    assert change_event_id("r1", "Customer", "7", T) != change_event_id(
        "r1", "Customer", "7", T + 1
    )
    assert change_event_id("r1", "Customer", "7", T) != change_event_id("r1", "Vendor", "7", T)


def test_a_change_seen_by_the_webhook_and_then_by_cdc_is_claimed_once(marks):
    # Given the webhook path claimed and published a change
    assert claim(marks, T)
    eid = change_event_id("r1", "Customer", "7", T)
    assert marks.mark_published("r1", "Customer", "7", event_id=eid, now=NOW)
    # When CDC reports the same change / Then it is already seen
    assert not claim(marks, T, SOURCE_CDC)
    mark = marks.get_mark("r1", "Customer", "7")
    assert mark["status"] == PUBLISHED and mark["source"] == SOURCE_WEBHOOK


def test_a_webhook_time_within_the_tolerance_matches_the_cdc_time(marks):
    # Given CDC published the change at its LastUpdatedTime
    assert claim(marks, T, SOURCE_CDC)
    # When a webhook CloudEvent reports a time 1.5 s later / Then it is the same change
    assert not claim(marks, T + 1.5)
    # And a real later change beyond the tolerance is new
    assert claim(marks, T + 60)


def test_an_older_change_after_a_newer_one_is_already_seen(marks):
    assert claim(marks, T + 60)
    assert not claim(marks, T, SOURCE_CDC)


def test_an_unconfirmed_claim_is_taken_again_under_the_same_event_id(marks):
    # Given a publisher claimed and died before confirming
    assert claim(marks, T, SOURCE_CDC)
    # When the same change is retried / Then it may publish again (at least once, same id)
    assert claim(marks, T, SOURCE_CDC)
    # But once confirmed, it is seen
    eid = change_event_id("r1", "Customer", "7", T)
    assert marks.mark_published("r1", "Customer", "7", event_id=eid, now=NOW)
    assert not claim(marks, T, SOURCE_CDC)


def test_confirming_a_superseded_claim_is_refused(marks):
    assert claim(marks, T)
    assert claim(marks, T + 60)
    old = change_event_id("r1", "Customer", "7", T)
    assert not marks.mark_published("r1", "Customer", "7", event_id=old, now=NOW)


def test_marks_are_kept_longer_than_cdc_reaches_back(marks):
    claim(marks, T)
    assert int(marks.get_mark("r1", "Customer", "7")["ttl"]) >= NOW + MIN_TTL_SECONDS


def start(marks: ChangeMarks, at: float, tenant: str = "tenant-a", next_run=None) -> bool:
    return marks.start("r1", tenant_id=tenant, at=at, now=at, next_run=next_run)


def test_watermark_starts_once_and_moves_only_forward_by_compare_and_set(marks):
    # Given a connection made at T
    assert start(marks, T)
    # When it is started again (a reconnect, an import of the same realm, a retried write)
    # Then it stays where it was
    assert not start(marks, NOW)
    assert marks.get_watermark("r1").watermark == T
    # When a run advances it, and a second run that read the old value tries too
    assert marks.advance("r1", seen=T, to=T + 600, recovered=2, now=NOW)
    assert not marks.advance("r1", seen=T, to=T + 300, recovered=1, now=NOW)
    # Then the first run's move stands, with its count
    state = marks.get_watermark("r1")
    assert (state.watermark, state.recovered, state.last_run) == (T + 600, 2, NOW)
    # And it never moves backwards
    assert not marks.advance("r1", seen=T + 600, to=T, recovered=0, now=NOW)


def test_another_tenant_starts_the_feed_afresh_and_nothing_of_the_old_tenure_is_replayed(marks):
    start(marks, T, tenant="tenant-old")
    marks.advance("r1", seen=T, to=T + 600, recovered=4, now=T + 600)
    assert start(marks, NOW, tenant="tenant-new")
    state = marks.get_watermark("r1")
    assert (state.watermark, state.recovered, state.tenant_id) == (NOW, 0, "tenant-new")
    assert state.last_run is None


def test_the_schedule_finds_due_realms_through_the_index_and_takes_each_once(marks):
    # Given two realms scheduled, one due and one not yet
    start(marks, T, next_run=NOW - 10)
    marks.start("r2", tenant_id="tenant-a", at=T, now=T, next_run=NOW + 3600)
    shard = marks.shard_for("r1")
    # When the schedule reads the shard
    (due,), _ = marks.due(shard, now=NOW, limit=10)
    # Then only the due realm is listed, and it is taken once (a retry of the taker's own
    # write counts as taken; a second scheduler that read the same time does not take it)
    assert due == ("r1", NOW - 10)
    assert marks.take_due("r1", due_at=NOW - 10, until=NOW + 3600)
    assert marks.take_due("r1", due_at=NOW - 10, until=NOW + 3600)
    assert not marks.take_due("r1", due_at=NOW - 10, until=NOW + 3601)
    assert ("r1", NOW - 10) not in marks.due(shard, now=NOW, limit=10)[0]
    # The refresh sweep's shards never list it
    assert shard.startswith("CHANGES#")


def test_a_reconnect_keeps_the_watermark_and_puts_the_realm_back_on_the_schedule(marks):
    start(marks, T, next_run=NOW)
    marks.reschedule("r1", next_run=None, now=NOW)  # disconnected: off the schedule
    assert marks.get_watermark("r1").next_run is None
    assert not start(marks, NOW + 60, next_run=NOW + 120)
    state = marks.get_watermark("r1")
    assert (state.watermark, state.next_run) == (T, NOW + 120)


def test_an_unknown_realm_has_no_watermark(marks):
    assert marks.get_watermark("nope") is None
