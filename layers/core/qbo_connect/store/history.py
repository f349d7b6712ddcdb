"""History items (``REALM#<realm_id>`` / ``HISTORY#<epoch>#<id>``): one outcome each, TTL."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from qbo_connect.store.table import (
    HISTORY_PREFIX,
    Repository,
    connection_key,
    to_dynamo,
    to_python,
)


class HistoryRepository(Repository):
    """A connection's history entries."""

    def put_history(self, realm_id: str, entry: Mapping[str, Any], *, ttl: float) -> None:
        """Store one history entry (``entry["at_epoch"]`` and ``entry["id"]`` make its key).

        Written once, never changed: the condition only makes a retried put that meets its own
        earlier success a success, not a second copy. ``ttl`` bounds how long it is kept.
        """
        sort_key = f"{HISTORY_PREFIX}{float(entry['at_epoch']):015.3f}#{entry['id']}"
        item = {
            "pk": connection_key(realm_id)["pk"],
            "sk": sort_key,
            "ttl": int(ttl),
            **{k: to_dynamo(v) for k, v in entry.items() if v is not None},
        }
        try:
            self.table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def get_history(
        self,
        realm_id: str,
        *,
        limit: int,
        now: float,
        since: float | None = None,
        keep: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` history entries of a realm, newest first.

        ``since`` (epoch) leaves out entries before it in the key condition; ``keep`` drops
        entries after reading, so the Query pages on until ``limit`` kept entries or the end
        (bounded by the entries' retention).
        """
        condition = "pk = :pk AND begins_with(sk, :prefix)"
        values: dict[str, Any] = {":pk": connection_key(realm_id)["pk"], ":prefix": HISTORY_PREFIX}
        if since is not None:
            condition = "pk = :pk AND sk BETWEEN :from AND :to"
            values = {
                ":pk": values[":pk"],
                ":from": f"{HISTORY_PREFIX}{float(since):015.3f}",
                ":to": f"{HISTORY_PREFIX}~",
            }
        query: dict[str, Any] = {
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            "Limit": limit,
            "ConsistentRead": True,
        }
        entries: list[dict[str, Any]] = []
        while True:
            response = self.table.query(**query)
            for item in response.get("Items", []):
                entry = to_python(dict(item))
                if entry.get("ttl", now + 1) <= now:  # TTL deletion is lazy: expired is gone
                    continue
                entry = {k: v for k, v in entry.items() if k not in ("pk", "sk", "ttl")}
                if keep is None or keep(entry):
                    entries.append(entry)
            last = response.get("LastEvaluatedKey")
            if len(entries) >= limit or not last or keep is None:
                return entries[:limit]
            query["ExclusiveStartKey"] = last
