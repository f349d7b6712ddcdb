"""OAuth 2.0 / OpenID Connect client for Intuit: authorize URL, code exchange, refresh, revoke,
userinfo, CompanyInfo and id_token validation.

Why it looks the way it does:
- Every URL comes from :class:`IntuitEndpoints` so tests and the local stack use the simulator.
- Errors are classified (invalid_grant / invalid_client / transient / other) because the refresh
  protocol treats each differently; each carries Intuit's ``intuit_tid`` for support.
- Nothing secret is ever put into a log line or an exception message: we log endpoint names,
  status codes, Intuit error codes and the tid, never bodies, tokens, codes or the Basic header.
- A refresh is retried on transient failures with exponential backoff and full jitter,
  honouring Retry-After. A code exchange is not retried after the request may have reached
  Intuit: a second use of a code gives invalid_grant and Intuit may revoke the first tokens.
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aws_lambda_powertools import Logger

from qbo_connect.config import IntuitEndpoints
from qbo_connect.errors import (
    IdTokenInvalid,
    IntuitError,
    IntuitRequestError,
    IntuitTransientError,
    InvalidClient,
    InvalidGrant,
)
from qbo_connect.fieldwise import Fieldwise, frozen

if TYPE_CHECKING:
    # Imported where they are used: a warm get_token never talks to Intuit, so its cold start
    # should not pay for an HTTP stack (requests) or a JWT library (id_tokens: callback only).
    import jwt
    import requests

logger = Logger(child=True)

USER_AGENT = "qbo-connect/0.1 (+https://github.com/; python-requests)"


@frozen
class ClientCredentials(Fieldwise):
    """The app's OAuth client (without a docstring, @dataclass would compute one at import)."""

    client_id: str
    client_secret: str = field(repr=False)

    def basic_auth_header(self) -> str:
        raw = f"{self.client_id}:{self.client_secret}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@frozen
class TokenSet(Fieldwise):
    """A token endpoint answer. ``repr`` hides every secret value."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int
    refresh_token_expires_in: int
    token_type: str = "bearer"
    refresh_token_hard_expires_in: int | None = None
    id_token: str | None = field(default=None, repr=False)
    obtained_at: float = 0.0

    @property
    def access_expires_at(self) -> float:
        return self.obtained_at + self.expires_in

    @property
    def refresh_expires_at(self) -> float:
        return self.obtained_at + self.refresh_token_expires_in

    @property
    def refresh_hard_expires_at(self) -> float | None:
        if self.refresh_token_hard_expires_in is None:
            return None
        return self.obtained_at + self.refresh_token_hard_expires_in


def _int_field(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise IntuitRequestError(f"token response lacks a numeric {name}")
    try:
        return int(value)
    except ValueError as exc:
        raise IntuitRequestError(f"token response has a non-numeric {name}") from exc


class IntuitClient:
    """Talks to Intuit's OAuth server (or the simulator) over HTTPS with timeouts and retries."""

    def __init__(
        self,
        endpoints: IntuitEndpoints,
        credentials: ClientCredentials,
        *,
        timeout: float = 10.0,
        max_attempts: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoints = endpoints
        self.credentials = credentials
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        if session is None:
            import requests

            session = requests.Session()
        self.session = session
        self._sleep = sleep
        self._clock = clock
        self._jwks: jwt.PyJWKClient | None = None

    def quick(self, timeout: float) -> IntuitClient:
        """This client with one attempt and at most ``timeout`` seconds: for a call a person
        (or an import) is waiting on, over the same credentials and HTTP session."""
        return IntuitClient(
            self.endpoints,
            self.credentials,
            timeout=min(timeout, self.timeout),
            max_attempts=1,
            session=self.session,
            sleep=self._sleep,
            clock=self._clock,
        )

    # ----- authorize -------------------------------------------------------------------------

    def authorize_url(self, *, scopes: Iterable[str], redirect_uri: str, state: str) -> str:
        """The URL to send the user's browser to (Intuit's consent screen)."""
        query = urlencode(
            {
                "client_id": self.credentials.client_id,
                "response_type": "code",
                "scope": " ".join(scopes),
                "redirect_uri": redirect_uri,
                "state": state,
            }
        )
        return f"{self.endpoints.authorization}?{query}"

    # ----- token endpoint --------------------------------------------------------------------

    def exchange_code(self, code: str, redirect_uri: str) -> TokenSet:
        """Exchange an authorization code once.

        Only failures where the request surely never reached Intuit (connection refused) or
        where Intuit explicitly asked us to come back (429) are retried.
        """
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        return self._token_request(data, operation="exchange_code", retry_ambiguous=False)

    def refresh(self, refresh_token: str) -> TokenSet:
        """Refresh; transient failures are retried with backoff, tokens are never touched here."""
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return self._token_request(data, operation="refresh", retry_ambiguous=True)

    def _token_request(
        self, data: dict[str, str], *, operation: str, retry_ambiguous: bool
    ) -> TokenSet:
        headers = {
            "Authorization": self.credentials.basic_auth_header(),
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
            "x-include-refresh-token-hard-expires-in": "true",
            "User-Agent": USER_AGENT,
        }
        started = self._clock()
        response = self._send_with_retries(
            "POST",
            self.endpoints.token,
            operation=operation,
            retry_ambiguous=retry_ambiguous,
            headers=headers,
            data=data,
        )
        body = self._json(response, operation)
        access_token = body.get("access_token")
        refresh_token = body.get("refresh_token")
        if not isinstance(access_token, str) or not isinstance(refresh_token, str):
            raise IntuitRequestError(
                f"Intuit {operation}: response lacks tokens",
                status=response.status_code,
                intuit_tid=response.headers.get("intuit_tid"),
            )
        hard = body.get("x_refresh_token_hard_expires_in")
        id_token = body.get("id_token")
        return TokenSet(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=_int_field(body, "expires_in"),
            refresh_token_expires_in=_int_field(body, "x_refresh_token_expires_in"),
            token_type=str(body.get("token_type") or "bearer").lower(),
            refresh_token_hard_expires_in=(
                _int_field(body, "x_refresh_token_hard_expires_in") if hard is not None else None
            ),
            id_token=id_token if isinstance(id_token, str) else None,
            # Lifetimes count from when we asked, so they never overstate the time left.
            obtained_at=started,
        )

    # ----- revoke, userinfo, company info ----------------------------------------------------

    def revoke(self, token: str) -> None:
        """Revoke a refresh (or access) token: removes the app's access to the company."""
        headers = {
            "Authorization": self.credentials.basic_auth_header(),
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._send_with_retries(
            "POST",
            self.endpoints.revocation,
            operation="revoke",
            retry_ambiguous=True,
            headers=headers,
            json={"token": token},
        )

    def userinfo(self, access_token: str) -> dict[str, Any]:
        response = self._send_with_retries(
            "GET",
            self.endpoints.userinfo,
            operation="userinfo",
            retry_ambiguous=True,
            headers=self._bearer(access_token),
        )
        return self._json(response, "userinfo")

    def company_info(self, realm_id: str, access_token: str) -> dict[str, Any]:
        """GET CompanyInfo: the cheapest real API call, used for the company name."""
        url = (
            f"{self.endpoints.api_base_url}/v3/company/{realm_id}/companyinfo/{realm_id}"
            "?minorversion=75"
        )
        response = self._send_with_retries(
            "GET",
            url,
            operation="companyinfo",
            retry_ambiguous=True,
            headers=self._bearer(access_token),
        )
        body = self._json(response, "companyinfo")
        info = body.get("CompanyInfo")
        return info if isinstance(info, dict) else {}

    # ----- id_token --------------------------------------------------------------------------

    def validate_id_token(self, id_token: str, *, leeway: float = 60.0) -> dict[str, Any]:
        """Verify signature (JWKS, cached), issuer, audience and expiry; return the claims."""
        import jwt

        if self._jwks is None:
            # PyJWKClient caches the key set and refetches on an unknown kid (key rotation).
            self._jwks = jwt.PyJWKClient(
                self.endpoints.jwks_uri, cache_keys=True, lifespan=3600, timeout=int(self.timeout)
            )
        try:
            signing_key = self._jwks.get_signing_key_from_jwt(id_token)
            claims: dict[str, Any] = jwt.decode(
                id_token,
                signing_key.key,
                algorithms=["RS256"],
                audience=self.credentials.client_id,
                issuer=self.endpoints.issuer,
                leeway=leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWKClientConnectionError:
            raise IntuitTransientError("Intuit JWKS could not be fetched") from None
        except jwt.PyJWTError as exc:
            # The reason (e.g. "Signature has expired") is safe; the token itself is not logged.
            raise IdTokenInvalid(f"id_token rejected: {type(exc).__name__}") from None
        return claims

    # ----- transport -------------------------------------------------------------------------

    @staticmethod
    def _bearer(access_token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {access_token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff; Retry-After wins when Intuit sends one."""
        if retry_after is not None:
            return max(retry_after, 0.0)
        cap = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(0, cap)

    def _send_with_retries(
        self, method: str, url: str, *, operation: str, retry_ambiguous: bool, **kwargs: Any
    ) -> requests.Response:
        import requests

        last_error: IntuitError | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except requests.ConnectionError as exc:
                # A refused connection never reached Intuit; other connection errors might have.
                not_sent = isinstance(exc, requests.exceptions.ConnectTimeout) or (
                    "refused" in str(exc).lower()
                )
                last_error = IntuitTransientError(f"Intuit {operation}: connection failed")
                if not (retry_ambiguous or not_sent):
                    raise last_error from None
            except requests.Timeout:
                last_error = IntuitTransientError(f"Intuit {operation}: timed out")
                if not retry_ambiguous:
                    raise last_error from None
            except requests.RequestException:
                raise IntuitTransientError(f"Intuit {operation}: request failed") from None
            else:
                error = self._classify(response, operation)
                if error is None:
                    return response
                if not isinstance(error, IntuitTransientError):
                    raise error
                last_error = error
                if not retry_ambiguous and response.status_code != 429:
                    raise error
            if last_error.retry_after is not None and last_error.retry_after > self.backoff_max:
                # Honour Retry-After by not coming back sooner; waiting longer than our backoff
                # budget would outlive the refresh lease, so the caller retries later instead.
                break
            if attempt < self.max_attempts:
                delay = self._backoff(attempt, last_error.retry_after)
                logger.warning(
                    "Intuit call failed, retrying",
                    extra={
                        "operation": operation,
                        "attempt": attempt,
                        "status": last_error.status,
                        "intuit_tid": last_error.intuit_tid,
                        "retry_in_seconds": round(delay, 3),
                    },
                )
                self._sleep(delay)
        assert last_error is not None
        logger.error(
            "Intuit call failed",
            extra={
                "operation": operation,
                "status": last_error.status,
                "intuit_tid": last_error.intuit_tid,
                "error": last_error.error,
            },
        )
        raise last_error

    def _classify(self, response: requests.Response, operation: str) -> IntuitError | None:
        status = response.status_code
        if 200 <= status < 300:
            return None
        tid = response.headers.get("intuit_tid")
        error_code = None
        try:
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                error_code = body["error"][:64]
        except ValueError:
            pass
        message = f"Intuit {operation} failed: HTTP {status}" + (
            f" {error_code}" if error_code else ""
        )
        if status == 429 or status >= 500:
            retry_after = None
            header = response.headers.get("Retry-After")
            if header:
                try:
                    retry_after = float(header)
                except ValueError:
                    retry_after = None
            return IntuitTransientError(
                message, status=status, error=error_code, intuit_tid=tid, retry_after=retry_after
            )
        cls: type[IntuitError]
        if error_code == "invalid_grant":
            cls = InvalidGrant
        elif error_code == "invalid_client" or (status == 401 and operation != "userinfo"):
            cls = InvalidClient if operation not in ("companyinfo",) else IntuitRequestError
        else:
            cls = IntuitRequestError
        return cls(message, status=status, error=error_code, intuit_tid=tid)

    @staticmethod
    def _json(response: requests.Response, operation: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise IntuitRequestError(
                f"Intuit {operation}: response is not JSON",
                status=response.status_code,
                intuit_tid=response.headers.get("intuit_tid"),
            ) from None
        if not isinstance(body, dict):
            raise IntuitRequestError(f"Intuit {operation}: unexpected response shape")
        return body
