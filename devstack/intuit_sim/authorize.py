"""The consent page and the authorize endpoint: what a user sees when an app asks to connect.

The page is the simulator's stand-in for Intuit's: it names the app (the client's configured
display name, never its id), lists the scopes in words, lets the tester pick the company, and
is readable on a phone. Approving issues a single-use authorisation code.
"""

from __future__ import annotations

import html
import secrets
from urllib.parse import urlsplit

from werkzeug.wrappers import Request, Response

from devstack.intuit_sim.common import _html_page, _redirect, _with_params
from devstack.intuit_sim.oauth import (
    _REALM_RE,
    ACCOUNTING_SCOPE,
    KNOWN_SCOPES,
    PAYMENT_SCOPE,
    REALM_SCOPES,
    OAuthServer,
    _Code,
    _Pending,
)
from devstack.intuit_sim.state import PATH_AUTHORIZE

_SCOPE_LABELS = {
    ACCOUNTING_SCOPE: "QuickBooks Online accounting data",
    PAYMENT_SCOPE: "QuickBooks Payments",
    "openid": "Sign you in with Intuit",
    "profile": "Your name",
    "email": "Your email address",
    "phone": "Your phone number",
    "address": "Your address",
}


class AuthorizeEndpoint(OAuthServer):
    """``GET/POST /connect/oauth2``: validate, show consent (or auto-approve), redirect."""

    def _valid_redirect_uri(self, uri: str) -> bool:
        if self.redirect_uris is not None:
            return uri in self.redirect_uris
        parts = urlsplit(uri)
        return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.fragment

    def _authorize(self, request: Request) -> Response:
        if request.method == "POST":
            return self._authorize_decision(request)
        args = request.args
        client_id = args.get("client_id", "")
        redirect_uri = args.get("redirect_uri", "")
        state = args.get("state")
        with self._lock:
            known = client_id in self._clients
        if not known:
            # Never redirect for an unknown client: the redirect target cannot be trusted.
            return _html_page("Error", "<h1>Invalid client</h1><p>Unknown client_id.</p>", 400)
        if not redirect_uri or not self._valid_redirect_uri(redirect_uri):
            return _html_page(
                "Error",
                "<h1>Invalid redirect_uri</h1><p>The redirect URI is not registered for this "
                "app. Registered URIs must match exactly.</p>",
                400,
            )
        if args.get("response_type") != "code":
            return _redirect(
                _with_params(
                    redirect_uri,
                    [
                        ("error", "unsupported_response_type"),
                        ("error_description", "response_type must be code"),
                        ("state", state),
                    ],
                )
            )
        scopes = tuple(args.get("scope", "").split())
        if not scopes or any(s not in KNOWN_SCOPES for s in scopes):
            return _redirect(
                _with_params(
                    redirect_uri,
                    [
                        ("error", "invalid_scope"),
                        ("error_description", "Invalid or missing scope"),
                        ("state", state),
                    ],
                )
            )
        if self.auto_approve:
            return self._approve(client_id, redirect_uri, scopes, state, self.next_realm_id)
        txn = secrets.token_urlsafe(24)
        with self._lock:
            self._pending[txn] = _Pending(client_id, redirect_uri, scopes, state, self.now())
        return self._consent_page(txn, client_id, scopes)

    def _consent_page(self, txn: str, client_id: str, scopes: tuple[str, ...]) -> Response:
        esc = html.escape
        with self._lock:
            app = self.app_names.get(client_id, self.app_name)
        items = "".join(
            f"<li>{esc(_SCOPE_LABELS.get(s, s))} <code>{esc(s)}</code></li>" for s in scopes
        )
        realm_field = ""
        if REALM_SCOPES & set(scopes):
            realm = self.next_realm_id
            company = self.company_name_for(realm)
            realm_field = (
                f"<p><label for=realm_id>Company ({esc(company)}) realm ID</label><br>"
                f'<input id=realm_id name=realm_id value="{esc(realm)}" '
                'pattern="[A-Za-z0-9_-]{1,64}" required></p>'
            )
        body = (
            f"<h1>Connect <span id=app_name>{esc(app)}</span> to QuickBooks</h1>"
            "<p class=note>Intuit simulator: no real company is involved.</p>"
            f"<p><strong>{esc(app)}</strong> wants access to:</p>"
            f"<ul id=scopes>{items}</ul>"
            f'<form method=post action="{esc(PATH_AUTHORIZE)}">'
            f'<input type=hidden name=txn value="{esc(txn)}">{realm_field}'
            "<button type=submit name=decision value=approve id=approve>Connect</button>"
            "<button type=submit name=decision value=deny id=deny formnovalidate>Cancel</button>"
            "</form>"
        )
        return _html_page("Connect to QuickBooks (simulator)", body)

    def _authorize_decision(self, request: Request) -> Response:
        txn = request.form.get("txn", "")
        with self._lock:
            pending = self._pending.pop(txn, None)
            now = self.now()
        if pending is None or now - pending.created_at > self.code_ttl:
            return _html_page("Error", "<h1>This request has expired.</h1>", 400)
        if request.form.get("decision") != "approve":
            return _redirect(
                _with_params(
                    pending.redirect_uri,
                    [
                        ("error", "access_denied"),
                        ("error_description", "User denied access"),
                        ("state", pending.state),
                    ],
                )
            )
        realm = request.form.get("realm_id") or self.next_realm_id
        if REALM_SCOPES & set(pending.scopes) and not _REALM_RE.match(realm):
            return _html_page("Error", "<h1>Invalid realm ID</h1>", 400)
        return self._approve(
            pending.client_id, pending.redirect_uri, pending.scopes, pending.state, realm
        )

    def _approve(
        self,
        client_id: str,
        redirect_uri: str,
        scopes: tuple[str, ...],
        state: str | None,
        realm_id: str,
    ) -> Response:
        code = "AB11-sim-" + secrets.token_urlsafe(48)
        realm = realm_id if REALM_SCOPES & set(scopes) else None
        with self._lock:
            self._codes[code] = _Code(client_id, redirect_uri, scopes, realm, self.now())
            self._counters["authorize.approved"] += 1
        return _redirect(
            _with_params(redirect_uri, [("code", code), ("state", state), ("realmId", realm)])
        )
