"""ConnectionsFunction: connect links and connection management (direct invoke only).

Actions: create_connect_link, list_connections, get_connection, connection_history, refresh,
import_connection, disconnect, usage, set_usage_quota, flush_usage, reconcile_changes,
change_status. See README "Invoke contracts".
"""

from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from qbo_connect.errors import InvalidRequest
from qbo_connect.invoke import require_object, respond
from qbo_connect.telemetry import logger, metrics
from qbo_connect.wiring import operations as wiring
from qbo_connect.wiring import usage as usage_wiring


def _create_connect_link(payload: Mapping[str, Any]) -> dict[str, Any]:
    return wiring.connect_links().create_link(payload)


def _dispatch(event: Any, context: LambdaContext) -> Mapping[str, Any]:
    payload = require_object(event)
    action = payload.get("action")
    service = wiring.connections_service()
    actions: dict[str, Callable[[Mapping[str, Any]], Mapping[str, Any]]] = {
        "create_connect_link": _create_connect_link,
        "list_connections": service.list_connections,
        "get_connection": service.get_connection,
        "connection_history": service.connection_history,
        "refresh": service.refresh,
        "import_connection": service.import_connection,
        "disconnect": service.disconnect,
        "usage": lambda p: usage_wiring.usage_service().usage(p),
        "set_usage_quota": lambda p: usage_wiring.usage_service().set_usage_quota(p),
        "flush_usage": lambda p: usage_wiring.usage_service().flush_usage(p),
        "reconcile_changes": lambda p: wiring.change_feed().reconcile_changes(
            p, remaining_seconds=context.get_remaining_time_in_millis() / 1000
        ),
        "change_status": lambda p: wiring.change_feed().status(p),
    }
    if not isinstance(action, str) or action not in actions:
        raise InvalidRequest(f"action must be one of: {', '.join(sorted(actions))}")
    logger.append_keys(action=action)
    return actions[action](payload)


# log_event=False, whatever POWERTOOLS_LOGGER_LOG_EVENT says: events can carry tokens.
@logger.inject_lambda_context(clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    try:
        return respond(lambda: _dispatch(event, context))
    finally:
        usage_wiring.flush_if_due()
