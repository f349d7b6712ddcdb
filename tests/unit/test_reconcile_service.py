"""The reconcile_changes action's service: tenant guard, deadline, answer shape (on moto)."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

from qbo_connect.changes.reconciler import ENTITY_CHANGED, Reconciler
from qbo_connect.changes.service import ReconcileService
from qbo_connect.errors import CdcFailed, NotConnected
from qbo_connect.store.change_marks import ChangeMarks
from qbo_connect.store.connections import ConnectionRepository
from tests.helpers.store import TableRepositories, placeholder_connection

NOW = time.time()


@pytest.fixture
def table(aws) -> Any:
    t = boto3.resource("dynamodb").Table(aws["table_name"])
    placeholder_connection(t, "4620816365", "tenant-a", now=NOW)
    return t


def service(table: Any, fetched: list[str], published: list[Any], clock: list[float]):
    marks = ChangeMarks(table, ttl_seconds=0, tolerance_seconds=2)
    marks.start("4620816365", tenant_id="tenant-a", at=NOW - 3600, now=NOW - 3600, next_run=None)
    tenants: list[str] = []

    def fetch(realm_id: str, entities: list[str], since: str) -> dict[str, list[dict[str, Any]]]:
        fetched.extend(entities)
        when = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(NOW - 60))
        return {
            e: [{"Id": "5", "MetaData": {"LastUpdatedTime": when}}] if e == "Bill" else []
            for e in entities
        }

    def reconciler_for(tenant_id: str) -> Reconciler:
        tenants.append(tenant_id)
        return Reconciler(
            marks=marks,
            fetch=fetch,
            publish=published.extend,
            entities=["Customer", "Bill"],
            clock=lambda: clock[0],
        )

    svc = ReconcileService(
        connections=ConnectionRepository(table),
        marks=marks,
        reconciler_for=reconciler_for,
        clock=lambda: clock[0],
        max_seconds=20,
    )
    return svc, tenants


def test_reconcile_changes_answers_counts_and_watermark_for_the_owner(table):
    fetched: list[str] = []
    published: list[Any] = []
    svc, tenants = service(table, fetched, published, [NOW])
    answer = svc.reconcile_changes({"realm_id": "4620816365", "tenant_id": "tenant-a"})
    assert answer["published"] == 1 and answer["already_seen"] == 0
    assert answer["partial"] is False and "resync_required" not in answer
    assert answer["watermark"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW))
    assert tenants == ["tenant-a"]  # CDC calls metered to the realm's tenant
    assert [kind for kind, _ in published] == [ENTITY_CHANGED]
    again = svc.reconcile_changes({"realm_id": "4620816365"})
    assert (again["published"], again["already_seen"]) == (0, 1)


def test_another_tenants_realm_is_not_connected(table):
    svc, tenants = service(table, [], [], [NOW])
    with pytest.raises(NotConnected):
        svc.reconcile_changes({"realm_id": "4620816365", "tenant_id": "tenant-b"})
    with pytest.raises(NotConnected):
        svc.reconcile_changes({"realm_id": "4620816366"})
    assert tenants == []


def test_no_time_left_answers_partial_without_moving_the_watermark(table):
    fetched: list[str] = []
    svc, _ = service(table, fetched, [], [NOW])
    answer = svc.reconcile_changes({"realm_id": "4620816365"}, remaining_seconds=2.0)
    assert answer["partial"] is True and fetched == []
    assert answer["watermark"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 3600))


def test_a_scheduled_run_of_a_realm_no_longer_connected_takes_it_off_the_schedule(table):
    svc, tenants = service(table, [], [], [NOW])
    marks = svc.marks
    marks.reschedule("4620816365", next_run=NOW - 1, now=NOW - 60)
    TableRepositories(table).connections.disconnect("4620816365", now=NOW)
    assert svc.run_scheduled("4620816365") == "not_connected"
    state = marks.get_watermark("4620816365")
    assert state is not None and state.next_run is None and tenants == []


def test_a_scheduled_run_that_fails_keeps_the_watermark_and_says_so(table):
    svc, _ = service(table, [], [], [NOW])

    def failing(tenant_id: str) -> Reconciler:
        raise CdcFailed("CDC answered 500")

    svc.reconciler_for = failing
    assert svc.run_scheduled("4620816365") == "failed"
    state = svc.marks.get_watermark("4620816365")
    assert state is not None and state.watermark == pytest.approx(NOW - 3600, abs=0.001)


def test_change_status_shows_the_watermark_and_runs_to_the_owner_only(table):
    svc, _ = service(table, [], [], [NOW])
    svc.reconcile_changes({"realm_id": "4620816365"})
    status = svc.status({"realm_id": "4620816365", "tenant_id": "tenant-a"})
    assert status["recovered"] == 1 and status["status"] == "active"
    assert status["last_run"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW))
    with pytest.raises(NotConnected):
        svc.status({"realm_id": "4620816365", "tenant_id": "tenant-b"})


def test_a_realm_without_a_feed_joins_it_after_a_refresh_and_only_once(table):
    svc, _ = service(table, [], [], [NOW])
    marks = svc.marks
    table.delete_item(Key={"pk": "REALM#4620816365", "sk": "CHANGES"})  # made before the feed

    def first_run(realm: str, now: float) -> float:
        return now + 60

    assert svc.join("4620816365", first_run=first_run)
    state = marks.get_watermark("4620816365")
    assert state is not None
    assert (state.watermark, state.next_run) == pytest.approx((NOW, NOW + 60), abs=0.001)
    assert not svc.join("4620816365", first_run=first_run)  # it has one now: a read, no write
    assert not svc.join("4620816366", first_run=first_run)  # not connected: nothing
