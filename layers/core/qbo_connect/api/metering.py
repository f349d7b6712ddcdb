"""CorePlus metering of proxied calls: the budget guard before a call, the meter after it.

A call is classed once (``qbo_connect.usage.classify``); a CorePlus call past the tenant's quota
or the soft limit is refused with ``budget_exhausted`` before anything is sent, and every
attempt QuickBooks answered is counted in the container's buffer (Intuit counts requests, so a
retry counts again). The buffer is flushed at the end of an invocation, not per call.
"""

from __future__ import annotations

from dataclasses import dataclass

from qbo_connect.usage.budget import BudgetGuard
from qbo_connect.usage.classify import PER_ITEM, Call, classify
from qbo_connect.usage.meter import UsageMeter


@dataclass(eq=False)
class ProxyMetering:
    guard: BudgetGuard
    meter: UsageMeter
    batch_counting: str = PER_ITEM

    def classify(self, method: str, path: str, body: object) -> Call:
        return classify(method, path, body=body, batch_counting=self.batch_counting)

    def admit(self, tenant_id: str, call: Call) -> None:
        """Raise ``BudgetExhausted`` if this CorePlus call would pass a limit."""
        self.guard.admit(tenant_id=tenant_id, call=call)

    def record(self, tenant_id: str, realm_id: str, call: Call) -> None:
        self.meter.record(tenant_id=tenant_id, realm_id=realm_id, call=call)

    def flush_if_due(self) -> None:
        """The end of an invocation: write the buffer if it is old or large enough."""
        self.meter.flush_if_due()
