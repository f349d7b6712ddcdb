"""The connections table: keys, codecs, the update-expression builder, conditional writes.

Every repository of this package is a :class:`Repository` over the one table; the item
kinds and their keys are described in ``qbo_connect.store``'s docstring.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer
from botocore.exceptions import ClientError

from qbo_connect.errors import (
    StoreConflict,
)
from qbo_connect.events import PendingEvent

CONNECTION_SK = "CONNECTION"
#: The sweep's current run of successful refreshes, on the connection item (see ``history``).
REFRESH_RUN = "refresh_run"
HISTORY_PREFIX = "HISTORY#"
STATUS_ACTIVE = "active"
STATUS_NEEDS_REAUTHORIZATION = "needs_reauthorization"
STATUS_DISCONNECTED = "disconnected"

#: A connection that stops being active with an event pending stays due this soon, so the
#: sweep delivers the event if the writer could not.
OUTBOX_RETRY_SECONDS = 60.0

#: A failed condition's ``Item`` comes back in DynamoDB's wire format (the resource layer
#: converts only successful answers).
DESERIALIZE = TypeDeserializer()

FLEET_INVALID_GRANT_PK = "FLEET#invalid_grant"
BREAKER_KEY = {"pk": "FLEET#breaker", "sk": "invalid_grant"}

TENANT_INDEX = "TenantIndex"
DUE_INDEX = "DueIndex"

# Attributes that hold token material; never returned as metadata, removed on disconnect.
TOKEN_ATTRIBUTES = (
    "data_key",
    "access_token_enc",
    "refresh_token_enc",
    "previous_refresh_token_enc",
)


def connection_key(realm_id: str) -> dict[str, str]:
    return {"pk": f"REALM#{realm_id}", "sk": CONNECTION_SK}


def due_shard_for(realm_id: str, shards: int) -> str:
    """A stable shard per realm, so writes to DueIndex spread over ``shards`` partitions."""
    digest = hashlib.sha256(realm_id.encode()).digest()
    return f"DUE#{int.from_bytes(digest[:4], 'big') % max(1, shards):02d}"


def number(value: float | int) -> Decimal:
    return Decimal(str(round(float(value), 3)))


def to_python(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary):
        return bytes(value.value)
    if isinstance(value, list):
        return [to_python(v) for v in value]
    if isinstance(value, set):
        return {to_python(v) for v in value}
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    return value


def to_dynamo(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes | Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return number(value)
    if isinstance(value, list | tuple):
        return [to_dynamo(v) for v in value]
    if isinstance(value, dict):
        return {k: to_dynamo(v) for k, v in value.items()}
    return value


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class Update:
    """Builds one UpdateExpression with placeholders, so callers never concatenate names."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, attr: str) -> str:
        placeholder = f"#{attr}"
        self.names[placeholder] = attr
        return placeholder

    def value(self, label: str, value: Any) -> str:
        placeholder = f":{label}"
        self.values[placeholder] = to_dynamo(value)
        return placeholder

    def set(self, attr: str, value: Any) -> Update:
        self.sets.append(f"{self.name(attr)} = {self.value('v_' + attr, value)}")
        return self

    def set_many(self, attrs: Mapping[str, Any]) -> Update:
        for attr, value in attrs.items():
            if value is None:
                self.remove(attr)
            else:
                self.set(attr, value)
        return self

    def set_expr(self, expr: str) -> Update:
        self.sets.append(expr)
        return self

    def record_event(self, event: PendingEvent) -> str:
        """Add an outbox entry; returns its name placeholder (for the own-success condition)."""
        self.set(event.attribute, event.to_item())
        return self.name(event.attribute)

    def remove(self, *attrs: str) -> Update:
        self.removes.extend(self.name(a) for a in attrs)
        return self

    def expression(self) -> str:
        parts = []
        if self.sets:
            parts.append("SET " + ", ".join(self.sets))
        if self.removes:
            parts.append("REMOVE " + ", ".join(dict.fromkeys(self.removes)))
        return " ".join(parts)


class Repository:
    """A repository over the connections table: one kind of item, conditional writes only."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def _update(
        self,
        key: Mapping[str, str],
        update: Update,
        condition: str,
        on_fail: type[StoreConflict],
        *,
        return_values: str = "ALL_NEW",
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "Key": dict(key),
            "UpdateExpression": update.expression(),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": update.names,
            "ReturnValues": return_values,
        }
        if update.values:
            kwargs["ExpressionAttributeValues"] = update.values
        try:
            response = self.table.update_item(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise on_fail(f"condition failed on {key['pk'].split('#')[0]} item") from None
            raise
        return dict(response.get("Attributes") or {})

    def _conditional(self, operation: str, kwargs: Mapping[str, Any]) -> bool:
        """``put_item`` or ``update_item`` with a condition; False when the condition failed
        (an expected answer: a duplicate, a lost race, a retry meeting a newer state)."""
        try:
            getattr(self.table, operation)(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _try_update(self, key: Mapping[str, str], update: Update, condition: str) -> bool:
        """A conditional write whose failed condition is an expected answer, not an error."""
        try:
            self._update(key, update, condition, StoreConflict, return_values="NONE")
        except StoreConflict:
            return False
        return True
