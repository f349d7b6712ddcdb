"""QuickBooksApiFunction's family: the proxy over the vault's tokens and the shared governor.

Built once per container: the token cache, the governor's local holdings and the HTTP session
live as long as the container, which is what makes a warm proxied call cost no AWS request.
"""

from __future__ import annotations

from functools import lru_cache

from qbo_connect.api.governor import Governor, Limits
from qbo_connect.api.metering import ProxyMetering
from qbo_connect.api.observer import record_call
from qbo_connect.api.proxy import QuickBooksProxy
from qbo_connect.api.settings import ProxySettings, load_proxy_settings
from qbo_connect.api.tokens import ProxyTokens
from qbo_connect.store.governor import GovernorTable
from qbo_connect.wiring import aws
from qbo_connect.wiring import usage as usage_family
from qbo_connect.wiring import vault as vault_family


@lru_cache(maxsize=1)
def proxy_settings() -> ProxySettings:
    return load_proxy_settings()


@lru_cache(maxsize=1)
def governor() -> Governor:
    settings = proxy_settings()
    return Governor(
        GovernorTable(aws.table()),
        Limits(
            per_minute=settings.per_minute,
            per_second=settings.per_second,
            max_in_flight=settings.max_in_flight,
            batch_per_minute=settings.batch_per_minute,
        ),
    )


@lru_cache(maxsize=1)
def proxy() -> QuickBooksProxy:
    """The container's proxy (checks GetTokenFunction's variables: it reads the same vault)."""
    return QuickBooksProxy(
        settings=proxy_settings(),
        api_base_url=aws.settings().intuit.api_base_url,
        tokens=ProxyTokens(vault_family.vault()),
        governor=governor(),
        session=aws.http_session(),
        observe=record_call,
        metering=ProxyMetering(
            usage_family.guard(),
            usage_family.meter(),
            batch_counting=aws.settings().coreplus_batch_counting,
        ),
    )


def flush_usage() -> None:
    """The end of an invocation: the meter's buffer is written when old or large enough."""
    usage_family.flush_if_due()


def _reset() -> None:
    for cached in (proxy_settings, governor, proxy):
        cached.cache_clear()
