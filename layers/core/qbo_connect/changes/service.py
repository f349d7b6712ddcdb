"""``reconcile_changes``: one realm's reconciliation now, for its tenant, within a deadline.

The payload is ``{"action": "reconcile_changes", "realm_id", "tenant_id"?}``; with
``tenant_id``, another tenant's realm counts as not connected (the tenant guard). The answer is
``{"published", "already_seen", "watermark", "partial"}`` (plus ``resync_required`` when the
run published one). The reconciler is built per tenant by the composition root, because its CDC
calls are metered to that tenant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from qbo_connect import validation
from qbo_connect.changes.reconciler import RealmInfo, Reconciler
from qbo_connect.errors import NotConnected
from qbo_connect.store.connections import ConnectionRepository
from qbo_connect.store.table import STATUS_DISCONNECTED
from qbo_connect.vault.records import owned_by

#: Time kept back from the invocation's remaining time for answering.
ANSWER_MARGIN_SECONDS = 3.0


class ReconcileService:
    """Runs one realm's reconciliation for the ``reconcile_changes`` action."""

    def __init__(
        self,
        *,
        connections: ConnectionRepository,
        reconciler_for: Callable[[str], Reconciler],
        clock: Callable[[], float],
        max_seconds: float,
    ) -> None:
        self.connections = connections
        self.reconciler_for = reconciler_for
        self.clock = clock
        self.max_seconds = max_seconds

    def reconcile_changes(
        self, payload: Mapping[str, Any], *, remaining_seconds: float | None = None
    ) -> dict[str, Any]:
        realm_id = validation.realm_id(payload)
        tenant_id = validation.optional_tenant_id(payload)
        conn = owned_by(self.connections.get_connection(realm_id, consistent=True), tenant_id)
        if conn is None or conn.status == STATUS_DISCONNECTED or not conn.tenant_id:
            raise NotConnected(f"realm {realm_id} is not connected")
        budget = self.max_seconds
        if remaining_seconds is not None:
            budget = min(budget, max(0.0, remaining_seconds - ANSWER_MARGIN_SECONDS))
        outcome = self.reconciler_for(conn.tenant_id).run(
            RealmInfo(realm_id, conn.tenant_id, conn.environment),
            deadline=self.clock() + budget,
        )
        answer = outcome.answer()
        if not outcome.resync_required:
            answer.pop("resync_required")
        return answer
