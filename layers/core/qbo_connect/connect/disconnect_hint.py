"""Intuit's Disconnect URL (``GET /disconnected?realmId=...``): a hint, verified before acting.

When a user disconnects the app inside QuickBooks, Intuit revokes the grant and sends the
user's browser here with ``realmId``. Nothing in that request is authenticated: anyone can send
it, for any realm. So it is only ever a reason to ask Intuit, and what Intuit answers decides:

1. Rate limits first, before any read: one verification per realm per
   ``disconnect_hint_realm_interval_seconds`` and at most ``disconnect_hint_source_limit`` per
   source address per window (the address is stored only as a hash).
2. A probe with the stored access token, if it is still valid: one quick CompanyInfo (or
   userinfo) call. Intuit invalidates a grant's access tokens when the app is disconnected, so
   a 200 proves the grant alive and nothing more happens: no refresh, no write.
3. Otherwise a verification refresh through the vault (``TokenVault.refresh``, the same lease
   and commit as every refresh). If it works the grant is alive.
4. The grant is *confirmed* gone only by two independent answers: the access token refused
   with 401 *and* the refresh refused with ``invalid_grant``. Intuit also answers
   ``invalid_grant`` during outages, but an outage of the token endpoint does not make the
   accounting API refuse a valid access token. Then the connection is marked disconnected
   (its tokens deleted, conditioned on the version seen, so a reconnect in between wins) and
   exactly one ``connection.disconnected`` event goes out with
   ``reason: disconnected_in_quickbooks``.

   With only one of the two (say the access token had expired), nothing is decided here: the
   vault recorded the ``invalid_grant`` and its own rule (a rejection that persists over
   ``InvalidGrantWindowMinutes``) flags the connection ``needs_reauthorization`` later.

Whatever happens, the person sees the same page, so the answer says nothing about a realm.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from aws_lambda_powertools import Logger

from qbo_connect import events as lifecycle
from qbo_connect import validation
from qbo_connect.config import Settings
from qbo_connect.errors import (
    ConfigurationError,
    IntuitError,
    NeedsReauthorization,
    NotConnected,
    RefreshUnavailable,
)
from qbo_connect.intuit import IntuitClient
from qbo_connect.store.connections import Connection, ConnectionRepository
from qbo_connect.store.rate_slots import RateSlots
from qbo_connect.store.table import REFRESH_RUN, STATUS_DISCONNECTED
from qbo_connect.vault.history import DISCONNECT_URL, History
from qbo_connect.vault.protocol import TokenVault
from qbo_connect.vault.records import ACCESS_FIELD
from qbo_connect.vault.sealing import TokenCipher

logger = Logger(child=True)

REASON = "disconnected_in_quickbooks"
PROBE_TIMEOUT_SECONDS = 3.0
#: An access token this close to expiry is not used for the probe.
PROBE_MARGIN_SECONDS = 30
ALIVE, REJECTED, UNKNOWN = "alive", "rejected", "unknown"


def source_key(source_ip: str) -> str:
    """The source address as rate-limit key: hashed, so the table holds no IP addresses."""
    return hashlib.sha256(source_ip.encode()).hexdigest()[:32]


@dataclass(eq=False)
class DisconnectHints:
    """Verifies a Disconnect URL hint for one realm and acts only on Intuit's confirmation."""

    vault: TokenVault
    connections: ConnectionRepository
    rate_slots: RateSlots
    settings: Settings
    cipher: TokenCipher
    intuit: Callable[[], IntuitClient]
    history: History
    clock: Callable[[], float] = time.time

    def handle(self, realm_id: str | None, source_ip: str) -> str:
        """What was done, as a short verdict for the log (the page is the same for all)."""
        if not realm_id or not validation.REALM_ID.match(realm_id):
            return "invalid_realm"
        now = self.clock()
        settings = self.settings
        if not self.rate_slots.take_rate_slot(
            f"DISCONNECT_HINT#SOURCE#{source_key(source_ip)}",
            now=now,
            window_seconds=settings.disconnect_hint_source_window_seconds,
            limit=settings.disconnect_hint_source_limit,
        ):
            return "source_rate_limited"
        if not self.rate_slots.take_rate_slot(
            f"DISCONNECT_HINT#REALM#{realm_id}",
            now=now,
            window_seconds=settings.disconnect_hint_realm_interval_seconds,
            limit=1,
        ):
            return "realm_rate_limited"
        conn = self.connections.get_connection(realm_id, consistent=True)
        if conn is None or conn.status == STATUS_DISCONNECTED:
            return "not_connected"
        probe = self._probe(conn, now)
        if probe == ALIVE:
            return "still_connected"
        try:
            self.vault.refresh(realm_id, source=DISCONNECT_URL)
            return "still_connected"
        except NotConnected:
            return "not_connected"
        except (RefreshUnavailable, NeedsReauthorization):
            pass
        latest = self.connections.get_connection(realm_id, consistent=True)
        if latest is None or latest.status == STATUS_DISCONNECTED:
            return "not_connected"
        refused = latest.last_error == "invalid_grant" or latest.status != conn.status
        if not (refused and probe == REJECTED):
            logger.info(
                "disconnect hint not confirmed",
                extra={"realm_id": realm_id, "probe": probe, "invalid_grant": refused},
            )
            return "unconfirmed"
        return self._disconnect(latest)

    def _probe(self, conn: Connection, now: float) -> str:
        """ALIVE, REJECTED (401) or UNKNOWN: one quick call with the stored access token."""
        if (
            conn.data_key is None
            or conn.access_token_enc is None
            or conn.access_expires_at <= now + PROBE_MARGIN_SECONDS
        ):
            return UNKNOWN
        try:
            token = self.cipher.open(
                conn.realm_id, conn.data_key, ACCESS_FIELD, conn.access_token_enc
            )
            client = self.intuit()
        except ConfigurationError:
            raise
        except Exception as exc:
            logger.warning(
                "disconnect hint: access token unreadable",
                extra={"realm_id": conn.realm_id, "error_type": type(exc).__name__},
            )
            return UNKNOWN
        quick = client.quick(PROBE_TIMEOUT_SECONDS)
        try:
            if "com.intuit.quickbooks.accounting" in conn.scopes:
                quick.company_info(conn.realm_id, token)
            elif "openid" in conn.scopes:
                quick.userinfo(token)
            else:
                return UNKNOWN
        except IntuitError as exc:
            return REJECTED if exc.status == 401 else UNKNOWN
        return ALIVE

    def _disconnect(self, conn: Connection) -> str:
        now = self.clock()
        # The event is recorded with the disconnect itself and published after it (the
        # outbox, see events.py): it goes out at least once even if this process dies.
        event = lifecycle.PendingEvent.new(
            lifecycle.DISCONNECTED,
            {"realm_id": conn.realm_id, "tenant_id": conn.tenant_id, "reason": REASON},
            now=now,
        )
        before = self.connections.mark_disconnected_by_intuit(
            conn.realm_id,
            seen_version=conn.version,
            reason=REASON,
            marker=uuid.uuid4().hex,
            now=now,
            event=event,
        )
        if before is None:
            logger.info(
                "disconnect hint: the connection changed meanwhile; left as it is",
                extra={"realm_id": conn.realm_id},
            )
            return "changed_meanwhile"
        logger.warning(
            "connection disconnected in QuickBooks (confirmed by Intuit)",
            extra={"realm_id": conn.realm_id, "tenant_id": before.tenant_id},
        )
        after = self.connections.get_connection(conn.realm_id, consistent=True)
        if after is not None:
            self.vault.flush_events(after)
        self.history.record(
            conn.realm_id,
            source=DISCONNECT_URL,
            outcome=STATUS_DISCONNECTED,
            detail=REASON,
            closed_run=before.raw.get(REFRESH_RUN),
        )
        return "disconnected"


def verify(hints: Callable[[], DisconnectHints], realm_id: str | None, source_ip: str) -> str:
    """The handler's entry: verify with this container's vault; never fails the page.

    The person has just disconnected (or someone forged the request): either way the page is
    the same, so a failure here is logged and the page still shows.
    """
    try:
        verdict = hints().handle(realm_id, source_ip)
    except Exception:
        logger.exception("disconnect hint not verified")
        verdict = "failed"
    valid = bool(realm_id and validation.REALM_ID.match(realm_id))
    logger.info(
        "disconnect hint", extra={"verdict": verdict, "realm_id": realm_id if valid else None}
    )
    return verdict
