"""One realm's reconciliation, run now (``reconcile_changes``) or by the schedule (the worker's
``reconcile`` message), and what the operator sees of it (``change_status``).

``reconcile_changes`` takes ``{"action": "reconcile_changes", "realm_id", "tenant_id"?}``; with
``tenant_id``, another tenant's realm counts as not connected (the tenant guard). The answer is
``{"published", "already_seen", "watermark", "partial"}`` (plus ``resync_required`` when the
run published one). The reconciler is built per tenant by the composition root, because its CDC
calls are metered to that tenant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from qbo_connect import validation
from qbo_connect.changes.reconciler import Outcome, RealmInfo, Reconciler
from qbo_connect.errors import NotConnected, PublishFailed, ServiceError
from qbo_connect.store.change_marks import ChangeMarks, Watermark
from qbo_connect.store.connections import Connection, ConnectionRepository
from qbo_connect.store.table import STATUS_ACTIVE, STATUS_DISCONNECTED, iso
from qbo_connect.vault.records import owned_by

logger = Logger(child=True)

#: Time kept back from the invocation's remaining time for answering.
ANSWER_MARGIN_SECONDS = 3.0


@dataclass(kw_only=True, eq=False)
class ReconcileService:
    """Runs one realm's reconciliation, for the action or for the schedule."""

    connections: ConnectionRepository
    marks: ChangeMarks
    #: A reconciler whose CDC calls are metered to that tenant.
    reconciler_for: Callable[[str], Reconciler]
    clock: Callable[[], float]
    max_seconds: float
    metrics: Any = None

    def reconcile_changes(
        self, payload: Mapping[str, Any], *, remaining_seconds: float | None = None
    ) -> dict[str, Any]:
        realm_id = validation.realm_id(payload)
        tenant_id = validation.optional_tenant_id(payload)
        conn = owned_by(self.connections.get_connection(realm_id, consistent=True), tenant_id)
        if conn is None or conn.status == STATUS_DISCONNECTED or not conn.tenant_id:
            raise NotConnected(f"realm {realm_id} is not connected")
        answer = self._run(conn, remaining_seconds).answer()
        if not answer["resync_required"]:
            answer.pop("resync_required")
        return answer

    def run_scheduled(self, realm_id: str, *, remaining_seconds: float | None = None) -> str:
        """The schedule's run of one realm (the worker's ``reconcile`` message); an outcome
        word, never raising: a run that fails leaves the watermark where it was and the realm
        due again when the schedule's claim lapses, so nothing is lost and nothing is retried
        in a tight loop."""
        conn = self.connections.get_connection(realm_id, consistent=True)
        if conn is None or conn.status != STATUS_ACTIVE or not conn.tenant_id:
            # Off the schedule until a reconnect starts it again (which keeps the watermark).
            self.marks.reschedule(realm_id, next_run=None, now=self.clock())
            return "not_connected"
        try:
            outcome = self._run(conn, remaining_seconds)
        except ServiceError as exc:
            self._count("ReconcileFailed")
            logger.warning(
                "reconciliation failed; the realm is due again later",
                extra={"realm_id": realm_id, **exc.log_fields()},
            )
            return "failed"
        except (PublishFailed, ClientError, BotoCoreError) as exc:
            self._count("ReconcileFailed")
            logger.warning(
                "reconciliation failed; the realm is due again later",
                extra={"realm_id": realm_id, "error_type": type(exc).__name__},
            )
            return "failed"
        return "partial" if outcome.partial else "reconciled"

    def join(self, realm_id: str, *, first_run: Callable[[str, float], float | None]) -> bool:
        """A connection refreshed by the sweep whose realm has no feed (connected before the
        feed existed, or its start failed) joins it now: one eventually consistent read per
        keep-alive refresh, and a start only when missing. True when it joined."""
        if self.marks.has_watermark(realm_id):
            return False
        conn = self.connections.get_connection(realm_id)
        if conn is None or conn.status != STATUS_ACTIVE or not conn.tenant_id:
            return False
        now = self.clock()
        self.marks.start(
            realm_id,
            tenant_id=conn.tenant_id,
            at=now,
            now=now,
            next_run=first_run(realm_id, now),
        )
        self._count("ChangeFeedJoined")
        return True

    def status(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``change_status``: with ``realm_id``, that realm's watermark, last and next run and
        changes recovered; without, a page of the tenant's realms (``tenant_id``, ``limit``,
        ``cursor``), read through TenantIndex like ``list_connections``."""
        if payload.get("realm_id") is None:
            return self._tenant_status(payload)
        realm_id = validation.realm_id(payload)
        tenant_id = validation.optional_tenant_id(payload)
        conn = owned_by(self.connections.get_connection(realm_id), tenant_id)
        if conn is None:
            raise NotConnected(f"realm {realm_id} is not connected")
        return status_of(realm_id, conn.status, self.marks.get_watermark(realm_id))

    def _tenant_status(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        tenant_id = validation.tenant_id(payload)
        limit = validation.optional_int(payload, "limit", default=50, minimum=1, maximum=100)
        page, cursor = self.connections.list_connections(
            tenant_id, limit=limit, cursor=validation.page_cursor(payload)
        )
        realms = [
            status_of(c.realm_id, c.status, self.marks.get_watermark(c.realm_id)) for c in page
        ]
        return {"realms": realms, "next_cursor": validation.encode_cursor(cursor)}

    def _run(self, conn: Connection, remaining_seconds: float | None) -> Outcome:
        budget = self.max_seconds
        if remaining_seconds is not None:
            budget = min(budget, max(0.0, remaining_seconds - ANSWER_MARGIN_SECONDS))
        outcome = self.reconciler_for(conn.tenant_id).run(
            RealmInfo(conn.realm_id, conn.tenant_id, conn.environment),
            deadline=self.clock() + budget,
        )
        self._count("ChangesRecovered", outcome.published)
        self._count("ResyncRequired", int(outcome.resync_required))
        logger.info(
            "reconciliation",
            extra={"realm_id": conn.realm_id, **outcome.answer()},
        )
        return outcome

    def _count(self, name: str, value: int = 1) -> None:
        if self.metrics is not None and value:
            self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def status_of(realm_id: str, connection_status: str, state: Watermark | None) -> dict[str, Any]:
    """What ``changes status`` shows of one realm."""
    return {
        "realm_id": realm_id,
        "status": connection_status,
        "watermark": iso(state.watermark) if state else None,
        "last_run": iso(state.last_run) if state and state.last_run else None,
        "next_run": iso(state.next_run) if state and state.next_run else None,
        "recovered": state.recovered if state else 0,
    }
