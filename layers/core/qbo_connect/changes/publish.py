"""Publishing the change feed's events on the bus: all of a batch, or an error.

The reconciler records a change (its mark) before publishing it and confirms it after, so a
publication that fails part-way raises :class:`PublishFailed`: the run stops before its
watermark moves, and the next run publishes what is still unconfirmed under the same
``event_id`` (at least once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_lambda_powertools import Logger

from qbo_connect.errors import PublishFailed
from qbo_connect.events import bus_entry

logger = Logger(child=True)

#: PutEvents takes at most 10 entries.
PUT_EVENTS_MAX = 10


class ChangeEventPublisher:
    """``publish([(detail_type, detail), ...])`` over EventBridge (see the module docstring)."""

    def __init__(self, events_client: Any, bus_name: str) -> None:
        self.events = events_client
        self.bus_name = bus_name

    def __call__(self, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
        refused = 0
        for start in range(0, len(events), PUT_EVENTS_MAX):
            chunk = events[start : start + PUT_EVENTS_MAX]
            answer = self.events.put_events(
                Entries=[bus_entry(kind, detail, self.bus_name) for kind, detail in chunk]
            )
            entries = answer.get("Entries") or []
            for index, (detail_type, detail) in enumerate(chunk):
                entry = entries[index] if index < len(entries) else {}
                if not entry.get("EventId") or entry.get("ErrorCode"):
                    refused += 1
                    logger.warning(
                        "EventBridge refused a change event",
                        extra={
                            "detail_type": detail_type,
                            "event_id": detail.get("event_id"),
                            "error_code": entry.get("ErrorCode"),
                        },
                    )
        if refused:
            raise PublishFailed(f"EventBridge refused {refused} change event(s)")
