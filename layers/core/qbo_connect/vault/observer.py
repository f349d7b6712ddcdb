"""Refresh outcomes as metrics: the vault's observer hooks, wired to the shared Metrics.

The refresh protocol calls plain hooks (:class:`~qbo_connect.vault.protocol.RefreshObserver`);
this module decides which metric each outcome is, so the protocol stays free of telemetry.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from qbo_connect.store.connections import Connection
from qbo_connect.telemetry import metrics
from qbo_connect.vault import health
from qbo_connect.vault.records import RefreshObserver

FAILURE_CLASSES = (
    "invalid_grant",
    "transient",
    "invalid_client",
    "lease_lost",
    "store",
    "undecryptable",
    "other",
)


def refresh_observer() -> RefreshObserver:
    def on_refreshed(conn: Connection) -> None:
        metrics.add_metric(name="RefreshSucceeded", unit=MetricUnit.Count, value=1)

    def on_failed(realm_id: str, failure_class: str) -> None:
        metrics.add_metric(name="RefreshFailed", unit=MetricUnit.Count, value=1)
        # One metric per class: EMF dimensions would apply to every metric in the flush.
        cls = failure_class if failure_class in FAILURE_CLASSES else "other"
        name = "InvalidGrant" if cls == "invalid_grant" else f"RefreshFailed_{cls}"
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)

    def on_verdict_suspended(realm_id: str) -> None:
        # The fleet-level breaker held back an invalid_grant verdict (breaker.py).
        metrics.add_metric(name="InvalidGrantVerdictSuspended", unit=MetricUnit.Count, value=1)

    def on_health(realm_id: str, before: str, after: str) -> None:
        # Transitions, not states: the dashboard's health counts come from the log records.
        if after == health.RETRYING and before != health.RETRYING:
            metrics.add_metric(name="ConnectionFailing", unit=MetricUnit.Count, value=1)
        elif before == health.RETRYING and after in (health.HEALTHY, health.EXPIRING_SOON):
            metrics.add_metric(name="ConnectionRecovered", unit=MetricUnit.Count, value=1)
        if after == health.NEEDS_REAUTHORIZATION and before != after:
            metrics.add_metric(
                name="ConnectionNeedsReauthorization", unit=MetricUnit.Count, value=1
            )

    return RefreshObserver(
        on_refreshed=on_refreshed,
        on_failed=on_failed,
        on_verdict_suspended=on_verdict_suspended,
        on_health=on_health,
    )
