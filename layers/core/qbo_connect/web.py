"""The plumbing the HTTP handlers share: one resolver shape, one way to answer.

Every answer goes through :func:`respond`, so each response is deliberate (a page from
``pages``, its security headers and status) and is logged and counted the same way; unknown
paths and unexpected failures get the same escaped pages, never a stack trace. An error page's
reference id is logged here with its outcome, which is how an operator finds what a person
quotes to support.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.metrics import MetricUnit

from qbo_connect import pages
from qbo_connect.copy_table import choose_language
from qbo_connect.outcomes import Outcome
from qbo_connect.pages import HttpResult
from qbo_connect.telemetry import logger, metrics


def respond(result: HttpResult, *, route: str) -> Response:
    """Log status, outcome and reference (never the query string), count, build the answer."""
    extra = {"status": result.status, "outcome": result.outcome}
    if result.reference:
        extra["reference"] = result.reference
    logger.info(f"{route} answered", extra=extra)
    if result.outcome:
        metrics.add_metric(name=f"{route}_{result.outcome}", unit=MetricUnit.Count, value=1)
    return Response(
        status_code=result.status,
        body=result.body,
        headers=result.headers,
        cookies=result.cookies,
    )


def language_of(app: APIGatewayHttpResolver) -> str:
    """The page language for the request being answered (English if there is none)."""
    try:
        header = app.current_event.headers.get("accept-language")
    except (AttributeError, KeyError, TypeError):
        header = None
    return choose_language(header)


def make_resolver(route: str) -> APIGatewayHttpResolver:
    """A resolver whose 404 and unexpected-error answers are our own escaped pages."""
    # debug=False whatever POWERTOOLS_EVENT_HANDLER_DEBUG says: debug mode prints the event.
    app = APIGatewayHttpResolver(debug=False)

    @app.not_found
    def not_found(exc: Exception) -> Response:
        page = pages.outcome_page(Outcome.NOT_FOUND, language=language_of(app))
        return respond(page, route=route)

    @app.exception_handler(Exception)
    def unexpected(exc: Exception) -> Response:
        logger.exception("unexpected failure")
        page = pages.outcome_page(Outcome.INTERNAL_ERROR, language=language_of(app))
        return respond(page, route=route)

    return app
