"""An injected wall clock: tests move it instead of sleeping."""

from __future__ import annotations

import time


class Clock:
    """Called like ``time.time``; starts at ``now`` (default: the real time, so stored expiry
    times are real ones) and moves only when told."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
