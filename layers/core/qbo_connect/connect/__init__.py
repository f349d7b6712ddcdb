"""The hosted connect flow, one module per step.

- ``request``: the typed :class:`Request` handlers build from Powertools'
  ``APIGatewayProxyEventV2``, parameter reading, the state cookie;
- ``links``: connect links (the return_url rule, scopes, single use);
- ``authorize``: ``GET /connect`` and ``/reconnect``, the landing page and the way to Intuit;
- ``callback``: ``GET /callback``, every check, the adoption of the grant, the way back;
- ``results``: how the flow ends (an :class:`~qbo_connect.connect.outcomes.Outcome`), rendered by
  ``pages`` from the copy table in the request's language;
- ``flow``: :class:`ConnectFlow` for one deployment and the handlers' entry points.

Scopes granted = scopes requested (Intuit's token response does not list them). Tokens are
sealed with the vault's envelope encryption; no plaintext token is stored. Tokens, codes,
states and link values are never logged; query strings are never logged.
"""
