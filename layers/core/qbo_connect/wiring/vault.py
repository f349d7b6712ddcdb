"""Per-container wiring: the clients and services a handler needs, built once and reused.

Handlers call these getters instead of building clients themselves, so a warm invocation
reuses TCP connections, the cached client secret and the unwrapped data keys (which is what
makes a warm ``get_token`` one DynamoDB read and no KMS call).

What only a refresh needs (the client secret through Powertools ``parameters``, an HTTP session
for Intuit) is imported on first use, not at import: a cold ``get_token`` that finds a valid
token never pays for it (``bench/cold_start.py`` measures the import).
"""

from __future__ import annotations

import threading
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from qbo_connect.config import Settings, get_settings
from qbo_connect.errors import ConfigurationError
from qbo_connect.events import EventPublisher
from qbo_connect.intuit import ClientCredentials, IntuitClient
from qbo_connect.store import Store
from qbo_connect.vault.history import History
from qbo_connect.vault.protocol import TokenVault
from qbo_connect.vault.sealing import TokenCipher

if TYPE_CHECKING:
    import requests

_lock = threading.Lock()


@cache
def boto_config() -> Config:
    """Timeouts and retries of every AWS client, from Settings: the lease budget counts them."""
    settings = get_settings()
    return Config(
        retries={"total_max_attempts": settings.aws_max_attempts, "mode": "standard"},
        connect_timeout=settings.aws_connect_timeout_seconds,
        read_timeout=settings.aws_read_timeout_seconds,
        max_pool_connections=64,
    )


@cache
def aws_client(service: str) -> Any:
    return boto3.session.Session().client(service, config=boto_config())  # type: ignore[call-overload]


@lru_cache(maxsize=1)
def store() -> Store:
    settings = get_settings()
    if not settings.table_name:
        raise ConfigurationError("TABLE_NAME is not set")
    resource = boto3.session.Session().resource("dynamodb", config=boto_config())
    return Store(resource.Table(settings.table_name), due_shards=settings.due_shards)


@lru_cache(maxsize=1)
def cipher() -> TokenCipher:
    settings = get_settings()
    if not settings.token_key_id:
        raise ConfigurationError("TOKEN_KEY_ID is not set")
    return TokenCipher(aws_client("kms"), settings.token_key_id)


@lru_cache(maxsize=1)
def events() -> EventPublisher:
    settings = get_settings()
    return EventPublisher(
        aws_client("events"), settings.event_bus_name, emit_refreshed=settings.emit_refreshed_events
    )


def client_credentials(settings: Settings | None = None) -> ClientCredentials:
    """The Intuit app credentials from Secrets Manager, cached by Powertools for max_age."""
    from aws_lambda_powertools.utilities import parameters

    settings = settings or get_settings()
    if not settings.client_secret_id:
        raise ConfigurationError("INTUIT_CLIENT_SECRET_ID is not set")
    try:
        value = parameters.get_secret(
            settings.client_secret_id, transform="json", max_age=settings.secret_max_age_seconds
        )
    except parameters.exceptions.TransformParameterError:
        raise ConfigurationError("the Intuit client secret is not valid JSON") from None
    if not isinstance(value, dict):
        raise ConfigurationError("the Intuit client secret must be a JSON object")
    client_id = str(value.get("client_id") or "")
    client_secret = str(value.get("client_secret") or "")
    if not client_id or not client_secret:
        raise ConfigurationError(
            "the Intuit client secret lacks client_id or client_secret (see README: Deploying)"
        )
    return ClientCredentials(client_id=client_id, client_secret=client_secret)


MIN_RETURN_KEY_LENGTH = 32


def return_signing_key() -> bytes:
    """The key that signs the return redirect (ReturnSigningSecret), cached like the client
    secret. The stack generates it; rotating it means apps must pick up the new value too.
    """
    from aws_lambda_powertools.utilities import parameters

    settings = get_settings()
    if not settings.return_signing_secret_id:
        raise ConfigurationError("RETURN_SIGNING_SECRET_ID is not set (template.yaml sets it)")
    value = parameters.get_secret(
        settings.return_signing_secret_id, max_age=settings.secret_max_age_seconds
    )
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str) or len(value.strip()) < MIN_RETURN_KEY_LENGTH:
        raise ConfigurationError(
            f"the return-signing secret must hold at least {MIN_RETURN_KEY_LENGTH} characters"
        )
    return value.strip().encode()


_intuit_clients: dict[ClientCredentials, IntuitClient] = {}


@lru_cache(maxsize=1)
def _http() -> requests.Session:
    """One HTTP session per container: Intuit connections are reused across refreshes."""
    import requests

    return requests.Session()


def intuit() -> IntuitClient:
    """An Intuit client for the current credentials (a rotated secret gets a new client)."""
    settings = get_settings()
    credentials = client_credentials(settings)
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
                session=_http(),
            )
            _intuit_clients[credentials] = client
        return client


@lru_cache(maxsize=1)
def vault() -> TokenVault:
    from qbo_connect.telemetry import refresh_observer

    return TokenVault(
        settings=get_settings(),
        store=store(),
        cipher=cipher(),
        intuit=intuit,
        events=events(),
        observer=refresh_observer(),
        history=History(store()),
    )
