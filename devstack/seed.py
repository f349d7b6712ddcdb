"""Storing connections straight into the table, for tests and benches that need many of them in
a given state (due or not, idle or in use, near the refresh token's expiry) without running the
connect flow or an import for each.

The connection is written the way the service writes it (``ConnectionRepository``), so what the
service reads back is what it would have stored itself.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qbo_connect.intuit import TokenSet
    from qbo_connect.store.connections import Connection
    from qbo_connect.vault.protocol import TokenVault

SCOPES = ["com.intuit.quickbooks.accounting"]


def store_tokens(
    vault: TokenVault, realm_id: str, tokens: TokenSet, tenant_id: str, used_at: float | None = None
) -> Connection:
    """Seal ``tokens`` and store a sandbox connection of ``tenant_id`` last refreshed when they
    were obtained (``tokens.obtained_at``) and last used at ``used_at``, due when the vault's
    due policy says. Returns the connection as first written."""
    from qbo_connect.vault.due import next_due_at

    sealed = vault.seal(realm_id, tokens)
    due_at = next_due_at(
        settings=vault.settings,
        now=time.time(),
        last_refreshed_at=tokens.obtained_at,
        access_expires_at=sealed.access_expires_at,
        last_used_at=used_at,
        refresh_hard_expires_at=sealed.refresh_hard_expires_at,
    )
    conn = vault.connections.create_connection(
        realm_id=realm_id,
        tenant_id=tenant_id,
        environment="sandbox",
        scopes=SCOPES,
        tokens=sealed,
        now=tokens.obtained_at,
        due_at=due_at,
    )
    if used_at is not None:
        vault.connections.touch_last_used(
            realm_id, now=used_at, min_interval=0, due_at=due_at, seen_version=1
        )
    return conn
