"""The token vault's family: the store, sealing, the Intuit client, the outbox and the vault.

GetTokenFunction uses this module alone; the connect, operations and sweep families build on
it. A warm ``get_token`` reuses the store, the cipher (with its unwrapped data keys) and the
Intuit client built here: one DynamoDB read and no KMS call.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import TYPE_CHECKING

from qbo_connect.events import EventPublisher
from qbo_connect.intuit import ClientCredentials, IntuitClient
from qbo_connect.store.connections import ConnectionRepository
from qbo_connect.store.fleet import FleetRepository
from qbo_connect.store.history import HistoryRepository
from qbo_connect.vault.breaker import InvalidGrantBreaker
from qbo_connect.vault.history import History
from qbo_connect.vault.protocol import TokenVault
from qbo_connect.vault.sealing import TokenCipher
from qbo_connect.wiring import aws

if TYPE_CHECKING:  # built for the callback and import only: GetToken's cold start skips it
    from qbo_connect.vault.adoption import GrantAdopter

_lock = threading.Lock()
_intuit_clients: dict[ClientCredentials, IntuitClient] = {}


@lru_cache(maxsize=1)
def connections() -> ConnectionRepository:
    return ConnectionRepository(aws.table(), due_shards=aws.settings().due_shards)


@lru_cache(maxsize=1)
def cipher() -> TokenCipher:
    from qbo_connect.errors import ConfigurationError

    settings = aws.settings()
    if not settings.token_key_id:
        raise ConfigurationError("TOKEN_KEY_ID is not set")
    return TokenCipher(aws.aws_client("kms"), settings.token_key_id)


@lru_cache(maxsize=1)
def events() -> EventPublisher:
    settings = aws.settings()
    return EventPublisher(
        aws.aws_client("events"),
        settings.event_bus_name,
        emit_refreshed=settings.emit_refreshed_events,
    )


@lru_cache(maxsize=1)
def history() -> History:
    return History(HistoryRepository(aws.table()))


@lru_cache(maxsize=1)
def breaker() -> InvalidGrantBreaker:
    return InvalidGrantBreaker(FleetRepository(aws.table()), aws.settings())


def intuit() -> IntuitClient:
    """An Intuit client for the current credentials (a rotated secret gets a new client)."""
    settings = aws.settings()
    credentials = aws.client_credentials(settings)
    with _lock:
        client = _intuit_clients.get(credentials)
        if client is None:
            _intuit_clients.clear()
            client = IntuitClient(
                settings.intuit,
                credentials,
                timeout=settings.intuit_timeout_seconds,
                max_attempts=settings.intuit_max_attempts,
                backoff_base=settings.intuit_backoff_base_seconds,
                backoff_max=settings.intuit_backoff_max_seconds,
                session=aws.http_session(),
            )
            _intuit_clients[credentials] = client
        return client


def raw_token_reads() -> bool:
    """Whether GetTokenFunction hands out tokens (``RawTokenReads``)."""
    return aws.settings().raw_token_reads


@lru_cache(maxsize=1)
def vault() -> TokenVault:
    from qbo_connect.vault.observer import refresh_observer

    # Every function that uses the vault needs the same three variables.
    aws.ready("GetTokenFunction")

    return TokenVault(
        settings=aws.settings(),
        connections=connections(),
        cipher=cipher(),
        intuit=intuit,
        events=events(),
        breaker=breaker(),
        observer=refresh_observer(),
        history=history(),
    )


@lru_cache(maxsize=1)
def adopter() -> GrantAdopter:
    """Adoption of a grant (callback and import): proves the realm, checks its owner, stores."""
    from qbo_connect.vault.adoption import GrantAdopter
    from qbo_connect.wiring import changes, usage

    return GrantAdopter(
        vault(),
        connections=connections(),
        settings=aws.settings(),
        usage=usage.count_service_read,
        on_stored=changes.start_feed,
    )


def _reset() -> None:
    for cached in (connections, cipher, events, history, breaker, vault, adopter):
        cached.cache_clear()
    with _lock:
        _intuit_clients.clear()
