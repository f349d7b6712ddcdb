"""``GET /callback``: where Intuit sends the person back. Every check before any call to Intuit.

1. Parameters: ``state`` (<= 512), ``code`` (<= 512), ``realmId`` (digits), ``error``:
   missing, oversized or duplicated (read from the raw query string) -> 400.
2. The state is read (not consumed): unknown -> 400, used -> 410, expired -> 410.
3. The cookie: missing -> 403; its nonce's SHA-256 must equal the state's
   (``hmac.compare_digest``), and its link token must hash to the state's link -> 403.
4. Only then the state is consumed with a conditional write (exactly once); a lost race (a
   concurrent replay) -> 410. Checking the cookie first means nobody who learnt a victim's
   state (it travels in URLs) can burn it with a cookie-less request; two requests that both
   pass the check still race on the conditional consume, and exactly one wins.
5. ``error=access_denied`` -> 200 "cancelled"; ``invalid_scope`` -> 400; any other -> 502;
   each with "Try again" while the link is unused (``connect`` in open mode).
6. realmId is required when the accounting or payment scope was requested (400); a link
   already used by another tab -> 410.
7. The code is exchanged once (``IntuitClient.exchange_code`` never retries a request that may
   have reached Intuit). Timeout/5xx -> 503, a refusal -> 502; nothing is stored.
8. With ``openid`` the id_token must be present and valid (signature via JWKS, iss, aud, exp).
9. The realm is proven, never taken from the query string on trust (``adopt``): the id_token's
   ``realmid`` or a CompanyInfo call with the new access token. Not the realm's tokens -> 403,
   nothing stored, the tokens revoked; Intuit unavailable for the check -> 503. A realm held by
   another tenant -> 403, nothing stored (tokens dropped, not revoked).
10. The link is consumed (conditional write); a link spent meanwhile -> 410, nothing stored.
11. Store, emit ``connection.created`` / ``connection.reconnected``, clear the cookie, then 302
    to return_url with the signed result (``return_url``) or the success page, which says what
    happens next.

Every refusal after the state is consumed clears the cookie; a page for a link that carried a
return_url offers "Return to <AppName>". Tokens, codes, states and link values are never logged.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.shared.cookies import Cookie

from qbo_connect import validation
from qbo_connect.connect.base import LINK, STATE, FlowBase, logger, misconfigured
from qbo_connect.connect.links import LinkSteps
from qbo_connect.connect.outcomes import Outcome
from qbo_connect.connect.pages import HttpResult
from qbo_connect.connect.request import (
    COOKIE_NAME,
    Request,
    clear_state_cookie,
    read_params,
    sha256,
)
from qbo_connect.connect.results import Ending
from qbo_connect.connect.return_url import link_id_of, with_result
from qbo_connect.errors import (
    AlreadyConsumed,
    ConfigurationError,
    HeldByOtherTenant,
    IdTokenInvalid,
    IntuitError,
    IntuitTransientError,
    InvalidClient,
    ParameterError,
    RealmCheckUnavailable,
    RealmNotProven,
    Refusal,
    StoreContention,
)
from qbo_connect.intuit import IntuitClient, TokenSet
from qbo_connect.vault.adoption import Adoption
from qbo_connect.vault.history import CALLBACK

CALLBACK_PARAMS = {"code": 512, "state": 512, "realmId": 32, "error": 64, "error_description": 2048}
REALM_SCOPES = frozenset({"com.intuit.quickbooks.accounting", "com.intuit.quickbooks.payment"})
_ERROR_RE = re.compile(r"^[a-z_]{1,64}$")
STATE_OUTCOMES = {
    "unknown": Outcome.STATE_UNKNOWN,
    "used": Outcome.STATE_USED,
    "expired": Outcome.STATE_EXPIRED,
}
_INTUIT_ERRORS = {"access_denied": Outcome.DENIED, "invalid_scope": Outcome.INVALID_SCOPE}


def bad_request(detail: str) -> Ending:
    return Ending(Outcome.BAD_REQUEST, detail=detail)


class _Context:
    """What a refusal after the state is consumed carries to its page."""

    def __init__(self, retry: str | None, return_url: str | None) -> None:
        self.retry = retry
        self.return_url = return_url
        self.cookies: list[Cookie] = [clear_state_cookie()]

    def refuse(self, outcome: Outcome) -> Refusal:
        return Refusal(
            Ending(outcome, cookies=self.cookies, retry=self.retry, return_url=self.return_url)
        )


class CallbackSteps(LinkSteps, FlowBase):
    def callback(self, request: Request) -> HttpResult:
        try:
            return self._callback(request)
        except Refusal as refusal:
            logger.info("callback refused", extra={"outcome": refusal.ending.outcome.value})
            return self.answer(refusal.ending, request)
        except ConfigurationError as exc:
            return self.answer(misconfigured(exc, [clear_state_cookie()]), request)

    def _callback(self, request: Request) -> HttpResult:
        try:
            params = read_params(request.raw_query, CALLBACK_PARAMS)
        except ParameterError as exc:
            logger.info("bad callback request", extra={"detail": str(exc)})
            raise Refusal(bad_request(str(exc))) from None
        state, code = params.get("state"), params.get("code")
        error, realm_id = params.get("error"), params.get("realmId")
        missing = "state" if state is None else "code" if error is None and code is None else None
        if missing:
            raise Refusal(bad_request(f"The parameter “{missing}” is missing."))
        if realm_id is not None and not validation.is_realm_id(realm_id):
            raise Refusal(bad_request("The parameter “realmId” is not valid."))
        assert state is not None
        if error is not None and not _ERROR_RE.fullmatch(error):
            error = "other"

        now = self._clock()
        record = self._load_state(state, now)
        link_token = self._check_cookie(request, record)
        return_url = self._return_url_of(record)
        try:
            self.single_use.consume_single_use(STATE, state, now=now)
        except AlreadyConsumed:
            raise Refusal(Ending(Outcome.STATE_USED, return_url=return_url)) from None
        tenant_id = str(record["tenant_id"])
        scopes = [str(s) for s in record["scopes"]]
        ctx = _Context(self._retry_link(link_token, now), return_url)

        if error is not None:
            raise ctx.refuse(_INTUIT_ERRORS.get(error, Outcome.INTUIT_ERROR))
        if REALM_SCOPES & set(scopes) and realm_id is None:
            raise ctx.refuse(Outcome.REALM_MISSING)
        if link_token is not None:
            link = self.single_use.peek_single_use(LINK, link_token)
            if link is not None and link.get("used_at"):
                raise ctx.refuse(Outcome.LINK_USED)

        # The signing key is read before anything happens at Intuit: a deployment that cannot
        # sign its return redirect fails here with nothing obtained and nothing stored.
        key = self._return_key() if return_url is not None else b""
        assert code is not None
        client, tokens = self._exchange(code, str(record["redirect_uri"]), ctx)
        realm_id, claimed = self._verify_identity(client, tokens, scopes, realm_id, ctx)
        adoption = self._adopt(
            client, tokens, realm_id, claimed, tenant_id, scopes, link_token, ctx
        )
        outcome = Outcome.CREATED if adoption.created else Outcome.RECONNECTED
        logger.info(
            "connection stored",
            extra={"realm_id": realm_id, "tenant_id": tenant_id, "outcome": outcome.value},
        )
        history = self.history
        history.record(
            realm_id,
            source=CALLBACK,
            outcome="connected" if adoption.created else "reconnected",
            version=adoption.connection.version,
            tenant_id=tenant_id,
        )
        ending = Ending(
            outcome, cookies=ctx.cookies, company_name=adoption.company_name, realm_id=realm_id
        )
        if return_url is not None:
            ending.location = with_result(
                return_url,
                key=key,
                realm_id=realm_id,
                tenant_id=tenant_id,
                status="connected" if adoption.created else "reconnected",
                link_id=link_id_of(record.get("link_hash")),
                now=self._clock(),
            )
        return self.answer(ending, request)

    def _adopt(
        self,
        client: IntuitClient,
        tokens: TokenSet,
        realm_id: str,
        claimed: str | None,
        tenant_id: str,
        scopes: list[str],
        link_token: str | None,
        ctx: _Context,
    ) -> Adoption:
        """Prove the realm, check its owner, spend the link, store: or refuse."""
        try:
            company_name = self.adopter.prove_realm(
                client, tokens, realm_id, claimed_realm=claimed, scopes=scopes, tenant_id=tenant_id
            )
            self.adopter.existing_for(realm_id, tenant_id)
            if link_token is not None:
                # Spent before anything is stored: of two callbacks racing on one link, exactly
                # one gets past this conditional write, so one link makes at most one connection.
                try:
                    self.single_use.consume_single_use(LINK, link_token, now=self._clock())
                except AlreadyConsumed:
                    raise ctx.refuse(Outcome.LINK_USED) from None
            if company_name is None:
                company_name = self.adopter.company_name(
                    client, tokens, realm_id, tuple(scopes), tenant_id
                )
            return self.adopter.store_grant(
                realm_id=realm_id,
                tenant_id=tenant_id,
                scopes=scopes,
                tokens=tokens,
                company_name=company_name,
            )
        except RealmNotProven:
            raise ctx.refuse(Outcome.REALM_NOT_PROVEN) from None
        except RealmCheckUnavailable:
            raise ctx.refuse(Outcome.REALM_CHECK_UNAVAILABLE) from None
        except HeldByOtherTenant:
            raise ctx.refuse(Outcome.OTHER_TENANT) from None
        except StoreContention:
            raise ctx.refuse(Outcome.STORE_CONFLICT) from None

    def _load_state(self, state: str, now: float) -> dict[str, Any]:
        return self._live_or_refuse(STATE, state, now, STATE_OUTCOMES)

    def _check_cookie(self, request: Request, record: Mapping[str, Any]) -> str | None:
        """The link token from a cookie that matches the state's nonce (and link), or refuse."""
        values = request.cookie_values(COOKIE_NAME)
        if not values:
            raise Refusal(Ending(Outcome.COOKIE_MISSING))
        if len(values) != 1:
            raise Refusal(Ending(Outcome.COOKIE_MISMATCH))
        nonce, _, link_token = values[0].partition(".")
        expected_nonce = str(record.get("nonce_hash") or "")
        nonce_ok = hmac.compare_digest(sha256(nonce).encode(), expected_nonce.encode())
        link_hash = record.get("link_hash")
        if link_hash:
            link_ok = hmac.compare_digest(sha256(link_token).encode(), str(link_hash).encode())
        else:
            link_ok = link_token == ""
        if not (nonce_ok and link_ok and expected_nonce):
            raise Refusal(Ending(Outcome.COOKIE_MISMATCH))
        return link_token or None

    def _exchange(
        self, code: str, redirect_uri: str, ctx: _Context
    ) -> tuple[IntuitClient, TokenSet]:
        try:
            client = self._intuit()
            return client, client.exchange_code(code, redirect_uri)
        except ConfigurationError as exc:
            raise Refusal(misconfigured(exc, ctx.cookies)) from None
        except IntuitTransientError as exc:
            logger.warning(
                "code exchange failed: Intuit unavailable",
                extra={"status": exc.status, "intuit_tid": exc.intuit_tid},
            )
            raise ctx.refuse(Outcome.EXCHANGE_UNAVAILABLE) from None
        except IntuitError as exc:
            level = logger.error if isinstance(exc, InvalidClient) else logger.warning
            level(
                "code exchange refused by Intuit",
                extra={"status": exc.status, "error": exc.error, "intuit_tid": exc.intuit_tid},
            )
            raise ctx.refuse(Outcome.EXCHANGE_REFUSED) from None

    def _verify_identity(
        self,
        client: IntuitClient,
        tokens: TokenSet,
        scopes: list[str],
        realm_id: str | None,
        ctx: _Context,
    ) -> tuple[str, str | None]:
        """The realm to adopt and the id_token's ``realmid`` claim, if any (validated)."""
        claimed: str | None = None
        if "openid" in scopes:
            if not tokens.id_token:
                raise ctx.refuse(Outcome.ID_TOKEN_MISSING)
            try:
                claims = client.validate_id_token(tokens.id_token)
            except IdTokenInvalid as exc:
                logger.warning("id_token rejected", extra={"reason": str(exc)})
                raise ctx.refuse(Outcome.ID_TOKEN_INVALID) from None
            except IntuitTransientError:
                raise ctx.refuse(Outcome.ID_TOKEN_UNVERIFIED) from None
            value = claims.get("realmid")
            if value is not None:
                claimed = str(value)
                if not validation.is_realm_id(claimed):
                    raise ctx.refuse(Outcome.REALM_INVALID)
        # A realmId that disagrees with the id_token is refused (and revoked) by the adopter.
        realm_id = realm_id or claimed
        if realm_id is None:
            raise ctx.refuse(Outcome.REALM_MISSING)
        return realm_id, claimed
