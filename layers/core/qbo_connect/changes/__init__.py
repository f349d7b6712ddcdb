"""The change feed: one ``quickbooks.entity_changed`` per change, whichever path saw it.

Webhooks and the CDC reconciliation both record a change through
:mod:`qbo_connect.store.change_marks` before publishing it; :func:`change_event_id` gives the
event id both paths use for the same change, so a consumer can deduplicate what the at-least-
once promise may repeat.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime

SOURCE_WEBHOOK = "webhook"
SOURCE_CDC = "cdc"

#: How far apart two reported times of one change may be and still be the same change: a
#: CloudEvents delivery carries only the event ``time``, not QuickBooks' ``LastUpdatedTime``.
#: Two real edits of one entity closer than this are published as one event.
CHANGE_TIME_TOLERANCE_SECONDS = 2.0
#: Change marks outlive CDC's 30-day reach.
CHANGE_MARK_TTL_SECONDS = 31 * 86400


def change_time(text: str) -> float | None:
    """Epoch seconds of an ISO-8601 change time (``...Z`` or with an offset); None if unreadable."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def change_event_id(realm_id: str, entity: str, entity_id: str, change_time: float) -> str:
    """A stable id per (realm, entity, id, change time to the millisecond)."""
    total_ms = round(change_time * 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(total_ms // 1000))
    millis = total_ms % 1000
    basis = f"{realm_id}|{entity}|{entity_id}|{stamp}.{millis:03d}Z"
    return "chg-" + hashlib.sha256(basis.encode()).hexdigest()[:32]
