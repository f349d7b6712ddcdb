"""The ConnectionsFunction actions: metadata, refresh, import, disconnect (and connect links,
which live in ``connect_flow``). Each returns a JSON-able dict; errors are ServiceErrors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from qbo_connect import events as lifecycle
from qbo_connect import validation
from qbo_connect.config import KNOWN_SCOPES, Settings
from qbo_connect.errors import (
    ConfigurationError,
    Conflict,
    HeldByOtherTenant,
    IntuitError,
    IntuitTransientError,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    NotConnected,
    NotFound,
    RefreshUnavailable,
    StoreContention,
)
from qbo_connect.intuit import IntuitClient
from qbo_connect.store.connections import Connection, ConnectionRepository
from qbo_connect.store.table import REFRESH_RUN, STATUS_ACTIVE, STATUS_DISCONNECTED
from qbo_connect.vault.adoption import ACCOUNTING_SCOPE, GrantAdopter
from qbo_connect.vault.health import VALUES as HEALTH_VALUES
from qbo_connect.vault.health import health_fields
from qbo_connect.vault.history import DEFAULT_LIMIT, IMPORT, MAX_LIMIT, OPERATOR, History
from qbo_connect.vault.protocol import TokenVault
from qbo_connect.vault.records import REFRESH_FIELD, owned_by
from qbo_connect.vault.sealing import TokenCipher

logger = Logger(child=True)

#: How many index pages one filtered ``list_connections`` call reads at most before it hands
#: back a cursor (a tenant with few matching connections must not cost a long query loop).
MAX_FILTERED_PAGES = 5


@dataclass(eq=False)
class ConnectionsService:
    """Actions on stored connections. Tokens never leave this class except to Intuit."""

    vault: TokenVault
    connections: ConnectionRepository
    settings: Settings
    history: History
    cipher: TokenCipher
    intuit: Callable[[], IntuitClient]
    adopter: GrantAdopter
    clock: Callable[[], float] = time.time

    def describe(self, conn: Connection) -> dict[str, Any]:
        """A connection's metadata with its health (never token material)."""
        return {**conn.metadata(), **health_fields(conn.raw, self.clock())}

    def _owned(self, payload: Mapping[str, Any]) -> tuple[str, str | None]:
        """``realm_id`` and the optional ``tenant_id`` of the tenant guard."""
        return validation.realm_id(payload), validation.optional_tenant_id(payload)

    def get_connection(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        realm_id, tenant_id = self._owned(payload)
        conn = owned_by(self.connections.get_connection(realm_id, consistent=True), tenant_id)
        if conn is None:
            raise NotConnected(f"realm {realm_id} is not connected")
        return {"connection": self.describe(conn)}

    def list_connections(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """A page of a tenant's connections; with ``health``, only those that healthy.

        The health filter reads up to MAX_FILTERED_PAGES index pages per call and hands back a
        cursor when there may be more, so a page can hold fewer than ``limit`` connections.
        """
        tenant_id = validation.tenant_id(payload)
        limit = validation.optional_int(payload, "limit", default=50, minimum=1, maximum=200)
        cursor = validation.page_cursor(payload)
        health = validation.optional_str(payload, "health", max_length=32)
        if health is not None and health not in HEALTH_VALUES:
            raise InvalidRequest(f"health must be one of: {', '.join(HEALTH_VALUES)}")
        found: list[dict[str, Any]] = []
        for _ in range(MAX_FILTERED_PAGES if health else 1):
            items, cursor = self.connections.list_connections(
                tenant_id, limit=limit - len(found), cursor=cursor
            )
            described = [self.describe(c) for c in items]
            found += [c for c in described if health is None or c["health"] == health]
            if cursor is None or len(found) >= limit:
                break
        return {"connections": found, "next_cursor": validation.encode_cursor(cursor)}

    def connection_history(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The newest outcomes of a connection (also after it was disconnected)."""
        realm_id, tenant_id = self._owned(payload)
        limit = validation.optional_int(
            payload,
            "limit",
            default=DEFAULT_LIMIT,
            minimum=1,
            maximum=MAX_LIMIT,
        )
        conn = owned_by(self.connections.get_connection(realm_id, consistent=True), tenant_id)
        if conn is None:
            raise NotConnected(f"realm {realm_id} is not connected")
        entries = self.history.entries(realm_id, limit=limit, conn=conn)
        return {"realm_id": realm_id, "history": entries}

    def refresh(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        realm_id, tenant_id = self._owned(payload)
        conn = self.vault.refresh(realm_id, tenant_id=tenant_id)
        return {"connection": self.describe(conn)}

    def disconnect(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Revoke at Intuit, then disconnect locally whatever Intuit said, and say which."""
        realm_id, tenant_id = self._owned(payload)
        conn = owned_by(self.connections.get_connection(realm_id, consistent=True), tenant_id)
        if conn is None or conn.status == STATUS_DISCONNECTED:
            raise NotConnected(f"realm {realm_id} is not connected")
        revoked, revoke_error = False, None
        if conn.data_key and conn.refresh_token_enc:
            try:
                token = self.cipher.open(
                    realm_id, conn.data_key, REFRESH_FIELD, conn.refresh_token_enc
                )
                self.intuit().revoke(token)
                revoked = True
            except IntuitError as exc:
                revoke_error = f"Intuit revoke failed ({exc.error or exc.status or 'network'})"
                logger.warning(
                    "revoke failed; disconnecting locally anyway",
                    extra={"realm_id": realm_id, "intuit_tid": exc.intuit_tid},
                )
            except ConfigurationError as exc:
                revoke_error = exc.message
        now = self.clock()
        # Recorded with the disconnect itself, published after it (the outbox, events.py).
        event = lifecycle.PendingEvent.about(lifecycle.DISCONNECTED, conn, now=now, revoked=revoked)
        try:
            # Conditioned on the owner read: the connection whose owner was checked is the one
            # disconnected, never one that changed hands in between.
            before = self.connections.disconnect(
                realm_id, now=now, event=event, tenant_id=conn.tenant_id
            )
        except NotFound:
            raise NotConnected(f"realm {realm_id} is not connected") from None
        after = self.connections.get_connection(realm_id, consistent=True)
        if after is not None:
            self.vault.flush_events(after)
        self.history.record(
            realm_id,
            source=OPERATOR,
            outcome=STATUS_DISCONNECTED,
            detail="revoked" if revoked else "not revoked at Intuit",
            closed_run=before.raw.get(REFRESH_RUN),
            tenant_id=conn.tenant_id,
        )
        result: dict[str, Any] = {
            "realm_id": realm_id,
            "status": STATUS_DISCONNECTED,
            "revoked": revoked,
        }
        if revoke_error:
            result["revoke_error"] = revoke_error
        return result

    def import_connection(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Adopt a grant made by another system: prove its refresh token is for the realm.

        Checked first, with no call to Intuit: the fields, the realm's owner and a realm
        already connected. ``dry_run: true`` stops there and says what would happen
        (``created``, ``reconnected`` or ``refused`` with a reason), storing nothing.

        Then the token is refreshed once (this rotates it at Intuit: the other system must stop
        using it) and the new access token must read the realm's CompanyInfo. A refusal there
        means the token belongs to another company: the new tokens are revoked, nothing is
        stored, and the answer is ``invalid_request``. If Intuit cannot be reached for either
        call, nothing is stored and the answer is ``refresh_unavailable`` (the other system's
        token stays valid for Intuit's grace window, so the import can be tried again).
        """
        realm_id = validation.realm_id(payload)
        tenant_id = validation.tenant_id(payload)
        dry_run = validation.optional_bool(payload, "dry_run")
        refresh_token = validation.require_str(payload, "refresh_token", max_length=2048)
        environment = validation.optional_str(payload, "environment", max_length=16)
        if environment is not None and environment != self.settings.intuit.environment:
            raise InvalidRequest(
                f"environment must be {self.settings.intuit.environment!r} for this deployment"
            )
        adopter = self.adopter
        try:
            existing = adopter.existing_for(realm_id, tenant_id)
        except HeldByOtherTenant as exc:
            if dry_run:
                return _dry_run(
                    realm_id, tenant_id, "refused", reason="other_tenant", message=exc.message
                )
            raise Conflict(exc.message) from None
        if existing is not None and existing.status == STATUS_ACTIVE:
            if dry_run:
                return _dry_run(
                    realm_id,
                    tenant_id,
                    "refused",
                    reason="already_connected",
                    message=f"realm {realm_id} is already connected",
                )
            raise Conflict(f"realm {realm_id} is already connected")
        scopes = self._scopes(payload, existing.scopes if existing else ())
        if ACCOUNTING_SCOPE not in scopes:
            raise InvalidRequest(
                f"scopes must include {ACCOUNTING_SCOPE}: an imported grant is proven with a "
                "CompanyInfo call"
            )
        if dry_run:
            outcome = "created" if adopter.would_create(existing, tenant_id) else "reconnected"
            return _dry_run(realm_id, tenant_id, outcome)

        client = self.intuit()
        try:
            tokens = client.refresh(refresh_token)
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

        try:
            company_name = adopter.prove_realm(
                client, tokens, realm_id, claimed_realm=None, scopes=scopes, tenant_id=tenant_id
            )
            adoption = adopter.store_grant(
                realm_id=realm_id,
                tenant_id=tenant_id,
                scopes=scopes,
                tokens=tokens,
                company_name=company_name,
                detail={"imported": True},
            )
        except HeldByOtherTenant as exc:
            raise Conflict(exc.message) from None
        except StoreContention:
            raise Conflict(f"realm {realm_id} was connected concurrently") from None
        logger.info(
            "connection imported",
            extra={
                "realm_id": realm_id,
                "tenant_id": tenant_id,
                "outcome": "created" if adoption.created else "reconnected",
            },
        )
        self.history.record(
            realm_id,
            source=IMPORT,
            outcome="imported",
            version=adoption.connection.version,
            tenant_id=tenant_id,
        )
        return {"connection": self.describe(adoption.connection)}

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
        unknown = set(value) - KNOWN_SCOPES
        if unknown or not value:
            # Never the values themselves: a refresh token in the wrong column lands here.
            raise InvalidRequest(
                f"scopes must be Intuit scopes ({', '.join(sorted(KNOWN_SCOPES))}); "
                f"{len(unknown)} value(s) are not"
            )
        return tuple(sorted(set(value)))


def _dry_run(
    realm_id: str,
    tenant_id: str,
    outcome: str,
    *,
    reason: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "dry_run": True,
        "realm_id": realm_id,
        "tenant_id": tenant_id,
        "outcome": outcome,
    }
    if reason is not None:
        result["reason"] = reason
    if message is not None:
        result["message"] = message
    return result
