"""Lifecycle events on EventBridge.

Other workloads subscribe with a rule on ``source = "qbo-connect"`` and a ``detail-type`` of
``connection.created``, ``connection.reconnected``, ``connection.needs_reauthorization``,
``connection.expiring``, ``connection.disconnected`` or (opt-in) ``connection.refreshed``.
Details carry identifiers and reasons only, never token material. Publishing is best effort:
a failed put is logged and counted, never allowed to undo a token write that already happened.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger

logger = Logger(child=True)

SOURCE = "qbo-connect"
CREATED = "connection.created"
RECONNECTED = "connection.reconnected"
NEEDS_REAUTHORIZATION = "connection.needs_reauthorization"
EXPIRING = "connection.expiring"
DISCONNECTED = "connection.disconnected"
REFRESHED = "connection.refreshed"


class EventPublisher:
    """Puts lifecycle events on the configured bus."""

    def __init__(
        self,
        events_client: Any,
        bus_name: str,
        *,
        emit_refreshed: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = events_client
        self._bus = bus_name
        self._emit_refreshed = emit_refreshed
        self._clock = clock

    def publish(self, detail_type: str, detail: dict[str, Any]) -> bool:
        """Send one event; returns False (and logs) if EventBridge did not take it."""
        if detail_type == REFRESHED and not self._emit_refreshed:
            return False
        body = {
            **detail,
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock())),
        }
        try:
            response = self._client.put_events(
                Entries=[
                    {
                        "Source": SOURCE,
                        "DetailType": detail_type,
                        "Detail": json.dumps(body, sort_keys=True),
                        "EventBusName": self._bus,
                    }
                ]
            )
        except Exception:
            logger.exception("lifecycle event not published", extra={"detail_type": detail_type})
            return False
        if response.get("FailedEntryCount"):
            logger.error("lifecycle event rejected", extra={"detail_type": detail_type})
            return False
        logger.info(
            "lifecycle event published",
            extra={"detail_type": detail_type, "realm_id": detail.get("realm_id")},
        )
        return True
