"""GetTokenFunction: a valid access token for a realm (direct invoke only).

In:  {"realm_id": "9130...", "min_valid_seconds": 300, "tenant_id"?: "..."}
     With tenant_id, a realm of another tenant answers not_connected (the tenant guard).
Out: {"access_token", "token_type", "expires_at", "realm_id", "environment", "api_base_url"}
     or {"error": {"code", "message"}}.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from qbo_connect.contracts import GetTokenRequest
from qbo_connect.errors import InvalidRequest
from qbo_connect.invoke import require_object, respond
from qbo_connect.telemetry import logger, metrics
from qbo_connect.wiring import vault as wiring


def _get_token(event: Any) -> dict[str, Any]:
    request = GetTokenRequest.from_payload(require_object(event))
    if not wiring.raw_token_reads():
        raise InvalidRequest(
            "raw token reads are disabled (RawTokenReads): call QuickBooks through "
            "QuickBooksApiFunction",
            reason="raw_token_reads_disabled",
        )
    logger.append_keys(realm_id=request.realm_id)
    vault = wiring.vault()
    token = vault.get_token(
        request.realm_id, request.min_valid_seconds, tenant_id=request.tenant_id
    )
    return token.to_response()


# log_event=False, whatever POWERTOOLS_LOGGER_LOG_EVENT says: events can carry tokens.
@logger.inject_lambda_context(clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    return respond(lambda: _get_token(event))
