"""RefreshWorkerFunction: refresh each due connection from the refresh queue (SQS).

In:  an SQS event; each body {"realm_id", "due_at", "enqueued_at"} (the sweep's).
Out: {"batchItemFailures": [{"itemIdentifier": "<messageId>"}, ...]} (ReportBatchItemFailures):
     only the messages worth retrying come back; the DLQ takes those that keep failing.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from qbo_connect.telemetry import logger, metrics
from qbo_connect.wiring import sweep as wiring
from qbo_connect.wiring import usage as usage_wiring


# log_event=False, whatever POWERTOOLS_LOGGER_LOG_EVENT says: events can carry tokens.
@logger.inject_lambda_context(clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    try:
        return wiring.worker().handle(event, context)
    finally:
        # A Disconnect URL probe is a CorePlus call of the service's own (usage meter).
        usage_wiring.flush_if_due()
