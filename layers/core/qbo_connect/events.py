"""Lifecycle events on EventBridge.

Other workloads subscribe with a rule on ``source = "qbo-connect"`` and a ``detail-type`` of
``connection.created``, ``connection.reconnected``, ``connection.needs_reauthorization``,
``connection.expiring``, ``connection.disconnected`` or (opt-in) ``connection.refreshed``.
Details carry identifiers and reasons only, never token material.

Delivery is at least once, never zero: the write that makes an event true (a connection
created, reconnected, flagged, disconnected, an expiring threshold crossed) records it on the
connection item in the same conditional write, as an outbox entry (:class:`PendingEvent`, an
attribute ``outbox_<event_id>``). Publishing comes after and clears the entry conditionally;
an entry left behind by a crash, a lost answer or an EventBridge failure is published by the
next visit of the connection (a read, the refresh worker, the sweep). Every event carries a
stable ``event_id`` (the same on every delivery of it) for consumers to deduplicate.
``connection.refreshed`` (opt-in, one per refresh) is best effort and has no outbox entry.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from qbo_connect.fieldwise import Fieldwise, frozen, record

if TYPE_CHECKING:
    from typing import Protocol

    class _Connection(Protocol):
        """What a lifecycle event says about its connection (a store ``Connection``)."""

        @property
        def realm_id(self) -> str: ...

        @property
        def tenant_id(self) -> str: ...


logger = Logger(child=True)

SOURCE = "qbo-connect"
CREATED = "connection.created"
RECONNECTED = "connection.reconnected"
NEEDS_REAUTHORIZATION = "connection.needs_reauthorization"
EXPIRING = "connection.expiring"
DISCONNECTED = "connection.disconnected"
REFRESHED = "connection.refreshed"

#: Prefix of the outbox attributes on a connection item: ``outbox_<event_id>``.
OUTBOX_PREFIX = "outbox_"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@frozen
class PendingEvent(Fieldwise):
    """A lifecycle event recorded on its connection item until EventBridge took it.

    ``event_id`` and ``occurred_at`` are fixed when the event is recorded, so every delivery of
    it (a retry after a crash or a lost answer) is the same event to a consumer.
    """

    event_id: str
    detail_type: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: float = 0.0

    @classmethod
    def new(cls, detail_type: str, detail: Mapping[str, Any], *, now: float) -> PendingEvent:
        return cls(uuid.uuid4().hex, detail_type, dict(detail), round(now, 3))

    @classmethod
    def about(
        cls, detail_type: str, conn: _Connection, *, now: float, **detail: Any
    ) -> PendingEvent:
        """An event of ``conn``'s lifecycle: its realm and tenant, then ``detail``."""
        return cls.new(
            detail_type, {"realm_id": conn.realm_id, "tenant_id": conn.tenant_id, **detail}, now=now
        )

    @property
    def attribute(self) -> str:
        """The item attribute that holds this entry."""
        return OUTBOX_PREFIX + self.event_id

    def to_item(self) -> dict[str, Any]:
        return {
            "detail_type": self.detail_type,
            "detail": json.dumps(dict(self.detail), sort_keys=True),
            "occurred_at": self.occurred_at,
        }

    @classmethod
    def from_item(cls, attribute: str, value: Mapping[str, Any]) -> PendingEvent:
        return cls(
            event_id=attribute[len(OUTBOX_PREFIX) :],
            detail_type=str(value.get("detail_type", "")),
            detail=json.loads(str(value.get("detail") or "{}")),
            occurred_at=float(value.get("occurred_at") or 0),
        )

    def body(self) -> dict[str, Any]:
        """The EventBridge ``Detail``: the detail plus ``event_id`` and ``occurred_at``."""
        return {
            **self.detail,
            "event_id": self.event_id,
            "occurred_at": _iso(self.occurred_at),
        }


def bus_entry(detail_type: str, detail: Mapping[str, Any], bus_name: str) -> dict[str, str]:
    """One PutEvents entry of this service (``source`` ``qbo-connect``)."""
    return {
        "Source": SOURCE,
        "DetailType": detail_type,
        "Detail": json.dumps(dict(detail), sort_keys=True),
        "EventBusName": bus_name,
    }


@record
class EventPublisher(Fieldwise):
    """Puts lifecycle events on the configured bus."""

    events_client: Any
    bus_name: str
    #: ``connection.refreshed`` is published only when asked for (EmitRefreshedEvents).
    emit_refreshed: bool = False
    clock: Callable[[], float] = time.time

    def publish(self, detail_type: str, detail: dict[str, Any]) -> bool:
        """Send one best-effort event with a fresh ``event_id``; False if EventBridge did not
        take it. Lifecycle events go through the outbox and :meth:`publish_pending` instead."""
        if detail_type == REFRESHED and not self.emit_refreshed:
            return False
        return self.publish_pending(PendingEvent.new(detail_type, detail, now=self.clock()))

    def publish_pending(self, event: PendingEvent) -> bool:
        """Send one recorded event; returns False (and logs) if EventBridge did not take it."""
        detail_type = event.detail_type
        body = event.body()
        try:
            response = self.events_client.put_events(
                Entries=[bus_entry(detail_type, body, self.bus_name)]
            )
        except Exception:
            logger.exception("lifecycle event not published", extra={"detail_type": detail_type})
            return False
        if response.get("FailedEntryCount"):
            logger.error("lifecycle event rejected", extra={"detail_type": detail_type})
            return False
        logger.info(
            "lifecycle event published",
            extra={
                "detail_type": detail_type,
                "realm_id": body.get("realm_id"),
                "event_id": event.event_id,
            },
        )
        return True
