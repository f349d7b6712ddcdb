"""RefreshSweepFunction: find due connections through DueIndex and enqueue them (schedule).

In:  the EventBridge scheduled event (its content is not used).
Out: {"due", "enqueued", "requeued", "failed", "skipped", "shards", "complete", "stood_aside",
     "duration_ms"} (also logged, and published as metrics). Each due connection is enqueued
     once: the run remembers what it enqueued in one run-state item (two writes per run, none
     per connection), and re-enqueues what is still due long after only when the queue is
     empty (``requeued``). ``complete: false`` means the run stopped before its timeout; the
     connections it did not reach wait for the next run. ``stood_aside: true`` means another
     run held the run lease (a schedule event delivered twice, or a run outliving the
     interval), so this one did nothing. ``reconcile`` holds what the change feed's schedule
     did right after (``changes.scheduler``: due, enqueued, stood_back, ...).

Metrics (ConnectionsDue, ConnectionsEnqueued, ConnectionsRequeued, EnqueueFailed,
SweepDuration, SweepIncomplete, SweepStoodAside; ReconcileDue, ReconcileEnqueued,
ReconcileStoodBack, CorePlusUsedPercentOfSoftLimit) go out as one EMF document per run from the
sweep itself, so there is no ``log_metrics`` here.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from qbo_connect.telemetry import logger
from qbo_connect.wiring import sweep as wiring


# log_event=False, whatever POWERTOOLS_LOGGER_LOG_EVENT says: events can carry tokens.
@logger.inject_lambda_context(clear_state=True, log_event=False)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    result = wiring.sweeper().run(remaining_ms=context.get_remaining_time_in_millis).as_dict()
    result["reconcile"] = wiring.reconcile_schedule(context.get_remaining_time_in_millis)
    return result
