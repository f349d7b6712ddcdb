"""The hosted connect flow: connect links, CSRF-safe authorize redirect, callback, reconnect.

Testable without HTTP: :class:`ConnectFlow` takes a :class:`Request` (built from an HttpApi
payload 2.0 event) and answers a :class:`pages.HttpResult`; the two handlers only translate.

Connect links (``create_connect_link``)
    A link token is ``secrets.token_urlsafe(32)`` (256 bits), stored only as its SHA-256
    (``LINK#<sha256>``) with the tenant, the scopes to request (``Scopes`` plus any extra scopes
    the caller asked for, each from ``AllowedExtraScopes``), the optional return_url and an
    expiry (``CONNECT_LINK_TTL_SECONDS``, 30 minutes). The link is *not* consumed when the page
    opens, so a user who reloads is not locked out; it is consumed when a connection has been
    stored from it. From then on it answers 410 "already used". A link that expired while its
    user was on Intuit's consent page still completes: the OAuth state, created while the link
    was valid, bounds that window (``STATE_TTL_SECONDS``, 10 minutes).

    return_url must be http(s), carry no credentials and match one of ``AllowedReturnUrls``:
    same scheme and host:port as the prefix, and a path that starts with the prefix's path
    (no ``.``/``..`` segments). Matching is on the parsed URL, never on the raw string, so
    ``https://app.example.com`` does not allow ``https://app.example.com.evil.test``. With no
    prefix configured every return_url is refused.

``GET /connect?session=...``
    Validates the link and shows the landing page: a GET form back to ``connect`` with the
    session and ``go=1`` and a "Connect to QuickBooks" button. Submitting it creates the OAuth
    state: ``secrets.token_urlsafe(32)``, stored hashed (``STATE#<sha256>``) with its expiry,
    the tenant, scopes, return_url, redirect_uri, the link's hash and the hash of a fresh
    nonce. The nonce goes to the browser in ``__Host-qbo_connect_state`` (HttpOnly; Secure;
    SameSite=Lax; Path=/; Max-Age = the state's lifetime). The cookie value is
    ``<nonce>.<link token>``: the link token already sits in this browser's address bar, and
    carrying it lets the callback consume the link (only its hash is stored) and offer "Try
    again". Then 302 to Intuit's authorize endpoint. One flow per browser at a time: starting
    a second one replaces the cookie and the first callback fails the cookie check.

ConnectMode=open
    ``GET /connect`` without a session also works, for the single tenant ``"default"``
    (:data:`OPEN_MODE_TENANT`), with ``Scopes`` and no return_url. A tenant is deliberately not
    taken from the query string: open mode is for single-tenant internal tools, and letting
    the URL pick the tenant would let anyone file a company under any tenant. Links keep
    working in open mode (the link's tenant wins).

``GET /reconnect`` (register it as the app's Reconnect URL at Intuit)
    Intuit sends users there with none of our parameters (maybe a realmId, ignored). With a
    valid session it behaves exactly like ``/connect``; in open mode too. In link mode without
    a session we cannot know the tenant, so it answers 200 with a page telling the user to
    reconnect from the app they use, which creates a fresh link.

``GET /callback``: order of checks, all before any call to Intuit
    1. Parameters: ``state`` (<= 512), ``code`` (<= 512), ``realmId`` (digits), ``error``:
       missing, oversized or duplicated (read from ``rawQueryString``; API Gateway comma-joins
       duplicates in ``queryStringParameters``) -> 400.
    2. The state is read (not consumed): unknown -> 400, used -> 410, expired -> 410.
    3. The cookie: missing -> 403; its nonce's SHA-256 must equal the state's
       (``hmac.compare_digest``), and its link token must hash to the state's link -> 403.
    4. Only then the state is consumed with a conditional write (exactly once); a lost race
       (a concurrent replay) -> 410.

    Why check the cookie before consuming: consuming first would let anyone who learnt a
    victim's state (it travels in URLs) burn it with a cookie-less request and break the
    victim's sign-in. Checking first costs one read and loses nothing: two requests that both
    pass the check still race on the conditional consume, and exactly one wins.

    5. ``error=access_denied`` -> 200 "cancelled" page; ``invalid_scope`` -> 400; any other
       error -> 502; each with "Try again" (``connect?session=...`` while the link is unused,
       ``connect`` in open mode).
    6. realmId is required when the accounting or payment scope was requested (400); a link
       already used by another tab -> 410.
    7. The code is exchanged once (``IntuitClient.exchange_code`` never retries a request that
       may have reached Intuit). Timeout/5xx -> 503, invalid_grant or another refusal -> 502;
       nothing is stored and the exchange is not retried.
    8. With ``openid`` the id_token must be present and valid (signature via JWKS, iss, aud,
       exp); its ``realmid`` must match realmId. (Intuit's flow uses no nonce.)
    9. The company name: CompanyInfo, else userinfo's name or email, else none, through a
       one-attempt client with a short timeout. Failures here never lose the tokens.
    10. Store: a new realm -> ``create_connection``; a realm of the same tenant ->
        ``reconnect_connection`` on the version read (re-read and retry on a conflict); a realm
        held by another tenant -> 403 and nothing stored. The fresh tokens are then simply
        dropped, *not* revoked: revoking at Intuit removes the app's access to the company,
        which would kill the other tenant's working connection too.
    11. Consume the link, emit ``connection.created`` / ``connection.reconnected``, clear the
        cookie, then 302 to return_url with ``realm_id`` and ``status=connected|reconnected``
        (its query kept) or the success page.

Scopes granted = scopes requested (Intuit's token response does not list them). Tokens are
sealed with the vault's envelope encryption; no plaintext token is stored. Tokens, codes,
states and link values are never logged; query strings are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from aws_lambda_powertools import Logger
from aws_lambda_powertools.shared.cookies import Cookie, SameSite

from qbo_connect import events as lifecycle
from qbo_connect import pages, validation
from qbo_connect.errors import (
    AlreadyConsumed,
    AlreadyExists,
    ConfigurationError,
    IdTokenInvalid,
    IntuitError,
    IntuitTransientError,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    VersionConflict,
)
from qbo_connect.intuit import IntuitClient, TokenSet
from qbo_connect.pages import HttpResult, Link
from qbo_connect.store import STATUS_DISCONNECTED, Store
from qbo_connect.tokens import TokenVault

logger = Logger(child=True)

LINK = "LINK"
STATE = "STATE"
COOKIE_NAME = "__Host-qbo_connect_state"
TOKEN_BYTES = 32  # 256 bits for link tokens, states and nonces
OPEN_MODE_TENANT = "default"
REALM_SCOPES = frozenset({"com.intuit.quickbooks.accounting", "com.intuit.quickbooks.payment"})
MAX_QUERY_LENGTH = 4096
MAX_RETURN_URL = 2048
STORE_ATTEMPTS = 5
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,512}$")
_ERROR_RE = re.compile(r"^[a-z_]{1,64}$")
CONNECT_PARAMS = {"session": 512, "go": 8}
CALLBACK_PARAMS = {"code": 512, "state": 512, "realmId": 32, "error": 64, "error_description": 2048}


def _now_iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# ----- requests and parameters -----------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """The parts of an HttpApi payload 2.0 event the flow reads."""

    raw_query: str
    cookies: tuple[str, ...]
    domain_name: str

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Request:
        raw = event.get("rawQueryString")
        if not isinstance(raw, str):
            # Hand-written events may carry only the decoded map (no duplicates possible then).
            params = event.get("queryStringParameters") or {}
            raw = urlencode(params) if isinstance(params, dict) else ""
        cookies = event.get("cookies")
        if not isinstance(cookies, list):
            header = (event.get("headers") or {}).get("cookie") or ""
            cookies = [c.strip() for c in str(header).split(";") if c.strip()]
        context = event.get("requestContext") or {}
        domain = context.get("domainName") or (event.get("headers") or {}).get("host") or ""
        return cls(raw_query=raw, cookies=tuple(str(c) for c in cookies), domain_name=str(domain))

    def cookie_values(self, name: str) -> list[str]:
        values = []
        for entry in self.cookies:
            key, sep, value = entry.partition("=")
            if sep and key.strip() == name:
                values.append(value.strip())
        return values


class ParameterError(Exception):
    """A missing, oversized or duplicated parameter (answered with a 400 page)."""


def read_params(raw_query: str, limits: Mapping[str, int]) -> dict[str, str]:
    """The parameters named in ``limits``: each at most once and within its length.

    Parameters the route does not read are ignored; an empty value counts as missing.
    """
    if len(raw_query) > MAX_QUERY_LENGTH:
        raise ParameterError("The address is too long.")
    try:
        pairs = parse_qsl(raw_query, keep_blank_values=True, max_num_fields=64)
    except ValueError:
        raise ParameterError("The address has too many parameters.") from None
    found: dict[str, str] = {}
    for key, value in pairs:
        if key not in limits:
            continue
        if key in found:
            raise ParameterError(f"The parameter “{key}” was given more than once.")
        if len(value) > limits[key]:
            raise ParameterError(f"The parameter “{key}” is too long.")
        found[key] = value
    return {k: v for k, v in found.items() if v}


# ----- return_url and scopes -------------------------------------------------------------------


def return_url_allowed(url: str, prefixes: Iterable[str]) -> bool:
    """True when ``url`` is http(s), has no credentials and sits under an allowed prefix."""
    if len(url) > MAX_RETURN_URL or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return False
    if "\\" in url:
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        return False
    segments = unquote(parts.path).split("/")
    if ".." in segments or "." in segments:
        return False
    path = parts.path or "/"
    for prefix in prefixes:
        try:
            allowed = urlsplit(prefix.strip())
        except ValueError:
            continue
        if allowed.scheme not in ("http", "https") or not allowed.netloc:
            continue
        if allowed.scheme != parts.scheme or allowed.netloc.lower() != parts.netloc.lower():
            continue
        if not path.startswith(allowed.path or "/"):
            continue
        if (allowed.query or allowed.fragment) and not url.startswith(prefix.strip()):
            continue
        return True
    return False


def with_result(url: str, realm_id: str, status: str) -> str:
    """return_url with ``realm_id`` and ``status`` set, its other parameters kept."""
    parts = urlsplit(url)
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("realm_id", "status")
    ]
    query += [("realm_id", realm_id), ("status", status)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _requested_scopes(value: Any, base: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    """``Scopes`` plus the extra scopes a link asks for (each from ``AllowedExtraScopes``)."""
    if value is None:
        extras: list[str] = []
    elif isinstance(value, str):
        extras = value.split()
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        extras = [v.strip() for v in value if v.strip()]
    else:
        raise InvalidRequest("scopes must be a list of strings or a space-separated string")
    refused = sorted({s for s in extras if s not in allowed and s not in base})
    if refused:
        raise InvalidRequest(
            f"scopes not allowed: {', '.join(refused)} (allowed extra scopes: "
            f"{', '.join(allowed) or 'none'})"
        )
    return list(dict.fromkeys([*base, *extras]))


# ----- cookies ---------------------------------------------------------------------------------


def state_cookie(value: str, max_age: int) -> Cookie:
    return Cookie(
        name=COOKIE_NAME,
        value=value,
        path="/",
        secure=True,
        http_only=True,
        max_age=max(1, int(max_age)),
        same_site=SameSite.LAX_MODE,
    )


def clear_state_cookie() -> Cookie:
    return Cookie(
        name=COOKIE_NAME,
        value="",
        path="/",
        secure=True,
        http_only=True,
        max_age=0,
        same_site=SameSite.LAX_MODE,
    )


# ----- the flow --------------------------------------------------------------------------------


class _Refusal(Exception):
    """Ends the callback early with a page (internal control flow)."""

    def __init__(self, result: HttpResult) -> None:
        super().__init__(result.outcome)
        self.result = result


class ConnectFlow:
    """Connect links, the authorize redirect and the callback, for one deployment."""

    def __init__(
        self,
        vault: TokenVault,
        *,
        intuit: Callable[[], IntuitClient] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vault = vault
        self.settings = vault.settings
        self.store: Store = vault.store
        self._intuit = intuit or vault.intuit_client
        self._clock = clock

    # ----- create_connect_link -------------------------------------------------------------

    def create_link(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        tenant_id = validation.tenant_id(payload)
        return_url = validation.optional_str(payload, "return_url", max_length=MAX_RETURN_URL)
        if return_url is not None and not return_url_allowed(
            return_url, self.settings.allowed_return_urls
        ):
            raise InvalidRequest(
                "return_url is not allowed: it must be an http(s) URL without credentials "
                "under one of AllowedReturnUrls"
                + ("" if self.settings.allowed_return_urls else " (none are configured)")
            )
        scopes = _requested_scopes(
            payload.get("scopes"), self.settings.scopes, self.settings.allowed_extra_scopes
        )
        base = self.settings.public_base_url or self.settings.connect_base_url
        if not base:
            raise ConfigurationError(
                "connect links need PUBLIC_BASE_URL or CONNECT_BASE_URL (template.yaml sets it)"
            )
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._clock()
        expires_at = now + self.settings.connect_link_ttl_seconds
        attributes: dict[str, Any] = {"tenant_id": tenant_id, "scopes": scopes, "created_at": now}
        if return_url is not None:
            attributes["return_url"] = return_url
        self.store.put_single_use(LINK, token, attributes, expires_at=expires_at)
        logger.info(
            "connect link created",
            extra={"tenant_id": tenant_id, "scopes": scopes, "has_return_url": bool(return_url)},
        )
        return {"url": f"{base}/connect?session={token}", "expires_at": _now_iso(expires_at)}

    # ----- GET /connect and GET /reconnect -------------------------------------------------

    def connect(self, request: Request, *, reconnect: bool = False) -> HttpResult:
        try:
            params = read_params(request.raw_query, CONNECT_PARAMS)
        except ParameterError as exc:
            return _bad_request(str(exc))
        session = params.get("session")
        go = params.get("go")
        if go is not None and go != "1":
            return _bad_request("The parameter “go” is not valid.")
        now = self._clock()
        link_hash: str | None = None
        return_url: str | None = None
        if session is not None:
            link = self._valid_link(session, now)
            if isinstance(link, HttpResult):
                return link
            tenant_id, scopes = str(link["tenant_id"]), [str(s) for s in link["scopes"]]
            return_url = link.get("return_url")
            link_hash = _sha256(session)
        elif self.settings.connect_mode == "open":
            tenant_id, scopes = OPEN_MODE_TENANT, list(self.settings.scopes)
        elif reconnect:
            return pages.message(
                200,
                "Reconnect QuickBooks from your app",
                "To reconnect your QuickBooks company, open the app you use it with and choose "
                "to reconnect QuickBooks there.",
                "The app brings you back here with a fresh, personal link.",
                outcome="reconnect_info",
            )
        else:
            return pages.message(
                400,
                "A connect link is needed",
                "This page works only with the personal link the app gives you.",
                "Open the app you came from and start connecting QuickBooks again there.",
                outcome="link_required",
            )

        authorize_origin = pages.origin_of(self.settings.intuit.authorization)
        if go is None:
            return pages.landing(
                session=session, reconnect=reconnect, authorize_origin=authorize_origin
            )

        state = secrets.token_urlsafe(TOKEN_BYTES)
        nonce = secrets.token_urlsafe(TOKEN_BYTES)
        redirect_uri = self.redirect_uri(request)
        try:
            authorize = self._intuit().authorize_url(
                scopes=scopes, redirect_uri=redirect_uri, state=state
            )
        except ConfigurationError as exc:
            return _misconfigured(exc)
        attributes: dict[str, Any] = {
            "tenant_id": tenant_id,
            "scopes": scopes,
            "nonce_hash": _sha256(nonce),
            "redirect_uri": redirect_uri,
            "created_at": now,
        }
        if link_hash is not None:
            attributes["link_hash"] = link_hash
        if return_url:
            attributes["return_url"] = return_url
        ttl = self.settings.state_ttl_seconds
        self.store.put_single_use(STATE, state, attributes, expires_at=now + ttl)
        cookie_value = f"{nonce}.{session}" if session else nonce
        logger.info("redirecting to Intuit", extra={"tenant_id": tenant_id, "scopes": scopes})
        return pages.redirect(
            authorize, cookies=[state_cookie(cookie_value, ttl)], outcome="authorize"
        )

    def redirect_uri(self, request: Request) -> str:
        """The callback URL registered at Intuit: PublicBaseUrl's, else the API's own."""
        if self.settings.public_base_url:
            return f"{self.settings.public_base_url}/callback"
        return f"https://{request.domain_name}/callback"

    def _single_use(self, kind: str, secret: str, now: float) -> tuple[str, dict[str, Any]]:
        """Classify a link or state value: ``live``, ``unknown``, ``used`` or ``expired``.

        Only a live item authorises anything; the other answers pick the page to show.
        """
        if not _TOKEN_RE.match(secret):
            return "unknown", {}
        item = self.store.get_single_use(kind, secret, now=now)
        if item is not None:
            return "live", item
        item = self.store.peek_single_use(kind, secret)
        if item is None:
            return "unknown", {}
        return ("used" if item.get("used_at") else "expired"), item

    def _valid_link(self, session: str, now: float) -> dict[str, Any] | HttpResult:
        status, item = self._single_use(LINK, session, now)
        if status == "live":
            return item
        if status == "unknown":
            return pages.message(
                404,
                "This connect link is not valid",
                "Check that the whole link was copied, or ask the app you came from for a new one.",
                outcome="link_unknown",
            )
        if status == "used":
            return pages.message(
                410,
                "This connect link was already used",
                "A QuickBooks company was already connected with it. Each link works once: ask "
                "the app you came from for a new one if you want to connect again.",
                outcome="link_used",
            )
        return pages.message(
            410,
            "This connect link has expired",
            "Connect links are valid for a short time. Ask the app you came from for a new one.",
            outcome="link_expired",
        )

    # ----- GET /callback -------------------------------------------------------------------

    def callback(self, request: Request) -> HttpResult:
        try:
            return self._callback(request)
        except _Refusal as refusal:
            logger.info("callback refused", extra={"outcome": refusal.result.outcome})
            return refusal.result

    def _callback(self, request: Request) -> HttpResult:
        try:
            params = read_params(request.raw_query, CALLBACK_PARAMS)
        except ParameterError as exc:
            raise _Refusal(_bad_request(str(exc))) from None
        state = params.get("state")
        code = params.get("code")
        error = params.get("error")
        realm_id = params.get("realmId")
        if state is None:
            raise _Refusal(_bad_request("The parameter “state” is missing."))
        if error is None and code is None:
            raise _Refusal(_bad_request("The parameter “code” is missing."))
        if realm_id is not None and not validation.REALM_ID.match(realm_id):
            raise _Refusal(_bad_request("The parameter “realmId” is not valid."))
        if error is not None and not _ERROR_RE.match(error):
            error = "other"

        now = self._clock()
        record = self._load_state(state, now)
        link_token = self._check_cookie(request, record)
        try:
            self.store.consume_single_use(STATE, state, now=now)
        except AlreadyConsumed:
            raise _Refusal(_state_used()) from None
        cleared = [clear_state_cookie()]
        tenant_id = str(record["tenant_id"])
        scopes = [str(s) for s in record["scopes"]]
        retry = self._retry_link(link_token, now)

        if error is not None:
            return _intuit_error_page(error, retry, cleared)
        if REALM_SCOPES & set(scopes) and realm_id is None:
            raise _Refusal(
                pages.message(
                    400,
                    "QuickBooks did not say which company to connect",
                    "The answer from Intuit lacks the company ID. Nothing was saved.",
                    link=retry,
                    outcome="realm_missing",
                    cookies=cleared,
                )
            )
        if link_token is not None:
            link = self.store.peek_single_use(LINK, link_token)
            if link is not None and link.get("used_at"):
                raise _Refusal(
                    pages.message(
                        410,
                        "This connect link was already used",
                        "A QuickBooks company was already connected with it, maybe in another "
                        "tab. Nothing more was saved.",
                        outcome="link_used",
                        cookies=cleared,
                    )
                )

        assert code is not None
        client, tokens = self._exchange(code, str(record["redirect_uri"]), retry, cleared)
        realm_id = self._verify_identity(client, tokens, scopes, realm_id, retry, cleared)
        company_name = self._company_name(client, tokens, realm_id, scopes)
        created = self._store_connection(realm_id, tenant_id, scopes, tokens, company_name, cleared)

        if link_token is not None:
            try:
                self.store.consume_single_use(LINK, link_token, now=self._clock())
            except AlreadyConsumed:
                logger.info("connect link was already used or expired when consumed")
        status = "connected" if created else "reconnected"
        outcome = "created" if created else "reconnected"
        logger.info(
            "connection stored",
            extra={"realm_id": realm_id, "tenant_id": tenant_id, "outcome": outcome},
        )
        return_url = record.get("return_url")
        if isinstance(return_url, str) and return_url_allowed(
            return_url, self.settings.allowed_return_urls
        ):
            return pages.redirect(
                with_result(return_url, realm_id, status), cookies=cleared, outcome=outcome
            )
        return pages.success(
            company_name=company_name, realm_id=realm_id, reconnected=not created, cookies=cleared
        )

    def _load_state(self, state: str, now: float) -> dict[str, Any]:
        status, record = self._single_use(STATE, state, now)
        if status == "live":
            return record
        if status == "unknown":
            raise _Refusal(
                pages.message(
                    400,
                    "This sign-in attempt is not recognised",
                    "Start again from the app you came from.",
                    outcome="state_unknown",
                )
            )
        if status == "used":
            raise _Refusal(_state_used())
        raise _Refusal(
            pages.message(
                410,
                "This sign-in attempt has expired",
                "It took too long between leaving for Intuit and coming back. Nothing was "
                "saved. Start again from the app you came from.",
                outcome="state_expired",
            )
        )

    def _check_cookie(self, request: Request, record: Mapping[str, Any]) -> str | None:
        """The link token from a cookie that matches the state's nonce (and link), or refuse."""
        values = request.cookie_values(COOKIE_NAME)
        if not values:
            raise _Refusal(_cookie_refused("cookie_missing"))
        if len(values) != 1:
            raise _Refusal(_cookie_refused("cookie_mismatch"))
        nonce, _, link_token = values[0].partition(".")
        expected_nonce = str(record.get("nonce_hash") or "")
        nonce_ok = hmac.compare_digest(_sha256(nonce).encode(), expected_nonce.encode())
        link_hash = record.get("link_hash")
        if link_hash:
            link_ok = hmac.compare_digest(_sha256(link_token).encode(), str(link_hash).encode())
        else:
            link_ok = link_token == ""
        if not (nonce_ok and link_ok and expected_nonce):
            raise _Refusal(_cookie_refused("cookie_mismatch"))
        return link_token or None

    def _retry_link(self, link_token: str | None, now: float) -> Link | None:
        if link_token is not None:
            if self.store.get_single_use(LINK, link_token, now=now) is None:
                return None
            return Link(f"connect?session={quote(link_token, safe='')}", "Try again")
        if self.settings.connect_mode == "open":
            return Link("connect", "Try again")
        return None

    def _exchange(
        self, code: str, redirect_uri: str, retry: Link | None, cleared: list[Cookie]
    ) -> tuple[IntuitClient, TokenSet]:
        try:
            client = self._intuit()
            return client, client.exchange_code(code, redirect_uri)
        except ConfigurationError as exc:
            raise _Refusal(_misconfigured(exc, cookies=cleared)) from None
        except IntuitTransientError as exc:
            logger.warning(
                "code exchange failed: Intuit unavailable",
                extra={"status": exc.status, "intuit_tid": exc.intuit_tid},
            )
            raise _Refusal(
                pages.message(
                    503,
                    "QuickBooks is not responding",
                    "Intuit did not answer in time, so the connection could not be completed. "
                    "Nothing was saved.",
                    "Please try again in a few minutes.",
                    link=retry,
                    outcome="exchange_unavailable",
                    cookies=cleared,
                )
            ) from None
        except IntuitError as exc:
            level = logger.error if isinstance(exc, InvalidClient) else logger.warning
            level(
                "code exchange refused by Intuit",
                extra={"status": exc.status, "error": exc.error, "intuit_tid": exc.intuit_tid},
            )
            detail = (
                "The sign-in had expired or was already used."
                if isinstance(exc, InvalidGrant)
                else "Intuit refused to complete the sign-in."
            )
            raise _Refusal(
                pages.message(
                    502,
                    "QuickBooks did not accept the sign-in",
                    f"{detail} Nothing was saved.",
                    link=retry,
                    outcome="exchange_refused",
                    cookies=cleared,
                )
            ) from None

    def _verify_identity(
        self,
        client: IntuitClient,
        tokens: TokenSet,
        scopes: list[str],
        realm_id: str | None,
        retry: Link | None,
        cleared: list[Cookie],
    ) -> str:
        def refuse(reason: str, outcome: str, status: int = 502) -> _Refusal:
            return _Refusal(
                pages.message(
                    status,
                    "The QuickBooks sign-in could not be verified",
                    f"{reason} Nothing was saved.",
                    link=retry,
                    outcome=outcome,
                    cookies=cleared,
                )
            )

        if "openid" in scopes:
            if not tokens.id_token:
                raise refuse("Intuit sent no identity token.", "id_token_missing")
            try:
                claims = client.validate_id_token(tokens.id_token)
            except IdTokenInvalid as exc:
                logger.warning("id_token rejected", extra={"reason": str(exc)})
                raise refuse("Intuit's identity token is not valid.", "id_token_invalid") from None
            except IntuitTransientError:
                raise refuse(
                    "Intuit's signing keys could not be fetched.", "id_token_unverified", 503
                ) from None
            claimed = claims.get("realmid")
            if claimed is not None:
                claimed = str(claimed)
                if realm_id is not None and claimed != realm_id:
                    logger.warning("realmId does not match the id_token's realmid")
                    raise refuse(
                        "The company in the answer does not match the identity token.",
                        "realm_mismatch",
                    )
                if realm_id is None and validation.REALM_ID.match(claimed):
                    realm_id = claimed
        if realm_id is None:
            raise refuse("Intuit did not say which company was connected.", "realm_missing")
        return realm_id

    def _company_name(
        self, client: IntuitClient, tokens: TokenSet, realm_id: str, scopes: list[str]
    ) -> str | None:
        """Best effort, one quick attempt each: CompanyInfo, then userinfo. Never raises."""
        quick = IntuitClient(
            client.endpoints,
            client.credentials,
            timeout=min(3.0, self.settings.intuit_timeout_seconds),
            max_attempts=1,
            session=client.session,
        )
        name: Any = None
        if "com.intuit.quickbooks.accounting" in scopes:
            try:
                name = quick.company_info(realm_id, tokens.access_token).get("CompanyName")
            except Exception as exc:
                logger.info(
                    "company name unavailable from CompanyInfo",
                    extra={"realm_id": realm_id, "error_type": type(exc).__name__},
                )
        if not (isinstance(name, str) and name.strip()) and "openid" in scopes:
            try:
                info = quick.userinfo(tokens.access_token)
                person = " ".join(
                    str(info.get(k) or "").strip() for k in ("givenName", "familyName")
                ).strip()
                name = person or info.get("email")
            except Exception as exc:
                logger.info(
                    "name unavailable from userinfo",
                    extra={"realm_id": realm_id, "error_type": type(exc).__name__},
                )
        if isinstance(name, str) and name.strip():
            return name.strip()[:256]
        return None

    def _store_connection(
        self,
        realm_id: str,
        tenant_id: str,
        scopes: list[str],
        tokens: TokenSet,
        company_name: str | None,
        cleared: list[Cookie],
    ) -> bool:
        """Create or reconnect; True when created. Refuses a realm held by another tenant.

        The created / reconnected event is recorded in the same write and published after it
        (the outbox, see ``events.py``): it goes out at least once even if this process dies.
        """
        sealed = self.vault.seal(realm_id, tokens)
        environment = self.settings.intuit.environment
        detail = {
            "realm_id": realm_id,
            "tenant_id": tenant_id,
            "environment": environment,
            "scopes": sorted(set(scopes)),
        }
        for _ in range(STORE_ATTEMPTS):
            now = self._clock()
            due_at = self.vault.due_at_for_new(sealed, now)
            existing = self.store.get_connection(realm_id, consistent=True)
            if (
                existing is not None
                and existing.tenant_id != tenant_id
                and existing.status != STATUS_DISCONNECTED
            ):
                logger.warning(
                    "realm held by another tenant; tokens dropped, nothing stored",
                    extra={"realm_id": realm_id, "tenant_id": tenant_id},
                )
                raise _Refusal(
                    pages.message(
                        403,
                        "This QuickBooks company is connected to another account",
                        "A QuickBooks company can be connected to one account of this service "
                        "at a time. Nothing was saved.",
                        "Ask whoever connected it to disconnect it first, then try again.",
                        outcome="other_tenant",
                        cookies=cleared,
                    )
                )
            # A disconnected realm taken by a new tenant is a new connection for that tenant.
            created = existing is None or existing.tenant_id != tenant_id
            event = lifecycle.PendingEvent.new(
                lifecycle.CREATED if created else lifecycle.RECONNECTED, detail, now=now
            )
            try:
                if existing is None:
                    conn = self.store.create_connection(
                        realm_id=realm_id,
                        tenant_id=tenant_id,
                        environment=environment,
                        scopes=scopes,
                        tokens=sealed,
                        now=now,
                        company_name=company_name,
                        due_at=due_at,
                        event=event,
                    )
                else:
                    conn = self.store.reconnect_connection(
                        realm_id=realm_id,
                        tenant_id=tenant_id,
                        seen_version=existing.version,
                        environment=environment,
                        scopes=scopes,
                        tokens=sealed,
                        now=now,
                        company_name=company_name,
                        due_at=due_at,
                        event=event,
                    )
                self.vault.flush_events(conn)
                return created
            except (AlreadyExists, VersionConflict):
                logger.info(
                    "connection changed concurrently; re-reading", extra={"realm_id": realm_id}
                )
        raise _Refusal(
            pages.message(
                503,
                "The connection could not be saved",
                "The QuickBooks company was being changed at the same time. Please try again.",
                outcome="store_conflict",
                cookies=cleared,
            )
        )


# ----- pages used in several places ------------------------------------------------------------


def _bad_request(detail: str) -> HttpResult:
    return pages.message(
        400,
        "This request is not valid",
        detail,
        "Start again from the app you came from.",
        outcome="bad_request",
    )


def _state_used() -> HttpResult:
    return pages.message(
        410,
        "This sign-in attempt was already used",
        "Each sign-in with Intuit can be completed once. Start again from the app you came "
        "from if you want to connect again.",
        outcome="state_used",
    )


def _cookie_refused(outcome: str) -> HttpResult:
    return pages.message(
        403,
        "This sign-in attempt cannot be verified",
        "It was started in another browser or tab, or the browser did not send back the cookie "
        "that ties it to you. Nothing was saved.",
        "Start again in this browser from the app you came from.",
        outcome=outcome,
    )


def _misconfigured(exc: ConfigurationError, cookies: Iterable[Cookie] = ()) -> HttpResult:
    logger.error("configuration error", extra={"detail": exc.message})
    return pages.message(
        500,
        "This service is not set up correctly",
        "Its administrator needs to finish the setup. Nothing was saved.",
        outcome="configuration_error",
        cookies=list(cookies),
    )


def internal_error() -> HttpResult:
    return pages.message(
        500,
        "Something went wrong",
        "The connection could not be completed. Please try again in a moment.",
        outcome="internal_error",
    )


def not_found() -> HttpResult:
    return pages.message(404, "Page not found", "There is nothing here.", outcome="not_found")


def _intuit_error_page(error: str, retry: Link | None, cookies: list[Cookie]) -> HttpResult:
    if error == "access_denied":
        return pages.message(
            200,
            "Connection cancelled",
            "You chose not to connect your QuickBooks company. Nothing was saved.",
            link=retry,
            note=None if retry else "To connect later, start again from the app you came from.",
            outcome="denied",
            cookies=cookies,
        )
    if error == "invalid_scope":
        return pages.message(
            400,
            "QuickBooks refused the requested permissions",
            "Intuit does not allow this app the access it asked for. Nothing was saved.",
            link=retry,
            outcome="invalid_scope",
            cookies=cookies,
        )
    return pages.message(
        502,
        "QuickBooks could not complete the connection",
        "Intuit reported a problem. Nothing was saved.",
        link=retry,
        outcome="intuit_error",
        cookies=cookies,
    )


# ----- entry points for the handlers -----------------------------------------------------------


def _flow() -> ConnectFlow:
    from qbo_connect import runtime

    return ConnectFlow(runtime.vault())


def create_connect_link_action(payload: Mapping[str, Any]) -> dict[str, Any]:
    """ConnectionsFunction ``create_connect_link``: ``{"url", "expires_at"}``."""
    return _flow().create_link(payload)


def handle_connect(event: Mapping[str, Any], *, reconnect: bool = False) -> HttpResult:
    """``GET /connect`` and ``GET /reconnect``."""
    request = Request.from_event(event)
    try:
        return _flow().connect(request, reconnect=reconnect)
    except ConfigurationError as exc:
        return _misconfigured(exc)


def handle_callback(event: Mapping[str, Any]) -> HttpResult:
    """``GET /callback``."""
    request = Request.from_event(event)
    try:
        return _flow().callback(request)
    except ConfigurationError as exc:
        return _misconfigured(exc)
