"""ConnectFunction: ``GET /connect``, ``GET /reconnect`` and ``GET /disconnected`` (HttpApi 2.0).

Validates the connect link, shows the landing page, and on "Connect to QuickBooks" creates the
OAuth state, sets the state cookie and redirects to Intuit. ``/disconnected`` is Intuit's
Disconnect URL: it shows a page and queues the hint for the refresh worker, which verifies it
with Intuit (see ``qbo_connect.connect.disconnect_hint``). The logic is in the package; this
file only routes and translates. Query strings hold link tokens, so neither the event nor the
query string is ever logged.
"""

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from qbo_connect.connect import disconnect_hint, pages
from qbo_connect.connect.outcomes import Outcome
from qbo_connect.connect.request import Request
from qbo_connect.connect.web import (
    HttpResponse,
    HttpRouter,
    language_of,
    query_value,
    respond,
)
from qbo_connect.telemetry import logger, metrics
from qbo_connect.wiring import connect as wiring

app = HttpRouter("Connect", branding=wiring.branding)


@app.get("/connect")
def connect(event: Mapping[str, Any]) -> HttpResponse:
    return respond(
        wiring.connect_flow().connect(Request.from_raw(event), reconnect=False), route="Connect"
    )


@app.get("/reconnect")
def reconnect(event: Mapping[str, Any]) -> HttpResponse:
    return respond(
        wiring.connect_flow().connect(Request.from_raw(event), reconnect=True), route="Connect"
    )


@app.get("/disconnected")
def disconnected(event: Mapping[str, Any]) -> HttpResponse:
    disconnect_hint.announce(wiring.send_disconnect_hint, query_value(event, "realmId"))
    page = pages.outcome_page(
        Outcome.DISCONNECTED, language=language_of(event), branding=wiring.branding()
    )
    return respond(page, route="Disconnected")


@logger.inject_lambda_context(
    clear_state=True, log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_HTTP
)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
