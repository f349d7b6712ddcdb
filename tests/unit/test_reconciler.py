"""The CDC reconciliation of one realm, against an in-memory CDC with Intuit's answer rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import boto3
import pytest

from qbo_connect.api.request import ApiRequest
from qbo_connect.changes import SOURCE_WEBHOOK, change_event_id, change_time
from qbo_connect.changes.reconciler import (
    ENTITY_CHANGED,
    RESYNC_REQUIRED,
    ProxyCdc,
    RealmInfo,
    Reconciler,
    iso_ms,
)
from qbo_connect.errors import CdcFailed
from qbo_connect.store.change_marks import ChangeMarks

DAY = 86400.0
START = 1_800_000_000.0
REALM = RealmInfo("r1", "tenant-a", "sandbox")


class Books:
    """Changes by entity, answered like CDC: after changedSince, oldest first, at most limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.calls: list[tuple[tuple[str, ...], str]] = []

    def change(self, entity: str, entity_id: str, when: float, *, deleted: bool = False) -> None:
        row: dict[str, Any] = {"Id": entity_id, "MetaData": {"LastUpdatedTime": iso_ms(when)}}
        if deleted:
            row["status"] = "Deleted"
        self.rows.setdefault(entity, {})[entity_id] = row

    def __call__(
        self, realm_id: str, entities: Sequence[str], changed_since: str
    ) -> dict[str, list[Mapping[str, Any]]]:
        self.calls.append((tuple(entities), changed_since))
        since = change_time(changed_since)
        assert since is not None
        answer = {}
        for entity in entities:
            rows = sorted((r for r in self.rows.get(entity, {}).values() if _t(r) > since), key=_t)
            answer[entity] = rows[: self.limit]
        return answer


def _t(row: Mapping[str, Any]) -> float:
    value = change_time(row["MetaData"]["LastUpdatedTime"])
    assert value is not None
    return value


class Bus:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    def __call__(self, entries: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if self.fail:
            raise RuntimeError("EventBridge refused")
        self.events.extend(entries)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for k, d in self.events if k == kind]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def marks(aws) -> ChangeMarks:
    return ChangeMarks(
        boto3.resource("dynamodb").Table(aws["table_name"]), ttl_seconds=0, tolerance_seconds=2
    )


def reconciler(
    marks, books, bus, clock, entities=("Customer", "Invoice"), period: float = 0.0
) -> Reconciler:
    return Reconciler(
        marks=marks,
        fetch=books,
        publish=bus,
        entities=entities,
        clock=clock,
        page_limit=5,
        period_seconds=period,
    )


def start(marks: ChangeMarks, at: float = START, tenant: str = "tenant-a") -> bool:
    return marks.start("r1", tenant_id=tenant, at=at, now=at, next_run=None)


def test_changes_no_webhook_announced_are_published_once_and_the_watermark_moves(marks):
    # Given a realm connected at START and three changes whose webhooks were lost
    start(marks)
    books, bus, clock = Books(5), Bus(), Clock(START + 3600)
    books.change("Customer", "1", START + 10)
    books.change("Invoice", "2", START + 20)
    books.change("Invoice", "3", START + 30, deleted=True)
    books.change("Customer", "0", START - 3 * DAY)  # before the connection: never replayed
    run = reconciler(marks, books, bus, clock)
    # When it runs twice
    first = run.run(REALM, deadline=clock.now + 60)
    clock.now += 3600
    second = run.run(REALM, deadline=clock.now + 60)
    # Then each missed change is published once, with source cdc, deletions included
    published = bus.of(ENTITY_CHANGED)
    assert sorted(d["entity_id"] for d in published) == ["1", "2", "3"]
    assert {d["source"] for d in published} == {"cdc"}
    assert {d["entity_id"]: d["operation"] for d in published}["3"] == "Delete"
    assert all(d["tenant_id"] == "tenant-a" for d in published)
    assert (first.published, first.partial, second.published) == (3, False, 0)
    # And every entity was asked in one CDC call per run (one CorePlus call)
    assert [entities for entities, _ in books.calls] == [("Customer", "Invoice")] * 2
    assert first.watermark == START + 3600
    assert marks.get_watermark("r1").recovered == 3


def test_a_change_the_webhook_published_is_already_seen(marks):
    start(marks)
    when = START + 10
    eid = change_event_id("r1", "Customer", "1", when)
    marks.claim(
        "r1", "Customer", "1", change_time=when, event_id=eid, source=SOURCE_WEBHOOK, now=when
    )
    marks.mark_published("r1", "Customer", "1", event_id=eid, now=when)
    books, bus, clock = Books(5), Bus(), Clock(START + 3600)
    books.change("Customer", "1", when)
    outcome = reconciler(marks, books, bus, clock).run(REALM, deadline=clock.now + 60)
    assert (outcome.published, outcome.already_seen) == (0, 1)
    assert bus.events == []


def test_a_full_answer_narrows_the_window_until_complete(marks):
    start(marks)
    books, bus, clock = Books(5), Bus(), Clock(START + 3600)
    for n in range(12):
        books.change("Customer", str(n), START + 10 + n)
    outcome = reconciler(marks, books, bus, clock, entities=("Customer",)).run(
        REALM, deadline=clock.now + 60
    )
    assert sorted(int(d["entity_id"]) for d in bus.of(ENTITY_CHANGED)) == list(range(12))
    assert len(books.calls) == 3  # 5 + 5 + 2, each asked from the last full answer's latest
    # asked again from just before the first answer's latest change
    assert change_time(books.calls[1][1]) == pytest.approx(START + 14 - 0.001)
    assert outcome.published == 12 and not outcome.partial


def test_a_realm_offline_longer_than_cdc_reaches_gets_one_resync_required(marks):
    start(marks)
    books, bus, clock = Books(5), Bus(), Clock(START + 31 * DAY)
    run = reconciler(marks, books, bus, clock)
    first = run.run(REALM, deadline=clock.now + 60)
    clock.now += 3600
    second = run.run(REALM, deadline=clock.now + 60)
    (resync,) = bus.of(RESYNC_REQUIRED)
    assert resync["lost_from"].startswith("2027-01-15")  # START's day
    assert first.resync_required and not second.resync_required
    # CDC was never asked further back than it answers
    assert all(change_time(since) >= START + DAY for _, since in books.calls)


def test_the_watermark_stays_when_publishing_fails_and_the_retry_repeats_the_event_ids(marks):
    start(marks)
    books, bus, clock = Books(5), Bus(), Clock(START + 3600)
    books.change("Customer", "1", START + 10)
    run = reconciler(marks, books, bus, clock)
    bus.fail = True
    with pytest.raises(RuntimeError):
        run.run(REALM, deadline=clock.now + 60)
    assert marks.get_watermark("r1").watermark == START
    bus.fail = False
    run.run(REALM, deadline=clock.now + 60)
    (detail,) = bus.of(ENTITY_CHANGED)
    assert detail["event_id"] == change_event_id("r1", "Customer", "1", START + 10)


def test_a_run_out_of_time_is_partial_and_does_not_move_the_watermark_past_its_work(marks):
    start(marks)
    books, bus, clock = Books(5), Bus(), Clock(START + 3600)
    books.change("Invoice", "2", START + 20)
    outcome = reconciler(marks, books, bus, clock).run(REALM, deadline=clock.now)
    assert outcome.partial and outcome.watermark == START and bus.events == []


def test_a_realm_without_a_watermark_starts_now_and_replays_nothing(marks):
    books, bus, clock = Books(5), Bus(), Clock(START)
    books.change("Customer", "1", START - 10)
    outcome = reconciler(marks, books, bus, clock).run(REALM, deadline=clock.now + 60)
    assert (outcome.published, outcome.watermark) == (0, START)
    assert books.calls == [] and bus.events == []


def test_only_the_entity_whose_answer_is_full_is_asked_again(marks):
    start(marks)
    books, bus, clock = Books(5), Bus(), Clock(START + 3600)
    for n in range(7):
        books.change("Customer", str(n), START + 10 + n)
    books.change("Invoice", "i1", START + 5)
    outcome = reconciler(marks, books, bus, clock).run(REALM, deadline=clock.now + 60)
    assert [entities for entities, _ in books.calls] == [("Customer", "Invoice"), ("Customer",)]
    assert outcome.published == 8 and not outcome.partial


def test_a_full_answer_whose_changes_share_one_time_cannot_narrow_and_is_partial(marks):
    start(marks)
    books, bus, clock = Books(5), Bus(), Clock(START + 3600)
    for n in range(6):
        books.change("Customer", str(n), START + 10)
    outcome = reconciler(marks, books, bus, clock, entities=("Customer",)).run(
        REALM, deadline=clock.now + 60
    )
    # The watermark moves only to where the entity is complete (before the shared time)
    assert outcome.partial
    assert marks.get_watermark("r1").watermark == pytest.approx(START + 10 - 0.001)


def test_the_schedule_moves_a_period_after_a_run_and_soon_after_a_partial_one(marks):
    start(marks)
    books, bus, clock = Books(5), Bus(), Clock(START + 3600)
    books.change("Customer", "1", START + 10)
    run = reconciler(marks, books, bus, clock, period=6 * 3600)
    run.run(REALM, deadline=clock.now + 60)
    assert marks.get_watermark("r1").next_run == START + 3600 + 6 * 3600
    clock.now += 60
    run.run(REALM, deadline=clock.now)  # out of time at once: partial
    assert marks.get_watermark("r1").next_run == clock.now + 300


def test_a_realm_that_changed_hands_restarts_its_feed_for_the_new_tenant(marks):
    start(marks, tenant="tenant-old")
    books, bus, clock = Books(5), Bus(), Clock(START + 3600)
    books.change("Customer", "1", START + 10)  # the old tenant's time: not replayed
    outcome = reconciler(marks, books, bus, clock).run(REALM, deadline=clock.now + 60)
    assert (outcome.published, outcome.watermark) == (0, START + 3600)
    assert marks.get_watermark("r1").tenant_id == "tenant-a"


def test_cdc_goes_through_the_api_package_call_and_a_fault_stops_the_run():
    asked: list[ApiRequest] = []

    def call(request: ApiRequest) -> dict[str, Any]:
        asked.append(request)
        if request.query["entities"] == "Bill":
            return {"status": 400, "body": {"Fault": {"Error": [{"code": "2010"}]}}}
        rows = [{"Id": "1", "MetaData": {"LastUpdatedTime": "2026-12-01T10:00:00.000Z"}}]
        return {"status": 200, "body": {"CDCResponse": [{"QueryResponse": [{"Customer": rows}]}]}}

    cdc = ProxyCdc(call, tenant_id="tenant-a")
    answer = cdc("r1", ["Customer", "Invoice"], "2026-12-01T00:00:00.000Z")
    assert [row["Id"] for row in answer["Customer"]] == ["1"] and answer["Invoice"] == []
    request = asked[0]
    assert (request.method, request.path, request.tenant_id) == ("GET", "cdc", "tenant-a")
    assert request.query == {
        "entities": "Customer,Invoice",
        "changedSince": "2026-12-01T00:00:00.000Z",
    }
    with pytest.raises(CdcFailed):
        cdc("r1", ["Bill"], "2026-12-01T00:00:00.000Z")


def test_a_continued_partial_run_does_not_read_again_what_it_covered(marks):
    # Given a busy entity whose first run stopped after one full page
    start(marks)
    books, bus, clock = Books(5), Bus(), Clock(START + 3600)
    for n in range(8):
        books.change("Customer", str(n), START + 10 + n)
    run = reconciler(marks, books, bus, clock, entities=("Customer",))
    deadline = {"at": clock.now + 60}

    first_calls = len(books.calls)
    calls_before_deadline = 1

    def fetch_then_stop(realm_id, entities, since):
        answer = books(realm_id, entities, since)
        if len(books.calls) - first_calls >= calls_before_deadline:
            clock.now = deadline["at"]  # the deadline passes while the page is recorded
        return answer

    run.fetch = fetch_then_stop
    first = run.run(REALM, deadline=deadline["at"])
    assert first.partial and first.published == 5
    # When the next run continues an hour later
    clock.now += 3600
    run.fetch = books
    second = run.run(REALM, deadline=clock.now + 60)
    # Then it asks from where the first was complete, not an overlap before it
    assert second.published == 3 and second.already_seen <= 1
    assert change_time(books.calls[-1][1]) == pytest.approx(START + 14 - 0.001)
