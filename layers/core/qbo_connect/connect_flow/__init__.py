"""The hosted connect flow, one module per step.

- ``request``: the typed :class:`Request` handlers build from Powertools'
  ``APIGatewayProxyEventV2``, parameter reading, the state cookie;
- ``links``: connect links (the return_url rule, scopes, single use);
- ``authorize``: ``GET /connect`` and ``/reconnect``, the landing page and the way to Intuit;
- ``callback``: ``GET /callback``, every check, the adoption of the grant, the way back;
- ``results``: how the flow ends (an :class:`~qbo_connect.outcomes.Outcome`), rendered by
  ``pages`` from the copy table in the request's language;
- ``flow``: :class:`ConnectFlow` for one deployment and the handlers' entry points.

Scopes granted = scopes requested (Intuit's token response does not list them). Tokens are
sealed with the vault's envelope encryption; no plaintext token is stored. Tokens, codes,
states and link values are never logged; query strings are never logged.
"""

from qbo_connect.connect_flow.base import OPEN_MODE_TENANT
from qbo_connect.connect_flow.flow import (
    ConnectFlow,
    create_connect_link_action,
    handle_callback,
    handle_connect,
)
from qbo_connect.connect_flow.request import (
    COOKIE_NAME,
    ParameterError,
    Request,
    read_params,
)
from qbo_connect.return_url import return_url_allowed, with_result

__all__ = [
    "COOKIE_NAME",
    "OPEN_MODE_TENANT",
    "ConnectFlow",
    "ParameterError",
    "Request",
    "create_connect_link_action",
    "handle_callback",
    "handle_connect",
    "read_params",
    "return_url_allowed",
    "with_result",
]
