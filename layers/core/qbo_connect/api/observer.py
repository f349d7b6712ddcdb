"""One log line and metrics per proxied call (realm, tenant, method, masked path, status,
intuit_tid, attempts, waited_ms; never a token or a body)."""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from qbo_connect.api.proxy import CallRecord
from qbo_connect.telemetry import logger, metrics


def record_call(record: CallRecord) -> None:
    logger.info(
        "quickbooks call",
        extra={
            "realm_id": record.realm_id,
            "tenant_id": record.tenant_id,
            "method": record.method,
            "path": record.path,
            "outcome": record.outcome,
            "status": record.status,
            "intuit_tid": record.intuit_tid,
            "attempts": record.attempts,
            "waited_ms": record.waited_ms,
        },
    )
    metrics.add_metric(name=f"QuickBooksCall_{record.outcome}", unit=MetricUnit.Count, value=1)
    if record.waited_ms:
        metrics.add_metric(
            name="QuickBooksWaitMs", unit=MetricUnit.Milliseconds, value=record.waited_ms
        )
    if record.throttled:
        metrics.add_metric(name="QuickBooksCoolDowns", unit=MetricUnit.Count, value=1)
    if record.outcome == "rate_limited":
        metrics.add_metric(name="QuickBooksRateLimited", unit=MetricUnit.Count, value=1)
