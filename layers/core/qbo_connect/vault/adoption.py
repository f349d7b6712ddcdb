"""Adopting a grant: the one way tokens just obtained from Intuit become a stored connection.

Both the callback (tokens from a code exchange) and ``import_connection`` (tokens from
refreshing a token another system held) go through :class:`GrantAdopter`, so the rules below
exist once.

A realm is proven, never asserted
    The callback's ``realmId`` is a query parameter the browser can edit, and an import names
    its realm in the payload. Tokens are stored for realm R only when

    - the id_token (already validated: signature, issuer, audience, expiry) says ``realmid`` R,
      or
    - a CompanyInfo call for R with the new access token succeeds: Intuit refuses (401/403) a
      token on a company it was not issued for.

    A refusal means the tokens are for another company: nothing is stored and the tokens just
    obtained are revoked at Intuit, so a grant presented under a false realm does not linger.
    A transient failure of the check (timeout, 5xx, 429) fails closed: nothing is stored and
    the tokens are *not* revoked (they may well be the honest caller's; a retry can prove
    them). An id_token naming another realm is a refusal too.

One tenant per realm
    A realm held by another tenant (and not disconnected) is refused; the tokens are dropped,
    not revoked, because revoking at Intuit removes the app's access to that company, which
    would break the other tenant's working connection. A disconnected realm is free for the
    next tenant. The ownership check runs only after the realm is proven, so it tells nothing
    about companies the caller cannot prove it holds.

Created or reconnected
    A new realm, or a disconnected one taken by another tenant, is ``created`` (event
    ``connection.created``); a realm of the same tenant is ``reconnected`` in place (same
    item, version + 1). Writes are conditional; a concurrent change is re-read and retried a
    few times. A realm taken over from another tenant starts a new *tenure* in the same write
    (``store.tenure``): nothing of the previous tenant's time (``connected_at``, last error,
    counters, sweep run, notices, history) is shown to the new owner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from qbo_connect import events as lifecycle
from qbo_connect.config import Settings
from qbo_connect.errors import (
    AlreadyExists,
    HeldByOtherTenant,
    IntuitError,
    IntuitTransientError,
    RealmCheckUnavailable,
    RealmNotProven,
    StoreContention,
    VersionConflict,
)
from qbo_connect.intuit import IntuitClient, TokenSet
from qbo_connect.store.connections import Connection, ConnectionRepository
from qbo_connect.store.table import STATUS_DISCONNECTED
from qbo_connect.vault.protocol import TokenVault

logger = Logger(child=True)

#: A person (or an import call) waits on the proof calls: one attempt, this long at most.
QUICK_TIMEOUT_SECONDS = 5.0

ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
STORE_ATTEMPTS = 5
#: HTTP statuses with which QuickBooks refuses a token for a company it was not issued for.
NOT_THIS_COMPANY = frozenset({401, 403})


@dataclass(frozen=True)
class Adoption:
    connection: Connection
    created: bool
    company_name: str | None


@dataclass(eq=False)
class GrantAdopter:
    """Proves, checks ownership of and stores a grant, for one deployment."""

    vault: TokenVault
    connections: ConnectionRepository
    settings: Settings
    clock: Callable[[], float] = time.time
    #: Counts one CorePlus call of the service's own: (tenant_id, realm_id).
    usage: Callable[[str, str], None] | None = None
    #: After a grant is stored: (realm_id, tenant_id, now). The change feed starts there.
    on_stored: Callable[[str, str, float], None] | None = None

    # ----- ownership ---------------------------------------------------------------------

    def existing_for(self, realm_id: str, tenant_id: str) -> Connection | None:
        """The stored connection of the realm, or None; refuses one held by another tenant."""
        existing = self.connections.get_connection(realm_id, consistent=True)
        if (
            existing is not None
            and existing.tenant_id != tenant_id
            and existing.status != STATUS_DISCONNECTED
        ):
            logger.warning(
                "realm held by another tenant; nothing stored",
                extra={"realm_id": realm_id, "tenant_id": tenant_id},
            )
            raise HeldByOtherTenant(f"realm {realm_id} is connected to another tenant")
        return existing

    @staticmethod
    def would_create(existing: Connection | None, tenant_id: str) -> bool:
        return existing is None or existing.tenant_id != tenant_id

    # ----- proof -------------------------------------------------------------------------

    def prove_realm(
        self,
        client: IntuitClient,
        tokens: TokenSet,
        realm_id: str,
        *,
        claimed_realm: str | None,
        scopes: tuple[str, ...] | list[str],
        tenant_id: str = "",
    ) -> str | None:
        """Prove the tokens are for ``realm_id``; returns the company name when it was read.

        Raises :class:`RealmNotProven` (tokens revoked) or :class:`RealmCheckUnavailable`.
        """
        if claimed_realm is not None:
            if claimed_realm != realm_id:
                self._revoke(client, tokens, realm_id, "id_token names another realm")
                raise RealmNotProven(
                    f"the tokens are not for realm {realm_id}: the identity token names "
                    "another company; they were revoked and nothing was stored"
                )
            return None  # proven by the signed id_token; the name is looked up best effort
        if ACCOUNTING_SCOPE not in scopes:
            # Nothing else can prove the company: refuse rather than trust the caller.
            raise RealmNotProven(
                f"realm {realm_id} cannot be proven: without an id_token naming it, the grant "
                "needs the accounting scope for a CompanyInfo check"
            )
        try:
            self.count_read(tenant_id, realm_id)
            info = client.quick(QUICK_TIMEOUT_SECONDS).company_info(realm_id, tokens.access_token)
        except IntuitError as exc:
            # 401/403: Intuit says the token is not for this company. Anything else (transient
            # or not) leaves the question open, and an open question fails closed.
            if exc.status in NOT_THIS_COMPANY and not isinstance(exc, IntuitTransientError):
                self._revoke(client, tokens, realm_id, f"CompanyInfo answered {exc.status}")
                raise RealmNotProven(
                    f"the tokens are not for realm {realm_id}: QuickBooks refused them for "
                    "that company; they were revoked and nothing was stored"
                ) from None
            logger.warning(
                "realm check unavailable; nothing stored",
                extra={"realm_id": realm_id, "status": exc.status, "intuit_tid": exc.intuit_tid},
            )
            raise RealmCheckUnavailable(
                f"realm {realm_id} could not be checked at Intuit; nothing was stored, try again"
            ) from None
        name = info.get("CompanyName")
        return name.strip()[:256] if isinstance(name, str) and name.strip() else None

    def count_read(self, tenant_id: str, realm_id: str) -> None:
        """A CompanyInfo read is a CorePlus call of the service's own (the usage meter)."""
        if self.usage is not None:
            self.usage(tenant_id, realm_id)

    def company_name(
        self,
        client: IntuitClient,
        tokens: TokenSet,
        realm_id: str,
        scopes: tuple[str, ...],
        tenant_id: str = "",
    ) -> str | None:
        """Best effort, one quick attempt each: CompanyInfo, then userinfo. Never raises."""
        quick = client.quick(QUICK_TIMEOUT_SECONDS)
        name: Any = None
        if ACCOUNTING_SCOPE in scopes:
            try:
                self.count_read(tenant_id, realm_id)
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

    def _revoke(self, client: IntuitClient, tokens: TokenSet, realm_id: str, why: str) -> None:
        """Revoke the grant just obtained (its refresh token revokes its access tokens too)."""
        try:
            client.revoke(tokens.refresh_token)
            logger.warning(
                "tokens not for the realm asked for: revoked, nothing stored",
                extra={"realm_id": realm_id, "reason": why},
            )
        except Exception as exc:
            logger.error(
                "tokens not for the realm asked for; revoking them failed, nothing stored",
                extra={"realm_id": realm_id, "reason": why, "error_type": type(exc).__name__},
            )

    # ----- storing -----------------------------------------------------------------------

    def _after_stored(self, realm_id: str, tenant_id: str, now: float) -> None:
        """Follows the committed connection; its failure does not undo the connection (the
        first ``reconcile_changes`` of the realm starts its feed instead)."""
        if self.on_stored is None:
            return
        try:
            self.on_stored(realm_id, tenant_id, now)
        except Exception:
            logger.exception("change feed not started", extra={"realm_id": realm_id})

    def store_grant(
        self,
        *,
        realm_id: str,
        tenant_id: str,
        scopes: tuple[str, ...] | list[str],
        tokens: TokenSet,
        company_name: str | None,
        detail: dict[str, Any] | None = None,
    ) -> Adoption:
        """Create or reconnect (conditional writes, re-read on a conflict).

        The ``connection.created`` / ``connection.reconnected`` event (with ``detail`` added)
        is recorded in the same write and published after it (the outbox, see ``events``): it
        goes out at least once even if this process dies right after the write.
        """
        sealed = self.vault.seal(realm_id, tokens)
        environment = self.settings.intuit.environment
        event_detail = {
            "realm_id": realm_id,
            "tenant_id": tenant_id,
            "environment": environment,
            "scopes": sorted(set(scopes)),
            **(detail or {}),
        }
        for _ in range(STORE_ATTEMPTS):
            now = self.clock()
            due_at = self.vault.due_at_for_new(sealed, now)
            existing = self.existing_for(realm_id, tenant_id)
            created = self.would_create(existing, tenant_id)
            event = lifecycle.PendingEvent.new(
                lifecycle.CREATED if created else lifecycle.RECONNECTED, event_detail, now=now
            )
            # What the create and the reconnect both write
            fields: dict[str, Any] = {
                "realm_id": realm_id,
                "tenant_id": tenant_id,
                "environment": environment,
                "scopes": scopes,
                "tokens": sealed,
                "now": now,
                "company_name": company_name,
                "due_at": due_at,
                "event": event,
            }
            try:
                if existing is None:
                    conn = self.connections.create_connection(**fields)
                else:
                    conn = self.connections.reconnect_connection(
                        seen_version=existing.version,
                        # Another tenant's disconnected realm: a new tenure, reset in the write
                        new_tenure=created,
                        **fields,
                    )
            except (AlreadyExists, VersionConflict):
                logger.info(
                    "connection changed concurrently; re-reading", extra={"realm_id": realm_id}
                )
                continue
            self.vault.flush_events(conn)
            self._after_stored(realm_id, tenant_id, now)
            return Adoption(conn, created, company_name)
        raise StoreContention(f"realm {realm_id} was changed concurrently; nothing was stored")
