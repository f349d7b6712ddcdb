"""Derived health, and the history items (moto with the table built from template.yaml)."""

from __future__ import annotations

import time

import boto3
import pytest

from qbo_connect.vault import health
from qbo_connect.vault.history import History
from tests.helpers.store import TableRepositories

NOW = 1_800_000_000.0
DAY = 86400.0


def item(**fields):
    base = {
        "status": "active",
        "refresh_expires_at": NOW + 90 * DAY,
        "refresh_hard_expires_at": NOW + 1000 * DAY,
        "due_at": NOW + 3600,
    }
    return {**base, **fields}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, health.HEALTHY),
        ({"status": "disconnected", "failing_since": NOW}, health.DISCONNECTED),
        ({"status": "needs_reauthorization", "failing_since": NOW}, health.NEEDS_REAUTHORIZATION),
        ({"failing_since": NOW - 60, "refresh_failures": 2}, health.RETRYING),
        ({"failing_since": NOW, "refresh_hard_expires_at": NOW + DAY}, health.RETRYING),
        ({"refresh_hard_expires_at": NOW + 29 * DAY}, health.EXPIRING_SOON),
        ({"refresh_expires_at": NOW + 10 * DAY}, health.EXPIRING_SOON),
        ({"refresh_hard_expires_at": None}, health.HEALTHY),
    ],
)
def test_health_is_derived_most_urgent_first(fields, expected):
    assert health.health_of(item(**fields), NOW) == expected


def test_health_fields_say_what_failed_when_and_the_intuit_tid():
    fields = health.health_fields(
        item(
            failing_since=NOW - 120,
            refresh_failures=3,
            last_error_class="invalid_grant",
            last_error_at=NOW - 5,
            last_error_tid="1-abc-123",
        ),
        NOW,
    )
    assert fields == {
        "health": "retrying",
        "failing_since": "2027-01-15T07:58:00Z",
        "failed_attempts": 3,
        "next_attempt_at": "2027-01-15T09:00:00Z",
        "last_error": {
            "class": "invalid_grant",
            "at": "2027-01-15T07:59:55Z",
            "intuit_tid": "1-abc-123",
        },
    }
    healthy = health.health_fields(item(), NOW)
    assert healthy["failing_since"] is None and healthy["failed_attempts"] == 0
    assert healthy["last_error"] is None
    gone = health.health_fields(item(status="disconnected"), NOW)
    assert gone["next_attempt_at"] is None


@pytest.fixture
def store(aws) -> TableRepositories:
    return TableRepositories(boto3.resource("dynamodb").Table(aws["table_name"]))


def test_history_keeps_the_newest_first_and_reads_only_n(store):
    clock = iter(NOW + i for i in range(100))
    history = History(store.history, clock=lambda: next(clock))
    for i in range(30):
        history.record("123", source="sweep", outcome="refreshed", version=i + 1)
    history.record("123", source="get_token", outcome="invalid_grant", intuit_tid="1-tid")
    history.record("999", source="callback", outcome="connected")

    entries = history.entries("123", limit=5)

    assert [e["outcome"] for e in entries] == ["invalid_grant"] + ["refreshed"] * 4
    assert entries[0] == {
        "at": "2027-01-15T08:00:30Z",
        "source": "get_token",
        "outcome": "invalid_grant",
        "intuit_tid": "1-tid",
    }
    assert [e["version"] for e in entries[1:]] == [30, 29, 28, 27]
    assert len(history.entries("123", limit=100)) == 31


def test_history_items_expire_and_stay_out_of_the_indexes(store, aws):
    history = History(store.history, clock=lambda: time.time() - 40 * DAY, retention_days=30)
    history.record("123", source="operator", outcome="disconnected")
    assert (
        History(store.history).entries("123") == []
    )  # past its TTL: gone, even before DynamoDB acts
    item = boto3.client("dynamodb").scan(TableName=aws["table_name"])["Items"][0]
    assert item["sk"]["S"].startswith("HISTORY#")
    assert not {"tenant_id", "due_shard", "realm_id"} & set(item)
    assert int(item["ttl"]["N"]) < time.time()


def test_a_retried_history_write_meets_its_own_success(store):
    entry = {"id": "abc", "at_epoch": NOW, "at": "x", "source": "sweep", "outcome": "refreshed"}
    store.put_history("123", entry, ttl=time.time() + DAY)
    store.put_history("123", entry, ttl=time.time() + DAY)  # boto3's retry of a lost answer
    assert len(store.get_history("123", limit=10, now=time.time())) == 1
