"""``GET /connect`` and ``GET /reconnect``: the landing page and the way out to Intuit.

``GET /connect?session=...`` validates the link and shows the landing page: "<AppName> wants
to connect to your QuickBooks company", the tenant's display name, the requested access in
plain words, and one button, a GET form back to ``connect`` with the session and ``go=1``.
``go=1`` is honoured only as a same-origin navigation (``Sec-Fetch-Site: same-origin``, or no
such header from a browser that sends none); from anywhere else the landing page answers 403
with its button, so a page elsewhere cannot send a person straight to Intuit.

Submitting it creates the OAuth state: ``secrets.token_urlsafe(32)``, stored hashed
(``STATE#<sha256>``) with its expiry, the tenant, scopes, return_url, redirect_uri, the link's
hash and the hash of a fresh nonce. The nonce goes to the browser in
``__Host-qbo_connect_state`` (HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age = the state's
lifetime) as ``<nonce>.<link token>``: the link token already sits in this browser's address
bar, and carrying it lets the callback consume the link (only its hash is stored) and offer
"Try again". Then 302 to Intuit's authorize endpoint. One flow per browser at a time.

The landing form's ``form-action`` lists our origin, Intuit's authorize origin and, when the
link has a return_url, that URL's origin: Chromium checks form-action against every redirect
that follows the form, and when Intuit skips its consent page the whole way back to the app is
such a chain.

ConnectMode=open: ``GET /connect`` without a session works for the single tenant ``"default"``
with ``Scopes`` and no return_url; the URL never picks the tenant. ``GET /reconnect`` (the
app's Reconnect URL at Intuit) behaves like ``/connect`` with a session or in open mode; in link
mode without one it tells the person to reconnect from the app, which makes a fresh link.
"""

from __future__ import annotations

import secrets
from typing import Any

from qbo_connect.connect import pages
from qbo_connect.connect.base import (
    OPEN_MODE_TENANT,
    STATE,
    TOKEN_BYTES,
    FlowBase,
    logger,
    misconfigured,
)
from qbo_connect.connect.links import LinkSteps
from qbo_connect.connect.outcomes import Outcome
from qbo_connect.connect.pages import HttpResult
from qbo_connect.connect.request import Request, read_params, sha256, state_cookie
from qbo_connect.connect.results import Ending
from qbo_connect.errors import ConfigurationError, ParameterError, Refusal

CONNECT_PARAMS = {"session": 512, "go": 8}


def same_origin_navigation(request: Request) -> bool:
    """``go=1`` starts a sign-in: only from our own landing page, never from another site.

    Browsers send ``Sec-Fetch-Site``; the landing form's submission says ``same-origin``. A
    page elsewhere (``cross-site``, ``same-site``) or a typed or pasted URL (``none``) is not
    our button. A browser that sends no such header at all is let through: the state cookie
    (SameSite=Lax) and the single-use link still bind the flow to that browser.
    """
    return request.fetch_site is None or request.fetch_site == "same-origin"


class AuthorizeSteps(LinkSteps, FlowBase):
    def connect(self, request: Request, *, reconnect: bool = False) -> HttpResult:
        try:
            return self._connect(request, reconnect)
        except Refusal as refusal:
            return self.answer(refusal.ending, request)
        except ConfigurationError as exc:
            return self.answer(misconfigured(exc), request)

    def _connect(self, request: Request, reconnect: bool) -> HttpResult:
        try:
            params = read_params(request.raw_query, CONNECT_PARAMS)
        except ParameterError as exc:
            logger.info("bad connect request", extra={"detail": str(exc)})
            raise Refusal(Ending(Outcome.BAD_REQUEST, detail=str(exc))) from None
        session = params.get("session")
        go = params.get("go")
        if go is not None and go != "1":
            raise Refusal(Ending(Outcome.BAD_REQUEST, detail="The parameter “go” is not valid."))
        now = self._clock()
        link_hash: str | None = None
        return_url: str | None = None
        tenant_name: str | None = None
        if session is not None:
            link = self._valid_link(session, now)
            tenant_id, scopes = str(link["tenant_id"]), [str(s) for s in link["scopes"]]
            return_url = self._return_url_of(link)
            name = link.get("tenant_name")
            tenant_name = name if isinstance(name, str) else None
            link_hash = sha256(session)
        elif self.settings.connect_mode == "open":
            tenant_id, scopes = OPEN_MODE_TENANT, list(self.settings.scopes)
        elif reconnect:
            raise Refusal(Ending(Outcome.RECONNECT_INFO))
        else:
            raise Refusal(Ending(Outcome.LINK_REQUIRED))

        authorize_origin = pages.origin_of(self.settings.intuit.authorization)
        if go is None or not same_origin_navigation(request):
            if go is not None:
                logger.info(
                    "go=1 refused: not a same-origin navigation",
                    extra={"sec_fetch_site": (request.fetch_site or "")[:32]},
                )
            outcome = (
                Outcome.CROSS_SITE_REFUSED
                if go is not None
                else Outcome.LANDING_RECONNECT
                if reconnect
                else Outcome.LANDING
            )
            return_origin = pages.origin_of(return_url) if return_url else None
            return pages.landing_page(
                outcome,
                session=session,
                authorize_origin=authorize_origin,
                extra_form_action=[return_origin] if return_origin else [],
                scopes=scopes,
                tenant_name=tenant_name,
                language=request.language,
                branding=self.branding,
            )

        state = secrets.token_urlsafe(TOKEN_BYTES)
        nonce = secrets.token_urlsafe(TOKEN_BYTES)
        redirect_uri = self.redirect_uri(request)
        authorize = self._intuit().authorize_url(
            scopes=scopes, redirect_uri=redirect_uri, state=state
        )
        attributes: dict[str, Any] = {
            "tenant_id": tenant_id,
            "scopes": scopes,
            "nonce_hash": sha256(nonce),
            "redirect_uri": redirect_uri,
            "created_at": now,
        }
        if link_hash is not None:
            attributes["link_hash"] = link_hash
        if return_url:
            attributes["return_url"] = return_url
        ttl = self.settings.state_ttl_seconds
        self.single_use.put_single_use(STATE, state, attributes, expires_at=now + ttl)
        cookie_value = f"{nonce}.{session}" if session else nonce
        logger.info("redirecting to Intuit", extra={"tenant_id": tenant_id, "scopes": scopes})
        ending = Ending(
            Outcome.AUTHORIZE, location=authorize, cookies=[state_cookie(cookie_value, ttl)]
        )
        return self.answer(ending, request)

    def redirect_uri(self, request: Request) -> str:
        """The callback URL registered at Intuit: PublicBaseUrl's, else the API's own."""
        if self.settings.public_base_url:
            return f"{self.settings.public_base_url}/callback"
        return f"https://{request.domain_name}/callback"
