"""What the change feed has published, per entity, and how far each realm's feed is reconciled.

This module owns two item kinds of the connections table:

- Change mark: ``pk = "CHANGE#<realm_id>#<entity>#<entity_id>"``, ``sk = "CHANGE"``: the last
  change time published for that entity (epoch seconds), the ``event_id`` it was published
  under, ``status`` (``claimed`` until the publisher confirms, then ``published``), the path
  that published it (``source``) and ``ttl`` (at least 31 days, longer than CDC's 30-day reach,
  so a change CDC can still answer is always remembered).
- Watermark: ``pk = "REALM#<realm_id>"``, ``sk = "CHANGES"``: the time up to which the realm's
  changes are reconciled, the last run, the count of changes recovered by reconciliation and
  the tenant the feed was started for (``feed_tenant``: not ``tenant_id``, so TenantIndex never
  lists it). While the realm is on the reconciliation schedule it carries ``due_shard =
  "CHANGES#nn"`` and ``due_at`` (its next run), so the schedule finds due realms through
  DueIndex like the refresh sweep does, in shards of its own that the sweep never reads.

Once per change across the webhook path and CDC: :meth:`ChangeMarks.claim` is a conditional put
that succeeds only when no mark exists, the stored change is older than this one by more than
the tolerance, or the mark is an unconfirmed claim of the same ``event_id`` (a publisher that
crashed or whose answer was lost tries again: at least once, under a stable ``event_id``). A
change whose time is within the tolerance of the stored one, or older, is ``already seen``.
Webhook CloudEvents carry only the event ``time``, which can differ from QuickBooks'
``LastUpdatedTime`` by a little; the tolerance absorbs that. Two real edits of one entity
within the tolerance collapse into one event (the residual, documented in docs/changes.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qbo_connect.store.table import DUE_INDEX, Repository, number

KIND = "CHANGE"
WATERMARK_SK = "CHANGES"
CLAIMED = "claimed"
PUBLISHED = "published"
#: Longer than CDC's 30 days, so a mark outlives every change CDC can still return.
MIN_TTL_SECONDS = 31 * 86400
#: The reconciliation schedule's DueIndex shards (the refresh sweep reads only ``DUE#nn``).
SHARD_PREFIX = "CHANGES#"


def mark_key(realm_id: str, entity: str, entity_id: str) -> dict[str, str]:
    return {"pk": f"{KIND}#{realm_id}#{entity}#{entity_id}", "sk": KIND}


def watermark_key(realm_id: str) -> dict[str, str]:
    return {"pk": f"REALM#{realm_id}", "sk": WATERMARK_SK}


@dataclass(frozen=True)
class Watermark:
    """A realm's reconciliation state as stored."""

    realm_id: str
    watermark: float
    last_run: float | None
    recovered: int
    #: When the schedule runs it next (None: not scheduled).
    next_run: float | None = None
    #: The tenant the feed was started for.
    tenant_id: str = ""


class ChangeMarks(Repository):
    """Conditional writes of change marks and watermarks (see the module docstring)."""

    def __init__(
        self, table: Any, *, ttl_seconds: int, tolerance_seconds: float, shards: int = 16
    ) -> None:
        super().__init__(table)
        self.shards = max(1, shards)
        self.ttl_seconds = max(ttl_seconds, MIN_TTL_SECONDS)
        self.tolerance_seconds = tolerance_seconds

    # -- change marks ------------------------------------------------------------------

    def claim(
        self,
        realm_id: str,
        entity: str,
        entity_id: str,
        *,
        change_time: float,
        event_id: str,
        source: str,
        now: float,
    ) -> bool:
        """True when this change is new and the caller should publish it; False when seen."""
        item = {
            **mark_key(realm_id, entity, entity_id),
            "realm_id": realm_id,
            "change_time": number(change_time),
            "event_id": event_id,
            "status": CLAIMED,
            "source": source,
            "claimed_at": number(now),
            "ttl": int(now) + self.ttl_seconds,
        }
        return self._conditional(
            "put_item",
            {
                "Item": item,
                "ConditionExpression": (
                    "attribute_not_exists(pk) OR change_time < :older_than "
                    "OR (event_id = :eid AND #status = :claimed)"
                ),
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {
                    ":older_than": number(change_time - self.tolerance_seconds),
                    ":eid": event_id,
                    ":claimed": CLAIMED,
                },
            },
        )

    def mark_published(
        self, realm_id: str, entity: str, entity_id: str, *, event_id: str, now: float
    ) -> bool:
        """Confirm the publication; False when a newer change took the mark meanwhile."""
        return self._conditional(
            "update_item",
            {
                "Key": mark_key(realm_id, entity, entity_id),
                "UpdateExpression": "SET #status = :published, published_at = :now",
                "ConditionExpression": "event_id = :eid",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {
                    ":published": PUBLISHED,
                    ":eid": event_id,
                    ":now": number(now),
                },
            },
        )

    def get_mark(self, realm_id: str, entity: str, entity_id: str) -> Mapping[str, Any] | None:
        item = self.table.get_item(
            Key=mark_key(realm_id, entity, entity_id), ConsistentRead=True
        ).get("Item")
        return dict(item) if item else None

    # -- watermarks ----------------------------------------------------------------------

    def start(
        self, realm_id: str, *, tenant_id: str, at: float, now: float, next_run: float | None
    ) -> bool:
        """Begin a realm's feed at ``at`` (connect, import, reconnect) and schedule its next
        reconciliation at ``next_run`` (None: scheduling is off).

        True when the feed (re)starts at ``at``: the realm had no watermark, or it was another
        tenant's (nothing of an earlier tenure is replayed to a new owner). False when the
        realm's own watermark is kept (a reconnect: what changed while it was disconnected is
        recovered, or reported lost by ``resync_required``); it is scheduled again if it was
        not. A retry whose first write succeeded meets its own tenant and keeps what it wrote.
        """
        due = {":shard": self.shard_for(realm_id), ":due": number(next_run)} if next_run else {}
        started = self._conditional(
            "update_item",
            {
                "Key": watermark_key(realm_id),
                "UpdateExpression": (
                    "SET realm_id = :realm, watermark = :at, started_at = :now, "
                    "feed_tenant = :tenant, recovered = :zero"
                    + (", due_shard = :shard, due_at = :due" if due else "")
                    + " REMOVE last_run"
                ),
                "ConditionExpression": "attribute_not_exists(pk) OR feed_tenant <> :tenant",
                "ExpressionAttributeValues": {
                    ":realm": realm_id,
                    ":at": number(at),
                    ":now": number(now),
                    ":tenant": tenant_id,
                    ":zero": 0,
                    **due,
                },
            },
        )
        if not started and due:
            self._conditional(
                "update_item",
                {
                    "Key": watermark_key(realm_id),
                    "UpdateExpression": (
                        "SET due_shard = :shard, due_at = if_not_exists(due_at, :due)"
                    ),
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeValues": due,
                },
            )
        return started

    def advance(
        self,
        realm_id: str,
        *,
        seen: float,
        to: float,
        recovered: int,
        now: float,
        next_run: float | None = None,
    ) -> bool:
        """Move the watermark from ``seen`` to ``to`` (compare-and-set), recording the run and,
        when scheduling is on, the next one.

        Called only after every event of the window is recorded (the outbox rule). False when
        another run moved it first; the watermark never moves backwards.
        """
        values: dict[str, Any] = {
            ":to": number(to),
            ":seen": number(seen),
            ":now": number(now),
            ":recovered": recovered,
        }
        update = "SET watermark = :to, last_run = :now"
        if next_run is not None:
            update += ", due_shard = :shard, due_at = :due"
            values.update({":shard": self.shard_for(realm_id), ":due": number(next_run)})
        return self._conditional(
            "update_item",
            {
                "Key": watermark_key(realm_id),
                "UpdateExpression": update + " ADD recovered :recovered",
                "ConditionExpression": "watermark = :seen AND watermark <= :to",
                "ExpressionAttributeValues": values,
            },
        )

    def reschedule(self, realm_id: str, *, next_run: float | None, now: float) -> bool:
        """A run that did not move the watermark: record it, and its next run (None: take the
        realm off the schedule, e.g. it is no longer connected). False when it has no feed."""
        values: dict[str, Any] = {":now": number(now)}
        if next_run is None:
            update = "SET last_run = :now REMOVE due_shard, due_at"
        else:
            update = "SET last_run = :now, due_shard = :shard, due_at = :due"
            values.update({":shard": self.shard_for(realm_id), ":due": number(next_run)})
        return self._conditional(
            "update_item",
            {
                "Key": watermark_key(realm_id),
                "UpdateExpression": update,
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeValues": values,
            },
        )

    def take_due(self, realm_id: str, *, due_at: float, until: float) -> bool:
        """The scheduler's claim on one due run: move ``due_at`` to ``until`` only if it is still
        the time the index showed, so two schedulers (or a schedule delivered twice) enqueue a
        run once. The run itself sets the next time; if its message is lost, the realm is due
        again at ``until``. A retry meets ``until`` and counts as taken."""
        return self._conditional(
            "update_item",
            {
                "Key": watermark_key(realm_id),
                "UpdateExpression": "SET due_at = :until",
                "ConditionExpression": "due_at = :seen OR due_at = :until",
                "ExpressionAttributeValues": {":seen": number(due_at), ":until": number(until)},
            },
        )

    def due(
        self, shard: str, *, now: float, limit: int, start_key: Mapping[str, Any] | None = None
    ) -> tuple[list[tuple[str, float]], Mapping[str, Any] | None]:
        """One page of ``(realm_id, due_at)`` due by ``now`` in one schedule shard, oldest
        first, through DueIndex (never a Scan); and where the next page starts."""
        kwargs: dict[str, Any] = {
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": "due_shard = :shard AND due_at <= :now",
            "ExpressionAttributeValues": {":shard": shard, ":now": number(now)},
            "Limit": limit,
        }
        if start_key:
            kwargs["ExclusiveStartKey"] = dict(start_key)
        answer = self.table.query(**kwargs)
        found = [
            (str(item["pk"]).split("#", 1)[1], float(item["due_at"]))
            for item in answer.get("Items", [])
            if item.get("sk") == WATERMARK_SK
        ]
        return found, answer.get("LastEvaluatedKey")

    def shard_names(self) -> list[str]:
        return [f"{SHARD_PREFIX}{n:02d}" for n in range(self.shards)]

    def shard_for(self, realm_id: str) -> str:
        digest = hashlib.sha256(realm_id.encode()).digest()
        return f"{SHARD_PREFIX}{int.from_bytes(digest[:4], 'big') % self.shards:02d}"

    def has_watermark(self, realm_id: str) -> bool:
        """Whether the realm has a feed (an eventually consistent read of its key only)."""
        item = self.table.get_item(Key=watermark_key(realm_id), ProjectionExpression="pk")
        return "Item" in item

    def get_watermark(self, realm_id: str) -> Watermark | None:
        item = self.table.get_item(Key=watermark_key(realm_id), ConsistentRead=True).get("Item")
        if not item:
            return None
        last_run = item.get("last_run")
        due_at = item.get("due_at")
        return Watermark(
            realm_id=realm_id,
            watermark=float(item["watermark"]),
            last_run=float(last_run) if last_run is not None else None,
            recovered=int(item.get("recovered", 0)),
            next_run=float(due_at) if due_at is not None else None,
            tenant_id=str(item.get("feed_tenant", "")),
        )
