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

- Webhooks (``devstack.intuit_webhooks``): change notifications signed with the app's verifier
  token, in the legacy or the CloudEvents shape, sent from an admin call or after a simulated
  entity change, retried on Intuit's schedule (scaled by ``webhook_time_scale``) and delivered
  in order: a failing notification holds later ones back, as Intuit does.

Nothing here logs token values, codes or client secrets; the refresh log keeps SHA-256 digests.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import hmac
import html
import json
import logging
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from devstack.intuit_webhooks import WebhookSender

log = logging.getLogger(__name__)

ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
PAYMENT_SCOPE = "com.intuit.quickbooks.payment"
KNOWN_SCOPES = frozenset(
    {ACCOUNTING_SCOPE, PAYMENT_SCOPE, "openid", "profile", "email", "phone", "address"}
)
# Only these scopes bind the grant to a company, so only these put realmId in the callback.
REALM_SCOPES = frozenset({ACCOUNTING_SCOPE, PAYMENT_SCOPE})
DEFAULT_ISSUE_SCOPES = (ACCOUNTING_SCOPE,)

# Paths mirror Intuit's so that a URL read in a log looks familiar.
PATH_AUTHORIZE = "/connect/oauth2"
PATH_TOKEN = "/oauth2/v1/tokens/bearer"
PATH_REVOKE = "/v2/oauth2/tokens/revoke"
PATH_USERINFO = "/v1/openid_connect/userinfo"
PATH_JWKS = "/op/v1/jwks"
PATH_ISSUER = "/op/v1"
PATH_DISCOVERY = "/.well-known/openid_configuration"
_COMPANYINFO_RE = re.compile(r"^/v3/company/([^/]+)/companyinfo/([^/]+)$")
_REALM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

#: Names accepted in ``set_faults(endpoints=...)``; "all" matches every non-admin endpoint.
FAULT_ENDPOINTS = frozenset(
    {
        "all",
        "authorize",
        "token",
        "token.authorization_code",
        "token.refresh_token",
        "revoke",
        "userinfo",
        "jwks",
        "companyinfo",
        "discovery",
    }
)
_COUNTER_KEYS = (
    "authorize",
    "token",
    "token.authorization_code",
    "token.refresh_token",
    "token.refresh_token.ok",
    "token.refresh_token.invalid_grant",
    "revoke",
    "userinfo",
    "jwks",
    "companyinfo",
    "faults",
)
_SCOPE_LABELS = {
    ACCOUNTING_SCOPE: "QuickBooks Online accounting data",
    PAYMENT_SCOPE: "QuickBooks Payments",
    "openid": "Sign you in with Intuit",
    "profile": "Your name",
    "email": "Your email address",
    "phone": "Your phone number",
    "address": "Your address",
}
_AUTH_FAILED_401 = {
    "fault": {
        "error": [
            {
                "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                "detail": "Token expired or invalid",
                "code": "3200",
            }
        ],
        "type": "AUTHENTICATION",
    }
}
_AUTHZ_FAILED_403 = {
    "fault": {
        "error": [
            {
                "message": "message=ApplicationAuthorizationFailed; errorCode=003100; "
                "statusCode=403",
                "detail": "Token not authorised for this company or scope",
                "code": "3100",
            }
        ],
        "type": "AUTHORIZATION",
    }
}


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _new_tid() -> str:
    """An id shaped like Intuit's ``intuit_tid`` so log parsers treat both alike."""
    return f"1-{secrets.token_hex(4)}-{secrets.token_hex(12)}"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    resp = Response(json.dumps(body), status=status, content_type="application/json;charset=UTF-8")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def _oauth_error(
    error: str, status: int = 400, description: str | None = None, **headers: str
) -> Response:
    body = {"error": error}
    if description:
        body["error_description"] = description
    return _json(body, status, headers)


def _with_params(uri: str, params: Iterable[tuple[str, str | None]]) -> str:
    """Append callback parameters, keeping any query the (unregistered-mode) URI carries."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _redirect(location: str) -> Response:
    resp = Response("", status=302)
    resp.headers["Location"] = location
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _html_page(title: str, body: str, status: int = 200) -> Response:
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:40em;margin:3em auto}"
        "button{font-size:1em;padding:.5em 1.5em;margin-right:1em}</style></head>"
        f"<body>{body}</body></html>"
    )
    resp = Response(page, status=status, content_type="text/html; charset=utf-8")
    # No external assets at all; inline style only. Framing is refused like Intuit's page.
    resp.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Cache-Control"] = "no-store"
    return resp


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    realm_id: str | None
    issued_at: float
    used: bool = False
    grant_id: str | None = None


@dataclass
class _Pending:
    """A consent page shown but not yet answered; the form posts back only its id."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    created_at: float


@dataclass
class _Grant:
    grant_id: str
    client_id: str
    realm_id: str | None
    scopes: tuple[str, ...]
    created_at: float
    hard_expires_at: float
    rt_expires_at: float
    current_rt: str
    current_rt_issued_at: float
    previous_rt: str | None = None
    previous_superseded_at: float = 0.0
    revoked: bool = False
    refreshes: int = 0


@dataclass
class _AccessToken:
    grant_id: str
    expires_at: float


@dataclass
class _Faults:
    latency_seconds: float = 0.0
    status_5xx: int = 0
    rate_429: int = 0
    retry_after: float | None = None
    timeouts: int = 0
    timeout_seconds: float = 30.0
    invalid_grant: int = 0
    endpoints: frozenset[str] = frozenset({"token"})
    probability: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "latency_seconds": self.latency_seconds,
            "status_5xx": self.status_5xx,
            "rate_429": self.rate_429,
            "retry_after": self.retry_after,
            "timeouts": self.timeouts,
            "timeout_seconds": self.timeout_seconds,
            "invalid_grant": self.invalid_grant,
            "endpoints": sorted(self.endpoints),
            "probability": self.probability,
        }


@dataclass
class _Fault:
    """One request's share of the fault plan: its delay and, maybe, its failure."""

    kind: str | None
    latency_seconds: float
    retry_after: float | None
    timeout_seconds: float


class _QuietHandler(WSGIRequestHandler):
    """Request handler that never prints query strings and tracks live connections.

    Werkzeug's access log prints the full URL; a callback URL carries ``code=``, so only the
    path goes to our logger, at DEBUG. Connections are tracked so :meth:`IntuitSimulator.stop`
    can cut keep-alive sockets that would otherwise keep answering after the server stopped.
    """

    def setup(self) -> None:
        super().setup()
        tracker = getattr(self.server, "sim_connections", None)
        if tracker is not None:
            tracker.add(self.connection)

    def finish(self) -> None:
        tracker = getattr(self.server, "sim_connections", None)
        if tracker is not None:
            tracker.discard(self.connection)
        super().finish()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = getattr(self, "path", "").split("?", 1)[0]
        log.debug("%s %s -> %s", getattr(self, "command", "-"), path, code)

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("http error: " + format, *args)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


#: 700 random bytes make 934 base64url characters: with the prefix, the size of an Intuit
#: access token.
ACCESS_TOKEN_RANDOM_BYTES = 700


class IntuitSimulator:
    """Intuit's OAuth server, QuickBooks CompanyInfo and a ``/_sim/`` admin API on one port.

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``next_realm_id``,
    ``auto_approve``, ``refresh_grace_seconds`` and ``rotate_every_seconds`` may be changed at any
    time (directly or via ``POST /_sim/config``); they apply to the next request.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clients: dict[str, str] | None = None,
        redirect_uris: list[str] | None = None,
        auto_approve: bool = False,
        refresh_grace_seconds: float = 86400.0,
        rotate_every_seconds: float = 0.0,
        access_token_ttl: int = 3600,
        refresh_token_ttl: int = 8726400,
        refresh_hard_ttl: int = 5 * 365 * 86400,
        code_ttl: int = 600,
        default_realm_id: str = "9130357766042906",
        company_name: str = "Sandbox Company_US_1",
        clock: Callable[[], float] = time.time,
        webhook_url: str = "",
        webhook_verifier_token: str = "",
        webhook_shape: str = "legacy",
        webhook_time_scale: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.redirect_uris = list(redirect_uris) if redirect_uris is not None else None
        self.auto_approve = auto_approve
        self.refresh_grace_seconds = float(refresh_grace_seconds)
        self.rotate_every_seconds = float(rotate_every_seconds)
        self.access_token_ttl = int(access_token_ttl)
        self.refresh_token_ttl = int(refresh_token_ttl)
        self.refresh_hard_ttl = int(refresh_hard_ttl)
        self.code_ttl = int(code_ttl)
        self.default_realm_id = default_realm_id
        #: Realm the next approval connects (auto-approve, and the consent form's default).
        self.next_realm_id = default_realm_id
        self.company_name = company_name
        #: Optional per-realm company names; realms not listed use ``company_name``.
        self.company_names: dict[str, str] = {}
        self._clock = clock
        self._clock_offset = 0.0

        self._lock = threading.RLock()
        self._clients: dict[str, str] = dict(clients or {})
        self._codes: dict[str, _Code] = {}
        self._pending: dict[str, _Pending] = {}
        self._grants: dict[str, _Grant] = {}
        self._rt_index: dict[str, str] = {}  # every refresh token ever issued -> grant id
        self._access: dict[str, _AccessToken] = {}
        self._counters: Counter[str] = Counter()
        self._refresh_log: deque[dict[str, Any]] = deque(maxlen=10000)
        self._faults = _Faults()
        self._rng = random.Random()

        # One key per instance: tests that cache a JWKS across simulators must notice.
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_jwk: dict[str, Any] = dict(
            jwt.algorithms.RSAAlgorithm.to_jwk(self._private_key.public_key(), as_dict=True)
        )
        thumb_src = json.dumps(
            {"e": public_jwk["e"], "kty": "RSA", "n": public_jwk["n"]},
            separators=(",", ":"),
            sort_keys=True,
        )
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(thumb_src.encode()).digest()).decode()
        self.kid = self.kid.rstrip("=")
        public_jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        self._public_jwk = public_jwk

        # The sandbox user behind every consent; stable per instance so `sub` is comparable.
        self.user: dict[str, Any] = {
            "sub": str(uuid.uuid4()),
            "email": "sim.user@example.com",
            "emailVerified": True,
            "givenName": "Sim",
            "familyName": "User",
            "phoneNumber": "+1 5555550100",
            "phoneNumberVerified": False,
            "address": {
                "streetAddress": "2700 Coast Avenue",
                "locality": "Mountain View",
                "region": "CA",
                "postalCode": "94043",
                "country": "US",
            },
        }

        #: Change notifications to the app's webhook URL (admin: ``/_sim/webhooks``,
        #: ``/_sim/entity-change``).
        self.webhooks = WebhookSender(
            url=webhook_url,
            verifier_token=webhook_verifier_token,
            shape=webhook_shape,
            time_scale=webhook_time_scale,
        )

        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._base_url: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> IntuitSimulator:
        """Bind and serve in a daemon thread.

        The socket is bound here rather than by werkzeug because werkzeug calls ``sys.exit`` on
        a bind failure; a test suite wants an ``OSError`` that says which port was taken.
        """
        if self._server is not None:
            raise RuntimeError("IntuitSimulator is already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(256)
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno,
                f"IntuitSimulator cannot listen on {self.host}:{self.port}: {exc.strerror} "
                "(port in use? pass port=0 to pick a free one)",
            ) from exc
        try:
            server = make_server(
                self.host,
                self.port,
                self._wsgi,
                threaded=True,
                request_handler=_QuietHandler,
                fd=sock.fileno(),
            )
        finally:
            sock.close()  # the server holds its own duplicate of the descriptor
        server.sim_connections = self._connections  # type: ignore[attr-defined]
        self._stopping.clear()
        self._server = server
        host = f"[{self.host}]" if family == socket.AF_INET6 else self.host
        self._base_url = f"http://{host}:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.name = f"intuit-sim-{server.server_address[1]}"
        self._thread.start()
        log.info("Intuit simulator listening on %s", self._base_url)
        return self

    def stop(self) -> None:
        """Stop serving, wake requests sleeping in an injected fault, cut keep-alive sockets."""
        self.webhooks.stop()
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        for conn in list(self._connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> IntuitSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ URLs

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("IntuitSimulator is not started")
        return self._base_url

    @property
    def issuer(self) -> str:
        return self.base_url + PATH_ISSUER

    @property
    def discovery_url(self) -> str:
        return self.base_url + PATH_DISCOVERY

    @property
    def endpoints(self) -> dict[str, str]:
        """The project's INTUIT_* settings pointed at this server (docs/architecture.md)."""
        base = self.base_url
        return {
            "INTUIT_AUTHORIZATION_ENDPOINT": base + PATH_AUTHORIZE,
            "INTUIT_TOKEN_ENDPOINT": base + PATH_TOKEN,
            "INTUIT_REVOCATION_ENDPOINT": base + PATH_REVOKE,
            "INTUIT_USERINFO_ENDPOINT": base + PATH_USERINFO,
            "INTUIT_JWKS_URI": base + PATH_JWKS,
            "INTUIT_ISSUER": base + PATH_ISSUER,
            "QUICKBOOKS_API_BASE_URL": base,
        }

    # ------------------------------------------------------------------ test controls

    def now(self) -> float:
        """The simulator's time: the injected clock plus any :meth:`advance_clock` offset."""
        return self._clock() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move simulated time forward, for tests in other processes that cannot inject a clock."""
        with self._lock:
            self._clock_offset += float(seconds)

    def add_client(self, client_id: str, client_secret: str) -> None:
        with self._lock:
            self._clients[client_id] = client_secret

    def configure(self, **settings: Any) -> None:
        """Change behaviour at runtime; the admin API's ``POST /_sim/config`` lands here."""
        allowed = {
            "refresh_grace_seconds": float,
            "rotate_every_seconds": float,
            "auto_approve": bool,
            "next_realm_id": str,
            "access_token_ttl": int,
            "refresh_token_ttl": int,
            "code_ttl": int,
            "company_name": str,
        }
        unknown = set(settings) - set(allowed)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            for key, value in settings.items():
                kind = allowed[key]
                if kind is bool and not isinstance(value, bool):
                    raise ValueError(f"{key} must be a boolean")
                if kind in (int, float) and (
                    isinstance(value, bool) or not isinstance(value, int | float) or value < 0
                ):
                    raise ValueError(f"{key} must be a non-negative number")
                if kind is str and (not isinstance(value, str) or not value):
                    raise ValueError(f"{key} must be a non-empty string")
                setattr(self, key, kind(value))

    def config(self) -> dict[str, Any]:
        return {
            "refresh_grace_seconds": self.refresh_grace_seconds,
            "rotate_every_seconds": self.rotate_every_seconds,
            "auto_approve": self.auto_approve,
            "next_realm_id": self.next_realm_id,
            "access_token_ttl": self.access_token_ttl,
            "refresh_token_ttl": self.refresh_token_ttl,
            "refresh_hard_ttl": self.refresh_hard_ttl,
            "code_ttl": self.code_ttl,
            "company_name": self.company_name,
            "clock_offset": self._clock_offset,
        }

    def counters(self) -> dict[str, int]:
        with self._lock:
            out = dict.fromkeys(_COUNTER_KEYS, 0)
            out.update(self._counters)
            return out

    def reset_counters(self) -> None:
        with self._lock:
            self._counters.clear()
            self._refresh_log.clear()

    def refresh_calls(self) -> list[dict[str, Any]]:
        """Every refresh_token grant request, oldest first; tokens appear only as SHA-256."""
        with self._lock:
            return [dict(entry) for entry in self._refresh_log]

    def grants(self) -> list[dict[str, Any]]:
        """Grant metadata (never token values) so tests can see what a disconnect did."""
        with self._lock:
            return [
                {
                    "client_id": g.client_id,
                    "realm_id": g.realm_id,
                    "scopes": list(g.scopes),
                    "revoked": g.revoked,
                    "refreshes": g.refreshes,
                    "refresh_token_sha256": _sha256(g.current_rt),
                    "rt_expires_at": g.rt_expires_at,
                    "hard_expires_at": g.hard_expires_at,
                }
                for g in self._grants.values()
            ]

    def set_faults(
        self,
        *,
        latency_seconds: float = 0.0,
        status_5xx: int = 0,
        rate_429: int = 0,
        retry_after: float | None = None,
        timeouts: int = 0,
        timeout_seconds: float = 30.0,
        invalid_grant: int = 0,
        endpoints: Iterable[str] = ("token",),
        probability: float | None = None,
        seed: int | None = None,
    ) -> None:
        """Replace the fault plan (it is not additive).

        Counts mean "the next N matching requests"; one request takes at most one fault, in the
        order timeout, 5xx, 429, invalid_grant (the last only on the token endpoint). With
        ``probability`` each matching request takes the next fault only with that chance
        (``seed`` makes it repeatable). Latency delays every matching request until cleared.
        """
        names = frozenset([endpoints] if isinstance(endpoints, str) else endpoints)
        unknown = names - FAULT_ENDPOINTS
        if unknown:
            raise ValueError(f"unknown fault endpoint(s): {', '.join(sorted(unknown))}")
        counts = {
            "status_5xx": status_5xx,
            "rate_429": rate_429,
            "timeouts": timeouts,
            "invalid_grant": invalid_grant,
        }
        for key, count in counts.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"{key} must be a non-negative integer")
        for key, seconds in (
            ("latency_seconds", latency_seconds),
            ("timeout_seconds", timeout_seconds),
        ):
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                raise ValueError(f"{key} must be a non-negative number")
        if retry_after is not None and (
            isinstance(retry_after, bool) or not isinstance(retry_after, int | float)
        ):
            raise ValueError("retry_after must be a number or None")
        if probability is not None and not 0.0 <= float(probability) <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        with self._lock:
            self._faults = _Faults(
                latency_seconds=float(latency_seconds),
                status_5xx=status_5xx,
                rate_429=rate_429,
                retry_after=retry_after,
                timeouts=timeouts,
                timeout_seconds=float(timeout_seconds),
                invalid_grant=invalid_grant,
                endpoints=names,
                probability=None if probability is None else float(probability),
            )
            if seed is not None:
                self._rng.seed(seed)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = _Faults()

    def faults(self) -> dict[str, Any]:
        """The fault plan with the counts still left to serve."""
        with self._lock:
            return self._faults.as_dict()

    def issue_tokens(
        self,
        *,
        client_id: str,
        realm_id: str | None = None,
        scopes: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create a grant as if the browser flow had run, and return the token endpoint's body.

        ``realm_id`` defaults to ``next_realm_id``; ``scopes`` to the accounting scope only.
        """
        scope_t = tuple(scopes) if scopes is not None else DEFAULT_ISSUE_SCOPES
        bad = [s for s in scope_t if s not in KNOWN_SCOPES]
        if bad or not scope_t:
            raise ValueError(f"invalid scope(s): {bad or '(none)'}")
        realm = realm_id or self.next_realm_id
        if not _REALM_RE.match(realm):
            raise ValueError("realm_id must be 1-64 characters of [A-Za-z0-9_-]")
        with self._lock:
            if client_id not in self._clients:
                raise ValueError(f"unknown client_id {client_id!r}")
            now = self.now()
            grant = self._new_grant(
                client_id, realm if REALM_SCOPES & set(scope_t) else None, scope_t, now
            )
            return self._token_body(grant, now, id_token=True)

    def revoke_realm(self, realm_id: str) -> int:
        """The user disconnected the app at Intuit: every grant and pending code of the realm dies.

        Returns how many live grants were revoked.
        """
        with self._lock:
            revoked = 0
            for grant in self._grants.values():
                if grant.realm_id == realm_id and not grant.revoked:
                    grant.revoked = True
                    revoked += 1
            for code, record in list(self._codes.items()):
                if record.realm_id == realm_id and not record.used:
                    del self._codes[code]
            self._counters["revoke_realm"] += 1
            return revoked

    # ------------------------------------------------------------------ model (lock held)

    def _count(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._counters[key] += 1

    def _new_grant(
        self, client_id: str, realm_id: str | None, scopes: tuple[str, ...], now: float
    ) -> _Grant:
        refresh_token = "RT1-sim-" + secrets.token_urlsafe(36)
        grant = _Grant(
            grant_id=secrets.token_hex(8),
            client_id=client_id,
            realm_id=realm_id,
            scopes=scopes,
            created_at=now,
            hard_expires_at=now + self.refresh_hard_ttl,
            rt_expires_at=now + self.refresh_token_ttl,
            current_rt=refresh_token,
            current_rt_issued_at=now,
        )
        self._grants[grant.grant_id] = grant
        self._rt_index[refresh_token] = grant.grant_id
        return grant

    def _token_body(
        self, grant: _Grant, now: float, *, id_token: bool = False, want_hard: bool = False
    ) -> dict[str, Any]:
        # As long as Intuit's (JWE, about 940 characters): the connection item's size, and so
        # what each write of it costs, is measured with tokens of the real size.
        access_token = "sim-at-" + secrets.token_urlsafe(ACCESS_TOKEN_RANDOM_BYTES)
        self._access[access_token] = _AccessToken(grant.grant_id, now + self.access_token_ttl)
        # round(), not int(): now + ttl - now is not always exactly ttl in floating point.
        rt_left = round(min(grant.rt_expires_at, grant.hard_expires_at) - now)
        body: dict[str, Any] = {
            "token_type": "bearer",
            "expires_in": self.access_token_ttl,
            "refresh_token": grant.current_rt,
            "x_refresh_token_expires_in": max(0, rt_left),
            "access_token": access_token,
        }
        if id_token and "openid" in grant.scopes:
            body["id_token"] = self._id_token(grant, now)
        if want_hard:
            body["x_refresh_token_hard_expires_in"] = max(0, round(grant.hard_expires_at - now))
        return body

    def _id_token(self, grant: _Grant, now: float) -> str:
        iat = int(now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": [grant.client_id],
            "sub": self.user["sub"],
            "auth_time": int(grant.created_at),
            "iat": iat,
            "exp": iat + 3600,
        }
        if grant.realm_id is not None:
            claims["realmid"] = grant.realm_id
        return jwt.encode(claims, self._private_key, algorithm="RS256", headers={"kid": self.kid})

    def _grant_for_access_token(self, token: str) -> _Grant | None:
        with self._lock:
            record = self._access.get(token)
            if record is None or self.now() >= record.expires_at:
                return None
            grant = self._grants.get(record.grant_id)
            if grant is None or grant.revoked:
                return None
            return grant

    def _refresh(
        self, client_id: str, refresh_token: str, want_hard: bool
    ) -> tuple[dict[str, Any] | None, str, dict[str, Any]]:
        """Apply one refresh under the lock: (body or None, description, log extras)."""
        with self._lock:
            now = self.now()
            grant_id = self._rt_index.get(refresh_token)
            grant = self._grants.get(grant_id) if grant_id else None
            if grant is None or grant.client_id != client_id:
                return None, "Incorrect or invalid refresh token", {}
            if grant.revoked:
                return None, "Token revoked", {}
            if now >= grant.rt_expires_at or now >= grant.hard_expires_at:
                return None, "Token expired", {}
            if refresh_token == grant.current_rt:
                via_previous = False
                age = now - grant.current_rt_issued_at
                rotated = self.rotate_every_seconds <= 0 or age >= self.rotate_every_seconds
                if rotated:
                    new_rt = "RT1-sim-" + secrets.token_urlsafe(36)
                    grant.previous_rt, grant.previous_superseded_at = grant.current_rt, now
                    grant.current_rt, grant.current_rt_issued_at = new_rt, now
                    self._rt_index[new_rt] = grant.grant_id
            elif (
                refresh_token == grant.previous_rt
                and now - grant.previous_superseded_at < self.refresh_grace_seconds
            ):
                via_previous, rotated = True, False
            else:
                return None, "Incorrect or invalid refresh token", {}
            grant.rt_expires_at = now + self.refresh_token_ttl
            grant.refreshes += 1
            body = self._token_body(grant, now, want_hard=want_hard)
            return body, "", {"rotated": rotated, "via_previous": via_previous}

    def _log_refresh(self, token: str | None, outcome: str, **extra: Any) -> None:
        with self._lock:
            entry = {
                "at": self.now(),
                "refresh_token_sha256": _sha256(token) if token else None,
                "outcome": outcome,
            }
            entry.update(extra)
            self._refresh_log.append(entry)

    # ------------------------------------------------------------------ faults

    def _take_fault(self, names: set[str], *, token_endpoint: bool) -> _Fault | None:
        """Decide, atomically under the lock, whether this request is delayed or faulted.

        Deciding and consuming in one locked step is what makes "the next N requests" exact
        when 50 threads arrive together. The sleeping happens later, in :meth:`_serve_fault`.
        """
        with self._lock:
            plan = self._faults
            if not (names & plan.endpoints or "all" in plan.endpoints):
                return None
            kind: str | None = None
            if plan.probability is None or self._rng.random() < plan.probability:
                if plan.timeouts > 0:
                    plan.timeouts -= 1
                    kind = "timeout"
                elif plan.status_5xx > 0:
                    plan.status_5xx -= 1
                    kind = "5xx"
                elif plan.rate_429 > 0:
                    plan.rate_429 -= 1
                    kind = "429"
                elif plan.invalid_grant > 0 and token_endpoint:
                    plan.invalid_grant -= 1
                    kind = "invalid_grant"
            if kind is not None:
                self._counters["faults"] += 1
                self._counters[f"faults.{kind}"] += 1
                log.info("injecting fault %s on %s", kind, sorted(names))
            return _Fault(kind, plan.latency_seconds, plan.retry_after, plan.timeout_seconds)

    def _serve_fault(self, fault: _Fault | None) -> Response | None:
        """Sleep outside the lock (latency, then timeout), then build the fault's response.

        Sleeps wait on the stop event so :meth:`stop` never hangs behind a 30 s timeout fault.
        """
        if fault is None:
            return None
        if fault.latency_seconds > 0:
            self._stopping.wait(fault.latency_seconds)
        if fault.kind is None:
            return None
        if fault.kind == "timeout":
            self._stopping.wait(fault.timeout_seconds)
            return _oauth_error("gateway_timeout", 504, "simulated upstream timeout")
        if fault.kind == "5xx":
            return _oauth_error("server_error", 503, "simulated outage")
        if fault.kind == "429":
            headers = {}
            if fault.retry_after is not None:
                ra = fault.retry_after
                headers["Retry-After"] = str(int(ra) if float(ra).is_integer() else ra)
            return _oauth_error("too_many_requests", 429, "simulated throttling", **headers)
        return _oauth_error("invalid_grant", 400)

    # ------------------------------------------------------------------ HTTP

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except Exception:
            log.exception("simulator error on %s %s", request.method, request.path)
            response = _oauth_error("server_error", 500, "simulator bug")
        response.headers["intuit_tid"] = _new_tid()
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/_sim/"):
            return self._admin(request)
        routes: dict[str, tuple[str, Callable[[Request], Response], tuple[str, ...]]] = {
            PATH_AUTHORIZE: ("authorize", self._authorize, ("GET", "POST")),
            PATH_TOKEN: ("token", self._token, ("POST",)),
            PATH_REVOKE: ("revoke", self._revoke, ("POST",)),
            PATH_USERINFO: ("userinfo", self._userinfo, ("GET",)),
            PATH_JWKS: ("jwks", self._jwks, ("GET",)),
            PATH_DISCOVERY: ("discovery", self._discovery, ("GET",)),
        }
        route = routes.get(path)
        if route is None and _COMPANYINFO_RE.match(path):
            route = ("companyinfo", self._companyinfo, ("GET",))
        if route is None:
            return _json({"error": "not_found"}, 404)
        name, handler, methods = route
        if request.method not in methods:
            resp = _json({"error": "method_not_allowed"}, 405)
            resp.headers["Allow"] = ", ".join(methods)
            return resp
        if name == "token":
            return handler(request)  # counts and faults per grant type
        # The consent form's POST is the same page answering, not a new authorize request.
        self._count(
            "authorize.decision" if name == "authorize" and request.method == "POST" else name
        )
        faulted = self._serve_fault(self._take_fault({name}, token_endpoint=False))
        return faulted if faulted is not None else handler(request)

    def _client_from_basic(self, request: Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, sep, secret = decoded.partition(":")
        with self._lock:
            expected = self._clients.get(client_id)
        if not sep or expected is None:
            return None
        if not hmac.compare_digest(expected.encode(), secret.encode()):
            return None
        return client_id

    @staticmethod
    def _bearer(request: Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return value.strip() or None

    # --- authorize

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
        items = "".join(
            f"<li>{esc(_SCOPE_LABELS.get(s, s))} <code>{esc(s)}</code></li>" for s in scopes
        )
        realm_field = ""
        if REALM_SCOPES & set(scopes):
            realm = self.next_realm_id
            company = self.company_names.get(realm, self.company_name)
            realm_field = (
                f"<p><label for=realm_id>Company ({esc(company)}) realm ID</label><br>"
                f'<input id=realm_id name=realm_id value="{esc(realm)}" '
                'pattern="[A-Za-z0-9_-]{1,64}" required></p>'
            )
        body = (
            "<h1>Intuit simulator: connect your app</h1>"
            f"<p>The app <strong id=client_id>{esc(client_id)}</strong> wants access to:</p>"
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

    # --- token

    def _token(self, request: Request) -> Response:
        form = request.form
        grant_type = form.get("grant_type", "")
        counted = ["token"]
        if grant_type in ("authorization_code", "refresh_token"):
            counted.append(f"token.{grant_type}")
        self._count(*counted)
        raw_rt = form.get("refresh_token") if grant_type == "refresh_token" else None
        fault = self._take_fault(set(counted), token_endpoint=True)
        if fault is not None and fault.kind is not None and grant_type == "refresh_token":
            # Logged before any sleep so a test sees the attempt while the client still waits.
            self._log_refresh(raw_rt, f"fault:{fault.kind}")
        faulted = self._serve_fault(fault)
        if faulted is not None:
            return faulted
        client_id = self._client_from_basic(request)
        if client_id is None:
            self._count("token.invalid_client")
            if grant_type == "refresh_token":
                self._log_refresh(raw_rt, "invalid_client")
            return _oauth_error(
                "invalid_client", 401, **{"WWW-Authenticate": 'Basic realm="intuit"'}
            )
        if not grant_type:
            return _oauth_error("invalid_request", 400, "grant_type is required")
        want_hard = (
            request.headers.get("x-include-refresh-token-hard-expires-in", "").lower() == "true"
        )
        if grant_type == "authorization_code":
            return self._exchange_code(
                client_id, form.get("code"), form.get("redirect_uri"), want_hard
            )
        if grant_type == "refresh_token":
            if not raw_rt:
                self._log_refresh(None, "invalid_request")
                return _oauth_error("invalid_request", 400, "refresh_token is required")
            body, description, extra = self._refresh(client_id, raw_rt, want_hard)
            if body is None:
                self._count("token.refresh_token.invalid_grant")
                self._log_refresh(raw_rt, "invalid_grant")
                return _oauth_error("invalid_grant", 400, description)
            self._count("token.refresh_token.ok")
            self._log_refresh(raw_rt, "ok", **extra)
            return _json(body)
        return _oauth_error("unsupported_grant_type", 400, f"unsupported grant_type {grant_type!r}")

    def _exchange_code(
        self, client_id: str, code: str | None, redirect_uri: str | None, want_hard: bool
    ) -> Response:
        if not code or not redirect_uri:
            return _oauth_error("invalid_request", 400, "code and redirect_uri are required")
        with self._lock:
            now = self.now()
            record = self._codes.get(code)
            if record is None:
                outcome, body = "invalid_grant", None
            elif record.used:
                # Replay: Intuit warns it may revoke what the first exchange issued. We do.
                grant = self._grants.get(record.grant_id or "")
                if grant is not None:
                    grant.revoked = True
                outcome, body = "invalid_grant", None
            elif now - record.issued_at > self.code_ttl:
                del self._codes[code]
                outcome, body = "invalid_grant", None
            elif record.client_id != client_id or record.redirect_uri != redirect_uri:
                outcome, body = "invalid_grant", None
            else:
                grant = self._new_grant(client_id, record.realm_id, record.scopes, now)
                record.used, record.grant_id = True, grant.grant_id
                outcome = "ok"
                body = self._token_body(grant, now, id_token=True, want_hard=want_hard)
            self._counters[f"token.authorization_code.{outcome}"] += 1
        if body is None:
            return _oauth_error("invalid_grant", 400, "Invalid, expired or used authorization code")
        return _json(body)

    # --- revoke, userinfo, jwks, discovery, companyinfo

    def _revoke(self, request: Request) -> Response:
        client_id = self._client_from_basic(request)
        if client_id is None:
            return _oauth_error("invalid_client", 401)
        payload = request.get_json(silent=True, force=True)
        token = payload.get("token") if isinstance(payload, dict) else request.form.get("token")
        if not isinstance(token, str) or not token:
            return _oauth_error("invalid_request", 400, "token is required")
        with self._lock:
            grant_id = self._rt_index.get(token)
            if grant_id is None and token in self._access:
                grant_id = self._access[token].grant_id
            grant = self._grants.get(grant_id or "")
            if grant is None or grant.client_id != client_id or grant.revoked:
                self._counters["revoke.failed"] += 1
                return _oauth_error("invalid_request", 400, "Token is invalid or already revoked")
            grant.revoked = True
            self._counters["revoke.ok"] += 1
        return Response("", status=200)

    def _userinfo(self, request: Request) -> Response:
        token = self._bearer(request)
        grant = self._grant_for_access_token(token) if token else None
        if grant is None:
            return _oauth_error(
                "invalid_token",
                401,
                "Invalid or expired access token",
                **{"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if "openid" not in grant.scopes:
            return _oauth_error("insufficient_scope", 403, "openid scope required")
        user = self.user
        body: dict[str, Any] = {"sub": user["sub"]}
        if "email" in grant.scopes:
            body.update(email=user["email"], emailVerified=user["emailVerified"])
        if "profile" in grant.scopes:
            body.update(givenName=user["givenName"], familyName=user["familyName"])
        if "phone" in grant.scopes:
            body.update(
                phoneNumber=user["phoneNumber"], phoneNumberVerified=user["phoneNumberVerified"]
            )
        if "address" in grant.scopes:
            body["address"] = dict(user["address"])
        return _json(body)

    def _jwks(self, request: Request) -> Response:
        resp = _json({"keys": [dict(self._public_jwk)]})
        resp.headers["Cache-Control"] = "public, max-age=300"
        del resp.headers["Pragma"]
        return resp

    def _discovery(self, request: Request) -> Response:
        ep = self.endpoints
        return _json(
            {
                "issuer": ep["INTUIT_ISSUER"],
                "authorization_endpoint": ep["INTUIT_AUTHORIZATION_ENDPOINT"],
                "token_endpoint": ep["INTUIT_TOKEN_ENDPOINT"],
                "userinfo_endpoint": ep["INTUIT_USERINFO_ENDPOINT"],
                "revocation_endpoint": ep["INTUIT_REVOCATION_ENDPOINT"],
                "jwks_uri": ep["INTUIT_JWKS_URI"],
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": sorted(KNOWN_SCOPES),
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            }
        )

    def _companyinfo(self, request: Request) -> Response:
        match = _COMPANYINFO_RE.match(request.path)
        assert match is not None
        realm, realm2 = match.groups()
        token = self._bearer(request)
        grant = self._grant_for_access_token(token) if token else None
        now_iso = datetime.fromtimestamp(self.now(), UTC).isoformat(timespec="milliseconds")
        if grant is None:
            return _json({**_AUTH_FAILED_401, "time": now_iso}, 401)
        if grant.realm_id != realm or realm2 != realm or ACCOUNTING_SCOPE not in grant.scopes:
            return _json({**_AUTHZ_FAILED_403, "time": now_iso}, 403)
        name = self.company_names.get(realm, self.company_name)
        created = datetime.fromtimestamp(grant.created_at, UTC).isoformat(timespec="seconds")
        return _json(
            {
                "CompanyInfo": {
                    "CompanyName": name,
                    "LegalName": name,
                    "CompanyAddr": {
                        "Id": "1",
                        "Line1": "123 Sierra Way",
                        "City": "San Pablo",
                        "CountrySubDivisionCode": "CA",
                        "PostalCode": "87999",
                    },
                    "Country": "US",
                    "Email": {"Address": "noreply@quickbooks.com"},
                    "SupportedLanguages": "en",
                    "domain": "QBO",
                    "sparse": False,
                    "Id": "1",
                    "SyncToken": "1",
                    "MetaData": {"CreateTime": created, "LastUpdatedTime": created},
                },
                "time": now_iso,
            }
        )

    # --- admin API

    def _admin(self, request: Request) -> Response:
        """JSON control surface for tests and tools running in other processes."""
        route = (request.method, request.path)
        payload = request.get_json(silent=True, force=True) if request.method == "POST" else None
        body: dict[str, Any] = payload if isinstance(payload, dict) else {}
        try:
            if route == ("GET", "/_sim/counters"):
                return _json(self.counters())
            if route == ("POST", "/_sim/reset-counters"):
                self.reset_counters()
                return _json({"ok": True})
            if route == ("GET", "/_sim/faults"):
                return _json(self.faults())
            if route == ("POST", "/_sim/faults"):
                if isinstance(body.get("endpoints"), list):
                    body["endpoints"] = tuple(body["endpoints"])
                self.set_faults(**body)
                return _json(self.faults())
            if route == ("DELETE", "/_sim/faults"):
                self.clear_faults()
                return _json(self.faults())
            if route == ("GET", "/_sim/refresh-calls"):
                return _json(self.refresh_calls())
            if route == ("POST", "/_sim/revoke-realm"):
                return _json({"revoked_grants": self.revoke_realm(str(body["realm_id"]))})
            if route == ("POST", "/_sim/issue-tokens"):
                tokens = self.issue_tokens(
                    client_id=body["client_id"],
                    realm_id=body.get("realm_id"),
                    scopes=body.get("scopes"),
                )
                return _json(tokens)
            if route == ("GET", "/_sim/config"):
                return _json(self.config())
            if route == ("POST", "/_sim/config"):
                self.configure(**body)
                return _json(self.config())
            if route == ("POST", "/_sim/clients"):
                self.add_client(str(body["client_id"]), str(body["client_secret"]))
                return _json({"ok": True})
            if route == ("POST", "/_sim/advance-clock"):
                self.advance_clock(float(body["seconds"]))
                return _json({"now": self.now()})
            if route == ("GET", "/_sim/grants"):
                return _json(self.grants())
            if request.path.startswith("/_sim/webhooks") or request.path == "/_sim/entity-change":
                status, answer = self.webhooks.admin(request.method, request.path, body)
                return _json(answer, status)
        except (KeyError, TypeError, ValueError) as exc:
            return _json({"error": "invalid_request", "error_description": str(exc)}, 400)
        return _json({"error": "not_found"}, 404)


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until Ctrl-C or SIGTERM; print its URLs as one JSON line."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack.intuit_sim", description="Intuit OAuth 2.0 / OIDC simulator"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--auto-approve", action="store_true", help="skip the consent page")
    parser.add_argument("--client-id", default="sim-client-id")
    parser.add_argument("--client-secret", default="sim-client-secret")
    parser.add_argument(
        "--redirect-uri", action="append", help="register exactly (repeatable); default: any"
    )
    parser.add_argument("--realm-id", default="9130357766042906")
    parser.add_argument("--company-name", default="Sandbox Company_US_1")
    parser.add_argument("--refresh-grace-seconds", type=float, default=86400.0)
    parser.add_argument("--rotate-every-seconds", type=float, default=0.0)
    parser.add_argument("--access-token-ttl", type=int, default=3600)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")

    sim = IntuitSimulator(
        host=args.host,
        port=args.port,
        clients={args.client_id: args.client_secret},
        redirect_uris=args.redirect_uri,
        auto_approve=args.auto_approve,
        refresh_grace_seconds=args.refresh_grace_seconds,
        rotate_every_seconds=args.rotate_every_seconds,
        access_token_ttl=args.access_token_ttl,
        default_realm_id=args.realm_id,
        company_name=args.company_name,
    )
    try:
        sim.start()
    except OSError as exc:
        print(exc, file=sys.stderr)
        return 1
    done = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    # The secret is deliberately not printed: it was given on the command line.
    info = {"base_url": sim.base_url, "client_id": args.client_id, "endpoints": sim.endpoints}
    print(json.dumps(info), flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
