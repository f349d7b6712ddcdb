"""The change feed: one ``quickbooks.entity_changed`` per change, whichever path saw it.

Webhooks and the CDC reconciliation both record a change through
:mod:`qbo_connect.store.change_marks` before publishing it; :func:`change_event_id` gives the
event id both paths use for the same change, so a consumer can deduplicate what the at-least-
once promise may repeat.
"""

from __future__ import annotations

import hashlib
import time

SOURCE_WEBHOOK = "webhook"
SOURCE_CDC = "cdc"


def change_event_id(realm_id: str, entity: str, entity_id: str, change_time: float) -> str:
    """A stable id per (realm, entity, id, change time to the millisecond)."""
    total_ms = round(change_time * 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(total_ms // 1000))
    millis = total_ms % 1000
    basis = f"{realm_id}|{entity}|{entity_id}|{stamp}.{millis:03d}Z"
    return "chg-" + hashlib.sha256(basis.encode()).hexdigest()[:32]
