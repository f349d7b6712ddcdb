"""The QuickBooks API governor's shared state: one item per realm, changed by compare-and-set.

Item: ``pk = "GOVERNOR#<realm_id>"``, ``sk = "GOVERNOR"`` (no ``tenant_id``, no ``due_shard``:
no index sees it). It holds ``v`` (bumped by every write), ``next_at`` (the start of the first
request slot nobody holds yet), ``batch_next_at`` (the same for batch calls), ``cool_until``
(QuickBooks throttled the realm: nobody sends before then), ``permits`` (in-flight permits
held per container: ``{container: [count, until]}``), ``write_id`` and ``ttl``.

Every write is conditional on the version read, so concurrent containers never hand out the
same slot or permit twice. A write that applied but lost its answer is recognised on the retry
by its ``write_id``; if another write came in between, the slots it took are lost (never used),
which errs on the side of sending less. The logic lives in ``qbo_connect.api.governor``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from qbo_connect.store.table import DESERIALIZE, to_dynamo, to_python

GOVERNOR_SK = "GOVERNOR"
#: The item outlives any slot, permit or cool-down it holds; idle realms' items go away.
TTL_SECONDS = 86400


def governor_key(realm_id: str) -> dict[str, str]:
    return {"pk": f"GOVERNOR#{realm_id}", "sk": GOVERNOR_SK}


@dataclass
class GovernorState:
    """What the table says about a realm (version 0: no item yet)."""

    version: int = 0
    next_at: float = 0.0
    batch_next_at: float = 0.0
    cool_until: float = 0.0
    #: container id -> (permits held, held until)
    permits: dict[str, tuple[int, float]] = field(default_factory=dict)
    write_id: str = ""

    @classmethod
    def from_item(cls, item: dict[str, Any] | None) -> GovernorState:
        if not item:
            return cls()
        raw = to_python(item)
        return cls(
            version=int(raw.get("v", 0)),
            next_at=float(raw.get("next_at", 0)),
            batch_next_at=float(raw.get("batch_next_at", 0)),
            cool_until=float(raw.get("cool_until", 0)),
            permits={
                str(k): (int(v[0]), float(v[1])) for k, v in (raw.get("permits") or {}).items()
            },
            write_id=str(raw.get("write_id", "")),
        )


class GovernorTable:
    """Reads and compare-and-set writes of the governor item (see the module docstring)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def read(self, realm_id: str) -> GovernorState:
        item = self.table.get_item(Key=governor_key(realm_id), ConsistentRead=True).get("Item")
        return GovernorState.from_item(item)

    def write(
        self, realm_id: str, seen: GovernorState, new: GovernorState, *, now: float
    ) -> GovernorState | None:
        """Write ``new`` if the item is still at ``seen.version``: None when it applied (ours,
        even if a retry met our own earlier success), else what the item holds now."""
        values: dict[str, Any] = {
            ":v": new.version,
            ":next_at": new.next_at,
            ":batch_next_at": new.batch_next_at,
            ":cool_until": new.cool_until,
            ":permits": {k: [n, until] for k, (n, until) in new.permits.items()},
            ":write_id": new.write_id,
            ":ttl": int(now) + TTL_SECONDS,
        }
        if seen.version:
            condition = "#v = :seen"
            values[":seen"] = seen.version
        else:
            condition = "attribute_not_exists(#v)"
        try:
            self.table.update_item(
                Key=governor_key(realm_id),
                UpdateExpression=(
                    "SET #v = :v, next_at = :next_at, batch_next_at = :batch_next_at, "
                    "cool_until = :cool_until, #permits = :permits, write_id = :write_id, "
                    "#ttl = :ttl"
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames={"#v": "v", "#permits": "permits", "#ttl": "ttl"},
                ExpressionAttributeValues={k: to_dynamo(v) for k, v in values.items()},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item")
            current = (
                GovernorState.from_item({k: DESERIALIZE.deserialize(v) for k, v in old.items()})
                if old
                else self.read(realm_id)
            )
            if current.write_id == new.write_id and current.version == new.version:
                return None  # our own write, applied before its answer was lost
            return current
        return None
