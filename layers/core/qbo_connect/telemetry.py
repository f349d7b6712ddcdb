"""Powertools Logger and Metrics shared by every handler.

Tracing is Lambda's own active tracing (``Tracing: Active`` in the template): the invocation
segment is recorded without any SDK in the function. There is deliberately no X-Ray SDK here
(Powertools Tracer imports it, about 140 ms of every cold start, and it is in maintenance mode);
deeper traces come from OpenTelemetry through the ADOT layer when the ``EnableOpenTelemetry``
parameter is on, with no code change (see README "Tracing").

One Metrics instance per container (Powertools keeps metrics in a shared registry); the
handlers wrap themselves with ``metrics.log_metrics`` so metrics flush once per invocation as
EMF lines. Refresh outcomes are recorded here through the vault's observer hooks, so the
refresh protocol itself stays free of telemetry concerns.
"""

from __future__ import annotations

import warnings

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from qbo_connect.store import Connection
from qbo_connect.vault import health
from qbo_connect.vault.protocol import RefreshObserver

# Most invocations (a warm get_token) record no metric; Powertools warns about that on every
# flush, which is noise in every log stream, not a problem.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger()
metrics = Metrics()

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
