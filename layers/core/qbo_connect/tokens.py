"""The refresh protocol: lease, conditional commit, failure classes (DESIGN.md, "the heart").

Why each step exists:

1. Acquire a lease with a conditional write on the version we read and "no live lease", so at
   most one process talks to Intuit about a connection at a time. Intuit rotates refresh
   tokens: two concurrent refreshes with the same token make one of them hold a token Intuit
   has already superseded.
2. Call Intuit with the refresh token of that version. The lease outlives the client's whole
   timeout-and-retry budget (``Settings.lease_duration``), so it cannot expire under a live
   holder.
3. Commit conditioned on version and lease owner: a holder that lost its lease can never
   overwrite newer tokens. The previous refresh token is kept for recovery.
4. Anyone who meets a live lease polls (bounded) until the version moves and reads the result.

A crash between 2 and 3 leaves the lease to expire; the next holder refreshes with the stored
token, and Intuit's grace window for the previous token returns the current tokens. With no
grace the rejection is recorded and, if it persists, the connection is flagged
``needs_reauthorization`` (one event), never silently left broken.

invalid_grant is not proof of death: Intuit answers it during outages too. We re-read (a
reconnect may have stored a newer token) and retry with the latest; a connection is declared
dead only when rejections persist over ``invalid_grant_window_seconds`` across at least
``invalid_grant_min_attempts`` attempts, or when its refresh token is past its known expiry.
Until then callers get ``refresh_unavailable`` and the stored tokens stay untouched.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from qbo_connect import events as lifecycle
from qbo_connect.config import Settings
from qbo_connect.crypto import DecryptionError, TokenCipher
from qbo_connect.due import next_due_at
from qbo_connect.errors import (
    ConfigurationError,
    IntuitError,
    IntuitTransientError,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    LeaseHeld,
    LeaseLost,
    NeedsReauthorization,
    NotConnected,
    RefreshUnavailable,
)
from qbo_connect.intuit import IntuitClient, TokenSet
from qbo_connect.store import (
    STATUS_ACTIVE,
    STATUS_NEEDS_REAUTHORIZATION,
    Connection,
    SealedTokens,
    Store,
)

logger = Logger(child=True)

ACCESS_FIELD = "access_token"
REFRESH_FIELD = "refresh_token"
PREVIOUS_REFRESH_FIELD = "previous_refresh_token"
MAX_MIN_VALID_SECONDS = 3000  # Intuit access tokens live 3600 s; ask for less than that.


def owned_by(conn: Connection | None, tenant_id: str | None) -> Connection | None:
    """The tenant guard: with ``tenant_id``, another tenant's connection counts as absent."""
    if conn is not None and tenant_id is not None and conn.tenant_id != tenant_id:
        return None
    return conn


@dataclass(frozen=True)
class AccessToken:
    """A usable access token; ``repr`` hides the token."""

    access_token: str = field(repr=False)
    expires_at: float
    realm_id: str
    environment: str
    api_base_url: str

    def to_response(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires_at)),
            "realm_id": self.realm_id,
            "environment": self.environment,
            "api_base_url": self.api_base_url,
        }


@dataclass
class RefreshObserver:
    """Hooks for metrics; the worker and handlers plug Powertools Metrics in here."""

    on_refreshed: Callable[[Connection], None] = lambda conn: None
    on_failed: Callable[[str, str], None] = lambda realm_id, failure_class: None


class TokenVault:
    """get_token and refresh for one table, following the protocol in the module docstring."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        cipher: TokenCipher,
        intuit: Callable[[], IntuitClient],
        events: lifecycle.EventPublisher | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        observer: RefreshObserver | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cipher = cipher
        self.intuit_client = intuit  # a factory: credentials may rotate between calls
        self.events = events
        self._clock = clock
        self._sleep = sleep
        self.observer = observer or RefreshObserver()

    # ----- sealing ---------------------------------------------------------------------------

    def seal(
        self,
        realm_id: str,
        tokens: TokenSet,
        *,
        data_key: bytes | None = None,
        previous_refresh_token: str | None = None,
    ) -> SealedTokens:
        """Encrypt a token set for storage, reusing the connection's data key when it has one.

        The superseded refresh token is sealed under its own field label, so its ciphertext
        cannot be swapped with the current one's by someone who can write the table.
        """
        wrapped = data_key or self.cipher.new_data_key(realm_id)
        previous_refresh_token_enc = (
            self.cipher.seal(realm_id, wrapped, PREVIOUS_REFRESH_FIELD, previous_refresh_token)
            if previous_refresh_token is not None
            else None
        )
        return SealedTokens(
            data_key=wrapped,
            access_token_enc=self.cipher.seal(realm_id, wrapped, ACCESS_FIELD, tokens.access_token),
            refresh_token_enc=self.cipher.seal(
                realm_id, wrapped, REFRESH_FIELD, tokens.refresh_token
            ),
            access_expires_at=tokens.access_expires_at,
            refresh_expires_at=tokens.refresh_expires_at,
            refresh_hard_expires_at=tokens.refresh_hard_expires_at,
            previous_refresh_token_enc=previous_refresh_token_enc,
        )

    def open_previous_refresh_token(self, conn: Connection) -> str | None:
        """The superseded refresh token, or None.

        Migration: items written before it had its own label hold the old ciphertext sealed
        under the refresh token's label. Such a blob is still accepted *in this slot* (the
        worst a swap into it can do is keep the current token as "previous") and is re-sealed
        under the new label by the commit that reads it, so every active connection is
        migrated by its next refresh (at most ``KeepAliveHours`` away). The current refresh
        token is only ever opened under its own label.
        """
        blob = conn.previous_refresh_token_enc
        if not blob or conn.data_key is None:
            return None
        for label in (PREVIOUS_REFRESH_FIELD, REFRESH_FIELD):
            try:
                return self.cipher.open(conn.realm_id, conn.data_key, label, blob)
            except DecryptionError:
                continue
        logger.warning(
            "superseded refresh token does not open; dropped", extra={"realm_id": conn.realm_id}
        )
        return None

    def due_at_for(self, conn: Connection, now: float) -> float:
        return next_due_at(
            settings=self.settings,
            now=now,
            last_refreshed_at=conn.last_refreshed_at or now,
            access_expires_at=conn.access_expires_at,
            last_used_at=conn.last_used_at,
            refresh_hard_expires_at=conn.refresh_hard_expires_at,
            expiring_notified=conn.expiring_notified,
        )

    def due_at_for_new(self, sealed: SealedTokens, now: float) -> float:
        """Due time of a connection whose tokens were just obtained."""
        return next_due_at(
            settings=self.settings,
            now=now,
            last_refreshed_at=now,
            access_expires_at=sealed.access_expires_at,
            last_used_at=None,
            refresh_hard_expires_at=sealed.refresh_hard_expires_at,
        )

    # ----- get_token -------------------------------------------------------------------------

    def get_token(
        self, realm_id: str, min_valid_seconds: int = 300, *, tenant_id: str | None = None
    ) -> AccessToken:
        """A token valid for at least ``min_valid_seconds``: one GetItem when warm.

        With ``tenant_id`` (the tenant guard), another tenant's realm answers not_connected.
        """
        if not isinstance(min_valid_seconds, int) or isinstance(min_valid_seconds, bool):
            raise InvalidRequest("min_valid_seconds must be an integer")
        if not 0 <= min_valid_seconds <= MAX_MIN_VALID_SECONDS:
            raise InvalidRequest(f"min_valid_seconds must be between 0 and {MAX_MIN_VALID_SECONDS}")

        def fresh_enough(conn: Connection) -> bool:
            return conn.access_expires_at - self._clock() >= min_valid_seconds

        conn = self._require_usable(
            owned_by(self.store.get_connection(realm_id, consistent=True), tenant_id), realm_id
        )
        if not fresh_enough(conn):
            conn = self._require_usable(
                owned_by(self._refresh_until(realm_id, fresh_enough, conn), tenant_id), realm_id
            )
        self._touch(conn)
        assert conn.data_key is not None and conn.access_token_enc is not None
        token = self.cipher.open(realm_id, conn.data_key, ACCESS_FIELD, conn.access_token_enc)
        return AccessToken(
            access_token=token,
            expires_at=conn.access_expires_at,
            realm_id=realm_id,
            environment=conn.environment,
            api_base_url=self.settings.intuit.api_base_url,
        )

    def _touch(self, conn: Connection) -> None:
        """Record last use at most once per interval; decided in memory first, so free."""
        now = self._clock()
        interval = self.settings.last_used_write_interval_seconds
        if conn.last_used_at is not None and now - conn.last_used_at < interval:
            return
        conn.last_used_at = now
        try:
            self.store.touch_last_used(
                conn.realm_id, now=now, min_interval=interval, due_at=self.due_at_for(conn, now)
            )
        except Exception:
            logger.warning("last_used_at not recorded", extra={"realm_id": conn.realm_id})

    # ----- refresh ---------------------------------------------------------------------------

    def refresh(self, realm_id: str, *, tenant_id: str | None = None) -> Connection:
        """Refresh now (ConnectionsFunction ``refresh``): at least one new token set."""
        conn = self._require_usable(
            owned_by(self.store.get_connection(realm_id, consistent=True), tenant_id), realm_id
        )
        seen = conn.version
        refreshed = self._refresh_until(realm_id, lambda c: c.version > seen, conn)
        return self._require_usable(owned_by(refreshed, tenant_id), realm_id)

    def refresh_if_due(
        self,
        realm_id: str,
        *,
        claimed_due_at: float | None = None,
        before_refresh: Callable[[Connection], None] | None = None,
    ) -> str:
        """The worker's entry: refresh only if still due; returns what happened.

        A message for a connection no longer due, leased by someone else, or gone is
        acknowledged without a refresh (``skipped_*``), so redeliveries and overlapping sweeps
        never cause extra calls to Intuit.

        ``claimed_due_at`` is the due time the sweep wrote when it enqueued the connection (its
        claim, which keeps the next sweep from enqueueing it again): a connection still
        carrying exactly that value was not rescheduled since, so it is due. ``before_refresh``
        runs once the connection is known to be due, before the lease (the worker records
        expiring notices there, so the commit's next due time already accounts for them).
        """
        conn = self.store.get_connection(realm_id, consistent=True)
        now = self._clock()
        if conn is None or conn.status != STATUS_ACTIVE:
            return "skipped_gone"
        claimed = (
            claimed_due_at is not None
            and conn.due_at is not None
            and abs(conn.due_at - claimed_due_at) < 0.001
        )
        if conn.due_at is None or (conn.due_at > now and not claimed):
            return "skipped_not_due"
        if conn.has_live_lease(now):
            return "skipped_leased"
        if before_refresh is not None:
            before_refresh(conn)
        seen = conn.version
        self._refresh_until(realm_id, lambda c: c.version > seen, conn, wait=False)
        return "refreshed"

    def _require_usable(self, conn: Connection | None, realm_id: str) -> Connection:
        if conn is None or conn.status not in (STATUS_ACTIVE, STATUS_NEEDS_REAUTHORIZATION):
            raise NotConnected(f"realm {realm_id} is not connected")
        if conn.status == STATUS_NEEDS_REAUTHORIZATION:
            raise NeedsReauthorization(
                f"realm {realm_id} must be reconnected by its user",
                reason=conn.reauth_reason,
            )
        return conn

    def _refresh_until(
        self,
        realm_id: str,
        satisfied: Callable[[Connection], bool],
        conn: Connection,
        *,
        wait: bool = True,
    ) -> Connection:
        """Loop until ``satisfied``: lead a refresh under the lease or wait for the leader."""
        deadline = self._clock() + self.settings.lease_wait_seconds
        poll = 0.05
        waited_on_version: int | None = None
        while True:
            conn = self._require_usable(conn, realm_id)
            if satisfied(conn):
                return conn
            now = self._clock()
            if now >= deadline:
                raise RefreshUnavailable(f"realm {realm_id}: a refresh is still in progress")
            if (
                waited_on_version == conn.version
                and not conn.lease_owner
                and conn.last_error is not None
            ):
                # The leader we waited for released its lease without committing: Intuit just
                # failed it. Its failure is ours too; trying again ourselves would multiply the
                # load on Intuit during an outage by the number of waiters. (A leader that
                # crashed leaves its lease to expire instead, and then we do take over.)
                raise RefreshUnavailable(
                    f"realm {realm_id}: the refresh in progress failed ({conn.last_error})"
                )
            if conn.has_live_lease(now):
                if not wait:
                    raise RefreshUnavailable(f"realm {realm_id}: another refresh holds the lease")
                waited_on_version = conn.version
                # Bounded wait with jitter, so 50 waiters do not read in lockstep.
                self._sleep(min(poll, max(deadline - now, 0)) * random.uniform(0.5, 1.5))
                poll = min(poll * 1.5, 0.5)
                conn = self._reread(realm_id)
                continue
            owner = uuid.uuid4().hex
            try:
                leased = self.store.acquire_lease(
                    realm_id,
                    seen_version=conn.version,
                    owner=owner,
                    now=now,
                    until=now + self.settings.lease_duration,
                )
            except LeaseHeld:
                conn = self._reread(realm_id)
                continue
            outcome = self._refresh_holding_lease(leased, owner)
            if outcome is not None and satisfied(outcome):
                return outcome
            # The version moved under us (a reconnect), or our lease was taken over before we
            # could commit and the new holder has not committed yet: never hand out what is
            # stored unless it satisfies the caller; start over (wait for the new holder).
            conn = outcome if outcome is not None else self._reread(realm_id)

    def _reread(self, realm_id: str) -> Connection:
        return self._require_usable(self.store.get_connection(realm_id, consistent=True), realm_id)

    def _refresh_holding_lease(self, conn: Connection, owner: str) -> Connection | None:
        realm_id = conn.realm_id
        assert conn.data_key is not None and conn.refresh_token_enc is not None
        refresh_token = self.cipher.open(
            realm_id, conn.data_key, REFRESH_FIELD, conn.refresh_token_enc
        )
        try:
            tokens = self.intuit_client().refresh(refresh_token)
        except InvalidGrant as exc:
            latest = self.store.get_connection(realm_id, consistent=True)
            if latest is not None and (
                latest.version != conn.version or latest.refresh_token_enc != conn.refresh_token_enc
            ):
                logger.info(
                    "invalid_grant but a newer token is stored; retrying with it",
                    extra={"realm_id": realm_id},
                )
                return None
            return self._on_invalid_grant(conn, owner, exc)
        except IntuitTransientError as exc:
            self._release(conn, owner, error=f"transient: {exc.status or 'network'}")
            self.observer.on_failed(realm_id, "transient")
            raise RefreshUnavailable(
                f"realm {realm_id}: Intuit is unavailable, try again shortly",
                intuit_tid=exc.intuit_tid,
            ) from None
        except InvalidClient as exc:
            self._release(conn, owner, error="invalid_client")
            self.observer.on_failed(realm_id, "invalid_client")
            raise ConfigurationError(
                "Intuit rejected the client credentials (check the IntuitClientSecret)",
                intuit_tid=exc.intuit_tid,
            ) from None
        except IntuitError as exc:
            self._release(conn, owner, error=f"intuit: {exc.error or exc.status}")
            self.observer.on_failed(realm_id, "other")
            raise RefreshUnavailable(
                f"realm {realm_id}: Intuit refused the refresh ({exc.error or exc.status})",
                intuit_tid=exc.intuit_tid,
            ) from None
        except BaseException:
            self._release(conn, owner, error="internal")
            raise

        # Keep the refresh token this answer superseded: it is what a recovery can fall back on.
        rotated = tokens.refresh_token != refresh_token
        previous = refresh_token if rotated else self.open_previous_refresh_token(conn)
        sealed = self.seal(
            realm_id, tokens, data_key=conn.data_key, previous_refresh_token=previous
        )
        now = self._clock()
        preview = Connection(**{**conn.__dict__})
        preview.last_refreshed_at = now
        preview.access_expires_at = sealed.access_expires_at
        preview.refresh_hard_expires_at = sealed.refresh_hard_expires_at
        try:
            committed = self.store.commit_refresh(
                realm_id,
                seen_version=conn.version,
                owner=owner,
                tokens=sealed,
                now=now,
                due_at=self.due_at_for(preview, now),
            )
        except LeaseLost:
            # Someone took over (our lease expired) and may have committed: never overwrite.
            logger.warning("refresh commit lost its lease", extra={"realm_id": realm_id})
            self.observer.on_failed(realm_id, "lease_lost")
            return self._reread(realm_id)
        logger.info(
            "refreshed",
            extra={"realm_id": realm_id, "version": committed.version, "rotated": rotated},
        )
        self.observer.on_refreshed(committed)
        if self.events:
            self.events.publish(
                lifecycle.REFRESHED,
                {"realm_id": realm_id, "tenant_id": committed.tenant_id, "rotated": rotated},
            )
        return committed

    def _release(
        self, conn: Connection, owner: str, *, error: str, invalid_grant: bool = False
    ) -> None:
        try:
            self.store.release_lease(
                conn.realm_id,
                owner=owner,
                now=self._clock(),
                error=error,
                invalid_grant=invalid_grant,
            )
        except LeaseLost:
            logger.warning("lease already gone on release", extra={"realm_id": conn.realm_id})

    def _on_invalid_grant(self, conn: Connection, owner: str, exc: InvalidGrant) -> Connection:
        realm_id = conn.realm_id
        now = self._clock()
        first = conn.invalid_grant_first_at or now
        attempts = conn.invalid_grant_count + 1
        expired = bool(conn.refresh_expires_at and now >= conn.refresh_expires_at) or bool(
            conn.refresh_hard_expires_at and now >= conn.refresh_hard_expires_at
        )
        persisted = (
            attempts >= self.settings.invalid_grant_min_attempts
            and now - first >= self.settings.invalid_grant_window_seconds
        )
        self.observer.on_failed(realm_id, "invalid_grant")
        if expired or persisted:
            reason = "refresh_token_expired" if expired else "invalid_grant"
            try:
                self.store.mark_needs_reauthorization(
                    realm_id, seen_version=conn.version, owner=owner, reason=reason, now=now
                )
            except LeaseLost:
                return self._reread(realm_id)
            logger.warning(
                "connection needs reauthorization",
                extra={
                    "realm_id": realm_id,
                    "reason": reason,
                    "attempts": attempts,
                    "intuit_tid": exc.intuit_tid,
                },
            )
            if self.events:
                self.events.publish(
                    lifecycle.NEEDS_REAUTHORIZATION,
                    {"realm_id": realm_id, "tenant_id": conn.tenant_id, "reason": reason},
                )
            raise NeedsReauthorization(
                f"realm {realm_id} must be reconnected by its user", reason=reason
            )
        self._release(conn, owner, error="invalid_grant", invalid_grant=True)
        logger.warning(
            "Intuit answered invalid_grant; tokens kept until the rejection persists",
            extra={"realm_id": realm_id, "attempts": attempts, "intuit_tid": exc.intuit_tid},
        )
        raise RefreshUnavailable(
            f"realm {realm_id}: Intuit rejected the refresh; it will be retried before the "
            "connection is declared dead",
            intuit_tid=exc.intuit_tid,
        )
