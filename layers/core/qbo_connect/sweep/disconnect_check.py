"""Verifying a Disconnect URL hint in the refresh worker: Intuit decides, an outsider cannot.

ConnectFunction queues a ``disconnect_hint`` message for every well-formed realm id sent to the
Disconnect URL (see ``qbo_connect.connect.disconnect_hint``). Anyone can send one, so here:

1. The realm's cool-down is taken first, before any read: at most one verification per realm per
   ``disconnect_hint_realm_interval_seconds`` (a day by default), whoever sends how many hints
   from however many addresses. Everything after it costs at most one probe and one refresh.
2. A probe with the stored access token, if it is still valid: one quick CompanyInfo (or
   userinfo) call. Intuit invalidates a grant's access tokens when the app is disconnected, so a
   200 proves the grant alive and nothing more happens: no refresh, no write.
3. Otherwise a verification refresh through the vault (``TokenVault.refresh``, the same lease and
   commit as every refresh). If it works the grant is alive.
4. The grant is *confirmed* gone only by two independent answers to *this* verification: the
   access token refused with 401 *and* this refresh refused with ``invalid_grant`` (the reason
   of the exception it raised, never a ``last_error`` an earlier attempt left on the item: a
   refresh that failed for another reason or lost the lease race confirms nothing). Intuit also
   answers ``invalid_grant`` during outages, but an outage of the token endpoint does not make
   the accounting API refuse a valid access token. Then the connection is marked disconnected
   (its tokens deleted, conditioned on the version seen, so a reconnect in between wins) and
   exactly one ``connection.disconnected`` event goes out with ``reason:
   disconnected_in_quickbooks``.

   With only one of the two (say the access token had expired), nothing is decided here: the
   vault recorded the ``invalid_grant`` and its own rule (a rejection that persists over
   ``InvalidGrantWindowMinutes``) flags the connection ``needs_reauthorization`` later, as the
   next keep-alive refresh would for any revoked grant.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from qbo_connect import events as lifecycle
from qbo_connect.config import Settings
from qbo_connect.errors import (
    ConfigurationError,
    IntuitError,
    NeedsReauthorization,
    NotConnected,
    RateLimited,
    RefreshUnavailable,
)
from qbo_connect.intuit import IntuitClient
from qbo_connect.store.connections import Connection, ConnectionRepository
from qbo_connect.store.cooldowns import Cooldowns
from qbo_connect.store.table import REFRESH_RUN, STATUS_ACTIVE, STATUS_DISCONNECTED
from qbo_connect.vault.history import DISCONNECT_URL, History
from qbo_connect.vault.protocol import TokenVault
from qbo_connect.vault.records import ACCESS_FIELD
from qbo_connect.vault.sealing import TokenCipher

if TYPE_CHECKING:  # built by the composition root; the sweep itself never loads it
    from qbo_connect.api.governor import Governor

logger = Logger(child=True)

REASON = "disconnected_in_quickbooks"
PROBE_TIMEOUT_SECONDS = 3.0
#: How long the probe waits for room in the realm's rate before giving up on probing.
PROBE_MAX_WAIT_SECONDS = 2.0
#: An access token this close to expiry is not used for the probe.
PROBE_MARGIN_SECONDS = 30
ALIVE, REJECTED, UNKNOWN = "alive", "rejected", "unknown"
#: The reasons of the vault's exceptions that mean Intuit refused this very refresh with
#: ``invalid_grant`` (kept for the window, or the window already over).
REFUSED_REASONS = frozenset({"invalid_grant_unconfirmed", "invalid_grant"})


@dataclass(eq=False)
class DisconnectHints:
    """Verifies a Disconnect URL hint for one realm and acts only on Intuit's confirmation."""

    vault: TokenVault
    connections: ConnectionRepository
    cooldowns: Cooldowns
    settings: Settings
    cipher: TokenCipher
    intuit: Callable[[], IntuitClient]
    history: History
    clock: Callable[[], float] = time.time
    #: Counts the probe's CompanyInfo read, a CorePlus call of the service's own (usage meter).
    usage: Callable[[str, str], None] | None = None
    #: The realm's rate, shared with every proxied call (``qbo_connect.api.governor``).
    governor: Governor | None = None
    #: A 429 to the probe holds every container back this long (the proxy's setting).
    throttle_cool_down_seconds: float = 60.0

    def handle(self, realm_id: str) -> str:
        """What was done, as a short verdict for the log and the worker's outcome."""
        if not self.cooldowns.take(
            f"DISCONNECT_HINT#{realm_id}",
            now=self.clock(),
            interval_seconds=self.settings.disconnect_hint_realm_interval_seconds,
        ):
            return "realm_rate_limited"
        conn = self.connections.get_connection(realm_id, consistent=True)
        if conn is None or conn.status == STATUS_DISCONNECTED:
            return "not_connected"
        if conn.status != STATUS_ACTIVE:
            # Already waiting for its user to reconnect: a verification refresh would not be
            # this verification's own answer, and the page asks for nothing more.
            return "unconfirmed"
        probe = self._probe(conn, self.clock())
        if probe == ALIVE:
            return "still_connected"
        try:
            self.vault.refresh(realm_id, source=DISCONNECT_URL)
            return "still_connected"
        except NotConnected:
            return "not_connected"
        except (RefreshUnavailable, NeedsReauthorization) as exc:
            refused = exc.reason in REFUSED_REASONS
        if not (refused and probe == REJECTED):
            logger.info(
                "disconnect hint not confirmed",
                extra={"realm_id": realm_id, "probe": probe, "invalid_grant": refused},
            )
            return "unconfirmed"
        latest = self.connections.get_connection(realm_id, consistent=True)
        if latest is None or latest.status == STATUS_DISCONNECTED:
            return "not_connected"
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
        if "com.intuit.quickbooks.accounting" in conn.scopes:
            return self._probe_company_info(conn, lambda: quick.company_info(conn.realm_id, token))
        if "openid" not in conn.scopes:
            return UNKNOWN
        try:
            quick.userinfo(token)  # Intuit's OAuth server: not the realm's QuickBooks budget
        except IntuitError as exc:
            return REJECTED if exc.status == 401 else UNKNOWN
        return ALIVE

    def _probe_company_info(self, conn: Connection, call: Callable[[], object]) -> str:
        """The probe as any QuickBooks API call: inside a governor slot (every container shares
        the realm's rate; a busy or cooling realm is not probed), metered once answered, and a
        throttle shared as a cool-down."""
        ticket = None
        if self.governor is not None:
            try:
                ticket = self.governor.acquire(
                    conn.realm_id, batch=False, max_wait=PROBE_MAX_WAIT_SECONDS
                )
            except RateLimited:
                return UNKNOWN
        try:
            with self.governor.holding(ticket) if ticket and self.governor else nullcontext():
                call()
        except IntuitError as exc:
            if exc.status is not None:
                self._count_read(conn)  # QuickBooks answered: a metered call
            if exc.status == 429 and self.governor is not None:
                self.governor.cool_down(conn.realm_id, self.throttle_cool_down_seconds)
            return REJECTED if exc.status == 401 else UNKNOWN
        self._count_read(conn)
        return ALIVE

    def _count_read(self, conn: Connection) -> None:
        if self.usage is not None and conn.tenant_id:
            self.usage(conn.tenant_id, conn.realm_id)

    def _disconnect(self, conn: Connection) -> str:
        now = self.clock()
        # The event is recorded with the disconnect itself and published after it (the
        # outbox, see events.py): it goes out at least once even if this process dies.
        event = lifecycle.PendingEvent.about(lifecycle.DISCONNECTED, conn, now=now, reason=REASON)
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
