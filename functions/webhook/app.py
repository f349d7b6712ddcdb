"""WebhookFunction: ``POST /webhooks`` (HttpApi, payload 2.0), where Intuit delivers changes.

Bounds the body (413), verifies ``intuit-signature`` over the raw bytes (401), parses either
payload shape, enqueues the changes and answers 200; nothing per entity happens here. The logic
is ``qbo_connect.webhooks.gateway``; this file only counts and logs the outcome. No resolver:
one route, whose only input is the raw body and one header, on a path that must answer Intuit
within 3 seconds including a cold start. The body and the signature are never logged.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from qbo_connect.wiring import webhooks as wiring

logger = Logger()
metrics = Metrics()

#: Outcomes -> the metric that counts them (WebhookReceived counts every request).
OUTCOME_METRICS = {
    "accepted": "WebhookAccepted",
    "missing_signature": "WebhookRejected",
    "bad_signature": "WebhookRejected",
    "too_large": "WebhookTooLarge",
    "malformed": "WebhookMalformed",
    "enqueue_failed": "WebhookEnqueueFailed",
    "not_configured": "WebhookNotConfigured",
    "internal_error": "WebhookFailed",
}


@logger.inject_lambda_context(clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = wiring.gateway_answer(event)
    metrics.add_metric(name="WebhookReceived", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=OUTCOME_METRICS[result.outcome], unit=MetricUnit.Count, value=1)
    if result.changes:
        metrics.add_metric(name="WebhookChanges", unit=MetricUnit.Count, value=result.changes)
    if result.stale:
        metrics.add_metric(name="WebhookStaleChanges", unit=MetricUnit.Count, value=result.stale)
    logger.info(
        "webhook answered",
        extra={
            "status": result.status,
            "outcome": result.outcome,
            "shape": result.shape,
            "changes": result.changes,
            "stale": result.stale,
            "realms": result.realms[:20],
        },
    )
    return result.to_response()
