"""The webhook queue's consumer: deduplicate, map realm -> tenant, publish one event per change.

Per message (``{"v": 1, "received_at", "changes": [...]}`` from the gateway), for each change:

- The realm's connection is read through the connection repository (once per realm per
  batch). A realm with no connection, or a disconnected one, is dropped and counted
  (``WebhookDropped``): its changes are never published, because no tenant may see a company
  that is not connected to it. Connections that need reauthorization still belong to their
  tenant and are published.
- :meth:`Ledger.claim` decides whether this message may publish the event id; a duplicate
  (already published, or claimed by another message that is still working) is counted
  (``WebhookDuplicates``) and skipped.
- With change marks (:mod:`qbo_connect.store.change_marks`), a change whose time the CDC
  reconciliation (or an earlier delivery) already published is counted as a duplicate too, so
  each change is published once across both paths; a change time the payload does not give in
  a readable form is published without a mark.
- Claimed changes go to EventBridge in ``PutEvents`` calls of up to 10 entries, each published
  one is marked in the ledger (``WebhookPublished``).

Any failure (DynamoDB, EventBridge, an entry EventBridge refused) fails the whole message: it
comes back with the same message id, which owns the claims it made, so only what was not
published yet goes out again. Before failing it, the message's visibility is set to an
exponential backoff (``retry_base * 2^(receives-1)``, capped), because the queue's own
visibility timeout must be long for Lambda; after ``maxReceiveCount`` receives SQS moves it to
the dead-letter queue, whose alarm tells the operator. A message that can never be processed
(not our format) is acknowledged, logged and counted (``WebhookMalformedMessage``).

Detail of each event (detail-type ``quickbooks.entity_changed``, source ``qbo-connect``):
``{event_id, realm_id, tenant_id, environment, entity, entity_id, operation, occurred_at,
deleted_id?, source}`` where ``source`` is ``"webhook"`` (the reconciliation publishes the same
shape with ``"cdc"``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from qbo_connect.changes import SOURCE_WEBHOOK, change_time
from qbo_connect.contracts import ChangesMessage, parse_or_drop
from qbo_connect.errors import PublishFailed
from qbo_connect.store.change_marks import ChangeMarks
from qbo_connect.store.connections import Connection, ConnectionRepository
from qbo_connect.store.table import STATUS_DISCONNECTED
from qbo_connect.store.webhook_ledger import Ledger
from qbo_connect.webhooks.payload import EntityChange
from qbo_connect.webhooks.settings import DETAIL_TYPE, SOURCE

logger = Logger(child=True)

PUT_EVENTS_MAX = 10


def event_detail(change: EntityChange, conn: Connection) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "event_id": change.event_id,
        "realm_id": change.realm_id,
        "tenant_id": conn.tenant_id,
        "environment": conn.environment,
        "entity": change.entity,
        "entity_id": change.entity_id,
        "operation": change.operation,
        "occurred_at": change.occurred_at,
        "source": SOURCE_WEBHOOK,
    }
    if change.deleted_id:
        detail["deleted_id"] = change.deleted_id
    return detail


@dataclass
class _Batch:
    """What one invocation learned: connections by realm (None = not connected)."""

    connections: dict[str, Connection | None] = field(default_factory=dict)


@dataclass(kw_only=True, eq=False)
class WebhookProcessor:
    """Handles one SQS batch of webhook messages (see the module docstring)."""

    connections: ConnectionRepository
    ledger: Ledger
    events_client: Any
    bus_name: str
    #: For the backoff of a failing message (its visibility); none: SQS's own timeout.
    sqs_client: Any = None
    queue_url: str = ""
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 900.0
    clock: Callable[[], float] = time.time
    metrics: Any = None
    #: Once per change across deliveries and the change feed's CDC path.
    marks: ChangeMarks | None = None

    def handle(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        """Process an SQS event; returns ``{"batchItemFailures": [...]}``."""
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        batch = _Batch()

        def record_handler(record: SQSRecord) -> dict[str, int]:
            try:
                return self.process(record.body, message_id=record.message_id, batch=batch)
            except Exception as exc:
                delay = self._back_off(record)
                logger.warning(
                    "webhook message failed; SQS redelivers it",
                    extra={
                        "message_id": record.message_id,
                        "error": type(exc).__name__,
                        "detail": str(exc)[:300],
                        "retry_in_seconds": delay,
                        "receive_count": record.attributes.approximate_receive_count,
                    },
                )
                raise

        response = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
        return dict(response)

    def process(self, body: str, *, message_id: str, batch: _Batch | None = None) -> dict[str, int]:
        """Counts for one message (published, duplicates, dropped); raises to be retried."""
        batch = batch or _Batch()
        message = parse_or_drop(
            body,
            ChangesMessage.from_payload,
            kind="webhook",
            message_id=message_id,
            count=self._count,
            metric="WebhookMalformedMessage",
        )
        if message is None:
            return {"published": 0, "duplicates": 0, "dropped": 0}
        changes = message.changes
        now = self.clock()
        counts = {"published": 0, "duplicates": 0, "dropped": 0}
        claimed: list[tuple[EntityChange, Connection]] = []
        not_connected: set[str] = set()
        for change in changes:
            conn = self._connection(change.realm_id, batch)
            if conn is None:
                counts["dropped"] += 1
                not_connected.add(change.realm_id)
                continue
            if not self.ledger.claim(
                change.event_id, owner=message_id, now=now, realm_id=change.realm_id
            ):
                counts["duplicates"] += 1
                continue
            if not self._claim_change(change, now):
                # Already published (by CDC or an earlier delivery of this change): done.
                self.ledger.mark_published(change.event_id, owner=message_id, now=now)
                counts["duplicates"] += 1
                continue
            claimed.append((change, conn))
        failed = 0
        for start in range(0, len(claimed), PUT_EVENTS_MAX):
            chunk = claimed[start : start + PUT_EVENTS_MAX]
            published, refused = self._put_events(chunk)
            failed += refused
            for change in published:
                self.ledger.mark_published(change.event_id, owner=message_id, now=self.clock())
                self._confirm_change(change)
                counts["published"] += 1
        self._count("WebhookPublished", counts["published"])
        self._count("WebhookDuplicates", counts["duplicates"])
        self._count("WebhookDropped", counts["dropped"])
        logger.info(
            "webhook message processed",
            extra={
                "message_id": message_id,
                **counts,
                "not_connected_realms": sorted(not_connected)[:20],
            },
        )
        if failed:
            self._count("WebhookPublishFailed", failed)
            raise PublishFailed(f"EventBridge refused {failed} event(s)")
        return counts

    def _claim_change(self, change: EntityChange, now: float) -> bool:
        """True when the change may be published (no marks, unreadable time, or new)."""
        when = change_time(change.occurred_at)
        if self.marks is None or when is None:
            return True
        return self.marks.claim(
            change.realm_id,
            change.entity,
            change.entity_id,
            change_time=when,
            event_id=change.event_id,
            source=SOURCE_WEBHOOK,
            now=now,
        )

    def _confirm_change(self, change: EntityChange) -> None:
        if self.marks is not None and change_time(change.occurred_at) is not None:
            self.marks.mark_published(
                change.realm_id,
                change.entity,
                change.entity_id,
                event_id=change.event_id,
                now=self.clock(),
            )

    def _connection(self, realm_id: str, batch: _Batch) -> Connection | None:
        if realm_id not in batch.connections:
            conn = self.connections.get_connection(realm_id)
            if conn is not None and (conn.status == STATUS_DISCONNECTED or not conn.tenant_id):
                conn = None
            batch.connections[realm_id] = conn
        return batch.connections[realm_id]

    def _put_events(
        self, chunk: list[tuple[EntityChange, Connection]]
    ) -> tuple[list[EntityChange], int]:
        """Publish a chunk; returns the changes EventBridge took and how many it refused."""
        response = self.events_client.put_events(
            Entries=[
                {
                    "Source": SOURCE,
                    "DetailType": DETAIL_TYPE,
                    "Detail": json.dumps(event_detail(change, conn), sort_keys=True),
                    "EventBusName": self.bus_name,
                }
                for change, conn in chunk
            ]
        )
        results = response.get("Entries") or []
        published: list[EntityChange] = []
        refused = 0
        for index, (change, _conn) in enumerate(chunk):
            entry = results[index] if index < len(results) else {}
            if entry.get("EventId") and not entry.get("ErrorCode"):
                published.append(change)
            else:
                refused += 1
                logger.warning(
                    "EventBridge refused a webhook event",
                    extra={"event_id": change.event_id, "error_code": entry.get("ErrorCode")},
                )
        return published, refused

    def backoff_seconds(self, receive_count: int) -> int:
        """Visibility of a failed message before its next try (SQS allows up to 12 hours)."""
        delay = self.retry_base_seconds * (2 ** max(0, receive_count - 1))
        return int(min(delay, self.retry_max_seconds, 43200))

    def _back_off(self, record: SQSRecord) -> int | None:
        """Shorten a failed message's visibility to its backoff; the delay set, or None."""
        if self.sqs_client is None or not self.queue_url:
            return None
        try:
            receives = int(record.attributes.approximate_receive_count or 1)
        except (TypeError, ValueError):
            receives = 1
        delay = self.backoff_seconds(receives)
        try:
            self.sqs_client.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=record.receipt_handle,
                VisibilityTimeout=delay,
            )
        except Exception:
            # The queue's own visibility timeout applies instead: slower, never lost.
            logger.warning("could not shorten a failed message's visibility", exc_info=True)
            return None
        return delay

    def _count(self, name: str, value: int = 1) -> None:
        if self.metrics is not None and value:
            self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
