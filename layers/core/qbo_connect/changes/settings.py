"""The change feed's settings, declared as a table like every other setting
(``qbo_connect.config.Setting``) and read once per container.

``RECONCILE_EVERY_HOURS`` (template ``ReconcileEveryHours``, default 6; 0 turns the schedule
off, ``reconcile_changes`` still works) and ``RECONCILE_ENTITIES`` (``ReconcileEntities``: the
entities the app's webhook subscription covers, which lives in Intuit's portal and cannot be
read from here).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from qbo_connect.config import Setting, _float, _list, values_of
from qbo_connect.errors import ConfigurationError

DEFAULT_ENTITIES = (
    "Customer",
    "Vendor",
    "Item",
    "Account",
    "Invoice",
    "Payment",
    "Bill",
    "Estimate",
    "JournalEntry",
)
_ENTITY_NAME = re.compile(r"[A-Z][A-Za-z]{1,39}")


def _entities(name: str, raw: str) -> tuple[str, ...]:
    names = _list(name, raw)
    bad = [n for n in names if not _ENTITY_NAME.fullmatch(n)]
    if bad or not names:
        raise ConfigurationError(
            f"{name} must be QuickBooks entity names separated by commas, e.g. Customer,Invoice"
        )
    return tuple(dict.fromkeys(names))


CHANGE_FEED_SETTINGS: tuple[Setting, ...] = (
    Setting("RECONCILE_EVERY_HOURS", "every_hours", _float, 6.0),
    Setting("RECONCILE_ENTITIES", "entities", _entities, DEFAULT_ENTITIES),
    Setting("RECONCILE_STAND_BACK_PERCENT", "stand_back_percent", _float, 80.0),
    Setting("RECONCILE_MAX_SECONDS", "max_seconds", _float, 60.0),
)


@dataclass(frozen=True)
class ChangeFeedSettings:
    #: Hours between two scheduled reconciliations of one realm (0: no schedule).
    every_hours: float = 6.0
    entities: tuple[str, ...] = DEFAULT_ENTITIES
    #: The schedule enqueues nothing once the month's CorePlus use passes this share of the
    #: workloads' soft limit: the calls left are the workloads' (a run-now still runs).
    stand_back_percent: float = 80.0
    #: The longest one realm's reconciliation runs before it answers ``partial``.
    max_seconds: float = 60.0

    @property
    def period_seconds(self) -> float:
        return max(0.0, self.every_hours) * 3600.0


def load_change_feed_settings(env: Mapping[str, str] | None = None) -> ChangeFeedSettings:
    env = os.environ if env is None else env
    settings = ChangeFeedSettings(**values_of(CHANGE_FEED_SETTINGS, env))  # type: ignore[arg-type]
    if settings.every_hours < 0:
        raise ConfigurationError("RECONCILE_EVERY_HOURS must be 0 (off) or more")
    return settings
