"""The change feed's family: reconciliation run now or by the schedule, and the schedule.

A reconciliation's CDC calls go through the QuickBooks API family's proxy in process (governed
per realm and metered like any proxied call), so that family is built only when a realm is
reconciled: the sweep's schedule itself needs only the store, SQS and the usage totals.
"""

from __future__ import annotations

import time
from functools import lru_cache

from aws_lambda_powertools.metrics import EphemeralMetrics

from qbo_connect.changes import CHANGE_MARK_TTL_SECONDS, CHANGE_TIME_TOLERANCE_SECONDS
from qbo_connect.changes.publish import ChangeEventPublisher
from qbo_connect.changes.reconciler import ProxyCdc, Reconciler
from qbo_connect.changes.scheduler import ReconcileScheduler, first_run
from qbo_connect.changes.service import ReconcileService
from qbo_connect.changes.settings import ChangeFeedSettings, load_change_feed_settings
from qbo_connect.store.change_marks import ChangeMarks
from qbo_connect.telemetry import metrics
from qbo_connect.wiring import aws, usage, vault

#: A scheduled or run-now CDC call waits at most this long for the realm's governed rate.
CDC_MAX_WAIT_SECONDS = 20.0


@lru_cache(maxsize=1)
def settings() -> ChangeFeedSettings:
    return load_change_feed_settings()


@lru_cache(maxsize=1)
def marks() -> ChangeMarks:
    return ChangeMarks(
        aws.table(),
        ttl_seconds=CHANGE_MARK_TTL_SECONDS,
        tolerance_seconds=CHANGE_TIME_TOLERANCE_SECONDS,
        shards=aws.settings().due_shards,
    )


@lru_cache(maxsize=1)
def publisher() -> ChangeEventPublisher:
    return ChangeEventPublisher(aws.aws_client("events"), aws.settings().event_bus_name)


def reconciler_for(tenant_id: str) -> Reconciler:
    """A reconciler whose CDC calls are the tenant's (the proxy checks the realm is theirs)."""
    from qbo_connect.wiring import api

    current = settings()
    return Reconciler(
        marks=marks(),
        fetch=ProxyCdc(
            api.proxy().call, tenant_id=tenant_id, max_wait_seconds=CDC_MAX_WAIT_SECONDS
        ),
        publish=publisher(),
        entities=current.entities,
        clock=time.time,
        period_seconds=current.period_seconds,
    )


@lru_cache(maxsize=1)
def service() -> ReconcileService:
    return ReconcileService(
        connections=vault.connections(),
        marks=marks(),
        reconciler_for=reconciler_for,
        clock=time.time,
        max_seconds=settings().max_seconds,
        metrics=metrics,
    )


def _usage_percent() -> float | None:
    return usage.guard().percent_of_soft_limit(fresh=True)


@lru_cache(maxsize=1)
def scheduler() -> ReconcileScheduler:
    current = settings()
    return ReconcileScheduler(
        marks=marks(),
        sqs=aws.aws_client("sqs"),
        queue_url=aws.settings().refresh_queue_url,
        period_seconds=current.period_seconds,
        usage_percent=_usage_percent,
        stand_back_percent=current.stand_back_percent,
        metrics=EphemeralMetrics,
    )


def start_feed(realm_id: str, tenant_id: str, now: float) -> None:
    """A connection was made, imported or reconnected: its feed starts (or, for the same
    tenant, keeps its watermark) and it joins the schedule."""
    marks().start(
        realm_id,
        tenant_id=tenant_id,
        at=now,
        now=now,
        next_run=first_run(realm_id, now=now, period_seconds=settings().period_seconds),
    )


def join_feed(realm_id: str) -> None:
    """After a keep-alive refresh: a realm without a feed joins it (off with the schedule)."""
    period = settings().period_seconds
    if not period:
        return
    service().join(
        realm_id, first_run=lambda realm, now: first_run(realm, now=now, period_seconds=period)
    )


def _reset() -> None:
    for cached in (settings, marks, publisher, service, scheduler):
        cached.cache_clear()
