"""RefreshSweepFunction: find due connections through DueIndex and enqueue them (schedule).

In:  the EventBridge scheduled event (its content is not used).
Out: {"due", "enqueued", "failed", "skipped", "shards", "complete", "duration_ms"}
     (also logged, and published as metrics). ``complete: false`` means the run stopped before
     its timeout; the connections it did not reach stay due for the next run.

Metrics (ConnectionsDue, ConnectionsEnqueued, EnqueueFailed, SweepDuration, SweepIncomplete)
go out as one EMF document per run from the sweep itself, so there is no ``log_metrics`` here.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from qbo_connect.sweep import default_sweeper
from qbo_connect.telemetry import logger


# log_event=False, whatever POWERTOOLS_LOGGER_LOG_EVENT says: events can carry tokens.
@logger.inject_lambda_context(clear_state=True, log_event=False)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    return default_sweeper().run(remaining_ms=context.get_remaining_time_in_millis).as_dict()
