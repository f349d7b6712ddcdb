"""A connection's recent outcomes: what ran, what happened, and Intuit's ``intuit_tid``.

Why: when a customer says "QuickBooks disconnected again", the operator needs the sequence
(refreshed by the sweep at 02:00, invalid_grant from get_token at 09:13 with intuit_tid
``1-6789...``, reconnected by the user at 09:40), and Intuit support asks for the
``intuit_tid`` of the failing call. The metadata only holds the latest error.

How: each outcome is one small item of its own (``store.put_history``), written after the state
it describes is committed and never changed; a retried write recognises its own success. Items
expire after ``RETENTION_DAYS`` (DynamoDB TTL), and ``connection_history`` reads the newest N
with one Query, so neither the storage nor a read grows without bound. Recording is best
effort: a failure to record is logged and never fails the refresh or connect it describes.

One exception keeps the routine path at two writes per refresh: the sweep's successful
refreshes (once a day per idle connection, the bulk of all outcomes) are not itemised. They are
counted in a *run* kept on the connection item (``refresh_run``: first and last time, count,
version), written by the commit itself. A failure, a verdict or a disconnect ends the run in
its own write (REMOVE), and the run becomes one item then ("refreshed" x N, from ``since`` to
``at``), just before the outcome that ended it. ``entries`` shows the open run as one row.

An entry: ``at`` (ISO 8601), ``source`` (what ran it: ``sweep``, ``get_token``, ``operator``,
``callback``, ``import``, or ``disconnect_url`` when Intuit's Disconnect URL was confirmed),
``outcome`` (``refreshed``, a failure class such as ``invalid_grant`` or ``transient``,
``needs_reauthorization``, ``connected``, ``reconnected``, ``imported``, ``disconnected``),
``intuit_tid`` when Intuit answered, ``version`` of the tokens after it, and a short
``detail`` (an error code, never a token or Intuit's own words). A run's row also has ``count``
and ``since``. Rows also keep the tenant they were recorded for (``held_by``, never shown): a realm
that changes hands starts a new tenure and its history starts empty (``store.tenure``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger

from qbo_connect.store.connections import Connection
from qbo_connect.store.history import HistoryRepository
from qbo_connect.store.table import REFRESH_RUN
from qbo_connect.store.tenure import TENURE_OPENING_OUTCOMES, tenure_since

logger = Logger(child=True)

SWEEP = "sweep"
GET_TOKEN = "get_token"
OPERATOR = "operator"
CALLBACK = "callback"
IMPORT = "import"
DISCONNECT_URL = "disconnect_url"
SOURCES = (SWEEP, GET_TOKEN, OPERATOR, CALLBACK, IMPORT, DISCONNECT_URL)

#: The tenant a row was recorded for. Not ``tenant_id``: that name is the TenantIndex key, and a
#: history row must never appear in a tenant's list of connections.
HELD_BY = "held_by"

RETENTION_DAYS = 30
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
#: Short details only: an error code or a status, never free text from Intuit.
DETAIL_MAX = 64


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def next_run(current: Mapping[str, Any] | None, *, now: float, version: int) -> dict[str, Any]:
    """The sweep's run after one more successful refresh (``current`` as the lease read it)."""
    if current and current.get("since") is not None:
        since, count = float(current["since"]), int(current.get("count") or 0)
    else:
        since, count = now, 0
    return {"since": round(since, 3), "last": round(now, 3), "count": count + 1, "version": version}


def run_entry(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run as a history entry: keyed by its start, so a retried write meets its own item."""
    since, last = float(run["since"]), float(run["last"])
    count = int(run.get("count") or 0)
    return {
        "id": f"run{int(since * 1000):x}",
        "at_epoch": round(last, 3),
        "at": _iso(last),
        "source": SWEEP,
        "outcome": "refreshed",
        "version": run.get("version"),
        "count": count,
        "since": _iso(since),
        "detail": f"{count} refresh{'es' if count != 1 else ''} since {_iso(since)}",
    }


class History:
    """Records and reads history entries through the history repository."""

    def __init__(
        self,
        repository: HistoryRepository,
        *,
        clock: Callable[[], float] = time.time,
        retention_days: float = RETENTION_DAYS,
    ) -> None:
        self.repository = repository
        self._clock = clock
        self.retention_seconds = retention_days * 86400

    def record(
        self,
        realm_id: str,
        *,
        source: str,
        outcome: str,
        intuit_tid: str | None = None,
        version: int | None = None,
        detail: str | None = None,
        closed_run: Mapping[str, Any] | None = None,
        tenant_id: str | None = None,
    ) -> None:
        """Record one outcome; ``closed_run`` (the run the outcome's write ended) goes first.

        ``tenant_id`` (the tenant whose tenure the outcome belongs to) is kept on the rows, so
        a later owner of the realm never sees them (``store.tenure``).
        """
        now = self._clock()
        owner = {HELD_BY: tenant_id} if tenant_id else {}
        if closed_run and closed_run.get("since") is not None:
            run = {**run_entry(closed_run), **owner}
            self._put(realm_id, run, now, source=SWEEP, outcome="refreshed")
        entry: dict[str, Any] = {
            **owner,
            "id": uuid.uuid4().hex[:16],
            "at_epoch": round(now, 3),
            "at": _iso(now),
            "source": source if source in SOURCES else OPERATOR,
            "outcome": outcome,
            "intuit_tid": intuit_tid or None,
            "version": version,
            "detail": detail[:DETAIL_MAX] if detail else None,
        }
        self._put(realm_id, entry, now, source=source, outcome=outcome)

    def _put(
        self, realm_id: str, entry: Mapping[str, Any], now: float, *, source: str, outcome: str
    ) -> None:
        try:
            self.repository.put_history(realm_id, entry, ttl=now + self.retention_seconds)
        except Exception:
            logger.warning(
                "history entry not recorded",
                extra={"realm_id": realm_id, "source": source, "outcome": outcome},
            )

    def entries(
        self, realm_id: str, *, limit: int = DEFAULT_LIMIT, conn: Connection | None = None
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` entries of the current tenure, newest first, without the
        internal fields.

        ``conn`` (the connection item) adds its open run of sweep refreshes as one row, and
        bounds the rows to its tenure (``store.tenure``): rows before ``tenure_since`` and rows
        recorded for another tenant are left out. Callers showing history to a tenant pass it.
        """
        if conn is None:
            items = self.repository.get_history(realm_id, limit=limit, now=self._clock())
        else:
            items = self._tenure_entries(realm_id, conn, limit)
        run = (conn.raw.get(REFRESH_RUN) if conn is not None else None) or None
        if run and run.get("since") is not None:
            items.append(run_entry(run))
            items.sort(key=lambda e: float(e.get("at_epoch") or 0), reverse=True)
            items = items[:limit]
        hidden = ("at_epoch", "id", HELD_BY)
        return [{k: v for k, v in item.items() if k not in hidden} for item in items]

    def _tenure_entries(self, realm_id: str, conn: Connection, limit: int) -> list[dict[str, Any]]:
        now = self._clock()
        owner = conn.tenant_id

        def mine(entry: Mapping[str, Any]) -> bool:
            recorded_for = entry.get(HELD_BY)
            return recorded_for is None or recorded_for == owner

        since = tenure_since(conn.raw)
        if since is None:
            since = self._legacy_tenure_start(realm_id, now)
        # ``mine`` pages past foreign rows; ``since`` bounds the Query to this tenure.
        return self.repository.get_history(realm_id, limit=limit, now=now, since=since, keep=mine)

    def _legacy_tenure_start(self, realm_id: str, now: float) -> float | None:
        """An item from before tenures: its tenure began at the newest row that opened one."""
        opening = self.repository.get_history(
            realm_id,
            limit=1,
            now=now,
            keep=lambda e: e.get("outcome") in TENURE_OPENING_OUTCOMES,
        )
        if not opening or opening[0].get("at_epoch") is None:
            return None
        return float(opening[0]["at_epoch"])
