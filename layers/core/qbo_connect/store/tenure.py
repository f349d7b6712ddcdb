"""A tenure: one tenant's uninterrupted holding of a realm, and what belongs to it alone.

Why: a disconnected realm is free for the next tenant (``qbo_connect.vault.adoption``).
Without tenures the new owner would inherit the previous owner's ``connected_at``, last
error, failure counters, sweep run, expiry notices and 30 days of history rows, which tell it
when and how another tenant used that company.

How:

- The connection item carries ``tenure_since`` (epoch seconds). ``create_connection`` sets it;
  ``reconnect_connection`` with ``new_tenure=True`` (the adopter passes it when the item it read
  belongs to another tenant) sets it again and, *in the same conditional write that hands the
  realm over*, removes every attribute in :data:`TENURE_ATTRIBUTES` and sets ``connected_at``
  anew. The write is conditioned on the version the adopter read, so what it resets is exactly
  the previous tenure; a boto3 retry that meets its own success is recognised by its event, as
  before. The same tenant reconnecting keeps its tenure, its ``connected_at`` and its history.
- History rows carry the tenant they were recorded for (``held_by``), and ``connection_history``
  shows only rows of the current tenure: rows at or after ``tenure_since`` whose tenant is the
  current owner (see ``qbo_connect.vault.history``).
- Rows and items written before tenures existed: a row without ``held_by`` belongs to
  whoever held the realm when it was written, which is unknown, so it is shown only when it is
  inside the current tenure. An item without ``tenure_since`` dates its tenure from the newest
  ``connected`` or ``imported`` history row (the rows earlier code wrote when a realm was
  created or changed hands; an import by the same tenant also writes one, which only hides
  that tenant's own older rows). Without such a row within retention, every row is shown, as
  before (nothing then marks a change of hands in the last 30 days).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qbo_connect.store.table import REFRESH_RUN

TENURE_SINCE = "tenure_since"

#: Attributes that describe the current tenure, removed when a realm changes hands.
TENURE_ATTRIBUTES = (
    "last_error",
    "last_error_class",
    "last_error_at",
    "last_error_tid",
    "failing_since",
    "refresh_failures",
    "invalid_grant_first_at",
    "invalid_grant_count",
    REFRESH_RUN,
    "expiring_notified",
    "reauth_reason",
    "reconnected_at",
    "disconnected_at",
    "disconnect_reason",
    "disconnect_marker",
    "last_used_at",
    "company_name",
)

#: History outcomes that earlier code recorded when a realm was created or changed hands.
TENURE_OPENING_OUTCOMES = frozenset({"connected", "imported"})


def tenure_since(item: Mapping[str, Any]) -> float | None:
    """The start of the item's tenure, or None for an item written before tenures existed."""
    value = item.get(TENURE_SINCE)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
