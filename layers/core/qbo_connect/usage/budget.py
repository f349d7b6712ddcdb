"""The CorePlus budget guard: no tenant, and no burst of calls, spends the app's allowance.

``CorePlusMonthlyBudget`` is this app's share of the developer workspace's monthly pool (other
production apps of the workspace draw on it too). Workload calls (source ``api``) may spend up
to the soft limit (``CorePlusSoftLimitPercent`` of the budget), and a tenant up to its quota
(its own, set with ``set_usage_quota``, or ``CorePlusTenantQuota``; 0 = none). The service's own
calls (source ``service``: realm proofs at connect and import, the Disconnect URL's probe, the
change feed) may go on into the reserve the soft limit leaves, so connecting still works when
workloads have spent theirs. Core calls (writes) and sandbox calls are never refused.

Reads of the month's totals are cached for ``refresh_seconds`` per container and this
container's unflushed calls are added, so the guard costs no DynamoDB request per call. When a
read fails (DynamoDB throttling or unreachable), the last value this container read is used,
however old; a container that has none refuses the CorePlus call as ``rate_limited`` (reason
``store_unavailable``, retry after 1 s) rather than spend a budget it cannot see.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from qbo_connect.errors import BudgetExhausted, RateLimited
from qbo_connect.store.usage import TOTAL_SK, UsageRepository, tenant_sk
from qbo_connect.usage.classify import API, Call
from qbo_connect.usage.meter import UsageMeter, coreplus_of, month_bounds, month_of

logger = Logger(child=True)


def _unavailable() -> RateLimited:
    return RateLimited(
        "the CorePlus budget's state is unavailable; nothing was sent to QuickBooks",
        reason="store_unavailable",
        retry_after_seconds=1,
    )


class BudgetGuard:
    """Admits or refuses a classed call before it is sent."""

    def __init__(
        self,
        repository: UsageRepository,
        meter: UsageMeter,
        *,
        monthly_budget: int,
        soft_limit_percent: float,
        default_tenant_quota: int,
        clock: Callable[[], float] = time.time,
        refresh_seconds: float = 10.0,
    ) -> None:
        self.repository = repository
        self.meter = meter
        self.monthly_budget = monthly_budget
        self.soft_limit = int(monthly_budget * soft_limit_percent / 100)
        self.default_tenant_quota = default_tenant_quota
        self._clock = clock
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, int]] = {}
        self._quotas: tuple[float, dict[str, int]] | None = None
        meter.listeners.append(self._flushed)

    def _flushed(self, month: str, sk: str, item: dict[str, Any]) -> None:
        """A flush's answer is the freshest total there is: what the cache holds from now."""
        with self._lock:
            self._cache[(month, sk)] = (self._clock(), coreplus_of(item))

    def quota_of(self, tenant_id: str) -> int:
        now = self._clock()
        if self._quotas is None or now - self._quotas[0] >= 3 * self.refresh_seconds:
            try:
                self._quotas = (now, self.repository.quotas())
            except (ClientError, BotoCoreError) as exc:
                if self._quotas is None:
                    raise _unavailable() from None
                logger.warning(
                    "usage quotas not read; the last ones read are used",
                    extra={"error_type": type(exc).__name__},
                )
        return self._quotas[1].get(tenant_id, self.default_tenant_quota)

    def _stored(self, month: str, sk: str) -> int:
        now = self._clock()
        with self._lock:
            cached = self._cache.get((month, sk))
        if cached is not None and now - cached[0] < self.refresh_seconds:
            return cached[1]
        try:
            used = coreplus_of(self.repository.get(month, sk))
        except (ClientError, BotoCoreError) as exc:
            if cached is None:
                raise _unavailable() from None
            logger.warning(
                "usage total not read; the last one read is used",
                extra={"item": sk, "error_type": type(exc).__name__},
            )
            return cached[1]
        with self._lock:
            self._cache[(month, sk)] = (now, used)
        return used

    def admit(self, *, tenant_id: str, call: Call, source: str = API) -> None:
        """Raise :class:`BudgetExhausted` if a CorePlus call would pass a limit."""
        if not call.coreplus or self.meter.sandbox or not self.monthly_budget:
            return
        month = month_of(self._clock())
        _, resets_at = month_bounds(month)
        used = self._stored(month, TOTAL_SK) + self.meter.unflushed(month=month)
        limit = self.soft_limit if source == API else self.monthly_budget
        if used + call.coreplus > limit:
            raise BudgetExhausted(
                "the month's CorePlus budget for this app is spent"
                if source != API
                else "the month's CorePlus budget for workloads is spent (soft limit)",
                reason="soft_limit" if source == API else "budget",
                used=used,
                limit=limit,
                resets_at=resets_at,
            )
        if source != API:
            return
        quota = self.quota_of(tenant_id)
        if not quota:
            return
        tenant_used = self._stored(month, tenant_sk(tenant_id)) + self.meter.unflushed(
            tenant_id=tenant_id, month=month
        )
        if tenant_used + call.coreplus > quota:
            self.meter.announce_tenant_crossing(month, tenant_id, tenant_used, quota)
            raise BudgetExhausted(
                f"tenant {tenant_id} has spent its CorePlus quota for the month",
                reason="tenant_quota",
                used=tenant_used,
                limit=quota,
                resets_at=resets_at,
            )

    def percent_of_soft_limit(self, *, fresh: bool = False) -> float | None:
        """The month's CorePlus use as a percentage of the workloads' soft limit (None when
        nothing is metered: sandbox, or no budget). The change feed's schedule stands back
        past its share of it; it reads the total ``fresh`` (one GetItem a run), not cached."""
        if self.meter.sandbox or not self.soft_limit:
            return None
        month = month_of(self._clock())
        if fresh:
            with self._lock:
                self._cache.pop((month, TOTAL_SK), None)
        used = self._stored(month, TOTAL_SK) + self.meter.unflushed(month=month)
        return 100.0 * used / self.soft_limit

    def limits(self) -> dict[str, Any]:
        return {
            "monthly_budget": self.monthly_budget,
            "soft_limit": self.soft_limit,
            "reserve": self.monthly_budget - self.soft_limit,
            "default_tenant_quota": self.default_tenant_quota,
        }
