"""QuickBooksApiFunction: one QuickBooks API call made with the vault's token (direct invoke).

In:  {"realm_id", "tenant_id"?, "method": "GET"|"POST", "path", "query"?, "body"?,
      "content_type"?, "request_id"?, "minorversion"?, "max_wait_seconds"?}
Out: {"status", "body", "content_type", "intuit_tid", "request_id"?, "attempts", "waited_ms",
      "fault"?, ...} as QuickBooks answered, or {"error": {"code", "message", ...}}.
The token never leaves the function. See docs/proxy.md.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from qbo_connect.api.request import ApiRequest
from qbo_connect.invoke import require_object, respond
from qbo_connect.telemetry import logger, metrics
from qbo_connect.wiring import api as wiring


def _call(event: Any) -> dict[str, Any]:
    request = ApiRequest.from_payload(require_object(event))
    logger.append_keys(realm_id=request.realm_id)
    return wiring.proxy().call(request)


# log_event=False: events carry QuickBooks bodies.
@logger.inject_lambda_context(clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    try:
        return respond(lambda: _call(event))
    finally:
        wiring.flush_usage()
