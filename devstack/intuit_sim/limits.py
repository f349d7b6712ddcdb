"""Intuit's QuickBooks API throttles, per realm, as sliding windows.

Intuit allows 500 requests a minute and 10 a second per realm, at most 10 in flight, and 40
batch requests a minute per realm and app. It does not publish how it counts; the simulator
assumes the strictest reading, sliding windows over real (monotonic) time, so a client that
bursts past a window's count is caught here rather than in production. Only admitted requests
count: a throttled request does not use up the window. Tests lower the limits to reach them
quickly (``IntuitSimulator.configure_api``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass
class Limits:
    per_minute: int = 500
    per_second: int = 10
    in_flight: int = 10
    batch_per_minute: int = 40

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class RealmLimiter:
    """Admits or refuses each request; :meth:`release` ends an admitted one."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._minute: dict[str, deque[float]] = {}
        self._second: dict[str, deque[float]] = {}
        self._batch: dict[tuple[str, str], deque[float]] = {}
        self._in_flight: dict[str, int] = {}

    def admit(self, realm: str, *, batch: bool = False, app: str = "") -> str | None:
        """Count the request and return None, or return which limit refused it."""
        now = self._clock()
        with self._lock:
            minute = _trim(self._minute.setdefault(realm, deque()), now - 60.0)
            second = _trim(self._second.setdefault(realm, deque()), now - 1.0)
            batches = _trim(self._batch.setdefault((realm, app), deque()), now - 60.0)
            limits = self.limits
            if self._in_flight.get(realm, 0) >= limits.in_flight:
                return "in_flight"
            if len(second) >= limits.per_second:
                return "per_second"
            if len(minute) >= limits.per_minute:
                return "per_minute"
            if batch and len(batches) >= limits.batch_per_minute:
                return "batch_per_minute"
            minute.append(now)
            second.append(now)
            if batch:
                batches.append(now)
            self._in_flight[realm] = self._in_flight.get(realm, 0) + 1
            return None

    def release(self, realm: str) -> None:
        with self._lock:
            self._in_flight[realm] = max(0, self._in_flight.get(realm, 0) - 1)

    def in_flight(self, realm: str) -> int:
        with self._lock:
            return self._in_flight.get(realm, 0)

    def reset(self) -> None:
        with self._lock:
            self._minute.clear()
            self._second.clear()
            self._batch.clear()


def _trim(window: deque[float], horizon: float) -> deque[float]:
    while window and window[0] <= horizon:
        window.popleft()
    return window
