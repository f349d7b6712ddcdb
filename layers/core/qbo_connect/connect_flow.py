"""The hosted connect flow: connect links, CSRF-safe authorize redirect, callback, reconnect.

Testable without HTTP: :class:`ConnectFlow` takes a :class:`Request` (built from an HttpApi
payload 2.0 event) and answers a :class:`pages.HttpResult`; the two handlers only translate.

Connect links (``create_connect_link``)
    A link token is ``secrets.token_urlsafe(32)`` (256 bits), stored only as its SHA-256
    (``LINK#<sha256>``) with the tenant, the scopes to request (``Scopes`` plus any extra scopes
    the caller asked for, each from ``AllowedExtraScopes``), the optional return_url, the
    optional ``tenant_name`` shown on the landing page, and an expiry
    (``CONNECT_LINK_TTL_SECONDS``, 30 minutes). The answer also holds ``link_id``, which the
    signed return redirect repeats. The link is *not* consumed when the page opens, so a user
    who reloads is not locked out; it is consumed by a conditional write just before a
    connection is stored from it, so one link yields at most one connection. From then on it
    answers 410 "already used". A link that expired while its user was on Intuit's consent
    page still completes: the OAuth state, created while the link was valid, bounds that
    window (``STATE_TTL_SECONDS``, 10 minutes).

    return_url must match one of ``AllowedReturnUrls`` on path segments (``return_url``).

``GET /connect?session=...``
    Validates the link and shows the landing page, which names the application (``AppName``)
    and the tenant's display name: a GET form back to ``connect`` with the session and
    ``go=1`` and a "Connect to QuickBooks" button. ``go=1`` is honoured only as a same-origin
    navigation (``Sec-Fetch-Site: same-origin``, or no such header from a browser that sends
    none); from anywhere else the landing page answers 403 with its button, so a page
    elsewhere cannot send a person straight to Intuit. Submitting it creates the OAuth
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
       exp). (Intuit's flow uses no nonce.)
    9. The realm is proven, never taken from the query string on trust (``adopt``): the
       id_token's ``realmid`` or a CompanyInfo call with the new access token. Not the
       realm's tokens -> 403, nothing stored, the tokens revoked; Intuit unavailable for the
       check -> 503 with "Try again", nothing stored. Then a realm held by another tenant ->
       403, nothing stored (tokens dropped, not revoked).
    10. The link is consumed (conditional write); a link spent meanwhile by a concurrent
        callback -> 410, nothing stored.
    11. Store (create or reconnect), emit ``connection.created`` / ``connection.reconnected``,
        clear the cookie, then 302 to return_url with the signed result (``return_url``) or
        the success page.

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
from urllib.parse import parse_qsl, quote, urlencode

from aws_lambda_powertools import Logger
from aws_lambda_powertools.shared.cookies import Cookie, SameSite

from qbo_connect import pages, validation
from qbo_connect.adopt import Adoption, GrantAdopter
from qbo_connect.copy_table import EN, choose_language
from qbo_connect.errors import (
    AlreadyConsumed,
    ConfigurationError,
    HeldByOtherTenant,
    IdTokenInvalid,
    IntuitError,
    IntuitTransientError,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    RealmCheckUnavailable,
    RealmNotProven,
    StoreContention,
)
from qbo_connect.intuit import IntuitClient, TokenSet
from qbo_connect.outcomes import Outcome
from qbo_connect.pages import HttpResult, Link
from qbo_connect.return_url import MAX_RETURN_URL, link_id_of, return_url_allowed, with_result
from qbo_connect.store import Store
from qbo_connect.tokens import TokenVault

logger = Logger(child=True)

LINK = "LINK"
STATE = "STATE"
COOKIE_NAME = "__Host-qbo_connect_state"
TOKEN_BYTES = 32  # 256 bits for link tokens, states and nonces
OPEN_MODE_TENANT = "default"
REALM_SCOPES = frozenset({"com.intuit.quickbooks.accounting", "com.intuit.quickbooks.payment"})
MAX_QUERY_LENGTH = 4096
MAX_TENANT_NAME = 100
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
    #: ``Sec-Fetch-Site`` as the browser sent it (lower case), None when absent.
    fetch_site: str | None = None
    #: The page language chosen from ``Accept-Language``.
    language: str = EN

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Request:
        raw = event.get("rawQueryString")
        if not isinstance(raw, str):
            # Hand-written events may carry only the decoded map (no duplicates possible then).
            params = event.get("queryStringParameters") or {}
            raw = urlencode(params) if isinstance(params, dict) else ""
        raw_headers = event.get("headers")
        headers = (
            {str(k).lower(): v for k, v in raw_headers.items()}
            if isinstance(raw_headers, dict)
            else {}
        )
        cookies = event.get("cookies")
        if not isinstance(cookies, list):
            header = headers.get("cookie") or ""
            cookies = [c.strip() for c in str(header).split(";") if c.strip()]
        context = event.get("requestContext")
        context = context if isinstance(context, dict) else {}
        domain = context.get("domainName") or headers.get("host") or ""
        fetch_site = headers.get("sec-fetch-site")
        accept_language = headers.get("accept-language")
        return cls(
            language=choose_language(str(accept_language) if accept_language else None),
            raw_query=raw,
            cookies=tuple(str(c) for c in cookies),
            domain_name=str(domain),
            fetch_site=str(fetch_site).strip().lower() if fetch_site is not None else None,
        )

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


# ----- scopes ---------------------------------------------------------------------------------


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
        return_key: Callable[[], bytes] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vault = vault
        self.settings = vault.settings
        self.store: Store = vault.store
        self.adopter = GrantAdopter(vault, clock=clock)
        self._intuit = intuit or vault.intuit_client
        self._return_key = return_key or _no_return_key
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
        tenant_name = validation.optional_str(payload, "tenant_name", max_length=MAX_TENANT_NAME)
        if tenant_name is not None and not tenant_name.isprintable():
            raise InvalidRequest("tenant_name must be printable text (no control characters)")
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
        if tenant_name is not None:
            attributes["tenant_name"] = tenant_name
        self.store.put_single_use(LINK, token, attributes, expires_at=expires_at)
        link_id = link_id_of(_sha256(token))
        logger.info(
            "connect link created",
            extra={
                "tenant_id": tenant_id,
                "link_id": link_id,
                "scopes": scopes,
                "has_return_url": bool(return_url),
            },
        )
        return {
            "url": f"{base}/connect?session={token}",
            "expires_at": _now_iso(expires_at),
            "link_id": link_id,
        }

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
        tenant_name: str | None = None
        if session is not None:
            link = self._valid_link(session, now)
            if isinstance(link, HttpResult):
                return link
            tenant_id, scopes = str(link["tenant_id"]), [str(s) for s in link["scopes"]]
            return_url = link.get("return_url")
            tenant_name = link.get("tenant_name")
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
        if go is None or not _same_origin_navigation(request):
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
            return pages.landing_page(
                outcome,
                session=session,
                authorize_origin=authorize_origin,
                scopes=scopes,
                tenant_name=tenant_name if isinstance(tenant_name, str) else None,
                language=request.language,
                branding=pages.branding_from(self.settings),
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
        if realm_id is not None and not validation.is_realm_id(realm_id):
            raise _Refusal(_bad_request("The parameter “realmId” is not valid."))
        if error is not None and not _ERROR_RE.fullmatch(error):
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
                raise _Refusal(_link_used(cleared))

        return_url = record.get("return_url")
        if not (
            isinstance(return_url, str)
            and return_url_allowed(return_url, self.settings.allowed_return_urls)
        ):
            return_url = None
        # The signing key is read before anything happens at Intuit: a deployment that cannot
        # sign its return redirect fails here with nothing obtained and nothing stored.
        key = self._return_key() if return_url is not None else b""

        assert code is not None
        client, tokens = self._exchange(code, str(record["redirect_uri"]), retry, cleared)
        realm_id, claimed = self._verify_identity(client, tokens, scopes, realm_id, retry, cleared)
        adoption = self._adopt(
            client, tokens, realm_id, claimed, tenant_id, scopes, link_token, retry, cleared
        )
        status = "connected" if adoption.created else "reconnected"
        outcome = "created" if adoption.created else "reconnected"
        logger.info(
            "connection stored",
            extra={"realm_id": realm_id, "tenant_id": tenant_id, "outcome": outcome},
        )
        if return_url is not None:
            target = with_result(
                return_url,
                key=key,
                realm_id=realm_id,
                tenant_id=tenant_id,
                status=status,
                link_id=link_id_of(record.get("link_hash")),
                now=self._clock(),
            )
            return pages.redirect(target, cookies=cleared, outcome=outcome)
        return pages.success(
            company_name=adoption.company_name,
            realm_id=realm_id,
            reconnected=not adoption.created,
            cookies=cleared,
        )

    def _adopt(
        self,
        client: IntuitClient,
        tokens: TokenSet,
        realm_id: str,
        claimed: str | None,
        tenant_id: str,
        scopes: list[str],
        link_token: str | None,
        retry: Link | None,
        cleared: list[Cookie],
    ) -> Adoption:
        """Prove the realm, check its owner, spend the link, store: or refuse with a page."""
        try:
            company_name = self.adopter.prove_realm(
                client, tokens, realm_id, claimed_realm=claimed, scopes=scopes
            )
            self.adopter.existing_for(realm_id, tenant_id)
            if link_token is not None:
                # Spent before anything is stored: of two callbacks racing on one link, exactly
                # one gets past this conditional write, so one link makes at most one connection.
                try:
                    self.store.consume_single_use(LINK, link_token, now=self._clock())
                except AlreadyConsumed:
                    raise _Refusal(_link_used(cleared)) from None
            if company_name is None:
                company_name = self.adopter.company_name(client, tokens, realm_id, tuple(scopes))
            return self.adopter.store_grant(
                realm_id=realm_id,
                tenant_id=tenant_id,
                scopes=scopes,
                tokens=tokens,
                company_name=company_name,
            )
        except RealmNotProven:
            raise _Refusal(
                pages.message(
                    403,
                    "The QuickBooks sign-in could not be verified",
                    "Intuit's answer does not match the company it names, so the connection was "
                    "refused and the sign-in was cancelled at Intuit. Nothing was saved.",
                    "Start again from the app you came from.",
                    outcome="realm_not_proven",
                    cookies=cleared,
                )
            ) from None
        except RealmCheckUnavailable:
            raise _Refusal(
                pages.message(
                    503,
                    "QuickBooks is not responding",
                    "The company could not be checked with Intuit, so the connection was not "
                    "completed. Nothing was saved.",
                    "Please try again in a few minutes.",
                    link=retry,
                    outcome="realm_check_unavailable",
                    cookies=cleared,
                )
            ) from None
        except HeldByOtherTenant:
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
            ) from None
        except StoreContention:
            raise _Refusal(
                pages.message(
                    503,
                    "The connection could not be saved",
                    "The QuickBooks company was being changed at the same time. Please try again.",
                    outcome="store_conflict",
                    cookies=cleared,
                )
            ) from None

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
    ) -> tuple[str, str | None]:
        """The realm to adopt and the id_token's ``realmid`` claim, if any (validated)."""
        claimed: str | None = None

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
            value = claims.get("realmid")
            if value is not None:
                claimed = str(value)
                if not validation.is_realm_id(claimed):
                    raise refuse("Intuit's identity token names no valid company.", "realm_invalid")
        # A realmId that disagrees with the id_token is refused (and revoked) by the adopter.
        realm_id = realm_id or claimed
        if realm_id is None:
            raise refuse("Intuit did not say which company was connected.", "realm_missing")
        return realm_id, claimed


def _same_origin_navigation(request: Request) -> bool:
    """``go=1`` starts a sign-in: only from our own landing page, never from another site.

    Browsers send ``Sec-Fetch-Site``; the landing form's submission says ``same-origin``. A
    page elsewhere (``cross-site``, ``same-site``) or a typed or pasted URL (``none``) is not
    our button. A browser that sends no such header at all is let through: the state cookie
    (SameSite=Lax) and the single-use link still bind the flow to that browser.
    """
    return request.fetch_site is None or request.fetch_site == "same-origin"


def _no_return_key() -> bytes:
    raise ConfigurationError("RETURN_SIGNING_SECRET_ID is not set (template.yaml sets it)")


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


def _link_used(cookies: list[Cookie]) -> HttpResult:
    return pages.message(
        410,
        "This connect link was already used",
        "A QuickBooks company was already connected with it, maybe in another tab or browser. "
        "Nothing more was saved.",
        "Ask the app you came from for a new link if you want to connect again.",
        outcome="link_used",
        cookies=cookies,
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

    return ConnectFlow(runtime.vault(), return_key=runtime.return_signing_key)


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
