"""The refresh sweep: due connections, read through DueIndex, fanned out to the refresh queue.

Why it is shaped this way:

- **Never a Scan.** Every active connection carries ``due_shard``/``due_at`` (the due policy in
  ``due.py`` computes ``due_at`` at every token write). The sweep queries each shard
  ``DUE#00..DUE#nn`` for ``due_at <= now``, oldest first, page by page. The index is sparse
  (only active connections carry the keys) and KEYS_ONLY, so a page of 200 due connections
  costs a few read units whatever the table holds.
- **Claim, then enqueue.** Before a connection goes on the queue the sweep moves its
  ``due_at`` from the value the index showed to ``now + claim_seconds`` with a conditional
  write (``Store.claim_due``, a compare-and-set on ``due_at``). Only one of two overlapping
  sweeps wins it, and the next sweep does not see it again while the worker works through the
  queue. The message carries the claimed value so the worker recognises the connection as
  still due (``TokenVault.refresh_if_due(claimed_due_at=...)``); the worker's commit then
  writes the real next due time. A claim whose message could not be sent is handed back (the
  next sweep picks the connection up at once); a claim whose message is lost some other way
  simply lapses after ``claim_seconds`` and the connection is due again. Nothing is lost, and
  a duplicate that slips through costs one GetItem in the worker, never a second refresh.
- **Batches of 10** (SendMessageBatch's maximum), per-entry failures handled, one retry for
  entries SQS did not blame on the sender.
- **Stops well inside the Lambda timeout.** A deadline is taken from
  ``context.get_remaining_time_in_millis`` minus a safety margin; when it passes the sweep
  stops claiming, flushes what it claimed and returns ``complete: false``. Unvisited
  connections stay due for the next run. Shards are visited from a random starting shard so a
  run that cannot finish does not always leave the same shards for later.
- **Shards in parallel** (a few threads): each shard is an independent key range, and the
  sweep's time is dominated by one conditional write per connection.

Lifecycle ``connection.expiring`` events are emitted by the worker, which reads the item anyway
(the index is KEYS_ONLY): see ``worker.py``.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from qbo_connect.errors import ConfigurationError
from qbo_connect.store import Store

logger = Logger(child=True)

SQS_BATCH_SIZE = 10  # SendMessageBatch takes at most 10 entries
DEFAULT_CLAIM_SECONDS = 900.0
DEFAULT_PAGE_SIZE = 200
DEFAULT_PARALLELISM = 4
#: Stop this long before the Lambda timeout at the least, or 20 % of the time left if more:
#: room for a page query, a batch send and boto3's retries of either.
DEFAULT_SAFETY_MARGIN_MS = 15_000
SAFETY_MARGIN_FRACTION = 0.2


@dataclass
class SweepResult:
    """What one sweep did; returned by the handler and logged."""

    due: int = 0  # due connections the index listed (and the sweep visited)
    enqueued: int = 0  # claimed and on the queue
    failed: int = 0  # claimed but not sent: claim handed back, the next sweep retries
    skipped: int = 0  # claimed by an overlapping sweep or rescheduled since the index saw it
    shards: int = 0  # shards read to the end
    complete: bool = True  # False when the deadline stopped it: the rest waits for the next run
    duration_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Totals:
    """Counters shared by the shard threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.result = SweepResult()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self.result, name, getattr(self.result, name) + value)


class Sweeper:
    """One sweep over every DueIndex shard (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        sqs: Any,
        queue_url: str,
        shards: int,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        claim_seconds: float = DEFAULT_CLAIM_SECONDS,
        page_size: int = DEFAULT_PAGE_SIZE,
        parallelism: int = DEFAULT_PARALLELISM,
        safety_margin_ms: int = DEFAULT_SAFETY_MARGIN_MS,
        metrics: Callable[[], Any] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not queue_url:
            raise ConfigurationError("REFRESH_QUEUE_URL is not set")
        self.store = store
        self.sqs = sqs
        self.queue_url = queue_url
        self.shards = max(1, shards)
        self._clock = clock
        self._monotonic = monotonic
        self.claim_seconds = claim_seconds
        self.page_size = page_size
        self.parallelism = max(1, parallelism)
        self.safety_margin_ms = safety_margin_ms
        self.new_metrics = metrics
        self._rng = rng or random.Random()

    def shard_names(self) -> list[str]:
        return [f"DUE#{n:02d}" for n in range(self.shards)]

    # ----- the run ---------------------------------------------------------------------------

    def run(self, remaining_ms: Callable[[], int] | None = None) -> SweepResult:
        """Sweep every shard until done or until the deadline; returns the counts."""
        started = self._monotonic()
        budget_ms = remaining_ms() if remaining_ms is not None else 300_000
        margin_ms = max(self.safety_margin_ms, budget_ms * SAFETY_MARGIN_FRACTION)
        deadline = started + max(0.0, budget_ms - margin_ms) / 1000.0
        now = self._clock()
        # A whole number of seconds: the worker compares the stored value with the message's.
        claim_until = float(int(now + self.claim_seconds))
        # Recorded with each claim, so a claim applied whose answer was lost is recognised
        # by boto3's retry as ours instead of counted as taken by an overlapping sweep.
        run_id = uuid.uuid4().hex
        names = self.shard_names()
        offset = self._rng.randrange(len(names))
        ordered = names[offset:] + names[:offset]

        totals = _Totals()

        def sweep(shard: str) -> bool:
            try:
                return self._sweep_shard(shard, now, claim_until, deadline, totals, run_id)
            except Exception:
                # One shard failing (throttling that outlived boto3's retries) must not lose
                # what the other shards did; its connections stay due for the next run.
                logger.exception("sweep of a shard failed", extra={"shard": shard})
                return False

        with ThreadPoolExecutor(
            max_workers=min(self.parallelism, len(ordered)), thread_name_prefix="sweep"
        ) as pool:
            finished = list(pool.map(sweep, ordered))

        result = totals.result
        result.shards = sum(finished)
        result.complete = all(finished)
        result.duration_ms = int((self._monotonic() - started) * 1000)
        self._record(result)
        return result

    def _sweep_shard(
        self,
        shard: str,
        now: float,
        claim_until: float,
        deadline: float,
        totals: _Totals,
        run_id: str | None = None,
    ) -> bool:
        """Claim and enqueue one shard's due connections; True if the shard was read to the end."""
        cursor: dict[str, Any] | None = None
        pending: list[tuple[str, float]] = []
        try:
            while True:
                if self._monotonic() >= deadline:
                    return False
                entries, cursor = self.store.query_due_entries(
                    shard, now, limit=self.page_size, cursor=cursor
                )
                for index, (realm_id, seen_due_at) in enumerate(entries):
                    if self._monotonic() >= deadline:
                        totals.add(due=index)
                        return False
                    if not self.store.claim_due(
                        realm_id, seen_due_at=seen_due_at, due_at=claim_until, claim_id=run_id
                    ):
                        totals.add(skipped=1)
                        continue
                    pending.append((realm_id, seen_due_at))
                    if len(pending) == SQS_BATCH_SIZE:
                        self._send(pending, now, claim_until, totals)
                        pending = []
                totals.add(due=len(entries))
                if cursor is None:
                    return True
        finally:
            if pending:
                self._send(pending, now, claim_until, totals)

    def _send(
        self, batch: list[tuple[str, float]], now: float, claim_until: float, totals: _Totals
    ) -> None:
        """SendMessageBatch for up to 10 claimed connections; hand back the claims that failed."""
        bodies = {
            str(i): json.dumps(
                {
                    "realm_id": realm_id,
                    "due_at": seen_due_at,
                    "enqueued_at": round(self._clock(), 3),
                    "claimed_due_at": claim_until,
                },
                separators=(",", ":"),
            )
            for i, (realm_id, seen_due_at) in enumerate(batch)
        }
        remaining = dict(bodies)
        for attempt in (1, 2):
            remaining, retryable = self._send_once(remaining)
            if not retryable or attempt == 2:
                break
            remaining = {i: remaining[i] for i in retryable}
        totals.add(enqueued=len(batch) - len(remaining))
        for entry_id in remaining:
            realm_id, seen_due_at = batch[int(entry_id)]
            totals.add(failed=1)
            try:
                # Put the connection back where the index had it: the next sweep retries it now
                # rather than after the claim lapses.
                self.store.claim_due(realm_id, seen_due_at=claim_until, due_at=seen_due_at)
            except Exception:
                logger.warning("claim not handed back", extra={"realm_id": realm_id})

    def _send_once(self, entries: dict[str, str]) -> tuple[dict[str, str], set[str]]:
        """One SendMessageBatch: (entries that failed, ids among them worth retrying)."""
        try:
            response = self.sqs.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": i, "MessageBody": body} for i, body in entries.items()],
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning("SendMessageBatch failed", extra={"error": type(exc).__name__})
            return entries, set(entries)
        failed = {f["Id"]: f for f in response.get("Failed") or []}
        if failed:
            logger.warning(
                "SendMessageBatch entries failed",
                extra={
                    "count": len(failed),
                    "codes": sorted({f.get("Code") for f in failed.values()}),
                },
            )
        retryable = {i for i, f in failed.items() if not f.get("SenderFault")}
        return {i: entries[i] for i in failed if i in entries}, retryable

    def _record(self, result: SweepResult) -> None:
        """Log the counts and publish them as one EMF document for this run."""
        logger.info("sweep finished", extra=result.as_dict())
        if self.new_metrics is None:
            return
        metrics = self.new_metrics()
        add = metrics.add_metric
        add(name="ConnectionsDue", unit=MetricUnit.Count, value=result.due)
        add(name="ConnectionsEnqueued", unit=MetricUnit.Count, value=result.enqueued)
        add(name="EnqueueFailed", unit=MetricUnit.Count, value=result.failed)
        add(name="SweepDuration", unit=MetricUnit.Milliseconds, value=result.duration_ms)
        add(name="SweepIncomplete", unit=MetricUnit.Count, value=0 if result.complete else 1)
        metrics.flush_metrics()


@lru_cache(maxsize=1)
def default_sweeper() -> Sweeper:
    """The container's sweeper, wired to the runtime's clients (built on first use)."""
    from qbo_connect import runtime
    from qbo_connect.config import get_settings

    settings = get_settings()
    return Sweeper(
        store=runtime.store(),
        sqs=runtime.aws_client("sqs"),
        queue_url=settings.refresh_queue_url,
        shards=settings.due_shards,
        # Its own metric set per run (not the process-wide Powertools registry): one EMF
        # document per sweep, whatever else runs in the process (the local stack runs the
        # worker's invocations in threads next to it).
        metrics=EphemeralMetrics,
    )
