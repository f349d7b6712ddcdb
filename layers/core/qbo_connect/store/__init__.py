"""DynamoDB access: the only module that touches ConnectionsTable.

Every write that changes a connection is a conditional write; a failed condition becomes a
named domain exception (``errors.StoreConflict`` subclasses), never a silent overwrite. There is
no read-modify-write without a condition anywhere in here.

Item shapes (single table, ``pk``/``sk``):

- Connection: ``pk = "REALM#<realm_id>"``, ``sk = "CONNECTION"``. Carries ``tenant_id`` and
  ``realm_id`` (TenantIndex), ``version`` (bumped by every token write), the wrapped data key,
  the sealed tokens, their expiry times, the refresh lease (``lease_owner``, ``lease_until``),
  invalid_grant bookkeeping, and, while active, ``due_shard``/``due_at`` (DueIndex, sparse).
  Pending lifecycle events live on the item as ``outbox_<event_id>`` attributes (see
  ``events.py``); a connection that is no longer active stays in DueIndex while it has any, so
  the sweep delivers them.

Every write that boto3 may retry after its first attempt was applied (the answer lost)
recognises its own earlier success instead of failing its condition: the lease carries our
owner id, a commit records ``committed_by``, an outbox entry's event id is in its attribute
name, the worker's lease (``lease_if_due``) accepts its own owner id, the sweep's run lease
carries its owner and its state write records ``last_run``. Meeting our own write is success,
not a conflict.
- History entry: ``pk = "REALM#<realm_id>"``, ``sk = "HISTORY#<epoch>#<id>"``: one outcome of
  the connection (see ``history``), written once, removed by TTL. It carries no ``tenant_id``
  and no ``due_shard``, so neither index sees it.
- Fleet-level breaker (``breaker.py``): ``pk = "FLEET#invalid_grant"``, ``sk`` = a time bucket,
  one ``r_<realm_id>`` attribute (the time of the last rejection) per connection Intuit
  rejected in that bucket, ``ttl``; and ``pk = "FLEET#breaker"`` holding ``cleared_at``. Both
  are blind, idempotent SETs (no read-modify-write).
- OAuth state: ``pk = "STATE#<sha256>"``; connect link: ``pk = "LINK#<sha256>"``; both with
  ``sk`` = the kind, an ``expires_at`` checked on read (moto and DynamoDB TTL are lazy) and
  ``ttl`` for DynamoDB to clean up.
- Sweep run state: ``pk = "SWEEP#DueIndex"``, ``sk = "STATE"``: the sweep's run lease and,
  per DueIndex shard, its watermark and the pairs it last enqueued (see the section at the end).
  No ``tenant_id``, no ``due_shard``: no index sees it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer
from botocore.exceptions import ClientError

from qbo_connect.errors import (
    AlreadyConsumed,
    AlreadyExists,
    LeaseHeld,
    LeaseLost,
    NotFound,
    StoreConflict,
    VersionConflict,
)
from qbo_connect.events import OUTBOX_PREFIX, PendingEvent

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
_DESERIALIZE = TypeDeserializer()

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


def _num(value: float | int) -> Decimal:
    return Decimal(str(round(float(value), 3)))


def _to_python(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary):
        return bytes(value.value)
    if isinstance(value, list):
        return [_to_python(v) for v in value]
    if isinstance(value, set):
        return {_to_python(v) for v in value}
    if isinstance(value, dict):
        return {k: _to_python(v) for k, v in value.items()}
    return value


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes | Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items()}
    return value


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass
class Connection:
    """A connection item as the code sees it (numbers as float/int, binaries as bytes)."""

    realm_id: str
    tenant_id: str
    environment: str
    status: str
    version: int
    scopes: tuple[str, ...] = ()
    company_name: str | None = None
    connected_at: str | None = None
    updated_at: str | None = None
    data_key: bytes | None = field(default=None, repr=False)
    access_token_enc: bytes | None = field(default=None, repr=False)
    refresh_token_enc: bytes | None = field(default=None, repr=False)
    previous_refresh_token_enc: bytes | None = field(default=None, repr=False)
    access_expires_at: float = 0.0
    refresh_expires_at: float = 0.0
    refresh_hard_expires_at: float | None = None
    last_refreshed_at: float = 0.0
    last_used_at: float | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    invalid_grant_first_at: float | None = None
    invalid_grant_count: int = 0
    last_error: str | None = None
    reauth_reason: str | None = None
    due_at: float | None = None
    expiring_notified: tuple[int, ...] = ()
    refresh_failures: int = 0
    pending_events: tuple[PendingEvent, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Connection:
        data = _to_python(dict(item))
        return cls(
            realm_id=data["realm_id"],
            tenant_id=data.get("tenant_id", ""),
            environment=data.get("environment", ""),
            status=data.get("status", STATUS_ACTIVE),
            version=int(data.get("version", 0)),
            scopes=tuple(data.get("scopes") or ()),
            company_name=data.get("company_name"),
            connected_at=data.get("connected_at"),
            updated_at=data.get("updated_at"),
            data_key=data.get("data_key"),
            access_token_enc=data.get("access_token_enc"),
            refresh_token_enc=data.get("refresh_token_enc"),
            previous_refresh_token_enc=data.get("previous_refresh_token_enc"),
            access_expires_at=float(data.get("access_expires_at") or 0),
            refresh_expires_at=float(data.get("refresh_expires_at") or 0),
            refresh_hard_expires_at=data.get("refresh_hard_expires_at"),
            last_refreshed_at=float(data.get("last_refreshed_at") or 0),
            last_used_at=data.get("last_used_at"),
            lease_owner=data.get("lease_owner"),
            lease_until=data.get("lease_until"),
            invalid_grant_first_at=data.get("invalid_grant_first_at"),
            invalid_grant_count=int(data.get("invalid_grant_count") or 0),
            last_error=data.get("last_error"),
            reauth_reason=data.get("reauth_reason"),
            due_at=data.get("due_at"),
            expiring_notified=tuple(sorted({int(x) for x in data.get("expiring_notified") or ()})),
            refresh_failures=int(data.get("refresh_failures") or 0),
            pending_events=tuple(
                sorted(
                    (
                        PendingEvent.from_item(k, v)
                        for k, v in data.items()
                        if k.startswith(OUTBOX_PREFIX) and isinstance(v, dict)
                    ),
                    key=lambda e: (e.occurred_at, e.event_id),
                )
            ),
            raw=data,
        )

    def has_live_lease(self, now: float) -> bool:
        return bool(self.lease_owner) and (self.lease_until or 0) > now

    def metadata(self) -> dict[str, Any]:
        """What callers may see about a connection: never token material."""
        return {
            "realm_id": self.realm_id,
            "tenant_id": self.tenant_id,
            "environment": self.environment,
            "status": self.status,
            "scopes": list(self.scopes),
            "company_name": self.company_name,
            "connected_at": self.connected_at,
            "updated_at": self.updated_at,
            "access_expires_at": _iso(self.access_expires_at) if self.access_expires_at else None,
            "refresh_expires_at": (
                _iso(self.refresh_expires_at) if self.refresh_expires_at else None
            ),
            "refresh_hard_expires_at": (
                _iso(self.refresh_hard_expires_at) if self.refresh_hard_expires_at else None
            ),
            "last_refreshed_at": _iso(self.last_refreshed_at) if self.last_refreshed_at else None,
            "last_used_at": _iso(self.last_used_at) if self.last_used_at else None,
            "reauth_reason": self.reauth_reason,
        }


@dataclass(frozen=True)
class SealedTokens:
    """Token material ready to be written: sealed bytes and expiry times."""

    data_key: bytes = field(repr=False)
    #: None when the access token is deliberately not kept (an idle connection's keep-alive
    #: refresh, see ``TokenVault``): ``access_expires_at`` is then 0, so a reader refreshes.
    access_token_enc: bytes | None = field(repr=False)
    refresh_token_enc: bytes = field(repr=False)
    access_expires_at: float
    refresh_expires_at: float
    refresh_hard_expires_at: float | None = None
    previous_refresh_token_enc: bytes | None = field(default=None, repr=False)

    def attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "data_key": self.data_key,
            "refresh_token_enc": self.refresh_token_enc,
            "access_expires_at": self.access_expires_at,
            "refresh_expires_at": self.refresh_expires_at,
        }
        if self.access_token_enc is not None:
            attrs["access_token_enc"] = self.access_token_enc
        if self.refresh_hard_expires_at is not None:
            attrs["refresh_hard_expires_at"] = self.refresh_hard_expires_at
        if self.previous_refresh_token_enc is not None:
            attrs["previous_refresh_token_enc"] = self.previous_refresh_token_enc
        return attrs

    def absent_attributes(self) -> tuple[str, ...]:
        """Token attributes this set does not carry: a write of it removes them."""
        optional = {
            "access_token_enc": self.access_token_enc,
            "refresh_hard_expires_at": self.refresh_hard_expires_at,
            "previous_refresh_token_enc": self.previous_refresh_token_enc,
        }
        return tuple(name for name, value in optional.items() if value is None)


class _Update:
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
        self.values[placeholder] = _to_dynamo(value)
        return placeholder

    def set(self, attr: str, value: Any) -> _Update:
        self.sets.append(f"{self.name(attr)} = {self.value('v_' + attr, value)}")
        return self

    def set_many(self, attrs: Mapping[str, Any]) -> _Update:
        for attr, value in attrs.items():
            if value is None:
                self.remove(attr)
            else:
                self.set(attr, value)
        return self

    def set_expr(self, expr: str) -> _Update:
        self.sets.append(expr)
        return self

    def record_event(self, event: PendingEvent) -> str:
        """Add an outbox entry; returns its name placeholder (for the own-success condition)."""
        self.set(event.attribute, event.to_item())
        return self.name(event.attribute)

    def remove(self, *attrs: str) -> _Update:
        self.removes.extend(self.name(a) for a in attrs)
        return self

    def expression(self) -> str:
        parts = []
        if self.sets:
            parts.append("SET " + ", ".join(self.sets))
        if self.removes:
            parts.append("REMOVE " + ", ".join(dict.fromkeys(self.removes)))
        return " ".join(parts)


class Store:
    """Conditional reads and writes of ConnectionsTable."""

    def __init__(self, table: Any, *, due_shards: int = 16) -> None:
        self.table = table
        self.due_shards = due_shards

    @classmethod
    def from_name(cls, table_name: str, *, due_shards: int = 16, resource: Any = None) -> Store:
        import boto3

        dynamodb = resource or boto3.resource("dynamodb")
        return cls(dynamodb.Table(table_name), due_shards=due_shards)

    # ----- helpers ---------------------------------------------------------------------------

    def _update(
        self,
        key: Mapping[str, str],
        update: _Update,
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

    def _try_update(self, key: Mapping[str, str], update: _Update, condition: str) -> bool:
        """A conditional write whose failed condition is an expected answer, not an error."""
        try:
            self._update(key, update, condition, StoreConflict, return_values="NONE")
        except StoreConflict:
            return False
        return True

    def _new_token_version(
        self, update: _Update, realm_id: str, seen_version: int, due_at: float | None
    ) -> None:
        """What every write of new tokens does: version + 1, the lease released, the
        invalid_grant history cleared (the new tokens just worked) and the next sweep visit set.
        """
        update.set_expr(f"#version = {update.value('next', seen_version + 1)}")
        update.name("version")
        if due_at is not None:
            update.set("due_shard", due_shard_for(realm_id, self.due_shards))
            update.set("due_at", due_at)
        update.remove(
            "lease_owner",
            "lease_until",
            "invalid_grant_first_at",
            "invalid_grant_count",
            "last_error",
            "refresh_failures",
            "failing_since",
        )

    # ----- connections: reads ----------------------------------------------------------------

    def get_connection(self, realm_id: str, *, consistent: bool = True) -> Connection | None:
        response = self.table.get_item(Key=connection_key(realm_id), ConsistentRead=consistent)
        item = response.get("Item")
        return Connection.from_item(item) if item else None

    def list_connections(
        self, tenant_id: str, *, limit: int = 50, cursor: Mapping[str, Any] | None = None
    ) -> tuple[list[Connection], dict[str, Any] | None]:
        """One page of a tenant's connections through TenantIndex (never a Scan)."""
        kwargs: dict[str, Any] = {
            "IndexName": TENANT_INDEX,
            "KeyConditionExpression": "tenant_id = :t",
            "ExpressionAttributeValues": {":t": tenant_id},
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = dict(cursor)
        response = self.table.query(**kwargs)
        items = [Connection.from_item(i) for i in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return items, (_to_python(last) if last else None)

    def query_due(
        self,
        shard: str,
        now: float,
        *,
        limit: int = 100,
        cursor: Mapping[str, Any] | None = None,
    ) -> tuple[list[str], dict[str, Any] | None]:
        """Realm ids whose due_at <= now in one DueIndex shard, oldest first."""
        entries, last = self.query_due_entries(shard, now, limit=limit, cursor=cursor)
        return [realm_id for realm_id, _ in entries], last

    def query_due_entries(
        self,
        shard: str,
        now: float,
        *,
        limit: int = 100,
        cursor: Mapping[str, Any] | None = None,
    ) -> tuple[list[tuple[str, float]], dict[str, Any] | None]:
        """``(realm_id, due_at)`` pairs whose due_at <= now in one DueIndex shard, oldest first.

        The due_at is the value the index holds (the sweep puts it in the message).
        """
        return self.query_due_after(shard, after=None, now=now, limit=limit, cursor=cursor)

    # ----- connections: writes ---------------------------------------------------------------

    def create_connection(
        self,
        *,
        realm_id: str,
        tenant_id: str,
        environment: str,
        scopes: Iterable[str],
        tokens: SealedTokens,
        now: float,
        company_name: str | None = None,
        due_at: float | None = None,
        event: PendingEvent | None = None,
    ) -> Connection:
        """Store a brand-new connection; fails with AlreadyExists if the realm is stored.

        ``event`` (``connection.created``) is recorded in the same write. A retry whose first
        attempt was applied meets its own event at version 1 and succeeds.
        """
        item: dict[str, Any] = {
            **connection_key(realm_id),
            "realm_id": realm_id,
            "tenant_id": tenant_id,
            "environment": environment,
            "status": STATUS_ACTIVE,
            "version": 1,
            "scopes": sorted(set(scopes)),
            "connected_at": _iso(now),
            "updated_at": _iso(now),
            "last_refreshed_at": now,
            **tokens.attributes(),
        }
        if company_name:
            item["company_name"] = company_name
        if due_at is not None:
            item["due_shard"] = due_shard_for(realm_id, self.due_shards)
            item["due_at"] = due_at
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        if event is not None:
            item[event.attribute] = event.to_item()
            condition = {
                "ConditionExpression": (
                    "attribute_not_exists(pk) OR (attribute_exists(#event) AND #version = :one)"
                ),
                "ExpressionAttributeNames": {"#event": event.attribute, "#version": "version"},
                "ExpressionAttributeValues": {":one": 1},
            }
        try:
            self.table.put_item(Item=_to_dynamo(item), **condition)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise AlreadyExists(f"realm {realm_id} is already stored") from None
            raise
        return Connection.from_item(item)

    def reconnect_connection(
        self,
        *,
        realm_id: str,
        tenant_id: str,
        seen_version: int,
        environment: str,
        scopes: Iterable[str],
        tokens: SealedTokens,
        now: float,
        company_name: str | None = None,
        due_at: float | None = None,
        event: PendingEvent | None = None,
    ) -> Connection:
        """Replace a connection's tokens in place after the same tenant re-authorised.

        Conditioned on the tenant (a realm held by another tenant is never taken over; a
        disconnected realm may go to a new tenant) and on the version seen (a concurrent write
        wins and we re-read). Clears any lease, dead status and invalid_grant history: the user
        just proved the grant is alive.
        """
        update = _Update()
        update.set_many(
            {
                "status": STATUS_ACTIVE,
                "environment": environment,
                "scopes": sorted(set(scopes)),
                "updated_at": _iso(now),
                "reconnected_at": _iso(now),
                "last_refreshed_at": now,
                **({"company_name": company_name} if company_name else {}),
                **tokens.attributes(),
            }
        )
        update.remove(*tokens.absent_attributes())
        self._new_token_version(update, realm_id, seen_version, due_at)
        update.remove("reauth_reason", "disconnected_at", "expiring_notified")
        # The tenant may change only when the realm was disconnected: a disconnected realm is
        # free for whoever connects it next, a live one is never taken over.
        update.set("tenant_id", tenant_id)
        condition = (
            f"attribute_exists(pk) AND (#tenant_id = :v_tenant_id"
            f" OR #status = {update.value('gone', STATUS_DISCONNECTED)})"
            f" AND #version = {update.value('seen', seen_version)}"
        )
        if event is not None:
            # ``event`` (created or reconnected) rides on the same write; a retry that meets it
            # at the version this write produced is our own success.
            mine = update.record_event(event)
            condition = f"({condition}) OR (attribute_exists({mine}) AND #version = :next)"
        update.name("status")
        attrs = self._update(connection_key(realm_id), update, condition, VersionConflict)
        return Connection.from_item(attrs)

    def acquire_lease(
        self,
        realm_id: str,
        *,
        seen_version: int,
        owner: str,
        now: float,
        until: float,
        recovery_due_at: float | None = None,
    ) -> Connection:
        """Take the refresh lease: only on the version we read and only if no lease is live.

        Meeting a live lease whose owner is us (a retry of a write that was applied) is
        success. ``recovery_due_at`` (just after the lease expires) becomes the due time, so a
        refresh interrupted by a crash is picked up by the sweep soon; the commit or the
        release writes the real next due time.
        """
        update = _Update().set("lease_owner", owner).set("lease_until", until)
        if recovery_due_at is not None:
            update.set("due_shard", due_shard_for(realm_id, self.due_shards))
            update.set("due_at", recovery_due_at)
        me = update.value("me", owner)
        condition = (
            f"(#version = {update.value('seen', seen_version)}"
            f" AND #status = {update.value('active', STATUS_ACTIVE)}"
            " AND (attribute_not_exists(#lease_until)"
            f" OR #lease_until < {update.value('now', now)}))"
            f" OR #lease_owner = {me}"
        )
        update.name("version")
        update.name("status")
        return Connection.from_item(
            self._update(connection_key(realm_id), update, condition, LeaseHeld)
        )

    def lease_if_due(
        self,
        realm_id: str,
        *,
        owner: str,
        now: float,
        until: float,
        due_upto: float,
        claimed_due_at: float | None = None,
    ) -> tuple[Connection | None, Connection | None]:
        """The worker's lease: one write that both checks the connection is due and takes it.

        Taken only if the connection is active, due (``due_at <= due_upto``) and not leased;
        ``(leased item, None)`` then, read from the same write (ReturnValues), so the worker
        needs no read first. Otherwise ``(None, item as found)``, from the failed write itself
        (``ReturnValuesOnConditionCheckFailure``), or ``(None, None)`` when there is no item:
        the caller learns why (gone, not active, not due, leased) and finds pending events
        without another request. Meeting our own lease (boto3's retry of an applied write) is
        success. ``due_at`` is left as it is: the connection stays due until the commit or
        the release writes its next due time, and a crashed holder's SQS message comes back
        after the visibility timeout, long after the lease expired. ``claimed_due_at`` is an
        earlier version's claim (its message in flight during an upgrade): exactly that due
        time counts as due too.
        """
        update = _Update().set("lease_owner", owner).set("lease_until", until)
        due = f"#due_at <= {update.value('upto', due_upto)}"
        if claimed_due_at is not None:
            due = f"({due} OR #due_at = {update.value('claimed', claimed_due_at)})"
        condition = (
            f"(#status = {update.value('active', STATUS_ACTIVE)}"
            f" AND {due}"
            " AND (attribute_not_exists(#lease_until)"
            f" OR #lease_until < {update.value('now', now)}))"
            f" OR #lease_owner = :v_lease_owner"
        )
        update.name("status")
        update.name("due_at")
        try:
            response = self.table.update_item(
                Key=connection_key(realm_id),
                UpdateExpression=update.expression(),
                ConditionExpression=condition,
                ExpressionAttributeNames=update.names,
                ExpressionAttributeValues=update.values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            raw = exc.response.get("Item")
            if not raw:
                return None, None
            found = {k: _DESERIALIZE.deserialize(v) for k, v in raw.items()}
            return None, Connection.from_item(found)
        return Connection.from_item(response["Attributes"]), None

    def commit_refresh(
        self,
        realm_id: str,
        *,
        seen_version: int,
        owner: str,
        tokens: SealedTokens,
        now: float,
        due_at: float | None,
        late: bool = False,
        expiring_days: tuple[int, ...] = (),
        event: PendingEvent | None = None,
        refresh_run: Mapping[str, Any] | None = None,
    ) -> Connection:
        """Write rotated tokens: version + 1, lease released, invalid_grant history cleared.

        Conditioned on the version we leased and on still owning the lease, so a holder whose
        lease was taken over can never overwrite newer tokens. ``late=True`` drops the lease
        condition but keeps the version one: the vault's rule for a holder whose lease expired
        before anyone committed (see ``TokenVault``). Either way, a retry that meets the version
        this commit produced with ``committed_by`` = us is our own success.

        The same write records what the refresh settles besides the tokens, so none of it
        costs a write of its own: ``expiring_days`` (hard-expiry thresholds now notified) with
        their ``connection.expiring`` ``event`` (the outbox), and ``refresh_run`` (the sweep's
        running count of successful refreshes, see ``history``).
        """
        update = _Update()
        update.set_many(
            {
                **tokens.attributes(),
                "last_refreshed_at": now,
                "updated_at": _iso(now),
                "committed_by": owner,
            }
        )
        self._new_token_version(update, realm_id, seen_version, due_at)
        # Not kept: the superseded refresh token (see tokens.py), an access token left out.
        update.remove(*tokens.absent_attributes())
        if expiring_days:
            update.set_expr(
                f"#expiring_notified = list_append(if_not_exists(#expiring_notified, "
                f"{update.value('empty', [])}), {update.value('days', list(expiring_days))})"
            )
            update.name("expiring_notified")
        if event is not None:
            update.record_event(event)
        if refresh_run is not None:
            update.set(REFRESH_RUN, dict(refresh_run))
        me = update.value("me", owner)
        if late:
            lease = f"#status = {update.value('active', STATUS_ACTIVE)}"
            update.name("status")
        else:
            lease = f"#lease_owner = {me}"
            update.name("lease_owner")
        # Our own retry: the version we produced, still ours, nobody leased it since.
        condition = (
            f"(#version = {update.value('seen', seen_version)} AND {lease})"
            f" OR (#version = :next AND #committed_by = {me}"
            " AND attribute_not_exists(#lease_owner))"
        )
        update.name("lease_owner")
        return Connection.from_item(
            self._update(connection_key(realm_id), update, condition, LeaseLost)
        )

    def release_lease(
        self,
        realm_id: str,
        *,
        owner: str,
        now: float,
        error: str | None = None,
        invalid_grant: bool = False,
        retry_due_at: float | None = None,
        error_class: str | None = None,
        intuit_tid: str | None = None,
        end_run: bool = True,
    ) -> Connection:
        """Give the lease back without touching tokens, recording why the refresh failed.

        ``end_run`` removes the sweep's run of successes (the caller records it, ``history``).

        ``retry_due_at`` (the vault's backoff) becomes the due time and ``refresh_failures``
        counts consecutive failures; the next commit clears both. ``error_class`` and
        ``intuit_tid`` become the connection's last error (``health``), kept after a recovery,
        and ``failing_since`` keeps the start of the current run of failures.
        """
        update = _Update().remove("lease_owner", "lease_until")
        if end_run:
            update.remove(REFRESH_RUN)
        update.set("updated_at", _iso(now))
        if error_class:
            update.set_many({"last_error_class": error_class, "last_error_at": now})
            if intuit_tid:
                update.set("last_error_tid", intuit_tid)
            else:
                update.remove("last_error_tid")
            update.set_expr(
                f"#failing_since = if_not_exists(#failing_since, {update.value('now_f', now)})"
            )
            update.name("failing_since")
        if retry_due_at is not None:
            update.set("due_shard", due_shard_for(realm_id, self.due_shards))
            update.set("due_at", retry_due_at)
            update.set_expr(
                f"#refresh_failures = if_not_exists(#refresh_failures, "
                f"{update.value('zero_f', 0)}) + {update.value('one_f', 1)}"
            )
            update.name("refresh_failures")
        if error:
            update.set("last_error", error)
        if invalid_grant:
            update.set_expr(
                f"#invalid_grant_first_at = if_not_exists(#invalid_grant_first_at, "
                f"{update.value('now', now)})"
            )
            update.set_expr(
                f"#invalid_grant_count = if_not_exists(#invalid_grant_count, "
                f"{update.value('zero', 0)}) + {update.value('one', 1)}"
            )
            update.name("invalid_grant_first_at")
            update.name("invalid_grant_count")
        condition = f"#lease_owner = {update.value('me', owner)}"
        return Connection.from_item(
            self._update(connection_key(realm_id), update, condition, LeaseLost)
        )

    def mark_needs_reauthorization(
        self,
        realm_id: str,
        *,
        seen_version: int,
        owner: str,
        reason: str,
        now: float,
        event: PendingEvent,
    ) -> Connection:
        """Declare the grant dead, recording its one event in the same write.

        Succeeds for exactly one caller (the lease holder), and again for that caller's own
        retry (its event is there). The connection stays in DueIndex, due shortly, until the
        event is delivered.
        """
        update = _Update().set_many(
            {
                "status": STATUS_NEEDS_REAUTHORIZATION,
                "reauth_reason": reason,
                "updated_at": _iso(now),
                "due_shard": due_shard_for(realm_id, self.due_shards),
                "due_at": now + OUTBOX_RETRY_SECONDS,
            }
        )
        update.remove("lease_owner", "lease_until", REFRESH_RUN)
        mine = update.record_event(event)
        condition = (
            f"(#version = {update.value('seen', seen_version)}"
            f" AND #lease_owner = {update.value('me', owner)}"
            f" AND #status = {update.value('active', STATUS_ACTIVE)})"
            f" OR attribute_exists({mine})"
        )
        update.name("version")
        update.name("lease_owner")
        return Connection.from_item(
            self._update(connection_key(realm_id), update, condition, LeaseLost)
        )

    def disconnect(
        self,
        realm_id: str,
        *,
        now: float,
        event: PendingEvent | None = None,
        tenant_id: str | None = None,
    ) -> Connection:
        """Mark disconnected and delete the token material; returns the item as it was before.

        ``event`` (``connection.disconnected``) is recorded in the same write and keeps the
        item in DueIndex, due shortly, until it is delivered. With ``tenant_id``, only while
        that tenant still owns the connection (NotFound else).
        """
        update = _Update().set_many(
            {
                "status": STATUS_DISCONNECTED,
                "disconnected_at": _iso(now),
                "updated_at": _iso(now),
            }
        )
        update.set_expr(f"#version = #version + {update.value('one', 1)}")
        update.name("version")
        update.remove(
            *TOKEN_ATTRIBUTES,
            "lease_owner",
            "lease_until",
            "invalid_grant_first_at",
            "invalid_grant_count",
            "refresh_failures",
            REFRESH_RUN,
        )
        condition = (
            f"attribute_exists(pk) AND #status <> {update.value('gone', STATUS_DISCONNECTED)}"
        )
        if tenant_id is not None:
            condition += f" AND #tenant_id = {update.value('owner', tenant_id)}"
            update.name("tenant_id")
        if event is None:
            update.remove("due_shard", "due_at")
        else:
            update.set("due_shard", due_shard_for(realm_id, self.due_shards))
            update.set("due_at", now + OUTBOX_RETRY_SECONDS)
            mine = update.record_event(event)
            condition = f"({condition}) OR attribute_exists({mine})"
        update.name("status")
        attrs = self._update(
            connection_key(realm_id), update, condition, NotFound, return_values="ALL_OLD"
        )
        return Connection.from_item(attrs)

    def touch_last_used(
        self,
        realm_id: str,
        *,
        now: float,
        min_interval: float,
        due_at: float | None = None,
        seen_version: int | None = None,
    ) -> bool:
        """Record a read at most once per ``min_interval`` (a conditional no-op otherwise).

        Returns True when it wrote. A skipped write costs nothing but the failed condition.
        ``due_at`` was computed from the item at ``seen_version``: it is written only while
        the item is still at that version and not leased, so a read that raced a refresh never
        pulls the committed next due time back (which would cost an extra rotation).
        """
        update = _Update().set("last_used_at", now)
        condition = (
            f"#status = {update.value('active', STATUS_ACTIVE)} AND "
            f"(attribute_not_exists(#last_used_at) OR #last_used_at < "
            f"{update.value('threshold', now - min_interval)})"
        )
        if due_at is not None:
            if seen_version is None:
                raise ValueError("a due time is written only against the version it came from")
            update.set("due_at", due_at)
            condition += (
                f" AND #version = {update.value('seen', seen_version)}"
                " AND attribute_not_exists(#lease_owner)"
            )
            update.name("version")
            update.name("lease_owner")
        update.name("status")
        return self._try_update(connection_key(realm_id), update, condition)

    def set_due(self, realm_id: str, *, seen_version: int, due_at: float) -> None:
        """Reschedule an active connection's next sweep visit (conditioned on its version)."""
        update = _Update().set("due_shard", due_shard_for(realm_id, self.due_shards))
        update.set("due_at", due_at)
        condition = (
            f"#version = {update.value('seen', seen_version)}"
            f" AND #status = {update.value('active', STATUS_ACTIVE)}"
        )
        update.name("version")
        update.name("status")
        self._update(
            connection_key(realm_id), update, condition, VersionConflict, return_values="NONE"
        )

    def clear_event(self, realm_id: str, event_id: str) -> bool:
        """Remove a delivered outbox entry; False if it was gone already (delivered twice)."""
        update = _Update()
        entry = update.name(OUTBOX_PREFIX + event_id)
        update.removes.append(entry)
        return self._try_update(connection_key(realm_id), update, f"attribute_exists({entry})")

    def drop_due(self, realm_id: str, *, seen_due_at: float) -> bool:
        """Take a connection that is no longer active out of DueIndex (its events went out).

        Conditioned on the due time we read, so an event recorded since (which sets a new due
        time) keeps the item in the index.
        """
        update = _Update().remove("due_shard", "due_at")
        condition = (
            f"#status <> {update.value('active', STATUS_ACTIVE)}"
            f" AND #due_at = {update.value('seen', seen_due_at)}"
        )
        update.name("status")
        update.name("due_at")
        return self._try_update(connection_key(realm_id), update, condition)

    # ----- fleet-level invalid_grant breaker (see breaker.py) --------------------------------

    def record_fleet_invalid_grant(
        self, realm_id: str, *, now: float, bucket: int, ttl: int
    ) -> None:
        """Note that Intuit rejected ``realm_id`` at ``now`` in time bucket ``bucket``.

        One attribute per realm (``r_<realm_id>`` = the time), so the item holds distinct
        connections. An item grown past DynamoDB's size limit (an outage across thousands of
        connections) refuses the write: the bucket is far above any threshold already.
        """
        update = _Update().set(f"r_{realm_id}", now).set("ttl", ttl)
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
        update = _Update().set("cleared_at", now)
        self.table.update_item(
            Key=dict(BREAKER_KEY),
            UpdateExpression=update.expression(),
            ExpressionAttributeNames=update.names,
            ExpressionAttributeValues=update.values,
        )

    # ----- single-use items: OAuth state and connect links -----------------------------------

    @staticmethod
    def hash_secret(value: str) -> str:
        """Single-use secrets are stored only as their SHA-256."""
        return hashlib.sha256(value.encode()).hexdigest()

    def put_single_use(
        self, kind: str, secret: str, attributes: Mapping[str, Any], *, expires_at: float
    ) -> None:
        item = {
            "pk": f"{kind}#{self.hash_secret(secret)}",
            "sk": kind,
            **attributes,
            "expires_at": expires_at,
            "ttl": int(expires_at) + 3600,
        }
        try:
            self.table.put_item(
                Item=_to_dynamo(item), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise AlreadyExists(f"{kind} collision") from None
            raise

    def get_single_use(self, kind: str, secret: str, *, now: float) -> dict[str, Any] | None:
        """Read without consuming; None when unknown, used or expired (TTL is lazy)."""
        response = self.table.get_item(
            Key={"pk": f"{kind}#{self.hash_secret(secret)}", "sk": kind}, ConsistentRead=True
        )
        item = response.get("Item")
        if not item:
            return None
        data = _to_python(item)
        if data.get("used_at") or float(data.get("expires_at", 0)) <= now:
            return None
        return data

    def peek_single_use(self, kind: str, secret: str) -> dict[str, Any] | None:
        """The item whatever its state (used, expired), or None when unknown.

        Only for telling an unknown value from a used or an expired one (the page and the log
        say which); it authorises nothing: use :meth:`get_single_use` / :meth:`consume_single_use`.
        """
        response = self.table.get_item(
            Key={"pk": f"{kind}#{self.hash_secret(secret)}", "sk": kind}, ConsistentRead=True
        )
        item = response.get("Item")
        return _to_python(item) if item else None

    def consume_single_use(self, kind: str, secret: str, *, now: float) -> dict[str, Any]:
        """Use a single-use item exactly once: a conditional write that only one caller wins.

        The item is kept (marked used) rather than deleted so a replay can be told apart from
        an unknown value in logs; the TTL removes it later.
        """
        update = _Update().set("used_at", now)
        condition = (
            f"attribute_exists(pk) AND attribute_not_exists(#used_at)"
            f" AND #expires_at > {update.value('now', now)}"
        )
        update.name("expires_at")
        attrs = self._update(
            {"pk": f"{kind}#{self.hash_secret(secret)}", "sk": kind},
            update,
            condition,
            AlreadyConsumed,
        )
        return _to_python(attrs)

    # ----- Intuit's Disconnect URL: rate limits and the confirmed disconnect -----------------

    def take_rate_slot(self, key: str, *, now: float, window_seconds: int, limit: int) -> bool:
        """Count one use of ``key`` in the current fixed window; False once ``limit`` is used.

        One conditional UpdateItem on ``RATE#<key>#<window>`` (TTL removes old windows). A
        retry of a write that applied but lost its answer counts twice: a limit that errs
        towards refusing is the safe side here.
        """
        window = max(1, int(window_seconds))
        bucket = int(now // window)
        update = _Update()
        count = update.name("count")
        update.set_expr(
            f"{count} = if_not_exists({count}, {update.value('zero', 0)}) + "
            f"{update.value('one', 1)}"
        )
        update.set("ttl", (bucket + 1) * window + 3600)
        condition = f"attribute_not_exists({count}) OR {count} < {update.value('limit', limit)}"
        return self._try_update({"pk": f"RATE#{key}#{bucket}", "sk": "RATE"}, update, condition)

    def mark_disconnected_by_intuit(
        self,
        realm_id: str,
        *,
        seen_version: int,
        reason: str,
        marker: str,
        now: float,
        event: PendingEvent | None = None,
    ) -> Connection | None:
        """Disconnect a connection whose grant Intuit confirmed gone; its tokens are deleted.

        Conditioned on ``seen_version`` and no live lease, so a reconnect or a refresh in
        between wins. ``marker`` (unique per caller) is written too: when a retry meets the
        condition failing because its own first attempt applied, the re-read finds the marker
        and the caller still learns it won (and sends the one event). Returns the connection
        as it was before, or None when another writer changed it first. ``event``
        (``connection.disconnected``) is recorded in the same write and keeps the item in
        DueIndex, due shortly, until it is delivered (the outbox, see ``events.py``).
        """
        update = _Update().set_many(
            {
                "status": STATUS_DISCONNECTED,
                "disconnect_reason": reason,
                "disconnect_marker": marker,
                "disconnected_at": _iso(now),
                "updated_at": _iso(now),
            }
        )
        version = update.name("version")
        update.set_expr(f"{version} = {version} + {update.value('one', 1)}")
        update.remove(
            *TOKEN_ATTRIBUTES,
            "lease_owner",
            "lease_until",
            "invalid_grant_first_at",
            "invalid_grant_count",
            "refresh_failures",
            REFRESH_RUN,
        )
        if event is None:
            update.remove("due_shard", "due_at")
        else:
            update.set("due_shard", due_shard_for(realm_id, self.due_shards))
            update.set("due_at", now + OUTBOX_RETRY_SECONDS)
            update.record_event(event)
        condition = (
            f"{version} = {update.value('seen', seen_version)}"
            f" AND #status IN ({update.value('active', STATUS_ACTIVE)},"
            f" {update.value('reauth', STATUS_NEEDS_REAUTHORIZATION)})"
            " AND (attribute_not_exists(#lease_until)"
            f" OR #lease_until < {update.value('now', now)})"
        )
        try:
            before = self._update(
                connection_key(realm_id), update, condition, StoreConflict, return_values="ALL_OLD"
            )
        except StoreConflict:
            item = self.table.get_item(Key=connection_key(realm_id), ConsistentRead=True).get(
                "Item"
            )
            if item and item.get("disconnect_marker") == marker:
                return Connection.from_item(item)
            return None
        return Connection.from_item(before)

    # ----- history ---------------------------------------------------------------------------

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
            **{k: _to_dynamo(v) for k, v in entry.items() if v is not None},
        }
        try:
            self.table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def get_history(self, realm_id: str, *, limit: int, now: float) -> list[dict[str, Any]]:
        """The newest ``limit`` history entries of a realm, newest first (one Query)."""
        response = self.table.query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={
                ":pk": connection_key(realm_id)["pk"],
                ":prefix": HISTORY_PREFIX,
            },
            ScanIndexForward=False,
            Limit=limit,
            ConsistentRead=True,
        )
        entries = []
        for item in response.get("Items", []):
            entry = _to_python(dict(item))
            if entry.get("ttl", now + 1) <= now:  # TTL deletion is lazy: expired is gone
                continue
            entries.append({k: v for k, v in entry.items() if k not in ("pk", "sk", "ttl")})
        return entries

    # ----- sweep run state (see sweep.py) ----------------------------------------------------
    #
    # One item, ``pk = "SWEEP#DueIndex"``, ``sk = "STATE"``, with no ``tenant_id`` and no
    # ``due_shard``, so no index sees it. It holds the run lease (``run_owner``, ``run_until``:
    # one sweep at a time), ``last_run`` (the id of the last run that saved its state, so the
    # retry of that write recognises it) and one ``shard_NN`` map per DueIndex shard:
    # ``watermark`` (the sweep's clock when it last read the shard up to there), ``stale_at``
    # (when it last re-enqueued the shard's stale entries) and ``sent`` (the ``(realm_id,
    # due_at)`` pairs it enqueued that the next run's range still covers, as "realm due" strings).

    def begin_sweep_run(self, *, owner: str, now: float, until: float) -> SweepState | None:
        """Take the sweep's run lease; returns the stored state, or None if another run holds it.

        One conditional UpdateItem whose ``ALL_NEW`` answer carries the shards' state, so the
        run needs no read. The condition admits ``owner`` itself: boto3's retry of a write that
        was applied (its answer lost) meets its own lease and succeeds.
        """
        update = _Update().set("run_owner", owner).set("run_until", until)
        update.set("run_started_at", now)
        condition = (
            "attribute_not_exists(#run_until)"
            f" OR #run_until < {update.value('now', now)}"
            " OR #run_owner = :v_run_owner"
        )
        try:
            item = self._update(SWEEP_STATE_KEY, update, condition, StoreConflict)
        except StoreConflict:
            return None
        return SweepState.from_item(item)

    def end_sweep_run(self, *, owner: str, now: float, shards: Mapping[str, ShardMark]) -> bool:
        """Save the shards' new state and release the run lease; False if the lease was lost.

        Conditioned on our lease, so a run whose lease was taken over (it outlived
        ``run_until``) writes nothing. The write records ``last_run``, so boto3's retry of this
        write after its answer was lost meets it (lease gone, ``last_run`` ours) and succeeds;
        a retry meeting another run's live lease fails and leaves that lease alone.
        """
        update = _Update()
        for shard, mark in shards.items():
            update.set(_shard_attribute(shard), mark.to_item())
        update.set("last_run", owner).set("last_run_at", now)
        update.remove("run_owner", "run_until", "run_started_at")
        me = update.value("me", owner)
        condition = f"#run_owner = {me} OR (attribute_not_exists(#run_owner) AND #last_run = {me})"
        return self._try_update(SWEEP_STATE_KEY, update, condition)

    def query_due_after(
        self,
        shard: str,
        *,
        after: float | None,
        now: float,
        limit: int = 100,
        cursor: Mapping[str, Any] | None = None,
    ) -> tuple[list[tuple[str, float]], dict[str, Any] | None]:
        """``(realm_id, due_at)`` pairs with ``after < due_at <= now`` in one DueIndex shard,
        oldest first (``after=None``: from the bottom of the shard).

        Stored due times have 3 decimals, so ``due_at > after`` is ``BETWEEN after + 0.001``.
        """
        values: dict[str, Any] = {":s": shard, ":now": _num(now)}
        condition = "due_shard = :s AND due_at <= :now"
        if after is not None:
            low = _num(after) + Decimal("0.001")
            if low > values[":now"]:
                return [], None
            values[":low"] = low
            condition = "due_shard = :s AND due_at BETWEEN :low AND :now"
        kwargs: dict[str, Any] = {
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = _to_dynamo(dict(cursor))
        response = self.table.query(**kwargs)
        entries = [
            (item["pk"].split("#", 1)[1], float(item["due_at"]))
            for item in response.get("Items", [])
        ]
        last = response.get("LastEvaluatedKey")
        return entries, (_to_python(last) if last else None)


SWEEP_STATE_KEY = {"pk": "SWEEP#DueIndex", "sk": "STATE"}


def _shard_attribute(shard: str) -> str:
    """``DUE#07`` -> ``shard_07`` (an attribute name that needs no escaping)."""
    return "shard_" + shard.split("#", 1)[-1]


@dataclass(frozen=True)
class ShardMark:
    """What the sweep remembers of one DueIndex shard between runs (see ``sweep.py``)."""

    watermark: float
    stale_at: float
    sent: frozenset[tuple[str, float]] = frozenset()

    def to_item(self) -> dict[str, Any]:
        return {
            "watermark": _num(self.watermark),
            "stale_at": _num(self.stale_at),
            "sent": sorted(f"{realm} {due_at:.3f}" for realm, due_at in self.sent),
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> ShardMark:
        sent = set()
        for entry in item.get("sent") or ():
            realm, _, due_at = str(entry).partition(" ")
            sent.add((realm, round(float(due_at), 3)))
        return cls(
            watermark=float(item["watermark"]),
            stale_at=float(item.get("stale_at") or 0),
            sent=frozenset(sent),
        )


@dataclass(frozen=True)
class SweepState:
    """The run-state item as the lease write returned it: each shard's mark, by shard name."""

    shards: dict[str, ShardMark]

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> SweepState:
        shards = {
            f"DUE#{name.removeprefix('shard_')}": ShardMark.from_item(value)
            for name, value in item.items()
            if name.startswith("shard_") and isinstance(value, Mapping)
        }
        return cls(shards=shards)
