"""The change feed's schedule: due realms through DueIndex, enqueued once, spread over the
period, standing back when CorePlus use nears the soft limit (on moto)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from qbo_connect.changes.scheduler import ReconcileScheduler, first_run
from qbo_connect.contracts import RECONCILE, RefreshMessage
from qbo_connect.store.change_marks import ChangeMarks

NOW = 1_800_000_000.0
PERIOD = 6 * 3600.0


class Metrics:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def __call__(self) -> Metrics:
        return self

    def add_metric(self, *, name: str, unit: Any, value: float) -> None:
        self.values[name] = self.values.get(name, 0) + value

    def flush_metrics(self) -> None:
        pass


@pytest.fixture
def marks(aws) -> ChangeMarks:
    table = boto3.resource("dynamodb").Table(aws["table_name"])
    return ChangeMarks(table, ttl_seconds=0, tolerance_seconds=2, shards=4)


@pytest.fixture
def queue_url(aws) -> str:
    return boto3.client("sqs").create_queue(QueueName="refresh")["QueueUrl"]


def scheduler(marks, queue_url, *, usage: float | None = 10.0, metrics=None, clock=NOW):
    return ReconcileScheduler(
        marks=marks,
        sqs=boto3.client("sqs"),
        queue_url=queue_url,
        period_seconds=PERIOD,
        usage_percent=lambda: usage,
        stand_back_percent=80.0,
        clock=lambda: clock,
        metrics=metrics,
        page_size=3,
    )


def queued(queue_url: str) -> list[RefreshMessage]:
    sqs = boto3.client("sqs")
    found: list[RefreshMessage] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return found
        for message in got:
            found.append(RefreshMessage.from_payload(json.loads(message["Body"])))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def schedule(marks: ChangeMarks, realm_id: str, next_run: float) -> None:
    marks.start(realm_id, tenant_id="t", at=NOW - PERIOD, now=NOW - PERIOD, next_run=next_run)


def test_due_realms_are_enqueued_once_across_pages_shards_and_repeated_runs(marks, queue_url):
    # Given 12 realms due (more than a page per shard) and 3 not yet due
    due = [str(4620816000 + n) for n in range(12)]
    for realm in due:
        schedule(marks, realm, NOW - 5)
    for n in range(3):
        schedule(marks, str(4620817000 + n), NOW + 60)
    metrics = Metrics()
    # When the schedule runs, and runs again (a schedule event delivered twice)
    first = scheduler(marks, queue_url, metrics=metrics).run()
    second = scheduler(marks, queue_url).run()
    # Then each due realm is enqueued once, as a reconcile message
    messages = queued(queue_url)
    assert sorted(m.realm_id for m in messages) == sorted(due)
    assert {m.kind for m in messages} == {RECONCILE}
    assert (first.due, first.enqueued, first.complete) == (12, 12, True)
    assert (second.due, second.enqueued) == (0, 0)
    assert metrics.values["ReconcileEnqueued"] == 12 and metrics.values["ReconcileStoodBack"] == 0
    # And a realm whose message was lost is due again once the claim lapses (by then the
    # three later realms are due too)
    later = scheduler(marks, queue_url, clock=NOW + 3601).run()
    assert later.enqueued == 15


def test_the_schedule_stands_back_past_80_percent_of_the_soft_limit_and_catches_up(
    marks, queue_url
):
    schedule(marks, "4620816365", NOW - 5)
    metrics = Metrics()
    # When CorePlus use is at 85 % of the soft limit
    result = scheduler(marks, queue_url, usage=85.0, metrics=metrics).run()
    # Then nothing is enqueued, the metric says so, and the realm stays due
    assert result.stood_back and result.enqueued == 0 and queued(queue_url) == []
    assert metrics.values["ReconcileStoodBack"] == 1
    assert marks.get_watermark("4620816365").next_run == NOW - 5
    # When use falls back below (a new month) / Then it is caught up
    assert scheduler(marks, queue_url, usage=3.0).run().enqueued == 1


def test_an_unmetered_workspace_never_stands_back(marks, queue_url):
    schedule(marks, "4620816365", NOW - 5)
    assert scheduler(marks, queue_url, usage=None).run().enqueued == 1


def test_the_schedule_off_reads_nothing(marks, queue_url):
    off = ReconcileScheduler(
        marks=marks,
        sqs=None,
        queue_url=queue_url,
        period_seconds=0,
        usage_percent=lambda: pytest.fail("read"),
        stand_back_percent=80,
    )
    assert off.run().enabled is False


def test_first_runs_spread_over_the_period_and_stay_put_for_a_realm():
    runs = [first_run(str(4620816000 + n), now=NOW, period_seconds=PERIOD) for n in range(400)]
    assert all(r is not None and NOW <= r < NOW + PERIOD for r in runs)
    hours = {int((r - NOW) // 3600) for r in runs if r is not None}
    assert hours == set(range(6))  # every hour of the period gets some
    assert first_run("4620816365", now=NOW, period_seconds=PERIOD) == first_run(
        "4620816365", now=NOW, period_seconds=PERIOD
    )
    assert first_run("4620816365", now=NOW, period_seconds=0) is None
