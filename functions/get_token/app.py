"""GetTokenFunction: a valid access token for a realm (direct invoke only).

In:  {"realm_id": "9130...", "min_valid_seconds": 300, "tenant_id"?: "..."}
     With tenant_id, a realm of another tenant answers not_connected (the tenant guard).
Out: {"access_token", "token_type", "expires_at", "realm_id", "environment", "api_base_url"}
     or {"error": {"code", "message"}}.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from qbo_connect import validation
from qbo_connect.invoke import require_object, respond
from qbo_connect.telemetry import logger, metrics
from qbo_connect.wiring import vault as wiring


def _get_token(event: Any) -> dict[str, Any]:
    payload = require_object(event)
    realm_id = validation.realm_id(payload)
    min_valid = validation.optional_int(
        payload, "min_valid_seconds", default=300, minimum=0, maximum=3000
    )
    tenant_id = validation.optional_tenant_id(payload)
    logger.append_keys(realm_id=realm_id)
    return wiring.vault().get_token(realm_id, min_valid, tenant_id=tenant_id).to_response()


# log_event=False, whatever POWERTOOLS_LOGGER_LOG_EVENT says: events can carry tokens.
@logger.inject_lambda_context(clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    return respond(lambda: _get_token(event))
