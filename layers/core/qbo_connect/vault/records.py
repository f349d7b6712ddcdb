"""What the vault hands out and takes in: the access token answer, expiring notices, the
observer hooks, and the tenant guard."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import field
from typing import Any

from qbo_connect import events as lifecycle
from qbo_connect.fieldwise import Fieldwise, frozen, record
from qbo_connect.store.connections import Connection

ACCESS_FIELD = "access_token"
REFRESH_FIELD = "refresh_token"


def owned_by(conn: Connection | None, tenant_id: str | None) -> Connection | None:
    """The tenant guard: with ``tenant_id``, another tenant's connection counts as absent."""
    if conn is not None and tenant_id is not None and conn.tenant_id != tenant_id:
        return None
    return conn


@frozen
class AccessToken(Fieldwise):
    """A usable access token; ``repr`` hides the token."""

    access_token: str = field(repr=False)
    expires_at: float
    realm_id: str
    environment: str
    api_base_url: str
    #: The connection's version the token was read at (never in an answer): a caller that
    #: meets a 401 asks for a token newer than this (``TokenVault.refresh_past``).
    version: int = 0
    #: The connection's owner (never in an answer): the tenant its calls are metered to.
    tenant_id: str | None = None

    def to_response(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires_at)),
            "realm_id": self.realm_id,
            "environment": self.environment,
            "api_base_url": self.api_base_url,
        }


@frozen
class ExpiringNotice(Fieldwise):
    """Hard-expiry thresholds to record as notified, with the one event that goes out for them
    (the worker decides which, see ``worker.py``); the refresh's commit records both."""

    days: tuple[int, ...]
    event: lifecycle.PendingEvent | None


@record
class RefreshObserver(Fieldwise):
    """Hooks for metrics; the worker and handlers plug Powertools Metrics in here."""

    on_refreshed: Callable[[Connection], None] = lambda conn: None
    on_failed: Callable[[str, str], None] = lambda realm_id, failure_class: None
    on_verdict_suspended: Callable[[str], None] = lambda realm_id: None
    #: (realm_id, health before, health after) after every settled refresh attempt.
    on_health: Callable[[str, str, str], None] = lambda realm_id, before, after: None
