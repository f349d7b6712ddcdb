"""WebhookProcessorFunction: the webhook queue's consumer (SQS, partial batch failures).

In:  an SQS event; each body {"v": 1, "received_at", "changes": [...]} from WebhookFunction.
Out: {"batchItemFailures": [{"itemIdentifier": "<messageId>"}, ...]}.
Each change is deduplicated, mapped realm -> tenant and published as one
``quickbooks.entity_changed`` event; see ``qbo_connect.webhooks.processor``.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from qbo_connect.telemetry import logger, metrics
from qbo_connect.wiring import webhooks as wiring


# log_event=False, whatever POWERTOOLS_LOGGER_LOG_EVENT says: events can carry tokens.
@logger.inject_lambda_context(clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    return wiring.processor().handle(event, context)
