"""The outbox: publishing the lifecycle events a connection item records, then clearing them.

A lifecycle event is recorded on the connection item in the same conditional write that makes
it true (``qbo_connect.events``); this publishes it afterwards and clears the entry
conditionally. Whoever visits the connection next (a reader, the worker, the sweep) publishes
what a crash or a lost answer left behind: at least once, with a stable ``event_id``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aws_lambda_powertools import Logger

from qbo_connect import events as lifecycle
from qbo_connect.store.connections import Connection, ConnectionRepository
from qbo_connect.store.table import STATUS_ACTIVE

logger = Logger(child=True)


class Outbox:
    """Publishes and clears a connection's pending events."""

    def __init__(
        self,
        connections: ConnectionRepository,
        events: lifecycle.EventPublisher | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connections = connections
        self.events = events
        self._clock = clock

    def flush(self, conn: Connection, *, min_age: float = 0.0) -> bool:
        """Publish what the item's outbox holds, clearing each entry EventBridge took.

        True when nothing is left pending. A connection that is no longer active leaves
        DueIndex once its events are out (it stayed there so the sweep would deliver them).
        Entries younger than ``min_age`` are left to their writer.
        """
        delivered = True
        for event in conn.pending_events:
            if event.occurred_at > self._clock() - min_age:
                delivered = False
                continue
            if self.events is not None and not self.events.publish_pending(event):
                delivered = False
                continue
            try:
                self.connections.clear_event(conn.realm_id, event.event_id)
            except Exception:
                # Published but still recorded: the next visit publishes it again, with the
                # same event_id (at least once; consumers deduplicate).
                logger.warning("outbox entry not cleared", extra={"realm_id": conn.realm_id})
                delivered = False
        if delivered and conn.status != STATUS_ACTIVE and conn.due_at is not None:
            try:
                self.connections.drop_due(conn.realm_id, seen_due_at=conn.due_at)
            except Exception:
                logger.warning("not taken out of the due index", extra={"realm_id": conn.realm_id})
        return delivered
