"""What the change feed has published, per entity, and how far each realm's feed is reconciled.

This module owns two item kinds of the connections table:

- Change mark: ``pk = "CHANGE#<realm_id>#<entity>#<entity_id>"``, ``sk = "CHANGE"``: the last
  change time published for that entity (epoch seconds), the ``event_id`` it was published
  under, ``status`` (``claimed`` until the publisher confirms, then ``published``), the path
  that published it (``source``) and ``ttl`` (at least 31 days, longer than CDC's 30-day reach,
  so a change CDC can still answer is always remembered).
- Watermark: ``pk = "REALM#<realm_id>"``, ``sk = "CHANGES"``: the time up to which the realm's
  changes are reconciled, the last run and the count of changes recovered by reconciliation.
  It carries no ``tenant_id`` and no ``due_shard``, so neither TenantIndex nor DueIndex sees it.

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

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

KIND = "CHANGE"
WATERMARK_SK = "CHANGES"
CLAIMED = "claimed"
PUBLISHED = "published"
#: Longer than CDC's 30 days, so a mark outlives every change CDC can still return.
MIN_TTL_SECONDS = 31 * 86400


def mark_key(realm_id: str, entity: str, entity_id: str) -> dict[str, str]:
    return {"pk": f"{KIND}#{realm_id}#{entity}#{entity_id}", "sk": KIND}


def watermark_key(realm_id: str) -> dict[str, str]:
    return {"pk": f"REALM#{realm_id}", "sk": WATERMARK_SK}


def _num(value: float) -> Decimal:
    return Decimal(str(round(float(value), 3)))


@dataclass(frozen=True)
class Watermark:
    """A realm's reconciliation state as stored."""

    realm_id: str
    watermark: float
    last_run: float | None
    recovered: int


class ChangeMarks:
    """Conditional writes of change marks and watermarks (see the module docstring)."""

    def __init__(self, table: Any, *, ttl_seconds: int, tolerance_seconds: float) -> None:
        self.table = table
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
            "change_time": _num(change_time),
            "event_id": event_id,
            "status": CLAIMED,
            "source": source,
            "claimed_at": _num(now),
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
                    ":older_than": _num(change_time - self.tolerance_seconds),
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
                    ":now": _num(now),
                },
            },
        )

    def get_mark(self, realm_id: str, entity: str, entity_id: str) -> Mapping[str, Any] | None:
        item = self.table.get_item(
            Key=mark_key(realm_id, entity, entity_id), ConsistentRead=True
        ).get("Item")
        return dict(item) if item else None

    # -- watermarks --------------------------------------------------------------------

    def start(self, realm_id: str, *, at: float, now: float) -> bool:
        """Begin a realm's feed at ``at`` (connect, import, reconnect); nothing before it is
        replayed. False when the realm already has a watermark (left as it is)."""
        return self._conditional(
            "put_item",
            {
                "Item": {
                    **watermark_key(realm_id),
                    "realm_id": realm_id,
                    "watermark": _num(at),
                    "started_at": _num(now),
                    "recovered": 0,
                },
                "ConditionExpression": "attribute_not_exists(pk)",
            },
        )

    def advance(self, realm_id: str, *, seen: float, to: float, recovered: int, now: float) -> bool:
        """Move the watermark from ``seen`` to ``to`` (compare-and-set), recording the run.

        Called only after every event of the window is recorded (the outbox rule). False when
        another run moved it first; the watermark never moves backwards.
        """
        return self._conditional(
            "update_item",
            {
                "Key": watermark_key(realm_id),
                "UpdateExpression": (
                    "SET watermark = :to, last_run = :now ADD recovered :recovered"
                ),
                "ConditionExpression": "watermark = :seen AND watermark <= :to",
                "ExpressionAttributeValues": {
                    ":to": _num(to),
                    ":seen": _num(seen),
                    ":now": _num(now),
                    ":recovered": recovered,
                },
            },
        )

    def get_watermark(self, realm_id: str) -> Watermark | None:
        item = self.table.get_item(Key=watermark_key(realm_id), ConsistentRead=True).get("Item")
        if not item:
            return None
        last_run = item.get("last_run")
        return Watermark(
            realm_id=realm_id,
            watermark=float(item["watermark"]),
            last_run=float(last_run) if last_run is not None else None,
            recovered=int(item.get("recovered", 0)),
        )

    def _conditional(self, operation: str, kwargs: dict[str, Any]) -> bool:
        try:
            getattr(self.table, operation)(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True
