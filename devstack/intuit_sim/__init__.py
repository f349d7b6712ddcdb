"""A faithful, in-process model of Intuit's OAuth 2.0 / OpenID Connect server.

Why it exists: the refresh protocol of this project is only as good as the tests that attack it,
and the real Intuit sandbox can neither be driven into outages nor observed (how many refreshes
did we send? with which token?). This simulator speaks Intuit's wire formats (see
docs/intuit.md) over real HTTP on 127.0.0.1 so the production HTTP code runs unchanged,
while tests control time, rotation, grace windows and faults, and can read call counters.

Modelling choices (where Intuit is silent or field reports disagree, the choice is written here):

- A *grant* is one authorisation of one client for one company (realm) with a set of scopes. It
  owns a current refresh token, at most one previous refresh token, and its access tokens.
- Refresh with the grant's current token: new access token; a new refresh token when
  ``rotate_every_seconds`` is 0 or the current one is at least that old, otherwise the same value.
  Each successful refresh extends the refresh token's rolling expiry (``refresh_token_ttl``),
  capped by the grant's hard expiry (``refresh_hard_ttl`` after the first authorisation).
- Refresh with the previous token, within ``refresh_grace_seconds`` after it was superseded:
  a new access token and the grant's *current* refresh token (no further rotation), as Intuit
  documents. Any older, unknown, revoked, expired or other-client token: ``invalid_grant``.
- Old access tokens stay valid until they expire, as Intuit's do; revocation kills them all.
- Authorisation codes are single use; a second exchange answers ``invalid_grant`` and revokes the
  grant created by the first exchange (Intuit warns it may). A redirect_uri or client mismatch
  answers ``invalid_grant`` without consuming the code.
- id_tokens are issued only by the code exchange (and :meth:`IntuitSimulator.issue_tokens`) when
  the ``openid`` scope was granted; refresh responses carry none.
- Userinfo needs an access token whose grant has ``openid`` (else 403 ``insufficient_scope``)
  and returns only the fields the other OIDC scopes allow. CompanyInfo needs the accounting scope
  and the token's own realm (else 403 ``ApplicationAuthorizationFailed``).
- Revoke with an unknown or already revoked token answers 400 (Intuit: "400 on failure").
- Injected faults never touch grant state, so an ``invalid_grant`` burst models an outage: the
  same refresh token works again once the burst is over.

- Webhooks (``devstack.intuit_sim.webhooks``): change notifications signed with the app's verifier
  token, in the legacy or the CloudEvents shape, sent from an admin call or after a simulated
  entity change, retried on Intuit's schedule (scaled by ``webhook_time_scale``) and delivered
  in order: a failing notification holds later ones back, as Intuit does.

Nothing here logs token values, codes or client secrets; the refresh log keeps SHA-256 digests.


Layout, one module per concern: ``oauth`` (grants, token endpoint, rotation and grace, revoke,
userinfo, id_tokens, JWKS, discovery), ``authorize`` (authorize endpoint and consent page),
``quickbooks`` (the Accounting API's gateway: tokens, limits, faults, ``requestid``),
``quickbooks_calls`` (its calls), ``entities`` (the books), ``limits`` (Intuit's throttles),
``webhooks`` (the signed sender), ``faults`` (fault injection), ``state`` (what they share) and
``server`` (the HTTP server, routing and the ``/_sim/`` admin API). ``python -m
devstack.intuit_sim`` runs it on its own.
"""

from devstack.intuit_sim.cli import main
from devstack.intuit_sim.faults import FAULT_ENDPOINTS
from devstack.intuit_sim.oauth import (
    ACCESS_TOKEN_RANDOM_BYTES,
    ACCOUNTING_SCOPE,
    DEFAULT_ISSUE_SCOPES,
    KNOWN_SCOPES,
    PAYMENT_SCOPE,
    REALM_SCOPES,
)
from devstack.intuit_sim.server import IntuitSimulator
from devstack.intuit_sim.state import (
    PATH_AUTHORIZE,
    PATH_DISCOVERY,
    PATH_ISSUER,
    PATH_JWKS,
    PATH_REVOKE,
    PATH_TOKEN,
    PATH_USERINFO,
)

__all__ = [
    "ACCESS_TOKEN_RANDOM_BYTES",
    "ACCOUNTING_SCOPE",
    "DEFAULT_ISSUE_SCOPES",
    "FAULT_ENDPOINTS",
    "KNOWN_SCOPES",
    "PATH_AUTHORIZE",
    "PATH_DISCOVERY",
    "PATH_ISSUER",
    "PATH_JWKS",
    "PATH_REVOKE",
    "PATH_TOKEN",
    "PATH_USERINFO",
    "PAYMENT_SCOPE",
    "REALM_SCOPES",
    "IntuitSimulator",
    "main",
]
