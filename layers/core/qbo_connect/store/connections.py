"""Connection items (``REALM#<realm_id>`` / ``CONNECTION``): the records and their repository."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import field
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from qbo_connect.errors import (
    AlreadyExists,
    LeaseHeld,
    LeaseLost,
    NotFound,
    StoreConflict,
    VersionConflict,
)
from qbo_connect.events import OUTBOX_PREFIX, PendingEvent
from qbo_connect.fieldwise import Fieldwise, frozen, record
from qbo_connect.store.table import (
    CONNECTION_SK,
    DESERIALIZE,
    DUE_INDEX,
    OUTBOX_RETRY_SECONDS,
    REFRESH_RUN,
    STATUS_ACTIVE,
    STATUS_DISCONNECTED,
    STATUS_NEEDS_REAUTHORIZATION,
    TENANT_INDEX,
    TOKEN_ATTRIBUTES,
    Repository,
    Update,
    connection_key,
    due_shard_for,
    iso,
    number,
    to_dynamo,
    to_python,
)
from qbo_connect.store.tenure import TENURE_ATTRIBUTES, TENURE_SINCE


@record
class Connection(Fieldwise):
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
        data = to_python(dict(item))
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
            "access_expires_at": iso(self.access_expires_at) if self.access_expires_at else None,
            "refresh_expires_at": (
                iso(self.refresh_expires_at) if self.refresh_expires_at else None
            ),
            "refresh_hard_expires_at": (
                iso(self.refresh_hard_expires_at) if self.refresh_hard_expires_at else None
            ),
            "last_refreshed_at": iso(self.last_refreshed_at) if self.last_refreshed_at else None,
            "last_used_at": iso(self.last_used_at) if self.last_used_at else None,
            "reauth_reason": self.reauth_reason,
        }


@frozen
class SealedTokens(Fieldwise):
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


class ConnectionRepository(Repository):
    """Connection items: reads, the lease protocol's writes, the DueIndex and the TenantIndex."""

    def __init__(self, table: Any, *, due_shards: int = 16) -> None:
        super().__init__(table)
        self.due_shards = due_shards

    def _new_token_version(
        self, update: Update, realm_id: str, seen_version: int, due_at: float | None
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
        # Only connection items belong here; anything else that ever carries a ``tenant_id``
        # must not show up as a connection with empty fields.
        items = [
            Connection.from_item(i)
            for i in response.get("Items", [])
            if i.get("sk") == CONNECTION_SK
        ]
        last = response.get("LastEvaluatedKey")
        return items, (to_python(last) if last else None)

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
            "connected_at": iso(now),
            TENURE_SINCE: now,
            "updated_at": iso(now),
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
            self.table.put_item(Item=to_dynamo(item), **condition)
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
        new_tenure: bool = False,
    ) -> Connection:
        """Replace a connection's tokens in place after the same tenant re-authorised.

        Conditioned on the tenant (a realm held by another tenant is never taken over; a
        disconnected realm may go to a new tenant) and on the version seen (a concurrent write
        wins and we re-read). Clears any lease, dead status and invalid_grant history: the user
        just proved the grant is alive.

        ``new_tenure`` (the item seen belongs to another tenant): the same write starts a new
        tenure (``store.tenure``): ``connected_at`` and ``tenure_since`` become now and every
        attribute of the previous tenant's tenure is removed, so nothing of it reaches the new
        owner. The version condition makes what is reset exactly the tenure that was read.
        """
        update = Update()
        update.set_many(
            {
                "status": STATUS_ACTIVE,
                "environment": environment,
                "scopes": sorted(set(scopes)),
                "updated_at": iso(now),
                "last_refreshed_at": now,
                **({"company_name": company_name} if company_name else {}),
                **tokens.attributes(),
            }
        )
        if new_tenure:
            update.set_many({"connected_at": iso(now), TENURE_SINCE: now})
        else:
            update.set("reconnected_at", iso(now))
        update.remove(*tokens.absent_attributes())
        self._new_token_version(update, realm_id, seen_version, due_at)
        update.remove("reauth_reason", "disconnected_at", "expiring_notified")
        if new_tenure:
            set_here = {"company_name"} if company_name else set()
            # (a name also removed above appears once: ``Update`` de-duplicates REMOVE)
            update.remove(*(name for name in TENURE_ATTRIBUTES if name not in set_here))
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
        update = Update().set("lease_owner", owner).set("lease_until", until)
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
        update = Update().set("lease_owner", owner).set("lease_until", until)
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
            found = {k: DESERIALIZE.deserialize(v) for k, v in raw.items()}
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
        update = Update()
        update.set_many(
            {
                **tokens.attributes(),
                "last_refreshed_at": now,
                "updated_at": iso(now),
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
        update = Update().remove("lease_owner", "lease_until")
        if end_run:
            update.remove(REFRESH_RUN)
        update.set("updated_at", iso(now))
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
        update = Update().set_many(
            {
                "status": STATUS_NEEDS_REAUTHORIZATION,
                "reauth_reason": reason,
                "updated_at": iso(now),
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
        update = Update().set_many(
            {
                "status": STATUS_DISCONNECTED,
                "disconnected_at": iso(now),
                "updated_at": iso(now),
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
        update = Update().set("last_used_at", now)
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
        update = Update().set("due_shard", due_shard_for(realm_id, self.due_shards))
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
        update = Update()
        entry = update.name(OUTBOX_PREFIX + event_id)
        update.removes.append(entry)
        return self._try_update(connection_key(realm_id), update, f"attribute_exists({entry})")

    def drop_due(self, realm_id: str, *, seen_due_at: float) -> bool:
        """Take a connection that is no longer active out of DueIndex (its events went out).

        Conditioned on the due time we read, so an event recorded since (which sets a new due
        time) keeps the item in the index.
        """
        update = Update().remove("due_shard", "due_at")
        condition = (
            f"#status <> {update.value('active', STATUS_ACTIVE)}"
            f" AND #due_at = {update.value('seen', seen_due_at)}"
        )
        update.name("status")
        update.name("due_at")
        return self._try_update(connection_key(realm_id), update, condition)

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
        update = Update().set_many(
            {
                "status": STATUS_DISCONNECTED,
                "disconnect_reason": reason,
                "disconnect_marker": marker,
                "disconnected_at": iso(now),
                "updated_at": iso(now),
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
        values: dict[str, Any] = {":s": shard, ":now": number(now)}
        condition = "due_shard = :s AND due_at <= :now"
        if after is not None:
            low = number(after) + Decimal("0.001")
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
            kwargs["ExclusiveStartKey"] = to_dynamo(dict(cursor))
        response = self.table.query(**kwargs)
        entries = [
            (item["pk"].split("#", 1)[1], float(item["due_at"]))
            for item in response.get("Items", [])
        ]
        last = response.get("LastEvaluatedKey")
        return entries, (to_python(last) if last else None)
