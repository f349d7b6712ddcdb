"""The refresh worker: one SQS message per due connection, partial batch failures.

Per message (body ``{"realm_id", "due_at", "enqueued_at"}`` from the sweep; a message from an
earlier version, which claimed the connection by moving its due time to ``claimed_due_at``, is
still honoured while in flight during an upgrade):

- ``TokenVault.refresh_if_due`` takes the lease with one conditional write that also checks the
  connection is still due, and refreshes it: two DynamoDB writes in all (lease, commit) and no
  read. A connection no longer due, leased by another refresher, or gone is acknowledged
  without calling Intuit, after that one failed write.
- ``connection.expiring`` goes out here, not in the sweep: the worker has the item in hand (the
  index is KEYS_ONLY). When the refresh token's hard expiry is within 30, 7 or 1 days and that
  threshold was not notified yet, the refresh's commit records it together with the event (the
  outbox, see ``events.py``), so it costs no write of its own and only the lease holder can
  record it; the event is published for the tightest threshold crossed, and wider thresholds
  crossed at the same time are recorded silently, so a connection first seen 5 days before
  expiry gets one "7 days" event, not two. The commit's next due time leaves the notified
  thresholds out. A refresh that fails records no notice: the retry does.
- Pending events of the connection (left by a crash, a lost answer or an EventBridge failure)
  are published first. If any stays pending the message fails (``EventsPending``) and SQS
  brings it back after the visibility timeout: that is the retry.
- Outcomes: refreshed and skipped are acknowledged; ``NeedsReauthorization`` is acknowledged
  too (the connection is flagged and its one event went out; retrying cannot help);
  ``RefreshUnavailable`` (Intuit down or throttling, invalid_grant not yet conclusive) and any
  other error fail the item, so SQS redelivers it after the visibility timeout and moves it to
  the DLQ after ``maxReceiveCount``; ``ConfigurationError`` (Intuit rejects the client) fails
  the item as well and is logged as an error: every refresh fails until the secret is fixed.
  A malformed body is acknowledged and logged: it can never succeed.
- A ``disconnect_hint`` message (ConnectFunction's, for Intuit's Disconnect URL) is verified
  with Intuit by ``sweep.disconnect_check`` at most once per realm per day, and acknowledged
  whatever the verdict.
- A ``reconcile`` message (the change feed's schedule, ``changes.scheduler``) runs that realm's
  reconciliation with CDC (``changes.service``) and is acknowledged whatever the outcome. After
  a refresh, a realm without a change feed (connected before it existed) joins it: one
  eventually consistent read per refresh, a start only when missing.
- Records run one after another (so Intuit sees at most ``MaximumConcurrency`` refreshes at
  once). A record is not started when less time is left than one refresh's worst case (every
  Intuit attempt timing out); it fails instead and comes back later, so a slow Intuit makes the
  worker defer work rather than hit its own timeout mid-refresh.

RefreshSucceeded / RefreshFailed / InvalidGrant / RefreshFailed_<class> come from telemetry's
refresh observer inside the vault; this module adds RefreshSkipped, ExpiringNotified and
MalformedMessage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from qbo_connect import events as lifecycle
from qbo_connect.config import Settings
from qbo_connect.contracts import DISCONNECT_HINT, RECONCILE, RefreshMessage, parse_or_drop
from qbo_connect.errors import (
    ConfigurationError,
    Deferred,
    EventsPending,
    NeedsReauthorization,
    NotConnected,
    RefreshUnavailable,
)
from qbo_connect.store.connections import Connection
from qbo_connect.sweep.disconnect_check import DisconnectHints
from qbo_connect.vault.due import DAY, EXPIRING_THRESHOLDS_DAYS
from qbo_connect.vault.protocol import TokenVault
from qbo_connect.vault.records import ExpiringNotice

logger = Logger(child=True)


def worst_case_refresh_ms(settings: Settings) -> int:
    """How long one refresh can take (``Settings.worst_case_under_lease``, the lease's own
    figure) plus two AWS calls around it (the lease write; publishing pending events)."""
    seconds = settings.worst_case_under_lease + 2 * settings.aws_call_worst_seconds
    return int(seconds * 1000)


@dataclass(kw_only=True, eq=False)
class RefreshWorker:
    """Handles one SQS batch of refresh messages (see the module docstring)."""

    vault: TokenVault
    #: Only for the worst case of one refresh (``min_remaining_ms`` when not given).
    settings: Settings
    clock: Callable[[], float] = time.time
    metrics: Any = None
    min_remaining_ms: int | None = None
    disconnect_hints: Callable[[], DisconnectHints] | None = None
    #: The change feed's scheduled run of one realm: (realm_id, seconds left) -> outcome.
    reconcile: Callable[[str, float | None], str] | None = None
    #: After a refresh: the realm joins the change feed if it has none (an upgrade).
    join_feed: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        if self.min_remaining_ms is None:
            self.min_remaining_ms = worst_case_refresh_ms(self.settings)

    # ----- the batch -------------------------------------------------------------------------

    def handle(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        """Process an SQS event; returns ``{"batchItemFailures": [...]}``."""
        # One processor per invocation: it keeps per-batch state, and the local stack runs
        # invocations of one container's code concurrently in threads.
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

        def record_handler(record: SQSRecord) -> str:
            if context is not None and context.get_remaining_time_in_millis() < (
                self.min_remaining_ms
            ):
                logger.info(
                    "deferring a message: too little time left in this invocation",
                    extra={"message_id": record.message_id},
                )
                raise Deferred("too little time left")
            remaining = (
                context.get_remaining_time_in_millis() / 1000 if context is not None else None
            )
            return self.process(
                record.body, message_id=record.message_id, remaining_seconds=remaining
            )

        response = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
        return dict(response)

    # ----- one message -----------------------------------------------------------------------

    def process(
        self, body: str, *, message_id: str = "", remaining_seconds: float | None = None
    ) -> str:
        """The outcome for one message body; raises to make SQS redeliver it."""
        message = parse_or_drop(
            body,
            RefreshMessage.from_payload,
            kind="refresh",
            message_id=message_id,
            count=self._count,
            metric="MalformedMessage",
        )
        if message is None:
            return "malformed"
        if message.kind == DISCONNECT_HINT:
            return self.verify_disconnect_hint(message.realm_id)
        if message.kind == RECONCILE:
            return self.reconcile_changes(message.realm_id, remaining_seconds)
        realm_id = message.realm_id
        notices: list[ExpiringNotice] = []  # what this message's refresh was given to record

        def notice_for(conn: Connection) -> ExpiringNotice | None:
            notice = self.expiring_notice(conn)
            if notice is not None:
                notices.append(notice)
            return notice

        try:
            outcome = self.vault.refresh_if_due(
                realm_id,
                due_at=message.due_at,
                claimed_due_at=message.claimed_due_at,
                expiring_notice=notice_for,
            )
            if notices and outcome in ("refreshed", "events_pending"):
                self._count("ExpiringNotified")  # recorded by the commit
        except NeedsReauthorization:
            outcome = "needs_reauthorization"
        except NotConnected:
            outcome = "skipped_gone"  # disconnected while we worked
        except RefreshUnavailable as exc:
            logger.warning(
                "refresh unavailable; the message will be retried",
                extra={"realm_id": realm_id, "reason": exc.message},
            )
            raise
        except ConfigurationError as exc:
            logger.error(
                "refresh failed on configuration",
                extra={"realm_id": realm_id, "reason": exc.message},
            )
            raise
        if outcome == "events_pending":
            raise EventsPending(f"realm {realm_id}: lifecycle events still pending")
        if outcome.startswith("skipped"):
            self._count("RefreshSkipped")
        if outcome == "refreshed" and self.join_feed is not None:
            self._join_feed(self.join_feed, realm_id)
        # A refresh already logged its "refresh outcome" line: one line per refresh is enough.
        log = logger.debug if outcome == "refreshed" else logger.info
        log("refresh message done", extra={"realm_id": realm_id, "outcome": outcome})
        return outcome

    def verify_disconnect_hint(self, realm_id: str) -> str:
        """A Disconnect URL hint (``sweep.disconnect_check``); always acknowledged.

        Its realm's cool-down is taken before anything else, so a redelivery could only be
        refused by it: a failure is logged and the message acknowledged. A real disconnect is
        still found by the next keep-alive refresh, and an event left pending by a failure here
        is retried by the sweep (the disconnect's commit set the due time for it).
        """
        if self.disconnect_hints is None:
            logger.warning("disconnect hint dropped: this worker does not verify hints")
            return "hint_not_verified"
        try:
            verdict = self.disconnect_hints().handle(realm_id)
        except Exception:
            logger.exception("disconnect hint not verified", extra={"realm_id": realm_id})
            verdict = "failed"
        self._count(f"DisconnectHint_{verdict}")
        logger.info("disconnect hint", extra={"realm_id": realm_id, "verdict": verdict})
        return f"hint_{verdict}"

    @staticmethod
    def _join_feed(join: Callable[[str], None], realm_id: str) -> None:
        """Never fails the refresh: a realm that does not join now joins at its next one."""
        try:
            join(realm_id)
        except Exception:
            logger.warning("change feed not joined", extra={"realm_id": realm_id}, exc_info=True)

    def reconcile_changes(self, realm_id: str, remaining_seconds: float | None) -> str:
        """The change feed's scheduled run (``changes.service``); always acknowledged: a run
        that fails leaves its realm due again when the schedule's claim lapses."""
        if self.reconcile is None:
            logger.warning("reconciliation dropped: this worker does not reconcile")
            return "reconcile_not_run"
        outcome = self.reconcile(realm_id, remaining_seconds)
        logger.info("reconcile message done", extra={"realm_id": realm_id, "outcome": outcome})
        return f"reconcile_{outcome}"

    def expiring_notice(self, conn: Connection) -> ExpiringNotice | None:
        """The hard-expiry notice due for ``conn`` now, if any (see the module docstring)."""
        hard = conn.refresh_hard_expires_at
        if not hard:
            return None
        now = self.clock()
        left = float(hard) - now
        if left <= 0:
            return None  # past the hard expiry: the refresh flags it needs_reauthorization
        crossed = [
            days
            for days in EXPIRING_THRESHOLDS_DAYS
            if left <= days * DAY and days not in conn.expiring_notified
        ]
        if not crossed:
            return None
        tightest = min(crossed)
        event = lifecycle.PendingEvent.new(
            lifecycle.EXPIRING,
            {
                "realm_id": conn.realm_id,
                "tenant_id": conn.tenant_id,
                "threshold_days": tightest,
                "days_left": math.ceil(left / DAY),
                "hard_expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(hard))),
            },
            now=now,
        )
        return ExpiringNotice(days=tuple(sorted(crossed, reverse=True)), event=event)

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
