"""How healthy a connection is, derived from what its item records; never stored.

Why derived: health is a function of the item (status, the failure bookkeeping the vault writes
with every failed refresh, the refresh token's expiry) and of the clock. Storing it would mean
one more attribute every writer must keep right; deriving it means every reader agrees.

The values, most urgent first:

- ``disconnected``: disconnected by an operator or the app; nothing will be refreshed.
- ``needs_reauthorization``: Intuit refused the grant for good; the user must connect again.
- ``retrying``: the latest refresh attempt failed (``failing_since`` is set); the sweep tries
  again at ``next_attempt_at``. Callers of ``get_token`` may get ``refresh_unavailable``.
- ``expiring_soon``: the refresh token ends within 30 days (its 5-year limit, or a rolling
  100-day window that stopped rolling): the user will have to reconnect soon.
- ``healthy``: none of the above.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

HEALTHY = "healthy"
RETRYING = "retrying"
NEEDS_REAUTHORIZATION = "needs_reauthorization"
DISCONNECTED = "disconnected"
EXPIRING_SOON = "expiring_soon"
VALUES = (HEALTHY, RETRYING, NEEDS_REAUTHORIZATION, DISCONNECTED, EXPIRING_SOON)

#: The first of the expiry warnings (30, 7 and 1 days): from then on the connection is
#: ``expiring_soon``.
EXPIRING_SOON_SECONDS = 30 * 86400


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value else None


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def health_of(item: Mapping[str, Any], now: float) -> str:
    """The health of a connection item (its attributes as Python values)."""
    status = item.get("status")
    if status == DISCONNECTED:
        return DISCONNECTED
    if status == NEEDS_REAUTHORIZATION:
        return NEEDS_REAUTHORIZATION
    if _number(item.get("failing_since")) is not None:
        return RETRYING
    ends = [
        t
        for t in (
            _number(item.get("refresh_expires_at")),
            _number(item.get("refresh_hard_expires_at")),
        )
        if t is not None
    ]
    if ends and min(ends) - now <= EXPIRING_SOON_SECONDS:
        return EXPIRING_SOON
    return HEALTHY


def health_fields(item: Mapping[str, Any], now: float) -> dict[str, Any]:
    """What the metadata says about health: the derived value and the facts behind it.

    ``last_error`` is the latest failed refresh (kept after a recovery, so an operator can see
    what happened): its class, time and Intuit's ``intuit_tid`` (what Intuit support asks for),
    never a token or an Intuit message.
    """
    error_class = item.get("last_error_class")
    last_error = None
    if isinstance(error_class, str) and error_class:
        last_error = {
            "class": error_class,
            "at": _iso(_number(item.get("last_error_at"))),
            "intuit_tid": item.get("last_error_tid") or None,
        }
    active = item.get("status") not in (DISCONNECTED, NEEDS_REAUTHORIZATION)
    failed = item.get("refresh_failures")
    return {
        "health": health_of(item, now),
        "failing_since": _iso(_number(item.get("failing_since"))),
        "failed_attempts": int(failed) if isinstance(failed, int | float) else 0,
        "next_attempt_at": _iso(_number(item.get("due_at"))) if active else None,
        "last_error": last_error,
    }
