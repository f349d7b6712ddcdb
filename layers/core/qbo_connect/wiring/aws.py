"""Settings, AWS clients, the table and secrets: what every function family shares.

Built once per container and reused, so a warm invocation reuses TCP connections and the cached
secrets. What only some invocations need (the client secret through Powertools ``parameters``,
an HTTP session for Intuit) is imported on first use, not at import: a cold ``get_token`` that
finds a valid token never pays for it (``bench/cold_start.py`` measures the import).
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from qbo_connect.config import Settings, check_for, get_settings
from qbo_connect.errors import ConfigurationError
from qbo_connect.intuit import ClientCredentials

if TYPE_CHECKING:
    import requests

MIN_RETURN_KEY_LENGTH = 32


def settings() -> Settings:
    """The container's settings (read once from the environment)."""
    return get_settings()


@cache
def ready(*functions: str) -> None:
    """Check, once per container, that the variables these functions need are set: a
    misconfigured deploy fails its first invocation naming them (``config.check_for``)."""
    for function in functions:
        check_for(function)


@cache
def boto_config() -> Config:
    """Timeouts and retries of every AWS client, from Settings: the lease budget counts them."""
    current = get_settings()
    return Config(
        retries={"total_max_attempts": current.aws_max_attempts, "mode": "standard"},
        connect_timeout=current.aws_connect_timeout_seconds,
        read_timeout=current.aws_read_timeout_seconds,
        max_pool_connections=64,
    )


@cache
def aws_client(service: str) -> Any:
    return boto3.session.Session().client(service, config=boto_config())  # type: ignore[call-overload]


@lru_cache(maxsize=1)
def table() -> Any:
    """The connections table (boto3 ``Table`` resource): what every store repository wraps."""
    current = get_settings()
    if not current.table_name:
        raise ConfigurationError("TABLE_NAME is not set")
    resource = boto3.session.Session().resource("dynamodb", config=boto_config())
    return resource.Table(current.table_name)


def client_credentials(current: Settings | None = None) -> ClientCredentials:
    """The Intuit app credentials from Secrets Manager, cached by Powertools for max_age."""
    from aws_lambda_powertools.utilities import parameters

    current = current or get_settings()
    if not current.client_secret_id:
        raise ConfigurationError("INTUIT_CLIENT_SECRET_ID is not set")
    try:
        value = parameters.get_secret(
            current.client_secret_id, transform="json", max_age=current.secret_max_age_seconds
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


def return_signing_key() -> bytes:
    """The key that signs the return redirect (ReturnSigningSecret), cached like the client
    secret. The stack generates it; rotating it means apps must pick up the new value too.
    """
    from aws_lambda_powertools.utilities import parameters

    current = get_settings()
    if not current.return_signing_secret_id:
        raise ConfigurationError("RETURN_SIGNING_SECRET_ID is not set (template.yaml sets it)")
    value = parameters.get_secret(
        current.return_signing_secret_id, max_age=current.secret_max_age_seconds
    )
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str) or len(value.strip()) < MIN_RETURN_KEY_LENGTH:
        raise ConfigurationError(
            f"the return-signing secret must hold at least {MIN_RETURN_KEY_LENGTH} characters"
        )
    return value.strip().encode()


@lru_cache(maxsize=1)
def http_session() -> requests.Session:
    """One HTTP session per container: connections to Intuit are reused across calls."""
    import requests

    return requests.Session()


def _reset() -> None:
    get_settings.cache_clear()
    for cached in (ready, boto_config, aws_client, table, http_session):
        cached.cache_clear()
    try:  # Powertools caches secrets for max_age: a reset means "read them again".
        from aws_lambda_powertools.utilities import parameters

        parameters.clear_caches()
    except Exception:  # noqa: S110 - nothing cached when Powertools was never imported
        pass
