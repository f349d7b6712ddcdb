"""Intuit's OAuth 2.0 / OpenID Connect server: grants, the token endpoint, revoke, userinfo.

The token endpoint models rotation and the grace window of the previous refresh token, single
use authorisation codes, id_tokens signed with a per-instance RSA key (served as a JWKS) and
revocation; see the package docstring for the modelling choices. The consent page lives in
:mod:`devstack.intuit_sim.authorize`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from werkzeug.wrappers import Request, Response

from devstack.intuit_sim.common import _json, _oauth_error, _sha256
from devstack.intuit_sim.faults import FaultInjection

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
PAYMENT_SCOPE = "com.intuit.quickbooks.payment"
KNOWN_SCOPES = frozenset(
    {ACCOUNTING_SCOPE, PAYMENT_SCOPE, "openid", "profile", "email", "phone", "address"}
)
# Only these scopes bind the grant to a company, so only these put realmId in the callback.
REALM_SCOPES = frozenset({ACCOUNTING_SCOPE, PAYMENT_SCOPE})
DEFAULT_ISSUE_SCOPES = (ACCOUNTING_SCOPE,)


_REALM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

#: 700 random bytes make 934 base64url characters: with the prefix, the size of an Intuit
#: access token.
ACCESS_TOKEN_RANDOM_BYTES = 700


class SigningKey:
    """The RS256 key a simulator signs id_tokens with, and its JWKS entry.

    One per simulator, so a JWKS cached across simulators is noticed; made on first use, since
    an RSA key costs about 0.1 s of CPU and most simulators (one per fast test) never sign one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: tuple[RSAPrivateKey, str, dict[str, Any]] | None = None

    def _key(self) -> tuple[RSAPrivateKey, str, dict[str, Any]]:
        with self._lock:
            if self._made is None:
                from cryptography.hazmat.primitives.asymmetric import rsa

                private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                public_jwk: dict[str, Any] = dict(
                    jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
                )
                thumb_src = json.dumps(
                    {"e": public_jwk["e"], "kty": "RSA", "n": public_jwk["n"]},
                    separators=(",", ":"),
                    sort_keys=True,
                )
                digest = hashlib.sha256(thumb_src.encode()).digest()
                kid = base64.urlsafe_b64encode(digest).decode().rstrip("=")
                public_jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
                self._made = (private_key, kid, public_jwk)
            return self._made

    @property
    def private_key(self) -> RSAPrivateKey:
        return self._key()[0]

    @property
    def kid(self) -> str:
        return self._key()[1]

    @property
    def public_jwk(self) -> dict[str, Any]:
        return self._key()[2]


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


class OAuthServer(FaultInjection):
    """Grants and tokens: the issuing side tests drive, and the HTTP endpoints apps call."""

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
        key = self._signing_key
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})

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
        resp = _json({"keys": [dict(self._signing_key.public_jwk)]})
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
