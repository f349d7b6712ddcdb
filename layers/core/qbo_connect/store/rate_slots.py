"""Rate slots: a fixed number of uses per key and window, counted with conditional writes."""

from __future__ import annotations

from qbo_connect.store.table import (
    Repository,
    Update,
)


class RateSlots(Repository):
    """Counters per key and window (the Disconnect URL's limits)."""

    def take_rate_slot(self, key: str, *, now: float, window_seconds: int, limit: int) -> bool:
        """Count one use of ``key`` in the current fixed window; False once ``limit`` is used.

        One conditional UpdateItem on ``RATE#<key>#<window>`` (TTL removes old windows). A
        retry of a write that applied but lost its answer counts twice: a limit that errs
        towards refusing is the safe side here.
        """
        window = max(1, int(window_seconds))
        bucket = int(now // window)
        update = Update()
        count = update.name("count")
        update.set_expr(
            f"{count} = if_not_exists({count}, {update.value('zero', 0)}) + "
            f"{update.value('one', 1)}"
        )
        update.set("ttl", (bucket + 1) * window + 3600)
        condition = f"attribute_not_exists({count}) OR {count} < {update.value('limit', limit)}"
        return self._try_update({"pk": f"RATE#{key}#{bucket}", "sk": "RATE"}, update, condition)
