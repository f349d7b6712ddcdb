"""Every store repository over one table, for tests.

The service receives one repository per item kind (see ``qbo_connect.store``). Tests that set
up or inspect several kinds at once use this bundle: its attributes are the repositories, and a
method name of any of them also works on the bundle (``repos.get_connection(...)``), which keeps
the tests' Given/Then lines short.
"""

from __future__ import annotations

from typing import Any

from qbo_connect.store.connections import ConnectionRepository
from qbo_connect.store.cooldowns import Cooldowns
from qbo_connect.store.fleet import FleetRepository
from qbo_connect.store.history import HistoryRepository
from qbo_connect.store.single_use import SingleUseRepository
from qbo_connect.store.sweep_state import SweepStateRepository


class TableRepositories:
    """The repositories of one table; unknown attributes are looked up on each of them."""

    def __init__(self, table: Any, *, due_shards: int = 16) -> None:
        self.table = table
        self.connections = ConnectionRepository(table, due_shards=due_shards)
        self.fleet = FleetRepository(table)
        self.history = HistoryRepository(table)
        self.cooldowns = Cooldowns(table)
        self.single_use = SingleUseRepository(table)
        self.sweep_state = SweepStateRepository(table)

    @classmethod
    def from_name(cls, table_name: str, *, due_shards: int = 16) -> TableRepositories:
        import boto3

        return cls(boto3.resource("dynamodb").Table(table_name), due_shards=due_shards)

    def __getattr__(self, name: str) -> Any:
        for repository in (
            self.connections,
            self.single_use,
            self.history,
            self.sweep_state,
            self.fleet,
            self.cooldowns,
        ):
            if hasattr(repository, name):
                return getattr(repository, name)
        raise AttributeError(name)


def placeholder_connection(table: Any, realm_id: str, tenant_id: str, *, now: float) -> None:
    """An active sandbox connection whose tokens are placeholders (never opened): for tests of
    what reads a realm's owner, not its tokens."""
    from qbo_connect.store.connections import SealedTokens

    TableRepositories(table).create_connection(
        realm_id=realm_id,
        tenant_id=tenant_id,
        environment="sandbox",
        scopes=["com.intuit.quickbooks.accounting"],
        tokens=SealedTokens(b"k", b"a", b"r", now + 3600, now + 86400),
        now=now,
    )


def vault_over(*, store: TableRepositories, settings: Any, **kwargs: Any) -> Any:
    """A TokenVault over the bundle's repositories, with the fleet breaker a deployment has
    (built on the same clock). Keyword arguments are the vault's own."""
    import time

    from qbo_connect.vault.breaker import InvalidGrantBreaker
    from qbo_connect.vault.protocol import TokenVault

    clock = kwargs.get("clock", time.time)
    kwargs.setdefault("breaker", InvalidGrantBreaker(store.fleet, settings, clock=clock))
    return TokenVault(settings=settings, connections=store.connections, **kwargs)


# ----- services over a test vault (what qbo_connect.wiring does for a deployment) -------------


def _repos(vault: Any) -> TableRepositories:
    return TableRepositories(vault.connections.table, due_shards=vault.connections.due_shards)


def _history(vault: Any, clock: Any) -> Any:
    from qbo_connect.vault.history import History

    return vault.history or History(_repos(vault).history, clock=clock)


def adopter_for(vault: Any, *, clock: Any = None) -> Any:
    import time

    from qbo_connect.vault.adoption import GrantAdopter

    return GrantAdopter(
        vault, connections=vault.connections, settings=vault.settings, clock=clock or time.time
    )


def connections_service(vault: Any, *, clock: Any = None) -> Any:
    import time

    from qbo_connect.operations.connections import ConnectionsService

    clock = clock or time.time
    return ConnectionsService(
        vault,
        connections=vault.connections,
        settings=vault.settings,
        history=_history(vault, clock),
        cipher=vault.cipher,
        intuit=vault.intuit_client,
        adopter=adopter_for(vault, clock=clock),
        clock=clock,
    )


def connect_flow(vault: Any, *, clock: Any = None, **kwargs: Any) -> Any:
    import time

    from qbo_connect.connect.flow import ConnectFlow

    clock = clock or time.time
    kwargs.setdefault("intuit", vault.intuit_client)
    return ConnectFlow(
        settings=vault.settings,
        single_use=_repos(vault).single_use,
        adopter=adopter_for(vault, clock=clock),
        history=_history(vault, clock),
        clock=clock,
        **kwargs,
    )


def disconnect_hints(vault: Any, *, clock: Any = None, **kwargs: Any) -> Any:
    import time

    from qbo_connect.sweep.disconnect_check import DisconnectHints

    clock = clock or time.time
    return DisconnectHints(
        vault,
        connections=vault.connections,
        cooldowns=_repos(vault).cooldowns,
        settings=vault.settings,
        cipher=vault.cipher,
        intuit=vault.intuit_client,
        history=_history(vault, clock),
        clock=clock,
        **kwargs,
    )
