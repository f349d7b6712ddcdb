"""QuickBooksApiFunction's settings, declared as a table like every other setting
(``qbo_connect.config.Setting``) and read once per container."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from qbo_connect.api.governor import Limits
from qbo_connect.config import Setting, values_of

#: The governor's default limits: what QUICKBOOKS_REQUESTS_PER_MINUTE and the others default to.
DEFAULT_LIMITS = Limits()


def _int(name: str, raw: str) -> int:
    from qbo_connect.errors import ConfigurationError

    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer") from None


def _float(name: str, raw: str) -> float:
    from qbo_connect.errors import ConfigurationError

    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number") from None


PROXY_SETTINGS: tuple[Setting, ...] = (
    Setting("QUICKBOOKS_REQUESTS_PER_MINUTE", "per_minute", _int, DEFAULT_LIMITS.per_minute),
    Setting("QUICKBOOKS_REQUESTS_PER_SECOND", "per_second", _int, DEFAULT_LIMITS.per_second),
    Setting("QUICKBOOKS_MAX_IN_FLIGHT", "max_in_flight", _int, DEFAULT_LIMITS.max_in_flight),
    Setting(
        "QUICKBOOKS_BATCH_REQUESTS_PER_MINUTE",
        "batch_per_minute",
        _int,
        DEFAULT_LIMITS.batch_per_minute,
    ),
    Setting("QUICKBOOKS_MINOR_VERSION", "minor_version", _int, 75),
    Setting("QUICKBOOKS_TIMEOUT_SECONDS", "timeout_seconds", _float, 120.0),
    Setting("QUICKBOOKS_MAX_ATTEMPTS", "max_attempts", _int, 3),
    Setting("QUICKBOOKS_MAX_WAIT_SECONDS", "default_max_wait_seconds", _float, 10.0),
    Setting("QUICKBOOKS_THROTTLE_COOL_DOWN_SECONDS", "cool_down_seconds", _float, 60.0),
)


@dataclass(frozen=True)
class ProxySettings:
    per_minute: int = DEFAULT_LIMITS.per_minute
    per_second: int = DEFAULT_LIMITS.per_second
    max_in_flight: int = DEFAULT_LIMITS.max_in_flight
    batch_per_minute: int = DEFAULT_LIMITS.batch_per_minute
    #: Sent on every call; a caller may ask for more, a lower ask is raised to it.
    minor_version: int = 75
    #: Intuit ends a request after 120 s.
    timeout_seconds: float = 120.0
    #: Attempts of one call on 5xx, timeouts and connection errors (a 401 adds one retry).
    max_attempts: int = 3
    default_max_wait_seconds: float = 10.0
    #: A throttle without Retry-After cools the realm this long (Intuit says: wait 60 s).
    cool_down_seconds: float = 60.0
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 4.0
    connect_timeout_seconds: float = 5.0
    #: Lambda's direct-invoke answer limit is 6 MB; the answer must fit whole.
    max_answer_bytes: int = 6_000_000


def load_proxy_settings(env: Mapping[str, str] | None = None) -> ProxySettings:
    env = os.environ if env is None else env
    return ProxySettings(**values_of(PROXY_SETTINGS, env))  # type: ignore[arg-type]
