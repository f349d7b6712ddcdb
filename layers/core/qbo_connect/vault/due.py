"""When should the sweep next look at a connection? (the due policy)

Kept apart from ``sweep.py`` because every token write computes it (connect, refresh, reads
that keep a connection warm), while the sweep only consumes it through DueIndex.

- keep-alive: refresh a connection whose refresh token was not renewed for KeepAliveHours, so
  Intuit's rolling 100-day window never runs out on an idle connection;
- keep-warm: a connection read within KeepWarmMinutes gets its access token refreshed shortly
  before it expires, so an active workload never waits on an inline refresh;
- expiring: visit again when the refresh token's hard expiry is 30, 7 and 1 days away, to
  emit ``connection.expiring`` once for each.
"""

from __future__ import annotations

from qbo_connect.config import Settings
from qbo_connect.store.connections import Connection, SealedTokens

EXPIRING_THRESHOLDS_DAYS = (30, 7, 1)
DAY = 86400.0


def keep_warm_lead_seconds(settings: Settings) -> float:
    """How long before access-token expiry a warm connection is refreshed."""
    return float(max(settings.access_token_refresh_margin_seconds, 60)) + 300.0


def next_due_at(
    *,
    settings: Settings,
    now: float,
    last_refreshed_at: float,
    access_expires_at: float,
    last_used_at: float | None,
    refresh_hard_expires_at: float | None,
    expiring_notified: tuple[int, ...] = (),
) -> float:
    candidates = [last_refreshed_at + settings.keep_alive_hours * 3600.0]
    warm_window = settings.keep_warm_minutes * 60.0
    if warm_window > 0 and last_used_at is not None and now - last_used_at <= warm_window:
        candidates.append(access_expires_at - keep_warm_lead_seconds(settings))
    if refresh_hard_expires_at:
        for days in EXPIRING_THRESHOLDS_DAYS:
            if days not in expiring_notified:
                candidates.append(refresh_hard_expires_at - days * DAY)
    return max(min(candidates), now)


def due_at_for(settings: Settings, conn: Connection, now: float) -> float:
    """When a stored connection is next due, from what it records."""
    return next_due_at(
        settings=settings,
        now=now,
        last_refreshed_at=conn.last_refreshed_at or now,
        access_expires_at=conn.access_expires_at,
        last_used_at=conn.last_used_at,
        refresh_hard_expires_at=conn.refresh_hard_expires_at,
        expiring_notified=conn.expiring_notified,
    )


def due_at_for_new(settings: Settings, sealed: SealedTokens, now: float) -> float:
    """Due time of a connection whose tokens were just obtained."""
    return next_due_at(
        settings=settings,
        now=now,
        last_refreshed_at=now,
        access_expires_at=sealed.access_expires_at,
        last_used_at=None,
        refresh_hard_expires_at=sealed.refresh_hard_expires_at,
    )
