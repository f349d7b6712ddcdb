"""The plumbing the HTTP handlers share: one small router, one way to answer.

Every answer goes through :func:`respond`, so each response is deliberate (a page from
``pages``, its security headers and status) and is logged and counted the same way; unknown
paths and unexpected failures get the same escaped pages, never a stack trace. An error page's
reference id is logged here with its outcome, which is how an operator finds what a person
quotes to support.

Why not Powertools' ``APIGatewayHttpResolver``: importing ``aws_lambda_powertools.event_handler``
loads every resolver it ships (AppSync with asyncio, Bedrock, the data classes of every event
source), which measured about 0.4x a whole ``import boto3`` on the cold start of functions that
serve a few GET routes and need none of it (``bench/cold_start.py``). What they need is small
and written out here: dispatch on method and path as HttpApi payload 2.0 gives them (a
non-default stage prefix removed, as Powertools does), and answer in the 2.0 response shape
(``statusCode``, ``headers``, ``cookies``, ``body``, ``isBase64Encoded``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from qbo_connect.connect import pages
from qbo_connect.connect.branding import Branding
from qbo_connect.connect.copy_table import choose_language
from qbo_connect.connect.outcomes import Outcome
from qbo_connect.connect.pages import HttpResult
from qbo_connect.telemetry import logger, metrics

HttpResponse = dict[str, Any]
"""An HttpApi payload 2.0 response, as the handler returns it to Lambda."""

RouteHandler = Callable[[Mapping[str, Any]], HttpResponse]


def respond(result: HttpResult, *, route: str) -> HttpResponse:
    """Log status, outcome and reference (never the query string), count, build the answer."""
    extra = {"status": result.status, "outcome": result.outcome}
    if result.reference:
        extra["reference"] = result.reference
    logger.info(f"{route} answered", extra=extra)
    if result.outcome:
        metrics.add_metric(name=f"{route}_{result.outcome}", unit=MetricUnit.Count, value=1)
    return {
        "statusCode": result.status,
        "body": result.body,
        "isBase64Encoded": False,
        "headers": dict(result.headers),
        "cookies": [str(cookie) for cookie in result.cookies],
    }


def request_path(event: Mapping[str, Any]) -> str:
    """The path a route is matched on: ``rawPath`` without a named stage's prefix."""
    raw_path = str(event.get("rawPath") or "/")
    stage = str((event.get("requestContext") or {}).get("stage") or "$default")
    prefix = f"/{stage}"
    if stage != "$default" and (raw_path == prefix or raw_path.startswith(prefix + "/")):
        return raw_path[len(prefix) :] or "/"
    return raw_path


def request_method(event: Mapping[str, Any]) -> str:
    http = (event.get("requestContext") or {}).get("http") or {}
    return str(http.get("method") or "").upper()


def query_value(event: Mapping[str, Any], name: str) -> str | None:
    """One query string parameter as HttpApi 2.0 passes it (repeated values comma-joined)."""
    value = (event.get("queryStringParameters") or {}).get(name)
    return None if value is None else str(value)


def language_of(event: Mapping[str, Any]) -> str:
    """The page language for the request being answered (English if there is none)."""
    headers = event.get("headers")
    header = headers.get("accept-language") if isinstance(headers, Mapping) else None
    return choose_language(header if isinstance(header, str) else None)


class HttpRouter:
    """The GET routes of one HTTP function; 404 and unexpected errors answer with our pages."""

    def __init__(self, route: str, *, branding: Callable[[], Branding] = Branding) -> None:
        self.route = route
        self.branding = branding
        self._routes: dict[tuple[str, str], RouteHandler] = {}

    def get(self, path: str) -> Callable[[RouteHandler], RouteHandler]:
        def register(handler: RouteHandler) -> RouteHandler:
            self._routes[("GET", path)] = handler
            return handler

        return register

    def resolve(self, event: Mapping[str, Any], context: Any = None) -> HttpResponse:
        handler = self._routes.get((request_method(event), request_path(event)))
        if handler is None:
            page = pages.outcome_page(
                Outcome.NOT_FOUND, language=language_of(event), branding=self.branding()
            )
            return respond(page, route=self.route)
        try:
            return handler(event)
        except Exception:
            logger.exception("unexpected failure")
            page = pages.outcome_page(
                Outcome.INTERNAL_ERROR, language=language_of(event), branding=self.branding()
            )
            return respond(page, route=self.route)
