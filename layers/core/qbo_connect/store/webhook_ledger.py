"""Which webhook events were published: the dedup items in ConnectionsTable.

This module owns only the ``WEBHOOK#<event_id>`` items (connections are read through
:class:`qbo_connect.store.Store`). Every write is conditional, so two deliveries of one event
(Intuit retries, or two copies in flight at once) publish it once:

1. :meth:`Ledger.claim` puts ``status = claimed`` with an owner (the SQS message id) and a claim
   deadline, only if no item exists, or the item is an unfinished claim that is ours (SQS
   redelivered our message, or boto3 retried our own write whose answer was lost) or whose
   deadline passed (its owner died before publishing).
2. The caller publishes.
3. :meth:`Ledger.mark_published` sets ``status = published``, conditioned on still being the
   owner.

A crash between 1 and 3 leaves a claim that the same message's redelivery takes again, so an
event is never lost to a half-finished attempt; a duplicate that meets a live claim of another
message stands back, because that message is retried until it publishes or lands in the DLQ.
Items expire through the table's ``ttl`` (DynamoDB deletes them lazily; nothing here depends
on that).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qbo_connect.store.table import Repository, number

KIND = "WEBHOOK"
CLAIMED = "claimed"
PUBLISHED = "published"


def ledger_key(event_id: str) -> dict[str, str]:
    return {"pk": f"{KIND}#{event_id}", "sk": KIND}


class Ledger(Repository):
    """Conditional writes of the dedup items (see the module docstring for the protocol)."""

    def __init__(self, table: Any, *, ttl_seconds: int, claim_seconds: float) -> None:
        super().__init__(table)
        self.ttl_seconds = ttl_seconds
        self.claim_seconds = claim_seconds

    def claim(self, event_id: str, *, owner: str, now: float, realm_id: str = "") -> bool:
        """True when this owner may publish ``event_id`` now; False for a duplicate."""
        item: dict[str, Any] = {
            **ledger_key(event_id),
            "status": CLAIMED,
            "owner": owner,
            "claim_until": number(now + self.claim_seconds),
            "claimed_at": number(now),
            "ttl": int(now) + self.ttl_seconds,
        }
        if realm_id:
            item["realm_id"] = realm_id
        return self._conditional(
            "put_item",
            {
                "Item": item,
                "ConditionExpression": (
                    "attribute_not_exists(pk) OR (#status = :claimed AND "
                    "(#owner = :me OR #claim_until < :now))"
                ),
                "ExpressionAttributeNames": {
                    "#status": "status",
                    "#owner": "owner",
                    "#claim_until": "claim_until",
                },
                "ExpressionAttributeValues": {
                    ":claimed": CLAIMED,
                    ":me": owner,
                    ":now": number(now),
                },
            },
        )

    def mark_published(self, event_id: str, *, owner: str, now: float) -> bool:
        """Record the publication; False when another owner took the claim over meanwhile."""
        return self._conditional(
            "update_item",
            {
                "Key": ledger_key(event_id),
                "UpdateExpression": (
                    "SET #status = :published, published_at = :now REMOVE claim_until"
                ),
                "ConditionExpression": "#owner = :me",
                "ExpressionAttributeNames": {"#status": "status", "#owner": "owner"},
                "ExpressionAttributeValues": {
                    ":published": PUBLISHED,
                    ":me": owner,
                    ":now": number(now),
                },
            },
        )

    def get(self, event_id: str) -> Mapping[str, Any] | None:
        """The item as stored (tests and operators), or None."""
        item = self.table.get_item(Key=ledger_key(event_id), ConsistentRead=True).get("Item")
        return dict(item) if item else None
