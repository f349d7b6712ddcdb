"""The fleet-level invalid_grant breaker's items (see ``qbo_connect.vault.breaker``)."""

from __future__ import annotations

from collections.abc import Iterable

from botocore.exceptions import ClientError

from qbo_connect.store.table import (
    BREAKER_KEY,
    FLEET_INVALID_GRANT_PK,
    Repository,
    Update,
)


class FleetRepository(Repository):
    """Fleet-wide invalid_grant buckets and the breaker's ``cleared_at``."""

    # ----- fleet-level invalid_grant breaker (see breaker.py) --------------------------------

    def record_fleet_invalid_grant(
        self, realm_id: str, *, now: float, bucket: int, ttl: int
    ) -> None:
        """Note that Intuit rejected ``realm_id`` at ``now`` in time bucket ``bucket``.

        One attribute per realm (``r_<realm_id>`` = the time), so the item holds distinct
        connections. An item grown past DynamoDB's size limit (an outage across thousands of
        connections) refuses the write: the bucket is far above any threshold already.
        """
        update = Update().set(f"r_{realm_id}", now).set("ttl", ttl)
        try:
            self.table.update_item(
                Key={"pk": FLEET_INVALID_GRANT_PK, "sk": str(bucket)},
                UpdateExpression=update.expression(),
                ExpressionAttributeNames=update.names,
                ExpressionAttributeValues=update.values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ValidationException":
                raise

    def fleet_invalid_grants(self, buckets: Iterable[int]) -> dict[str, float]:
        """Realm → latest rejection time, over the given buckets."""
        seen: dict[str, float] = {}
        for bucket in buckets:
            item = self.table.get_item(
                Key={"pk": FLEET_INVALID_GRANT_PK, "sk": str(bucket)}, ConsistentRead=True
            ).get("Item")
            for key, value in (item or {}).items():
                if key.startswith("r_"):
                    seen[key[2:]] = max(seen.get(key[2:], 0.0), float(value))
        return seen

    def breaker_cleared_at(self) -> float:
        """When a refresh last succeeded after invalid_grant answers were seen (0 if never)."""
        item = self.table.get_item(Key=BREAKER_KEY, ConsistentRead=True).get("Item")
        return float((item or {}).get("cleared_at") or 0)

    def clear_breaker(self, *, now: float) -> None:
        """Refreshes succeed again: rejections before ``now`` no longer count."""
        update = Update().set("cleared_at", now)
        self.table.update_item(
            Key=dict(BREAKER_KEY),
            UpdateExpression=update.expression(),
            ExpressionAttributeNames=update.names,
            ExpressionAttributeValues=update.values,
        )
