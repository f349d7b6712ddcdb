"""Cool-downs: at most one use of a key per interval, taken with one conditional write."""

from __future__ import annotations

from qbo_connect.store.table import Repository, Update


class Cooldowns(Repository):
    """One item per key (``COOLDOWN#<key>``) holding the time until which it is taken."""

    def take(self, key: str, *, now: float, interval_seconds: float) -> bool:
        """True for the one caller that takes ``key`` for the next ``interval_seconds``.

        A sliding interval (from the last use, not a calendar window), so two uses are never
        closer than the interval. One conditional UpdateItem; the item expires with it (TTL).
        A retry of a write that applied but lost its answer finds the key taken and answers
        False: refusing is the safe side for a limit.
        """
        update = Update().set("until", now + interval_seconds)
        update.set("ttl", int(now + interval_seconds) + 3600)
        until, at = update.name("until"), update.value("now", now)
        condition = f"attribute_not_exists({until}) OR {until} <= {at}"
        return self._try_update({"pk": f"COOLDOWN#{key}", "sk": "COOLDOWN"}, update, condition)
