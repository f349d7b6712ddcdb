"""The reconciliation schedule: due realms found through DueIndex, fanned out through SQS.

Shaped like the refresh sweep, and run by the same scheduled function right after it:

- **Never a Scan.** A realm on the schedule carries ``due_shard = "CHANGES#nn"`` and ``due_at``
  (its next run) on its watermark item (``store.change_marks``). Each run queries every
  ``CHANGES#nn`` shard for ``due_at <= now``, oldest first, page by page (KEYS_ONLY: a page of
  200 costs a few read units whatever the table holds).
- **Spread over the period.** A realm's first run is placed at a stable offset inside one
  period (:func:`first_run`), and each run sets the next one a whole period later, so the
  fleet's runs stay spread and never land in one minute.
- **Enqueued once.** Before a realm is enqueued its ``due_at`` is moved ``claim_seconds`` ahead
  with a write conditioned on the time the index showed (:meth:`ChangeMarks.take_due`): a
  schedule delivered twice, or two runs overlapping, enqueue it once. If the message is lost
  (a failed send, the DLQ), the realm is simply due again after ``claim_seconds``: a delay,
  never a loss, since the watermark has not moved.
- **Stands back at 80 %.** When the month's CorePlus use passes ``stand_back_percent`` of the
  workloads' soft limit, the run enqueues nothing (metric ``ReconcileStoodBack``): the calls
  left belong to the workloads. Due realms stay due and are caught up once use falls below
  (a new month, a larger budget); CDC reaches 30 days back, and a longer gap is reported by
  ``quickbooks.resync_required``, never silently skipped.
- **Stops inside the Lambda timeout**, like the sweep: what it did not reach stays due.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from qbo_connect.contracts import RECONCILE, RefreshMessage
from qbo_connect.store.change_marks import ChangeMarks

logger = Logger(child=True)

SQS_BATCH_SIZE = 10
DEFAULT_PAGE_SIZE = 200
#: A realm enqueued is not enqueued again for this long (its run sets the next time itself).
DEFAULT_CLAIM_SECONDS = 3600.0
#: Stop this long before the invocation's end.
SAFETY_MARGIN_MS = 15_000


def first_run(realm_id: str, *, now: float, period_seconds: float) -> float | None:
    """A realm's first scheduled run: a stable offset inside one period, so realms connected
    together (an import, a first deployment) are reconciled spread over the period."""
    if period_seconds <= 0:
        return None
    digest = hashlib.sha256(f"reconcile|{realm_id}".encode()).digest()
    return now + (int.from_bytes(digest[:4], "big") / 2**32) * period_seconds


@dataclass
class ScheduleResult:
    """What one run of the schedule did; returned with the sweep's counts and logged."""

    enabled: bool = True
    due: int = 0  # due realms the index listed
    enqueued: int = 0  # sent to the queue
    taken_elsewhere: int = 0  # another run took them first
    failed: int = 0  # not sent: due again after the claim lapses
    stood_back: bool = False  # CorePlus use past the stand-back share: nothing enqueued
    usage_percent: float | None = None  # of the soft limit, when known
    complete: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True, eq=False)
class ReconcileScheduler:
    """One run of the reconciliation schedule (see the module docstring)."""

    marks: ChangeMarks
    sqs: Any
    queue_url: str
    period_seconds: float
    #: The month's CorePlus use, in % of the soft limit (None: not metered).
    usage_percent: Callable[[], float | None]
    stand_back_percent: float
    clock: Callable[[], float] = time.time
    #: A new metric set per run (one EMF document), or None.
    metrics: Callable[[], Any] | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    claim_seconds: float = DEFAULT_CLAIM_SECONDS

    def run(self, remaining_ms: Callable[[], int] | None = None) -> ScheduleResult:
        result = ScheduleResult(enabled=self.period_seconds > 0)
        if not result.enabled:
            return result
        try:
            result.usage_percent = self.usage_percent()
        except Exception:  # the proxy's budget guard still refuses what is over the limit
            logger.warning("CorePlus use not read; the schedule runs", exc_info=True)
        if result.usage_percent is not None and result.usage_percent >= self.stand_back_percent:
            result.stood_back = True
            logger.warning(
                "reconciliation stands back: CorePlus use is past its share of the soft limit",
                extra={
                    "usage_percent": round(result.usage_percent, 1),
                    "stand_back_percent": self.stand_back_percent,
                },
            )
            self._record(result)
            return result
        pending: list[str] = []

        def out_of_time() -> bool:
            return remaining_ms is not None and remaining_ms() < SAFETY_MARGIN_MS

        for shard in self.marks.shard_names():
            start_key = None
            while True:
                if out_of_time():
                    break
                now = self.clock()
                try:
                    page, start_key = self.marks.due(
                        shard, now=now, limit=self.page_size, start_key=start_key
                    )
                except (ClientError, BotoCoreError) as exc:
                    # The shard's due realms stay due: the next run reads them.
                    logger.warning(
                        "schedule shard not read",
                        extra={"shard": shard, "error": type(exc).__name__},
                    )
                    result.complete = False
                    break
                for realm_id, due_at in page:
                    result.due += 1
                    if self._take(realm_id, due_at, until=now + self.claim_seconds):
                        pending.append(realm_id)
                    else:
                        result.taken_elsewhere += 1
                    if len(pending) >= SQS_BATCH_SIZE:
                        self._send(pending, result)
                        pending = []
                if not start_key:
                    break
            if out_of_time():
                result.complete = False  # what it did not reach stays due for the next run
                break
        if pending:
            self._send(pending, result)
        self._record(result)
        return result

    def _take(self, realm_id: str, due_at: float, *, until: float) -> bool:
        try:
            return self.marks.take_due(realm_id, due_at=due_at, until=until)
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "due realm not taken; it stays due",
                extra={"realm_id": realm_id, "error": type(exc).__name__},
            )
            return False

    def _send(self, realm_ids: list[str], result: ScheduleResult) -> None:
        now = self.clock()
        entries = [
            {
                "Id": str(index),
                "MessageBody": RefreshMessage(
                    realm_id=realm_id, kind=RECONCILE, enqueued_at=now
                ).to_body(),
            }
            for index, realm_id in enumerate(realm_ids)
        ]
        try:
            answer = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "reconciliations not enqueued; due again when their claim lapses",
                extra={"count": len(entries), "error": type(exc).__name__},
            )
            result.failed += len(entries)
            return
        failed = len(answer.get("Failed") or [])
        result.failed += failed
        result.enqueued += len(entries) - failed

    def _record(self, result: ScheduleResult) -> None:
        logger.info("reconciliation schedule", extra=result.as_dict())
        if self.metrics is None:
            return
        metrics = self.metrics()
        metrics.add_metric(name="ReconcileDue", unit=MetricUnit.Count, value=result.due)
        metrics.add_metric(name="ReconcileEnqueued", unit=MetricUnit.Count, value=result.enqueued)
        metrics.add_metric(
            name="ReconcileStoodBack", unit=MetricUnit.Count, value=int(result.stood_back)
        )
        if result.usage_percent is not None:
            metrics.add_metric(
                name="CorePlusUsedPercentOfSoftLimit",
                unit=MetricUnit.Percent,
                value=round(result.usage_percent, 2),
            )
        metrics.flush_metrics()
