"""ConnectionsFunction's usage actions: the month's report, tenant quotas, flushing the meter.

``usage`` reads the month's usage items (one Query on the month's partition) and adds this
container's unflushed calls; it is exact after a flush (``flush_usage`` flushes the container it
runs in, which in the local stack's single process is every container). Calls made with raw
tokens from GetTokenFunction are neither governed nor metered: the report says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from qbo_connect import validation
from qbo_connect.errors import InvalidRequest
from qbo_connect.store.usage import TOTAL_SK, UsageRepository
from qbo_connect.usage.budget import BudgetGuard
from qbo_connect.usage.meter import UsageMeter, core_of, coreplus_of, month_bounds, month_of

TOP_REALMS = 10
MAX_QUOTA = 1_000_000_000


def _month(payload: Mapping[str, Any], now: float) -> str:
    value = payload.get("month")
    if value is None:
        return month_of(now)
    if not isinstance(value, str) or len(value) != 7:
        raise InvalidRequest("month must look like 2026-12")
    try:
        month_bounds(value)
    except ValueError:
        raise InvalidRequest("month must look like 2026-12") from None
    return value


@dataclass(eq=False)
class UsageService:
    """The usage report and quotas, for one deployment."""

    repository: UsageRepository
    meter: UsageMeter
    guard: BudgetGuard
    raw_token_reads: bool
    flush_bound: str
    clock: Callable[[], float] = time.time

    def usage(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        now = self.clock()
        month = _month(payload, now)
        tenant_filter = validation.optional_tenant_id(payload)
        items = self.repository.month_items(month)
        quotas = self.repository.quotas()
        tenants: list[dict[str, Any]] = []
        realms: list[dict[str, Any]] = []
        totals = {"core": 0, "coreplus": 0, "sandbox_core": 0, "sandbox_coreplus": 0}
        for item in items:
            sk = str(item.get("sk", ""))
            if sk == TOTAL_SK:
                totals = {
                    "core": core_of(item),
                    "coreplus": coreplus_of(item),
                    "sandbox_core": int(item.get("sandbox_core", 0)),
                    "sandbox_coreplus": int(item.get("sandbox_coreplus", 0)),
                }
            elif sk.startswith("T#") and tenant_filter in (None, item.get("usage_tenant")):
                tenant_id = str(item.get("usage_tenant") or sk[2:])
                tenants.append(
                    {
                        "tenant_id": tenant_id,
                        "core": core_of(item),
                        "coreplus": coreplus_of(item),
                        "quota": quotas.get(tenant_id, self.guard.default_tenant_quota),
                    }
                )
            elif sk.startswith("R#") and tenant_filter in (None, item.get("usage_tenant")):
                realms.append(
                    {
                        "realm_id": item.get("usage_realm"),
                        "tenant_id": item.get("usage_tenant"),
                        "core": core_of(item),
                        "coreplus": coreplus_of(item),
                    }
                )
        tenants.sort(key=lambda t: (-t["coreplus"], t["tenant_id"]))
        realms.sort(key=lambda r: (-r["coreplus"], str(r["realm_id"])))
        start, end = month_bounds(month)
        elapsed = min(max(now - start, 1.0), end - start)
        projected = round(totals["coreplus"] * (end - start) / elapsed)
        return {
            "month": month,
            "as_of": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "totals": totals,
            "tenants": tenants,
            "top_realms": realms[:TOP_REALMS],
            "projected_coreplus": projected if month == month_of(now) else totals["coreplus"],
            "limits": self.guard.limits(),
            "unflushed": {
                "this_container": self.meter.unflushed(month=month),
                "bound": self.flush_bound,
            },
            "raw_token_reads": {
                "enabled": self.raw_token_reads,
                "note": "calls made with tokens from GetTokenFunction are neither governed "
                "nor metered",
            },
        }

    def set_usage_quota(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        tenant_id = validation.optional_tenant_id(payload)
        if tenant_id is None:
            raise InvalidRequest("tenant_id is required")
        if "monthly_quota" not in payload:
            raise InvalidRequest("monthly_quota is required (0 = none, null = the default)")
        quota = payload["monthly_quota"]
        if quota is not None and (
            isinstance(quota, bool) or not isinstance(quota, int) or not 0 <= quota <= MAX_QUOTA
        ):
            raise InvalidRequest(f"monthly_quota must be null or an integer 0..{MAX_QUOTA}")
        self.repository.set_quota(tenant_id, quota, now=self.clock())
        effective = self.guard.default_tenant_quota if quota is None else quota
        return {"tenant_id": tenant_id, "monthly_quota": quota, "effective_quota": effective}

    def flush_usage(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        result = self.meter.flush()
        return {"flushed_calls": result.calls, "items_written": result.written}
