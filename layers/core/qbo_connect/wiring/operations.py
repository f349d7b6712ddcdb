"""ConnectionsFunction's family: the operators' and workloads' actions on connections."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from qbo_connect.operations.connections import ConnectionsService
from qbo_connect.wiring import aws, vault

if TYPE_CHECKING:
    from qbo_connect.changes.service import ReconcileService
    from qbo_connect.connect.flow import ConnectFlow


@lru_cache(maxsize=1)
def connections_service() -> ConnectionsService:
    return ConnectionsService(
        vault.vault(),
        connections=vault.connections(),
        settings=aws.settings(),
        history=vault.history(),
        cipher=vault.cipher(),
        intuit=vault.intuit,
        adopter=vault.adopter(),
    )


def connect_links() -> ConnectFlow:
    """Connect links are made by the connect flow (its rules: return URLs, scopes, TTL); the
    pages and Intuit client it also holds are built only when a link is asked for."""
    from qbo_connect.wiring import connect

    return connect.connect_flow()


def change_feed() -> ReconcileService:
    """``reconcile_changes`` and ``change_status``: the change feed's family (and, for a run,
    the QuickBooks API proxy's) is built only when one is asked for."""
    from qbo_connect.wiring import changes

    return changes.service()


def _reset() -> None:
    connections_service.cache_clear()
