"""The refresh sweep: due connections, read through DueIndex, fanned out to the refresh queue.

Why it is shaped this way:

- **Never a Scan.** Every active connection carries ``due_shard``/``due_at`` (the due policy in
  ``due.py`` computes ``due_at`` at every token write, never earlier than the writer's clock).
  The sweep queries each shard ``DUE#00..DUE#nn`` by ``due_at``, oldest first, page by page. The
  index is sparse (only active connections carry the keys) and KEYS_ONLY, so a page of 200 due
  connections costs a few read units whatever the table holds.
- **No write per connection: a watermark.** The worker no longer moves ``due_at`` when it takes
  the lease, so a connection stays due in the index until its refresh commits (or its failure
  sets a backoff). The sweep must therefore know what it has already enqueued without writing
  to each connection. One run-state item (``SweepStateRepository.begin_sweep_run``) holds,
  per shard, the watermark ``W`` (the clock of the last run that read the shard up to there) and the
  ``(realm_id, due_at)`` pairs that run enqueued with ``due_at > W - settle``. A run queries
  ``(W - settle, now]``, skips the remembered pairs and enqueues the rest, so each due instance
  of a connection goes on the queue once. ``settle`` (30 s) covers the index's propagation lag
  and clock skew between writers: an entry written just before the previous run, but not yet
  visible to it, is still inside the next run's range. Only the exact pair is skipped: a
  connection rescheduled since (a new ``due_at``) is a new due instance and is enqueued.
- **The stale pass: what the old claim's lapse gave.** An entry still due below ``W - settle``
  was enqueued and has not settled: its message is still queued (a backlog, a retry) or was
  lost (moved to the DLQ, expired, index lag beyond ``settle``, a send whose failure we did
  not see). Every ``requeue_seconds`` (15 min) a run also re-enqueues those, from the bottom of
  the shard, but only when the refresh queue looks empty (no message visible, in flight or
  delayed): while messages are queued the stale entries are most likely among them, and
  re-enqueueing during a backlog is what makes duplicates pile up. A shard without state (the
  first run, a lost item) gets this full pass at once; a stale pass put off for
  ``stale_force_seconds`` (3 h: longer than a message's 5 receives at the 18-minute
  visibility timeout) runs whatever the queue holds, so a queue that never empties cannot
  strand a lost message. A duplicate never causes a second Intuit call (the worker takes the
  lease only while the item is due and unleased); it costs a failed conditional write.
- **One run at a time.** The run starts with one conditional write on the state item that
  takes a run lease and returns the state (``ALL_NEW``), and ends with one write that saves
  every shard's new state and releases the lease (conditioned on still holding it). A second
  run meanwhile (EventBridge can deliver a schedule twice; a run can outlive the interval)
  stands aside. Per run: 2 writes, the Queries, at most one GetQueueAttributes, and the
  SendMessageBatch calls.
- **Failures keep the watermark back.** A shard whose sends failed (after one retry of what SQS
  did not blame on the sender), that the deadline stopped, or whose query failed keeps its
  watermark just below the first entry it did not enqueue, so the next run finds the rest. The
  pairs remembered are capped (``MAX_REMEMBERED``, newest kept): beyond the cap, duplicates,
  never losses.
- **Batches of 10** (SendMessageBatch's maximum), per-entry failures handled.
- **Stops well inside the Lambda timeout.** A deadline is taken from
  ``context.get_remaining_time_in_millis`` minus a safety margin; when it passes the sweep
  stops reading, flushes what it collected, saves its state and returns ``complete: false``.
  Shards are visited from a random starting shard so a run that cannot finish does not always
  leave the same shards for later.
- **Shards in parallel** (a few threads): each shard is an independent key range.

Lifecycle ``connection.expiring`` events are emitted by the worker, which reads the item anyway
(the index is KEYS_ONLY): see ``worker.py``.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from qbo_connect.contracts import RefreshMessage
from qbo_connect.errors import ConfigurationError
from qbo_connect.store.connections import ConnectionRepository
from qbo_connect.store.sweep_state import ShardMark, SweepStateRepository

logger = Logger(child=True)

SQS_BATCH_SIZE = 10  # SendMessageBatch takes at most 10 entries
DEFAULT_SETTLE_SECONDS = 30.0
DEFAULT_REQUEUE_SECONDS = 900.0
DEFAULT_STALE_FORCE_SECONDS = 3 * 3600.0
DEFAULT_PAGE_SIZE = 200
DEFAULT_PARALLELISM = 4
#: Stop this long before the Lambda timeout at the least, or 20 % of the time left if more:
#: room for a page query, a batch send and boto3's retries of either.
DEFAULT_SAFETY_MARGIN_MS = 15_000
SAFETY_MARGIN_FRACTION = 0.2
#: The run lease outlasts the invocation by this much (clock skew between Lambda hosts).
RUN_LEASE_MARGIN_SECONDS = 10.0
#: Pairs remembered per run, over all shards (about 30 B each in the state item, which must stay
#: well under DynamoDB's 400 KB). Normal runs remember only what became due in the last
#: ``settle`` seconds; beyond the cap the oldest are dropped and may be enqueued once more.
MAX_REMEMBERED = 4_000
#: Stored due times have 3 decimals: one step below a due time.
TICK = 0.001
QUEUE_DEPTH_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@dataclass
class SweepResult:
    """What one sweep did; returned by the handler and logged."""

    due: int = 0  # due connections the index listed (and the sweep visited)
    enqueued: int = 0  # sent to the queue (requeued ones included)
    requeued: int = 0  # of those, stale entries sent again by the stale pass
    failed: int = 0  # not sent: left for the next run (the watermark stays below them)
    skipped: int = 0  # already enqueued by the previous run (the same due instance)
    shards: int = 0  # shards read to the end
    complete: bool = True  # False when the deadline stopped it: the rest waits for the next run
    stood_aside: bool = False  # another run held the run lease: this one did nothing
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


@dataclass
class _ShardRun:
    """One shard's visit in one run: what it sent, and how far it got."""

    shard: str
    old: ShardMark | None
    stale_pass: bool
    #: Entries at or above this due time may not have been enqueued (deadline, failure).
    held_at: float | None = None
    read_to_end: bool = False
    #: A stale entry could not be sent: the next stale pass must run again.
    stale_left: bool = False
    sent: set[tuple[str, float]] = field(default_factory=set)

    def hold(self, due_at: float) -> None:
        self.held_at = due_at if self.held_at is None else min(self.held_at, due_at)


@dataclass(kw_only=True, eq=False, repr=False)
class Sweeper:
    """One sweep over every DueIndex shard (see the module docstring)."""

    connections: ConnectionRepository
    sweep_state: SweepStateRepository
    sqs: Any
    queue_url: str
    shards: int
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    requeue_seconds: float = DEFAULT_REQUEUE_SECONDS
    stale_force_seconds: float = DEFAULT_STALE_FORCE_SECONDS
    page_size: int = DEFAULT_PAGE_SIZE
    parallelism: int = DEFAULT_PARALLELISM
    safety_margin_ms: int = DEFAULT_SAFETY_MARGIN_MS
    max_remembered: int = MAX_REMEMBERED
    #: Makes the metric set of one run (None: no metrics).
    metrics: Callable[[], Any] | None = None
    rng: random.Random | None = None

    def __post_init__(self) -> None:
        if not self.queue_url:
            raise ConfigurationError("REFRESH_QUEUE_URL is not set")
        self.shards = max(1, self.shards)
        self.settle_seconds = max(0.0, self.settle_seconds)
        self.parallelism = max(1, self.parallelism)
        self._rng = self.rng or random.Random()

    def shard_names(self) -> list[str]:
        return [f"DUE#{n:02d}" for n in range(self.shards)]

    # ----- the run ---------------------------------------------------------------------------

    def run(self, remaining_ms: Callable[[], int] | None = None) -> SweepResult:
        """Sweep every shard until done or until the deadline; returns the counts."""
        started = self.monotonic()
        budget_ms = remaining_ms() if remaining_ms is not None else 300_000
        margin_ms = max(self.safety_margin_ms, budget_ms * SAFETY_MARGIN_FRACTION)
        deadline = started + max(0.0, budget_ms - margin_ms) / 1000.0
        now = self.clock()
        run_id = uuid.uuid4().hex
        state = self.sweep_state.begin_sweep_run(
            owner=run_id, now=now, until=now + budget_ms / 1000.0 + RUN_LEASE_MARGIN_SECONDS
        )
        if state is None:
            logger.info("another sweep run holds the run lease; this run stands aside")
            result = SweepResult(stood_aside=True)
            result.duration_ms = int((self.monotonic() - started) * 1000)
            self._record(result)
            return result

        names = self.shard_names()
        offset = self._rng.randrange(len(names))
        ordered = names[offset:] + names[:offset]
        visits = self._plan(ordered, state.shards, now)
        totals = _Totals()

        def sweep(visit: _ShardRun) -> None:
            try:
                self._sweep_shard(visit, now, deadline, totals)
            except Exception:
                # One shard failing (throttling that outlived boto3's retries) must not lose
                # what the other shards did; what it did not enqueue waits for the next run.
                logger.exception("sweep of a shard failed", extra={"shard": visit.shard})

        with ThreadPoolExecutor(
            max_workers=min(self.parallelism, len(visits)), thread_name_prefix="sweep"
        ) as pool:
            list(pool.map(sweep, visits))

        result = totals.result
        result.shards = sum(v.read_to_end for v in visits)
        result.complete = all(v.read_to_end for v in visits)
        marks = self._new_marks(visits, now)
        try:
            saved = self.sweep_state.end_sweep_run(owner=run_id, now=now, shards=marks)
        except (ClientError, BotoCoreError):
            logger.exception("sweep state not saved; the next run may enqueue some again")
        else:
            if not saved:
                logger.warning(
                    "sweep run lease lost before the state was saved; "
                    "the next run may enqueue some connections again"
                )
        result.duration_ms = int((self.monotonic() - started) * 1000)
        self._record(result)
        return result

    def _plan(self, ordered: list[str], marks: dict[str, ShardMark], now: float) -> list[_ShardRun]:
        """Which shards get a stale pass this run (see the module docstring)."""
        visits = []
        queue_empty: bool | None = None
        for shard in ordered:
            old = marks.get(shard)
            stale = old is None
            if old is not None and now - old.stale_at >= self.requeue_seconds:
                if now - old.stale_at >= self.stale_force_seconds:
                    stale = True
                else:
                    if queue_empty is None:
                        queue_empty = self._queue_is_empty()
                    stale = queue_empty
            visits.append(_ShardRun(shard=shard, old=old, stale_pass=stale))
        return visits

    def _queue_is_empty(self) -> bool:
        """True if the refresh queue holds no message: visible, in flight or delayed."""
        try:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=list(QUEUE_DEPTH_ATTRIBUTES)
            )["Attributes"]
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "queue depth unknown; stale entries wait", extra={"error": type(exc).__name__}
            )
            return False
        return sum(int(attributes.get(name, 0)) for name in QUEUE_DEPTH_ATTRIBUTES) == 0

    def _sweep_shard(self, visit: _ShardRun, now: float, deadline: float, totals: _Totals) -> None:
        """Enqueue one shard's due connections not enqueued yet (see the module docstring)."""
        old = visit.old
        stale_below = None if old is None else old.watermark - self.settle_seconds
        after = None if visit.stale_pass else stale_below
        known = old.sent if old is not None else frozenset()
        cursor: dict[str, Any] | None = None
        pending: list[tuple[str, float, bool]] = []
        last_seen: float | None = None
        try:
            while True:
                if self.monotonic() >= deadline:
                    if last_seen is not None:
                        visit.hold(last_seen)
                    return
                try:
                    entries, cursor = self.connections.query_due_after(
                        visit.shard, after=after, now=now, limit=self.page_size, cursor=cursor
                    )
                except (ClientError, BotoCoreError):
                    logger.exception("DueIndex query failed", extra={"shard": visit.shard})
                    if last_seen is not None:
                        visit.hold(last_seen)
                    return
                for index, (realm_id, due_at) in enumerate(entries):
                    if self.monotonic() >= deadline:
                        totals.add(due=index)
                        visit.hold(due_at)
                        return
                    last_seen = due_at
                    pair = (realm_id, round(due_at, 3))
                    if pair in known:
                        totals.add(skipped=1)
                        visit.sent.add(pair)
                        continue
                    stale = stale_below is not None and due_at <= stale_below
                    pending.append((realm_id, due_at, stale))
                    if len(pending) == SQS_BATCH_SIZE:
                        self._send(pending, visit, totals)
                        pending = []
                totals.add(due=len(entries))
                if cursor is None:
                    visit.read_to_end = True
                    return
        finally:
            if pending:
                self._send(pending, visit, totals)

    def _new_marks(self, visits: list[_ShardRun], now: float) -> dict[str, ShardMark]:
        """Each shard's state for the next run (shards with nothing new keep theirs)."""
        marks: dict[str, ShardMark] = {}
        for visit in visits:
            old = visit.old
            if visit.read_to_end and visit.held_at is None:
                watermark = now if old is None else max(now, old.watermark)
            elif visit.held_at is not None:
                # Just below the first entry not enqueued, never back below the old watermark
                # (what lies below it was handled by earlier runs or is the stale pass's).
                watermark = visit.held_at - TICK
                if old is not None:
                    watermark = max(watermark, old.watermark)
            else:
                continue  # nothing visited: the old state (or none) stands
            # Stored with 3 decimals: the next run must compute the same floor as this one.
            watermark = round(watermark, 3)
            stale_at = old.stale_at if old is not None else now
            if (
                visit.stale_pass
                and not visit.stale_left
                and (
                    old is None
                    or visit.held_at is None
                    or visit.held_at > old.watermark - self.settle_seconds
                )
            ):
                stale_at = now  # every stale entry of the shard went out again
            floor = watermark - self.settle_seconds
            remembered = set(old.sent) if old is not None else set()
            remembered |= visit.sent
            marks[visit.shard] = ShardMark(
                watermark=watermark,
                stale_at=stale_at,
                sent=frozenset(p for p in remembered if p[1] > floor),
            )
        return self._capped(marks)

    def _capped(self, marks: dict[str, ShardMark]) -> dict[str, ShardMark]:
        """Keep the newest ``max_remembered`` pairs over all shards (the rest: duplicates)."""
        pairs = [(due_at, shard, realm) for shard, m in marks.items() for realm, due_at in m.sent]
        if len(pairs) <= self.max_remembered:
            return marks
        pairs.sort(reverse=True)
        kept: dict[str, set[tuple[str, float]]] = {shard: set() for shard in marks}
        for due_at, shard, realm in pairs[: self.max_remembered]:
            kept[shard].add((realm, due_at))
        logger.warning(
            "more enqueued pairs than the sweep state keeps; the oldest may be enqueued again",
            extra={"pairs": len(pairs), "kept": self.max_remembered},
        )
        return {
            shard: ShardMark(m.watermark, m.stale_at, frozenset(kept[shard]))
            for shard, m in marks.items()
        }

    def _send(
        self, batch: list[tuple[str, float, bool]], visit: _ShardRun, totals: _Totals
    ) -> None:
        """SendMessageBatch for up to 10 connections; what failed holds the shard's watermark."""
        bodies = {
            str(i): RefreshMessage(
                realm_id=realm_id, due_at=due_at, enqueued_at=self.clock()
            ).to_body()
            for i, (realm_id, due_at, _) in enumerate(batch)
        }
        remaining = dict(bodies)
        for attempt in (1, 2):
            remaining, retryable = self._send_once(remaining)
            if not retryable or attempt == 2:
                break
            remaining = {i: remaining[i] for i in retryable}
        for i, (realm_id, due_at, stale) in enumerate(batch):
            if str(i) in remaining:
                totals.add(failed=1)
                if stale:
                    visit.stale_left = True  # below the watermark: the next stale pass
                else:
                    visit.hold(due_at)
                continue
            totals.add(enqueued=1, requeued=int(stale))
            visit.sent.add((realm_id, round(due_at, 3)))

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
        if self.metrics is None:
            return
        metrics = self.metrics()
        add = metrics.add_metric
        add(name="ConnectionsDue", unit=MetricUnit.Count, value=result.due)
        add(name="ConnectionsEnqueued", unit=MetricUnit.Count, value=result.enqueued)
        add(name="ConnectionsRequeued", unit=MetricUnit.Count, value=result.requeued)
        add(name="EnqueueFailed", unit=MetricUnit.Count, value=result.failed)
        add(name="SweepDuration", unit=MetricUnit.Milliseconds, value=result.duration_ms)
        add(name="SweepIncomplete", unit=MetricUnit.Count, value=0 if result.complete else 1)
        add(name="SweepStoodAside", unit=MetricUnit.Count, value=int(result.stood_aside))
        metrics.flush_metrics()
