"""CallbackFunction: ``GET /callback`` (HttpApi, payload 2.0), where Intuit sends the user back.

Checks state and cookie, consumes the state once, exchanges the code once, validates the
id_token, stores the encrypted tokens, then redirects to return_url or shows the result page.
The logic is ``qbo_connect.connect``; this file only routes and translates. The query
string holds the authorization code and the state, so neither the event nor the query string
is ever logged.
"""

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from qbo_connect.connect.request import Request
from qbo_connect.connect.web import HttpResponse, HttpRouter, respond
from qbo_connect.telemetry import logger, metrics
from qbo_connect.wiring import connect as wiring
from qbo_connect.wiring import usage as usage_wiring

app = HttpRouter("Callback", branding=wiring.branding)


@app.get("/callback")
def callback(event: Mapping[str, Any]) -> HttpResponse:
    return respond(wiring.connect_flow().callback(Request.from_raw(event)), route="Callback")


@logger.inject_lambda_context(
    clear_state=True, log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_HTTP
)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return app.resolve(event, context)
    finally:
        usage_wiring.flush_if_due()  # the realm proof is a CorePlus call of the service's
