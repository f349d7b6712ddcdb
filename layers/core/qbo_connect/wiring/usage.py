"""The usage family: the container's meter, the budget guard and the usage actions.

One meter per container: every call a container makes through the proxy or for the service
itself is buffered there and flushed at the end of an invocation (``flush_if_due``).
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from qbo_connect.events import EventPublisher, PendingEvent
from qbo_connect.operations.usage import UsageService
from qbo_connect.store.usage import UsageRepository
from qbo_connect.telemetry import metrics
from qbo_connect.usage.budget import BudgetGuard
from qbo_connect.usage.classify import SERVICE, Call
from qbo_connect.usage.meter import UsageMeter
from qbo_connect.wiring import aws


@lru_cache(maxsize=1)
def repository() -> UsageRepository:
    return UsageRepository(aws.table())


@lru_cache(maxsize=1)
def _publisher() -> EventPublisher:
    return EventPublisher(aws.aws_client("events"), aws.settings().event_bus_name)


def _publish(detail_type: str, detail: dict[str, Any], event_id: str) -> bool:
    event = PendingEvent(
        detail_type=detail_type, detail=detail, event_id=event_id, occurred_at=time.time()
    )
    return _publisher().publish_pending(event)


@lru_cache(maxsize=1)
def meter() -> UsageMeter:
    settings = aws.settings()
    return UsageMeter(
        repository(),
        sandbox=settings.intuit.environment == "sandbox",
        soft_limit=int(
            settings.coreplus_monthly_budget * settings.coreplus_soft_limit_percent / 100
        ),
        flush_after_seconds=settings.usage_flush_seconds,
        flush_after_calls=settings.usage_flush_calls,
        publish=_publish,
        metrics=metrics,
    )


@lru_cache(maxsize=1)
def guard() -> BudgetGuard:
    settings = aws.settings()
    return BudgetGuard(
        repository(),
        meter(),
        monthly_budget=settings.coreplus_monthly_budget,
        soft_limit_percent=settings.coreplus_soft_limit_percent,
        default_tenant_quota=settings.coreplus_tenant_quota,
    )


@lru_cache(maxsize=1)
def usage_service() -> UsageService:
    settings = aws.settings()
    return UsageService(
        repository=repository(),
        meter=meter(),
        guard=guard(),
        raw_token_reads=settings.raw_token_reads,
        flush_bound=(
            f"a container's last {settings.usage_flush_calls} calls or "
            f"{settings.usage_flush_seconds:g} s of calls, until it flushes"
        ),
    )


def count_service_read(tenant_id: str, realm_id: str) -> None:
    """One CorePlus call the service made itself (a realm proof, a probe)."""
    meter().record(tenant_id=tenant_id, realm_id=realm_id, call=Call(coreplus=1), source=SERVICE)


def flush_if_due() -> None:
    """The end of an invocation: flush this container's buffer if it is old or large enough
    (never fails the invocation: what is not written stays buffered)."""
    if meter.cache_info().currsize:
        meter().flush_if_due()


def _reset() -> None:
    for cached in (repository, _publisher, meter, guard, usage_service):
        cached.cache_clear()
