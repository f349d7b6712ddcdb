"""The usage meter: counts in memory, flushed to DynamoDB at the end of an invocation.

A Lambda container runs no timers once its invocation returns and gets no shutdown signal
without an extension, so the meter cannot flush "later": the handler calls
:meth:`UsageMeter.flush_if_due` as it returns, and the meter writes only when its buffer is older
than ``flush_after_seconds`` or holds more than ``flush_after_calls`` calls. At steady state
that is a few UpdateItems per container every few seconds, not a write per call.

What a container that is never invoked again leaves uncounted is its buffer: at most
``flush_after_calls`` calls, or what it made in the last ``flush_after_seconds`` (docs/usage.md
states the bound for a deployment). ``flush_usage`` (ConnectionsFunction) and the local stack's
single process make a report exact.

After each flush the month's total is compared with the budget's thresholds; crossing one sets a
marker on the total item once (a conditional write) and publishes ``usage.threshold_crossed``
with a stable ``event_id``; a marker whose event did not go out is retried by the next flush.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from qbo_connect.store.usage import TOTAL_SK, UsageRepository, realm_sk, tenant_sk
from qbo_connect.usage.classify import API, SOURCES, Call

logger = Logger(child=True)

THRESHOLDS_PERCENT = (50, 80, 100)
EVENT_SOURCE = "qbo-connect"
THRESHOLD_EVENT = "usage.threshold_crossed"


def month_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m")


def month_bounds(month: str) -> tuple[float, float]:
    """Start and end (exclusive) of a UTC month, as epoch seconds."""
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start.timestamp(), end.timestamp()


def coreplus_of(item: dict[str, Any]) -> int:
    return int(item.get("coreplus_api", 0)) + int(item.get("coreplus_service", 0))


def core_of(item: dict[str, Any]) -> int:
    return int(item.get("core_api", 0)) + int(item.get("core_service", 0))


@dataclass
class FlushResult:
    written: int = 0
    calls: int = 0
    failed: int = 0
    totals: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False, repr=False)
class UsageMeter:
    """Buffers classed calls per (month, tenant, realm, source) and flushes them."""

    repository: UsageRepository
    _: KW_ONLY
    sandbox: bool
    soft_limit: int
    clock: Callable[[], float] = time.time
    flush_after_seconds: float = 5.0
    flush_after_calls: int = 50
    publish: Callable[[str, dict[str, Any], str], bool] | None = None
    metrics: Any = None
    #: Names this container in the items it writes (empty: a random one).
    container_id: str = ""
    #: Called with (month, sk, item) for every item a flush wrote: the budget guard keeps
    #: its cached totals exact with them.
    listeners: list[Callable[[str, str, dict[str, Any]], None]] = field(
        default_factory=list, init=False
    )

    def __post_init__(self) -> None:
        self.container_id = self.container_id or uuid.uuid4().hex[:16]
        self._lock = threading.Lock()
        self._buffer: dict[tuple[str, str, str], Counter[str]] = {}
        self._calls = 0
        self._oldest: float | None = None
        self._seq = int(self.clock() * 1000)

    # ----- counting ------------------------------------------------------------------------

    def record(self, *, tenant_id: str, realm_id: str, call: Call, source: str = API) -> None:
        """Count one call (in memory only)."""
        if source not in SOURCES:
            raise ValueError(f"unknown usage source {source!r}")
        now = self.clock()
        with self._lock:
            counts = self._buffer.setdefault((month_of(now), tenant_id, realm_id), Counter())
            if self.sandbox:
                counts["sandbox_core"] += call.core
                counts["sandbox_coreplus"] += call.coreplus
            else:
                counts[f"core_{source}"] += call.core
                counts[f"coreplus_{source}"] += call.coreplus
            self._calls += 1
            if self._oldest is None:
                self._oldest = now

    def unflushed(self, *, tenant_id: str | None = None, month: str | None = None) -> int:
        """CorePlus calls counted here and not yet flushed (for one tenant, or all)."""
        month = month or month_of(self.clock())
        with self._lock:
            return sum(
                counts["coreplus_api"] + counts["coreplus_service"]
                for (m, tenant, _), counts in self._buffer.items()
                if m == month and (tenant_id is None or tenant == tenant_id)
            )

    @property
    def pending_calls(self) -> int:
        with self._lock:
            return self._calls

    # ----- flushing ------------------------------------------------------------------------

    def flush_if_due(self) -> FlushResult | None:
        """Flush when the buffer is old or large enough; the handler calls this as it returns."""
        with self._lock:
            due = self._calls >= self.flush_after_calls or (
                self._oldest is not None and self.clock() - self._oldest >= self.flush_after_seconds
            )
        return self.flush() if due else None

    def flush(self) -> FlushResult:
        """Write every buffered count; what fails stays buffered for the next flush."""
        with self._lock:
            buffer, self._buffer = self._buffer, {}
            calls, self._calls, self._oldest = self._calls, 0, None
            self._seq = max(self._seq + 1, int(self.clock() * 1000))
            seq = self._seq
        result = FlushResult(calls=calls)
        tenants: dict[tuple[str, str], Counter[str]] = {}
        months: dict[str, Counter[str]] = {}
        failed: dict[tuple[str, str, str], Counter[str]] = {}
        for (month, tenant_id, realm_id), counts in buffer.items():
            tenants.setdefault((month, tenant_id), Counter()).update(counts)
            months.setdefault(month, Counter()).update(counts)
            if not self._add(
                month,
                realm_sk(tenant_id, realm_id),
                counts,
                seq,
                {"usage_tenant": tenant_id, "usage_realm": realm_id},
                result,
            ):
                failed[(month, tenant_id, realm_id)] = counts
        for (month, tenant_id), counts in tenants.items():
            self._add(month, tenant_sk(tenant_id), counts, seq, {"usage_tenant": tenant_id}, result)
        for month, counts in months.items():
            item = self._add(month, TOTAL_SK, counts, seq, None, result)
            if isinstance(item, dict):
                result.totals[month] = item
                self._after_total(month, item)
        if failed:
            with self._lock:
                for key, counts in failed.items():
                    self._buffer.setdefault(key, Counter()).update(counts)
                self._oldest = self._oldest or self.clock()
        return result

    def _add(
        self,
        month: str,
        sk: str,
        counts: Counter[str],
        seq: int,
        attributes: dict[str, str] | None,
        result: FlushResult,
    ) -> dict[str, Any] | bool:
        start, _ = month_bounds(month)
        try:
            item = self.repository.add(
                month,
                sk,
                dict(counts),
                container=self.container_id,
                seq=seq,
                month_start=start,
                attributes=attributes,
            )
        except Exception:
            logger.warning("usage not flushed; kept for the next flush", extra={"item": sk})
            result.failed += 1
            return False
        result.written += 1
        if item is None:
            return True
        for listener in self.listeners:
            listener(month, sk, item)
        return item

    def _after_total(self, month: str, total: dict[str, Any]) -> None:
        """Thresholds of the soft limit: a marker once per month, then its event."""
        used = coreplus_of(total)
        if self.metrics is not None and self.soft_limit:
            from aws_lambda_powertools.metrics import MetricUnit

            percent = 100.0 * used / self.soft_limit
            self.metrics.add_metric(
                name="CorePlusUsedPercent", unit=MetricUnit.Percent, value=percent
            )
        if not self.soft_limit:
            return
        now = self.clock()
        for pct in THRESHOLDS_PERCENT:
            if used * 100 < pct * self.soft_limit:
                continue
            marker = f"th_{pct}"
            if marker not in total and not self.repository.mark_once(
                month, TOTAL_SK, marker, now=now
            ):
                continue
            if f"{marker}_sent" in total:
                continue
            detail = {
                "month": month,
                "threshold_percent": pct,
                "used": used,
                "soft_limit": self.soft_limit,
            }
            self._publish_once(month, TOTAL_SK, marker, detail, f"usage-{month}-{pct}")

    def announce_tenant_crossing(self, month: str, tenant_id: str, used: int, quota: int) -> None:
        """A tenant passed its own quota this month: one event (at least once)."""
        sk = tenant_sk(tenant_id)
        item = self.repository.get(month, sk)
        if "quota_crossed_sent" in item:
            return
        if "quota_crossed" not in item:
            self.repository.mark_once(month, sk, "quota_crossed", now=self.clock())
        detail = {"month": month, "tenant_id": tenant_id, "used": used, "quota": quota}
        self._publish_once(month, sk, "quota_crossed", detail, f"usage-{month}-{tenant_id}")

    def _publish_once(
        self, month: str, sk: str, marker: str, detail: dict[str, Any], event_id: str
    ) -> None:
        if self.publish is None:
            return
        if self.publish(THRESHOLD_EVENT, {**detail, "event_id": event_id}, event_id):
            self.repository.mark_once(month, sk, f"{marker}_sent", now=self.clock())
        else:
            logger.warning("usage event not published; the next flush retries", extra=detail)
