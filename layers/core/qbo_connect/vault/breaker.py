"""The fleet-level invalid_grant breaker: an Intuit outage is not a wave of revocations.

Intuit answers ``invalid_grant`` during its outages too. Each connection already needs its
rejections to persist over ``INVALID_GRANT_WINDOW_SECONDS`` before it is declared dead, but an
outage longer than that window would still kill every connection refreshed during it. So before
any invalid_grant verdict the vault asks this breaker whether the fleet looks like an outage:

- every invalid_grant answer is recorded in a time bucket of ``INVALID_GRANT_BREAKER_WINDOW_
  SECONDS`` (one item per bucket in ConnectionsTable, one attribute per connection, so the
  item counts distinct connections; TTL removes old buckets);
- a successful refresh in a container that saw invalid_grant answers writes ``cleared_at``:
  rejections before a success say nothing about an outage still going on;
- the breaker is **open** when at least ``INVALID_GRANT_BREAKER_THRESHOLD`` distinct
  connections were rejected within the last window and after ``cleared_at``. While it is open,
  verdicts are suspended (callers get ``refresh_unavailable``, tokens untouched, the
  ``InvalidGrantVerdictSuspended`` metric and its alarm fire); once refreshes succeed again the
  count restarts from that moment, so a connection that really was revoked is declared dead
  at its next rejection.

Costs: one write per invalid_grant answer (rare outside outages), three consistent reads per
verdict (rarer still), one write per container when refreshes recover. Nothing on the warm
path or on a successful refresh when no invalid_grant was seen.

A refresh token past its known expiry is dead whatever the breaker says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from qbo_connect.config import Settings

if TYPE_CHECKING:
    from qbo_connect.store.fleet import FleetRepository

logger = Logger(child=True)


class InvalidGrantBreaker:
    """Fleet-wide view of invalid_grant answers, shared through the table."""

    def __init__(
        self, fleet: FleetRepository, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.fleet = fleet
        self.threshold = max(1, settings.invalid_grant_breaker_threshold)
        self.window = max(1, settings.invalid_grant_breaker_window_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._saw_rejections = False  # this container saw invalid_grant since the last success

    def _bucket(self, now: float) -> int:
        return int(now // self.window)

    def record_invalid_grant(self, realm_id: str) -> None:
        """Count one rejection of ``realm_id`` (best effort: never fails a refresh)."""
        now = self._clock()
        with self._lock:
            self._saw_rejections = True
        bucket = self._bucket(now)
        try:
            self.fleet.record_fleet_invalid_grant(
                realm_id, now=now, bucket=bucket, ttl=int((bucket + 3) * self.window)
            )
        except Exception as exc:
            logger.warning("invalid_grant not counted", extra={"error": type(exc).__name__})

    def record_success(self) -> None:
        """A refresh succeeded: if this container saw rejections, they stop counting."""
        with self._lock:
            if not self._saw_rejections:
                return
            self._saw_rejections = False
        try:
            self.fleet.clear_breaker(now=self._clock())
        except Exception as exc:
            with self._lock:
                self._saw_rejections = True  # try again at the next success
            logger.warning("breaker not cleared", extra={"error": type(exc).__name__})

    def rejected_connections(self) -> int:
        """Distinct connections rejected within the window and since the last success."""
        now = self._clock()
        since = max(now - self.window, self.fleet.breaker_cleared_at())
        bucket = self._bucket(now)
        seen = self.fleet.fleet_invalid_grants((bucket - 1, bucket))
        return sum(1 for at in seen.values() if at >= since)

    def is_open(self) -> bool:
        """True while invalid_grant verdicts must wait (see the module docstring).

        If the count cannot be read, the breaker counts as open: a verdict can wait for the
        next attempt, a connection wrongly declared dead cannot be undone.
        """
        try:
            rejected = self.rejected_connections()
        except Exception as exc:
            logger.warning("breaker state unreadable; verdict deferred", extra={"error": str(exc)})
            return True
        is_open = rejected >= self.threshold
        if is_open:
            logger.warning(
                "invalid_grant breaker open",
                extra={"rejected_connections": rejected, "threshold": self.threshold},
            )
        return is_open
