"""The refresh protocol: lease, conditional commit, failure classes (docs/architecture.md).

Why each step exists:

1. Acquire a lease with a conditional write on the version we read and "no live lease", so at
   most one process talks to Intuit about a connection at a time. Intuit rotates refresh
   tokens: two concurrent refreshes with the same token make one of them hold a token Intuit
   has already superseded.
2. Call Intuit with the refresh token of that version. The lease outlives the client's whole
   timeout-and-retry budget (``Settings.lease_duration``), so it cannot expire under a live
   holder.
3. Commit conditioned on version and lease owner: a holder that lost its lease can never
   overwrite newer tokens.
4. Anyone who meets a live lease polls (bounded) until the version moves and reads the result.

A crash between 2 and 3 leaves the lease to expire; the lease write also made the connection
due just after that, so the sweep comes back even if no caller does. The next holder refreshes
with the stored token, and Intuit's grace window for the previous token returns the current
tokens. With no grace the rejection is recorded and, if it persists, the connection is flagged
``needs_reauthorization`` (one event), never silently left broken.

Every AWS call may fail before it is applied, or be applied and lose its answer (boto3 then
retries it). So:

- each conditional write recognises its own earlier success (``qbo_connect.store``): a retried lease
  acquire meets our own lease, a retried commit our own version;
- the lease is released on every exit (an Intuit failure, a KMS throttle, an unexpected error),
  and the release sets a due time after a bounded, jittered backoff (``refresh_failures``);
- a commit that fails transiently while the lease is ours is retried within the lease (the new
  tokens exist nowhere else; with no grace at Intuit they are the connection);
- a commit that meets ``LeaseLost`` re-reads: if the version is unchanged and the connection
  active, nobody stored newer tokens, and ours (issued against the stored refresh token of that
  very version) are the newest there are: they are committed without the lease condition (a
  *late commit*, still conditioned on the version). A holder that took the lease over meanwhile
  either got nothing from Intuit (with no grace its token was already superseded) or gets the
  current tokens within the grace; its own commit then meets the moved version and reads ours;
- lifecycle events are recorded in the write that makes them true and published after it
  (``events.py``): a lost answer or a failed put never loses one;
- a connection whose tokens cannot be decrypted (ciphertext or wrapped key that never opens,
  unlike a KMS throttle) is flagged ``needs_reauthorization`` with reason
  ``tokens_undecryptable`` once, with its event and a metric, and leaves the sweep's index.

The superseded refresh token is not stored. Once Intuit has rotated, the stored (newest) token
is the only one worth trying: when Intuit rejects it, an older one from the same grant is
superseded or revoked too, so keeping it would add token material at rest and no recovery.

invalid_grant is not proof of death: Intuit answers it during outages too. We re-read (a
reconnect may have stored a newer token) and retry with the latest; a connection is declared
dead only when rejections persist over ``invalid_grant_window_seconds`` across at least
``invalid_grant_min_attempts`` attempts, or when its refresh token is past its known expiry.
Until then callers get ``refresh_unavailable`` and the stored tokens stay untouched. On top of
that a fleet-level breaker (``breaker.py``) suspends every invalid_grant verdict while many
connections are rejected at once with no success in between: that is an Intuit outage.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NoReturn

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from qbo_connect import events as lifecycle
from qbo_connect.config import Settings
from qbo_connect.errors import (
    ConfigurationError,
    DecryptionError,
    IntuitError,
    IntuitTransientError,
    InvalidClient,
    InvalidGrant,
    LeaseHeld,
    LeaseLost,
    NeedsReauthorization,
    NotConnected,
    RefreshUnavailable,
    ServiceError,
)
from qbo_connect.intuit import IntuitClient, TokenSet
from qbo_connect.store.connections import Connection, ConnectionRepository, SealedTokens
from qbo_connect.store.table import REFRESH_RUN, STATUS_ACTIVE, STATUS_NEEDS_REAUTHORIZATION
from qbo_connect.vault.breaker import InvalidGrantBreaker
from qbo_connect.vault.due import due_at_for, due_at_for_new
from qbo_connect.vault.health import health_of
from qbo_connect.vault.history import GET_TOKEN, OPERATOR, SWEEP, History, next_run
from qbo_connect.vault.outbox import Outbox
from qbo_connect.vault.reader import TokenReader
from qbo_connect.vault.records import (
    REFRESH_FIELD,
    AccessToken,
    ExpiringNotice,
    RefreshObserver,
    owned_by,
)
from qbo_connect.vault.sealing import TokenCipher, seal_tokens

logger = Logger(child=True)

#: A reader publishes an outbox entry only once it is this old: younger ones are still being
#: published by their writer (8 callers meeting a fresh verdict must not publish it 8 times).
#: The sweep's visit comes after OUTBOX_RETRY_SECONDS, later than this, and publishes any.
OUTBOX_READER_GRACE_SECONDS = 30.0


#: What ran the refresh in progress (``history`` sources): set by the public entry points,
#: read where the attempt settles, without threading it through every internal call.
_SOURCE: ContextVar[str] = ContextVar("qbo_connect_refresh_source", default=OPERATOR)


@contextmanager
def _running_as(source: str) -> Iterator[None]:
    token = _SOURCE.set(source)
    try:
        yield
    finally:
        _SOURCE.reset(token)


class TokenVault:
    """get_token and refresh for one table, following the protocol in the module docstring."""

    def __init__(
        self,
        *,
        settings: Settings,
        connections: ConnectionRepository,
        cipher: TokenCipher,
        intuit: Callable[[], IntuitClient],
        events: lifecycle.EventPublisher | None = None,
        breaker: InvalidGrantBreaker,
        history: History | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        observer: RefreshObserver | None = None,
    ) -> None:
        self.settings = settings
        self.connections = connections
        self.cipher = cipher
        self.intuit_client = intuit  # a factory: credentials may rotate between calls
        self.events = events
        self._clock = clock
        self._sleep = sleep
        self.observer = observer or RefreshObserver()
        self.breaker = breaker
        self.history = history
        self.outbox = Outbox(connections, events, clock=clock)
        self.reader = TokenReader(
            settings=settings, connections=connections, cipher=cipher, refresher=self, clock=clock
        )

    # ----- parts of the vault that other services call --------------------------------------

    def seal(self, realm_id: str, tokens: TokenSet, **options: Any) -> SealedTokens:
        """Encrypt a token set for storage (see :func:`~qbo_connect.vault.sealing.seal_tokens`)."""
        return seal_tokens(self.cipher, realm_id, tokens, **options)

    def due_at_for(self, conn: Connection, now: float) -> float:
        return due_at_for(self.settings, conn, now)

    def due_at_for_new(self, sealed: SealedTokens, now: float) -> float:
        """Due time of a connection whose tokens were just obtained."""
        return due_at_for_new(self.settings, sealed, now)

    def flush_events(self, conn: Connection, *, min_age: float = 0.0) -> bool:
        """Publish what the item's outbox holds (see :class:`~qbo_connect.vault.outbox.Outbox`)."""
        return self.outbox.flush(conn, min_age=min_age)

    def get_token(
        self, realm_id: str, min_valid_seconds: int = 300, *, tenant_id: str | None = None
    ) -> AccessToken:
        """A valid access token (see :class:`~qbo_connect.vault.reader.TokenReader`)."""
        with _running_as(GET_TOKEN):
            return self.reader.get_token(realm_id, min_valid_seconds, tenant_id)

    def refresh_past(
        self, realm_id: str, used_version: int, *, tenant_id: str | None = None
    ) -> AccessToken:
        """A token newer than the one read at ``used_version`` (QuickBooks refused that one).

        Refreshes under the lease only if the version has not moved since: any number of
        callers, in any number of containers, that met a 401 with the same token cause one
        Intuit refresh; the others wait for it or find it done.
        """
        with _running_as(GET_TOKEN):
            conn = self.require_usable(
                owned_by(self.connections.get_connection(realm_id, consistent=True), tenant_id),
                realm_id,
            )
            self.refresh_until(
                realm_id,
                lambda c: c.version > used_version and c.access_token_enc is not None,
                conn,
            )
            return self.reader.get_token(realm_id, 0, tenant_id)

    # ----- refresh ---------------------------------------------------------------------------

    def refresh(
        self, realm_id: str, *, tenant_id: str | None = None, source: str = OPERATOR
    ) -> Connection:
        """Refresh now (ConnectionsFunction ``refresh``): at least one new token set.

        ``source`` is what the history records as having run it (an operator by default).
        """
        with _running_as(source):
            conn = self.require_usable(
                owned_by(self.connections.get_connection(realm_id, consistent=True), tenant_id),
                realm_id,
            )
            seen = conn.version
            refreshed = self.refresh_until(realm_id, lambda c: c.version > seen, conn)
            return self.require_usable(owned_by(refreshed, tenant_id), realm_id)

    def refresh_if_due(
        self,
        realm_id: str,
        *,
        due_at: float | None = None,
        expiring_notice: Callable[[Connection], ExpiringNotice | None] | None = None,
        claimed_due_at: float | None = None,
    ) -> str:
        """The worker's entry (see :meth:`_refresh_if_due`); its refreshes run as the sweep."""
        with _running_as(SWEEP):
            return self._refresh_if_due(
                realm_id,
                due_at=due_at,
                expiring_notice=expiring_notice,
                claimed_due_at=claimed_due_at,
            )

    def _refresh_if_due(
        self,
        realm_id: str,
        *,
        due_at: float | None,
        expiring_notice: Callable[[Connection], ExpiringNotice | None] | None,
        claimed_due_at: float | None = None,
    ) -> str:
        """Refresh only if still due; returns what happened. Two writes when it refreshes.

        The lease is taken by one conditional write that also checks the connection is active,
        due and unleased (``ConnectionRepository.lease_if_due``) and returns the item, so there
        is no read first. A message for a connection no longer due, leased by someone else, or
        gone costs that one failed write and is acknowledged without a refresh (``skipped_*``), so
        redeliveries and duplicates never cause extra calls to Intuit. ``due_at`` is the due
        time the sweep saw in the index: a connection still carrying it is due even if this
        container's clock is a little behind the sweep's. ``claimed_due_at`` comes from an
        earlier version's message (see ``ConnectionRepository.lease_if_due``).

        Pending lifecycle events of the connection (found in the item either way) are
        published whatever its state: a flagged or disconnected connection is in the sweep's
        index only for them. ``events_pending`` means some could not be; the message then
        fails and SQS brings it back. ``expiring_notice`` picks the hard-expiry notice due now
        (the worker's); it is recorded by the commit, with its event.
        """
        now = self._clock()
        owner = uuid.uuid4().hex
        try:
            leased, found = self.connections.lease_if_due(
                realm_id,
                owner=owner,
                now=now,
                until=now + self.settings.lease_duration,
                due_upto=max(now, due_at or 0.0),
                claimed_due_at=claimed_due_at,
            )
        except (ClientError, BotoCoreError):
            self._release_unconfirmed(realm_id, owner)
            raise RefreshUnavailable(
                f"realm {realm_id}: the token store is unavailable, try again shortly",
                reason="store_unavailable",
            ) from None
        if leased is None:
            if found is None:
                return "skipped_gone"
            if not self.flush_events(found):
                return "events_pending"
            if found.status != STATUS_ACTIVE:
                return "skipped_gone"
            return "skipped_leased" if found.has_live_lease(now) else "skipped_not_due"
        notice = expiring_notice(leased) if expiring_notice is not None else None
        try:
            settled = self._refresh_holding_lease(leased, owner, notice=notice)
            if settled is None or settled.version <= leased.version:
                # A newer token was stored meanwhile, or our lease was taken over before the
                # commit: go on as every other caller does, without waiting for a lease.
                settled = self.refresh_until(
                    realm_id,
                    lambda c: c.version > leased.version,
                    settled or self._reread(realm_id),
                    wait=False,
                )
        except NeedsReauthorization:
            raise  # the verdict published everything the item held (``_declare_dead``)
        except Exception:
            if leased.pending_events:
                self.flush_events(leased)
            raise
        # The committed item still holds what was pending, plus the notice the commit recorded.
        if settled.pending_events and not self.flush_events(settled):
            return "events_pending"
        return "refreshed"

    def _release_unconfirmed(self, realm_id: str, owner: str) -> None:
        """A lease write whose outcome is unknown: give back what may be ours (never raises).

        If the write was applied, the release frees the connection for the next visit, after
        the first backoff step; if not, there is nothing to release. A release that fails too
        leaves the lease to expire on its own, and SQS redelivers the message after that.
        """
        now = self._clock()
        try:
            self.connections.release_lease(
                realm_id,
                owner=owner,
                now=now,
                error="store: lease not confirmed",
                retry_due_at=now + self.settings.retry_backoff_base_seconds,
                error_class="store",
                end_run=False,  # the item is not in hand to record the run from
            )
        except LeaseLost:
            pass
        except Exception as exc:
            logger.warning(
                "lease not confirmed nor released; it expires on its own",
                extra={"realm_id": realm_id, "error": type(exc).__name__},
            )

    def require_usable(self, conn: Connection | None, realm_id: str) -> Connection:
        if conn is not None and conn.pending_events:
            # The next visit delivers what a crash or a failed put left behind.
            self.flush_events(conn, min_age=OUTBOX_READER_GRACE_SECONDS)
        if conn is None or conn.status not in (STATUS_ACTIVE, STATUS_NEEDS_REAUTHORIZATION):
            raise NotConnected(f"realm {realm_id} is not connected")
        if conn.status == STATUS_NEEDS_REAUTHORIZATION:
            raise NeedsReauthorization(
                f"realm {realm_id} must be reconnected by its user",
                reason=conn.reauth_reason,
            )
        return conn

    def refresh_until(
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
            conn = self.require_usable(conn, realm_id)
            if satisfied(conn):
                return conn
            now = self._clock()
            if now >= deadline:
                raise RefreshUnavailable(
                    f"realm {realm_id}: a refresh is still in progress",
                    reason="refresh_in_progress",
                )
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
                    f"realm {realm_id}: the refresh in progress failed ({conn.last_error})",
                    reason="refresh_in_progress",
                )
            if conn.has_live_lease(now):
                if not wait:
                    raise RefreshUnavailable(
                        f"realm {realm_id}: another refresh holds the lease",
                        reason="refresh_in_progress",
                    )
                waited_on_version = conn.version
                # Bounded wait with jitter, so 50 waiters do not read in lockstep.
                self._sleep(min(poll, max(deadline - now, 0)) * random.uniform(0.5, 1.5))
                poll = min(poll * 1.5, 0.5)
                conn = self._reread(realm_id)
                continue
            owner = uuid.uuid4().hex
            try:
                leased = self._acquire(conn, owner, now)
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

    def _acquire(self, conn: Connection, owner: str, now: float) -> Connection:
        """Take the lease; the connection becomes due just after it expires (crash recovery)."""
        until = now + self.settings.lease_duration
        try:
            return self.connections.acquire_lease(
                conn.realm_id,
                seen_version=conn.version,
                owner=owner,
                now=now,
                until=until,
                recovery_due_at=until + random.uniform(1.0, 30.0),
            )
        except (ClientError, BotoCoreError):
            # Maybe applied, maybe not: give back what may be ours; if that fails too, the
            # lease expires on its own and the connection is due right after.
            self._release(conn, owner, error="store: lease not confirmed", failure="store")
            raise RefreshUnavailable(
                f"realm {conn.realm_id}: the token store is unavailable, try again shortly",
                reason="store_unavailable",
            ) from None

    def _reread(self, realm_id: str) -> Connection:
        return self.require_usable(
            self.connections.get_connection(realm_id, consistent=True), realm_id
        )

    def _refresh_holding_lease(
        self, conn: Connection, owner: str, *, notice: ExpiringNotice | None = None
    ) -> Connection | None:
        """Refresh at Intuit and settle the lease: commit, verdict or release, on every exit."""
        realm_id = conn.realm_id
        try:
            refresh_token = self._open_refresh_token(conn, owner)
            try:
                client = self.intuit_client()
            except ServiceError as exc:  # the client secret is missing or malformed
                self._release(conn, owner, error=f"configuration: {exc.code}", failure="other")
                raise
            try:
                tokens = client.refresh(refresh_token)
            except InvalidGrant as exc:
                return self._after_invalid_grant(conn, owner, exc)
            except IntuitError as exc:
                failure, error, answer = _refresh_refusal(realm_id, exc)
                self._give_up(
                    conn,
                    owner,
                    failure=failure,
                    error=error,
                    intuit_tid=exc.intuit_tid,
                    answer=answer,
                )
            return self._commit(conn, owner, refresh_token, tokens, notice=notice)
        except ServiceError:
            raise  # each path above settled the lease already
        except BaseException as exc:
            self._release(conn, owner, error=f"internal: {type(exc).__name__}", failure="other")
            if isinstance(exc, Exception):
                self.observer.on_failed(realm_id, "other")
                logger.warning(
                    "refresh failed on an unexpected error; lease released",
                    extra={"realm_id": realm_id, "error": type(exc).__name__},
                )
                raise RefreshUnavailable(
                    f"realm {realm_id}: the refresh failed, try again shortly"
                ) from None
            raise

    def _open_refresh_token(self, conn: Connection, owner: str) -> str:
        """Decrypt the stored refresh token; flag the connection if it can never be opened."""
        realm_id = conn.realm_id
        assert conn.data_key is not None and conn.refresh_token_enc is not None
        try:
            return self.cipher.open(realm_id, conn.data_key, REFRESH_FIELD, conn.refresh_token_enc)
        except DecryptionError:
            self._flag_undecryptable(conn, owner)
        except (ClientError, BotoCoreError) as exc:
            # KMS throttled or unavailable: nothing is wrong with the connection.
            code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else "network"
            self._give_up(
                conn,
                owner,
                failure="transient",
                error=f"kms: {code}",
                answer=RefreshUnavailable(
                    f"realm {realm_id}: the token key is unavailable, try again shortly",
                    reason="key_unavailable",
                ),
            )

    def _give_up(
        self,
        conn: Connection,
        owner: str,
        *,
        failure: str,
        error: str,
        answer: ServiceError,
        intuit_tid: str | None = None,
    ) -> NoReturn:
        """A refresh attempt failed: release the lease recording ``error``, count the
        ``failure`` class, and answer the caller with ``answer`` (never the cause's details)."""
        self._release(conn, owner, error=error, failure=failure, intuit_tid=intuit_tid)
        self.observer.on_failed(conn.realm_id, failure)
        raise answer from None

    def _flag_undecryptable(self, conn: Connection, owner: str) -> NoReturn:
        """Declare a connection whose tokens never open dead, once, with its event."""
        reason = "tokens_undecryptable"
        self.observer.on_failed(conn.realm_id, "undecryptable")
        logger.error(
            "stored tokens cannot be decrypted; the connection must be reconnected",
            extra={"realm_id": conn.realm_id},
        )
        self._declare_dead(conn, owner, reason)

    def flag_undecryptable_unleased(self, conn: Connection) -> NoReturn:
        """The access token did not open on a plain read: take the lease, then flag."""
        owner = uuid.uuid4().hex
        try:
            leased = self._acquire(conn, owner, self._clock())
        except LeaseHeld:
            raise RefreshUnavailable(
                f"realm {conn.realm_id}: the stored tokens are being replaced",
                reason="changed_during_refresh",
            ) from None
        self._flag_undecryptable(leased, owner)

    def _declare_dead(
        self, conn: Connection, owner: str, reason: str, *, intuit_tid: str | None = None
    ) -> NoReturn:
        """Mark needs_reauthorization with its one event (recorded in the same write)."""
        realm_id = conn.realm_id
        now = self._clock()
        event = lifecycle.PendingEvent.about(
            lifecycle.NEEDS_REAUTHORIZATION, conn, now=now, reason=reason
        )
        try:
            marked = self.connections.mark_needs_reauthorization(
                realm_id,
                seen_version=conn.version,
                owner=owner,
                reason=reason,
                now=now,
                event=event,
            )
        except LeaseLost:
            self._reread(realm_id)  # raises when another writer decided already
            raise RefreshUnavailable(
                f"realm {realm_id}: the connection changed during the refresh, try again",
                reason="changed_during_refresh",
            ) from None
        self._settled(conn, marked, STATUS_NEEDS_REAUTHORIZATION, intuit_tid=intuit_tid)
        self.flush_events(marked)
        raise NeedsReauthorization(
            f"realm {realm_id} must be reconnected by its user", reason=reason
        )

    def _keeps_access_token(self, conn: Connection, now: float) -> bool:
        """Is the access token of this refresh worth storing?

        Not for the sweep's keep-alive refresh of an idle connection (nobody read it within
        ``KeepWarmMinutes``): nobody is likely to use that token within its hour, and leaving
        it out keeps the item under 1 KB, so every write of it costs one write unit instead of
        two (an Intuit access token is about 1 KB). A reader then refreshes inline, as it
        would have had to once the hour was over. Every other refresh keeps it.
        """
        if _SOURCE.get() != SWEEP:
            return True
        window = self.settings.keep_warm_minutes * 60.0
        return bool(window > 0 and conn.last_used_at and now - conn.last_used_at <= window)

    def _commit(
        self,
        conn: Connection,
        owner: str,
        refresh_token: str,
        tokens: TokenSet,
        *,
        notice: ExpiringNotice | None = None,
    ) -> Connection:
        """Store Intuit's answer: retried within the lease, late-committed if the lease lapsed.

        Returns the committed connection, or the stored one when a newer writer won. The same
        write records ``notice`` and, for the sweep, its run of successes (``history``).
        """
        realm_id = conn.realm_id
        rotated = tokens.refresh_token != refresh_token
        sealed = self.seal(
            realm_id,
            tokens,
            data_key=conn.data_key,
            keep_access_token=self._keeps_access_token(conn, self._clock()),
        )
        by_sweep = _SOURCE.get() == SWEEP
        notice_days = notice.days if notice is not None else ()
        lease_until = conn.lease_until or (self._clock() + self.settings.lease_duration)
        late = False
        attempt = 0
        while True:
            now = self._clock()
            preview = Connection(**{**conn.__dict__})
            preview.last_refreshed_at = now
            preview.access_expires_at = sealed.access_expires_at
            preview.refresh_hard_expires_at = sealed.refresh_hard_expires_at
            preview.expiring_notified = tuple(sorted({*conn.expiring_notified, *notice_days}))
            try:
                committed = self.connections.commit_refresh(
                    realm_id,
                    seen_version=conn.version,
                    owner=owner,
                    tokens=sealed,
                    now=now,
                    due_at=self.due_at_for(preview, now),
                    late=late,
                    expiring_days=notice_days,
                    event=notice.event if notice is not None else None,
                    refresh_run=(
                        next_run(conn.raw.get(REFRESH_RUN), now=now, version=conn.version + 1)
                        if by_sweep
                        else None
                    ),
                )
                break
            except LeaseLost:
                latest = self.connections.get_connection(realm_id, consistent=True)
                if (
                    late
                    or latest is None
                    or latest.version != conn.version
                    or latest.status != STATUS_ACTIVE
                ):
                    # A newer writer (a refresh, a reconnect, a verdict) stands: never overwrite.
                    logger.warning("refresh commit lost its lease", extra={"realm_id": realm_id})
                    self.observer.on_failed(realm_id, "lease_lost")
                    return self._reread(realm_id)
                # Our lease lapsed, but nobody stored anything newer: our tokens, issued for the
                # stored refresh token of this very version, are the newest. Keep them.
                logger.warning(
                    "lease lapsed before the commit; committing late on the unchanged version",
                    extra={"realm_id": realm_id},
                )
                late = True
            except (ClientError, BotoCoreError) as exc:
                attempt += 1
                left = lease_until - self._clock()
                if left < self.settings.aws_call_worst_seconds + 1.0:
                    # The new tokens are lost with this process. The lease expires on its own and
                    # the connection is due right after; Intuit's grace covers the stored token.
                    logger.error(
                        "refresh commit failed and the lease is running out",
                        extra={"realm_id": realm_id, "attempts": attempt},
                    )
                    self.observer.on_failed(realm_id, "store")
                    raise RefreshUnavailable(
                        f"realm {realm_id}: the token store is unavailable, try again shortly",
                        reason="store_unavailable",
                    ) from None
                code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else "network"
                logger.warning(
                    "refresh commit failed; retrying within the lease",
                    extra={"realm_id": realm_id, "attempt": attempt, "error": code},
                )
                self._sleep(min(0.2 * 2**attempt, 5.0) * random.uniform(0.5, 1.0))
        self.observer.on_refreshed(committed)
        self._settled(
            conn, committed, "refreshed", extra={"version": committed.version, "rotated": rotated}
        )
        self.breaker.record_success()
        if self.events:
            self.events.publish(
                lifecycle.REFRESHED,
                {"realm_id": realm_id, "tenant_id": committed.tenant_id, "rotated": rotated},
            )
        return committed

    def _settled(
        self,
        before: Connection,
        after: Connection,
        outcome: str,
        *,
        intuit_tid: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """An attempt settled in committed state: log it, count health changes, add history.

        ``before`` is the item as the attempt found it, ``after`` as its write left it. The
        "refresh outcome" record (realm, source, outcome, health, and ``extra``) is the one
        log line of a settled attempt, and what the dashboard counts connections by health from.
        """
        now = self._clock()
        was, now_health = health_of(before.raw, now), health_of(after.raw, now)
        source = _SOURCE.get()
        logger.info(
            "refresh outcome",
            extra={
                "realm_id": before.realm_id,
                "source": source,
                "outcome": outcome,
                "health": now_health,
                "intuit_tid": intuit_tid,
                **(extra or {}),
            },
        )
        self.observer.on_health(before.realm_id, was, now_health)
        if self.history is None:
            return
        if outcome == "refreshed" and source == SWEEP:
            return  # counted in the run the commit wrote (``history``): no write of its own
        # Any other outcome of a refresh attempt ended the sweep's run in its own write (the
        # release or the verdict removes it): the run becomes an item first.
        closed_run = before.raw.get(REFRESH_RUN) if outcome != "refreshed" else None
        self.history.record(
            before.realm_id,
            source=source,
            outcome=outcome,
            intuit_tid=intuit_tid,
            version=after.version,
            closed_run=closed_run,
            tenant_id=before.tenant_id,
        )

    def _retry_due_at(self, conn: Connection, now: float) -> float:
        """When to come back after a failed refresh: exponential in the failures so far,
        capped, with jitter so a fleet that failed together does not retry together."""
        base = self.settings.retry_backoff_base_seconds
        delay = min(
            base * 2 ** min(conn.refresh_failures, 20), self.settings.retry_backoff_max_seconds
        )
        return now + delay * random.uniform(0.5, 1.0)

    def _release(
        self,
        conn: Connection,
        owner: str,
        *,
        error: str,
        failure: str,
        intuit_tid: str | None = None,
        invalid_grant: bool = False,
    ) -> None:
        """Give the lease back (never raises: a lease we cannot release expires on its own).

        The same write records the failure (``failure`` is its class, as in the metrics) for
        the connection's health; the outcome then goes to the history.
        """
        now = self._clock()
        try:
            released = self.connections.release_lease(
                conn.realm_id,
                owner=owner,
                now=now,
                error=error,
                invalid_grant=invalid_grant,
                retry_due_at=self._retry_due_at(conn, now),
                error_class=failure,
                intuit_tid=intuit_tid,
            )
            self._settled(conn, released, failure, intuit_tid=intuit_tid)
        except LeaseLost:
            logger.warning("lease already gone on release", extra={"realm_id": conn.realm_id})
        except Exception as exc:
            logger.warning(
                "lease not released; it expires on its own",
                extra={"realm_id": conn.realm_id, "error": type(exc).__name__},
            )

    def _after_invalid_grant(
        self, conn: Connection, owner: str, exc: InvalidGrant
    ) -> Connection | None:
        realm_id = conn.realm_id
        latest = self.connections.get_connection(realm_id, consistent=True)
        if latest is not None and (
            latest.version != conn.version or latest.refresh_token_enc != conn.refresh_token_enc
        ):
            logger.info(
                "invalid_grant but a newer token is stored; retrying with it",
                extra={"realm_id": realm_id},
            )
            return None
        return self._on_invalid_grant(conn, owner, exc)

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
        self.breaker.record_invalid_grant(realm_id)
        if expired or (persisted and not self._verdict_suspended(realm_id)):
            reason = "refresh_token_expired" if expired else "invalid_grant"
            logger.warning(
                "connection needs reauthorization",
                extra={
                    "realm_id": realm_id,
                    "reason": reason,
                    "attempts": attempts,
                    "intuit_tid": exc.intuit_tid,
                },
            )
            self._declare_dead(conn, owner, reason, intuit_tid=exc.intuit_tid)
        self._release(
            conn,
            owner,
            error="invalid_grant",
            failure="invalid_grant",
            intuit_tid=exc.intuit_tid,
            invalid_grant=True,
        )
        logger.warning(
            "Intuit answered invalid_grant; tokens kept until the rejection persists",
            extra={"realm_id": realm_id, "attempts": attempts, "intuit_tid": exc.intuit_tid},
        )
        raise RefreshUnavailable(
            f"realm {realm_id}: Intuit rejected the refresh; it will be retried before the "
            "connection is declared dead",
            reason="invalid_grant_unconfirmed",
            intuit_tid=exc.intuit_tid,
        )

    def _verdict_suspended(self, realm_id: str) -> bool:
        """Is the fleet-level breaker open (an Intuit outage)? Then no death verdict."""
        if not self.breaker.is_open():
            return False
        self.observer.on_verdict_suspended(realm_id)
        logger.warning(
            "invalid_grant verdict suspended: Intuit is rejecting many connections at once",
            extra={"realm_id": realm_id},
        )
        return True


def _refresh_refusal(realm_id: str, exc: IntuitError) -> tuple[str, str, ServiceError]:
    """What a refresh that Intuit failed (other than invalid_grant) records and answers: the
    ``failure`` class, the ``error`` kept on the connection, and the caller's answer (which
    carries Intuit's ``intuit_tid``, never the cause's details)."""
    tid = exc.intuit_tid
    if isinstance(exc, IntuitTransientError):
        return (
            "transient",
            f"transient: {exc.status or 'network'}",
            RefreshUnavailable(
                f"realm {realm_id}: Intuit is unavailable, try again shortly",
                reason="intuit_unavailable",
                intuit_tid=tid,
            ),
        )
    if isinstance(exc, InvalidClient):
        return (
            "invalid_client",
            "invalid_client",
            ConfigurationError(
                "Intuit rejected the client credentials (check the IntuitClientSecret)",
                intuit_tid=tid,
            ),
        )
    cause = exc.error or exc.status
    return (
        "other",
        f"intuit: {cause}",
        RefreshUnavailable(
            f"realm {realm_id}: Intuit refused the refresh ({cause})",
            reason="intuit_refused",
            intuit_tid=tid,
        ),
    )
