"""The plumbing the two HTTP handlers share: one resolver shape, one way to answer.

Every answer goes through :func:`respond`, so each response is deliberate (a page from
``pages``, its security headers and status) and is logged and counted the same way; unknown
paths and unexpected failures get the same escaped pages, never a stack trace.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.metrics import MetricUnit

from qbo_connect import connect_flow
from qbo_connect.pages import HttpResult
from qbo_connect.telemetry import logger, metrics


def respond(result: HttpResult, *, route: str) -> Response:
    """Log status and outcome (never the query string), count the outcome, build the answer."""
    logger.info(f"{route} answered", extra={"status": result.status, "outcome": result.outcome})
    if result.outcome:
        metrics.add_metric(name=f"{route}_{result.outcome}", unit=MetricUnit.Count, value=1)
    return Response(
        status_code=result.status,
        body=result.body,
        headers=result.headers,
        cookies=result.cookies,
    )


def make_resolver(route: str) -> APIGatewayHttpResolver:
    """A resolver whose 404 and unexpected-error answers are our own escaped pages."""
    # debug=False whatever POWERTOOLS_EVENT_HANDLER_DEBUG says: debug mode prints the event.
    app = APIGatewayHttpResolver(debug=False)

    @app.not_found
    def not_found(exc: Exception) -> Response:
        return respond(connect_flow.not_found(), route=route)

    @app.exception_handler(Exception)
    def unexpected(exc: Exception) -> Response:
        logger.exception("unexpected failure")
        return respond(connect_flow.internal_error(), route=route)

    return app
