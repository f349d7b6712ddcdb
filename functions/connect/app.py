"""ConnectFunction: ``GET /connect`` and ``GET /reconnect`` (HttpApi, payload 2.0).

Validates the connect link, shows the landing page, and on "Connect to QuickBooks" creates the
OAuth state, sets the state cookie and redirects to Intuit. The logic is
``qbo_connect.connect_flow``; this file only routes and translates. Query strings hold link
tokens, so neither the event nor the query string is ever logged.
"""

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from qbo_connect import connect_flow
from qbo_connect.pages import HttpResult
from qbo_connect.telemetry import logger, metrics, tracer

app = APIGatewayHttpResolver()


def _respond(result: HttpResult) -> Response:
    logger.info("connect page answered", extra={"status": result.status, "outcome": result.outcome})
    if result.outcome:
        metrics.add_metric(name=f"Connect_{result.outcome}", unit=MetricUnit.Count, value=1)
    return Response(
        status_code=result.status,
        body=result.body,
        headers=result.headers,
        cookies=result.cookies,
    )


@app.get("/connect")
def connect() -> Response:
    return _respond(connect_flow.handle_connect(app.current_event.raw_event, reconnect=False))


@app.get("/reconnect")
def reconnect() -> Response:
    return _respond(connect_flow.handle_connect(app.current_event.raw_event, reconnect=True))


@app.not_found
def not_found(exc: Exception) -> Response:
    return _respond(connect_flow.not_found())


@app.exception_handler(Exception)
def unexpected(exc: Exception) -> Response:
    logger.exception("unexpected failure")
    return _respond(connect_flow.internal_error())


@logger.inject_lambda_context(
    clear_state=True, log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_HTTP
)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
