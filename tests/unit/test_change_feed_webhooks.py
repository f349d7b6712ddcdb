"""The webhook processor on the change feed: ``source: "webhook"`` and one event per change."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from devstack.intuit_sim.webhooks import legacy_body
from qbo_connect.changes import (
    CHANGE_TIME_TOLERANCE_SECONDS,
    SOURCE_CDC,
    change_event_id,
    change_time,
)
from qbo_connect.store.change_marks import PUBLISHED, ChangeMarks
from qbo_connect.store.connections import ConnectionRepository
from qbo_connect.store.webhook_ledger import Ledger
from qbo_connect.webhooks.payload import parse
from qbo_connect.webhooks.processor import WebhookProcessor
from tests.helpers.store import placeholder_connection
from tests.helpers.webhooks import change as entity

WHEN = "2026-12-01T10:00:00.000Z"


class Events:
    """EventBridge stand-in: records entries, refuses entity ids listed in ``refuse``."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.refuse: set[str] = set()

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        for entry in Entries:
            if json.loads(entry["Detail"])["entity_id"] in self.refuse:
                results.append({"ErrorCode": "InternalFailure"})
            else:
                self.entries.append(entry)
                results.append({"EventId": f"e{len(self.entries)}"})
        return {"Entries": results}

    def details(self) -> list[dict[str, Any]]:
        return [json.loads(e["Detail"]) for e in self.entries]


@pytest.fixture
def table(aws) -> Any:
    t = boto3.resource("dynamodb").Table(aws["table_name"])
    placeholder_connection(t, "100", "tenant-x", now=time.time())
    return t


def processor(table: Any, events: Events) -> WebhookProcessor:
    return WebhookProcessor(
        connections=ConnectionRepository(table),
        ledger=Ledger(table, ttl_seconds=3600, claim_seconds=60),
        events_client=events,
        bus_name="default",
        marks=ChangeMarks(table, ttl_seconds=0, tolerance_seconds=CHANGE_TIME_TOLERANCE_SECONDS),
    )


def message(*changes: Any) -> str:
    _, parsed = parse(legacy_body(list(changes)))
    return json.dumps({"v": 1, "received_at": 0, "changes": [c.to_dict() for c in parsed]})


def test_change_time_reads_iso_times_and_refuses_garbage():
    assert change_time("2026-12-01T10:00:00.000Z") == change_time("2026-12-01T02:00:00-08:00")
    assert change_time("not a time") is None


def test_webhook_events_say_their_source_and_mark_the_change_published(table):
    events = Events()
    body = message(entity("100", "Customer", "1", "Update", lastUpdated=WHEN))
    assert processor(table, events).process(body, message_id="m1")["published"] == 1
    (detail,) = events.details()
    assert detail["source"] == "webhook"
    marks = ChangeMarks(table, ttl_seconds=0, tolerance_seconds=2)
    mark = marks.get_mark("100", "Customer", "1")
    assert mark["status"] == PUBLISHED and mark["event_id"] == detail["event_id"]


def test_a_change_cdc_already_published_is_a_duplicate_for_the_webhook(table):
    # Given the reconciliation published the change at its LastUpdatedTime
    marks = ChangeMarks(table, ttl_seconds=0, tolerance_seconds=2)
    t = change_time(WHEN)
    assert t is not None
    eid = change_event_id("100", "Customer", "1", t)
    assert marks.claim(
        "100", "Customer", "1", change_time=t, event_id=eid, source=SOURCE_CDC, now=time.time()
    )
    assert marks.mark_published("100", "Customer", "1", event_id=eid, now=time.time())
    # When the webhook for it arrives late / Then nothing is published
    events = Events()
    body = message(entity("100", "Customer", "1", "Update", lastUpdated=WHEN))
    counts = processor(table, events).process(body, message_id="m1")
    assert counts == {"published": 0, "duplicates": 1, "dropped": 0}
    assert events.entries == []


def test_two_deliveries_of_one_change_under_different_event_ids_publish_once(table):
    # Given Intuit delivers one change twice with different notification ids
    events = Events()
    first = message(entity("100", "Invoice", "9", "Update", lastUpdated=WHEN))
    second = message(entity("100", "Invoice", "9", "Update", lastUpdated=WHEN))
    proc = processor(table, events)
    assert proc.process(first, message_id="m1")["published"] == 1
    # When the second arrives / Then it is a duplicate; a later real change is not
    assert proc.process(second, message_id="m2")["duplicates"] == 1
    later = message(entity("100", "Invoice", "9", "Update", lastUpdated="2026-12-01T10:05:00Z"))
    assert proc.process(later, message_id="m3")["published"] == 1
    assert [d["occurred_at"] for d in events.details()] == [WHEN, "2026-12-01T10:05:00Z"]


def test_a_refused_event_goes_out_again_under_the_same_id_when_its_message_returns(table):
    events = Events()
    events.refuse = {"2"}
    proc = processor(table, events)
    body = message(
        entity("100", "Customer", "1", "Create", lastUpdated=WHEN),
        entity("100", "Customer", "2", "Create", lastUpdated=WHEN),
    )
    with pytest.raises(RuntimeError):
        proc.process(body, message_id="m1")
    events.refuse = set()
    assert proc.process(body, message_id="m1") == {"published": 1, "duplicates": 1, "dropped": 0}
    assert sorted(d["entity_id"] for d in events.details()) == ["1", "2"]
