"""The ConnectionsFunction actions: metadata, refresh, import, disconnect (and connect links,
which live in ``connect_flow``). Each returns a JSON-able dict; errors are ServiceErrors.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger

from qbo_connect import events as lifecycle
from qbo_connect import validation
from qbo_connect.config import KNOWN_SCOPES
from qbo_connect.errors import (
    AlreadyExists,
    ConfigurationError,
    Conflict,
    IntuitError,
    IntuitTransientError,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    NotConnected,
    NotFound,
    RefreshUnavailable,
    VersionConflict,
)
from qbo_connect.store import STATUS_ACTIVE, STATUS_DISCONNECTED
from qbo_connect.tokens import REFRESH_FIELD, TokenVault

logger = Logger(child=True)


def _encode_cursor(key: Mapping[str, Any] | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode()


def _decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error):
        raise InvalidRequest("cursor is not valid") from None
    if not isinstance(value, dict) or set(value) - {"pk", "sk", "tenant_id", "realm_id"}:
        raise InvalidRequest("cursor is not valid")
    return value


class ConnectionsService:
    """Actions on stored connections. Tokens never leave this class except to Intuit."""

    def __init__(self, vault: TokenVault, *, clock: Callable[[], float] = time.time) -> None:
        self.vault = vault
        self.store = vault.store
        self.settings = vault.settings
        self._clock = clock

    def get_connection(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        realm_id = validation.realm_id(payload)
        conn = self.store.get_connection(realm_id, consistent=True)
        if conn is None:
            raise NotConnected(f"realm {realm_id} is not connected")
        return {"connection": conn.metadata()}

    def list_connections(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        tenant_id = validation.tenant_id(payload)
        limit = validation.optional_int(payload, "limit", default=50, minimum=1, maximum=200)
        cursor = _decode_cursor(validation.optional_str(payload, "cursor", max_length=2048))
        items, last = self.store.list_connections(tenant_id, limit=limit, cursor=cursor)
        return {
            "connections": [c.metadata() for c in items],
            "next_cursor": _encode_cursor(last),
        }

    def refresh(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        realm_id = validation.realm_id(payload)
        conn = self.vault.refresh(realm_id)
        return {"connection": conn.metadata()}

    def disconnect(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Revoke at Intuit, then disconnect locally whatever Intuit said, and say which."""
        realm_id = validation.realm_id(payload)
        conn = self.store.get_connection(realm_id, consistent=True)
        if conn is None or conn.status == STATUS_DISCONNECTED:
            raise NotConnected(f"realm {realm_id} is not connected")
        revoked, revoke_error = False, None
        if conn.data_key and conn.refresh_token_enc:
            try:
                token = self.vault.cipher.open(
                    realm_id, conn.data_key, REFRESH_FIELD, conn.refresh_token_enc
                )
                self.vault.intuit_client().revoke(token)
                revoked = True
            except IntuitError as exc:
                revoke_error = f"Intuit revoke failed ({exc.error or exc.status or 'network'})"
                logger.warning(
                    "revoke failed; disconnecting locally anyway",
                    extra={"realm_id": realm_id, "intuit_tid": exc.intuit_tid},
                )
            except ConfigurationError as exc:
                revoke_error = exc.message
        now = self._clock()
        # Recorded with the disconnect itself, published after it (the outbox, events.py).
        event = lifecycle.PendingEvent.new(
            lifecycle.DISCONNECTED,
            {"realm_id": realm_id, "tenant_id": conn.tenant_id, "revoked": revoked},
            now=now,
        )
        try:
            self.store.disconnect(realm_id, now=now, event=event)
        except NotFound:
            raise NotConnected(f"realm {realm_id} is not connected") from None
        after = self.store.get_connection(realm_id, consistent=True)
        if after is not None:
            self.vault.flush_events(after)
        result: dict[str, Any] = {
            "realm_id": realm_id,
            "status": STATUS_DISCONNECTED,
            "revoked": revoked,
        }
        if revoke_error:
            result["revoke_error"] = revoke_error
        return result

    def import_connection(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Adopt a connection made by another system, proving its refresh token once.

        The refresh rotates the token at Intuit, so the realm is checked first: the only way
        to lose the imported token is a concurrent import of the same realm, which is refused
        with a conflict (the other system's token stays valid for Intuit's grace window).
        """
        realm_id = validation.realm_id(payload)
        tenant_id = validation.tenant_id(payload)
        refresh_token = validation.require_str(payload, "refresh_token", max_length=2048)
        environment = validation.optional_str(payload, "environment", max_length=16)
        if environment is not None and environment != self.settings.intuit.environment:
            raise InvalidRequest(
                f"environment must be {self.settings.intuit.environment!r} for this deployment"
            )
        existing = self.store.get_connection(realm_id, consistent=True)
        if (
            existing is not None
            and existing.tenant_id != tenant_id
            and existing.status != STATUS_DISCONNECTED
        ):
            raise Conflict(f"realm {realm_id} is connected to another tenant")
        if existing is not None and existing.status == STATUS_ACTIVE:
            raise Conflict(f"realm {realm_id} is already connected")

        try:
            tokens = self.vault.intuit_client().refresh(refresh_token)
        except InvalidGrant:
            raise InvalidRequest(
                "Intuit rejected the refresh token (expired, revoked or already rotated)"
            ) from None
        except InvalidClient:
            raise ConfigurationError(
                "Intuit rejected the client credentials: the token must belong to this app"
            ) from None
        except IntuitTransientError:
            raise RefreshUnavailable("Intuit is unavailable, try the import again") from None
        except IntuitError as exc:
            raise InvalidRequest(f"Intuit refused the import ({exc.error or exc.status})") from None

        company_name = None
        try:
            info = self.vault.intuit_client().company_info(realm_id, tokens.access_token)
            company_name = info.get("CompanyName") if isinstance(info, dict) else None
        except IntuitError:
            logger.info("company name unavailable at import", extra={"realm_id": realm_id})

        now = self._clock()
        sealed = self.vault.seal(realm_id, tokens)
        due_at = self.vault.due_at_for_new(sealed, now)
        scopes = self._scopes(payload, existing.scopes if existing else ())
        event = lifecycle.PendingEvent.new(
            lifecycle.CREATED
            if existing is None or existing.tenant_id != tenant_id
            else lifecycle.RECONNECTED,
            {"realm_id": realm_id, "tenant_id": tenant_id, "imported": True},
            now=now,
        )
        try:
            if existing is None:
                conn = self.store.create_connection(
                    realm_id=realm_id,
                    tenant_id=tenant_id,
                    environment=self.settings.intuit.environment,
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
                    environment=self.settings.intuit.environment,
                    scopes=scopes,
                    tokens=sealed,
                    now=now,
                    company_name=company_name,
                    due_at=due_at,
                    event=event,
                )
        except (AlreadyExists, VersionConflict):
            raise Conflict(f"realm {realm_id} was connected concurrently") from None
        self.vault.flush_events(conn)
        return {"connection": conn.metadata()}

    @staticmethod
    def _scopes(payload: Mapping[str, Any], fallback: tuple[str, ...]) -> tuple[str, ...]:
        """The scopes the imported grant carries (Intuit's token answer does not say)."""
        value = payload.get("scopes")
        if value is None:
            return fallback or ("com.intuit.quickbooks.accounting",)
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidRequest("scopes must be a list of strings")
        unknown = sorted(set(value) - KNOWN_SCOPES)
        if unknown or not value:
            raise InvalidRequest(f"scopes must be Intuit scopes; unknown: {unknown}")
        return tuple(sorted(set(value)))
