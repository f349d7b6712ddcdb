"""The webhook functions' settings, read once per container from environment variables.

Declared in ``qbo_connect.config.WEBHOOK_SETTINGS`` with every other setting; built apart so
the gateway's cold start reads only what it uses and a misconfigured webhook deploy names its
own variable (:class:`~qbo_connect.errors.ConfigurationError`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from qbo_connect.config import WEBHOOK_SETTINGS, values_of

DETAIL_TYPE = "quickbooks.entity_changed"
SOURCE = "qbo-connect"


@dataclass(frozen=True)
class WebhookSettings:
    """Every knob of the webhook gateway and processor (defaults suit production)."""

    verifier_secret_id: str = ""
    queue_url: str = ""
    dead_letter_queue_url: str = ""
    table_name: str = ""
    event_bus_name: str = "default"
    #: Bodies larger than this are refused with 413 before any other work.
    max_body_bytes: int = 1_048_576
    #: After the verifier token is rotated, the previous one stays valid this long.
    overlap_seconds: float = 3600.0
    #: How long a container trusts its cached verifier tokens before reading the secret again.
    secret_max_age_seconds: float = 300.0
    #: How long a processed event id is remembered (duplicates within it are dropped).
    dedup_ttl_seconds: int = 7 * 86400

    @property
    def max_change_age_seconds(self) -> float:
        """A change older than this is not published (see ``webhooks.gateway``): the ledger
        may have forgotten its id, so a captured signed body replayed later would publish it
        again. One day less than the ledger keeps ids (Intuit retries a failing endpoint for
        about a day, so no genuine delivery is that old)."""
        return float(max(self.dedup_ttl_seconds - 86400, 3600))

    #: How long a processor's claim on an event lives before another delivery may take it over.
    claim_seconds: float = 120.0
    #: Backoff of a failed message: base * 2^(receives - 1), capped (SQS visibility timeout).
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 900.0


def load_webhook_settings(env: Mapping[str, str] | None = None) -> WebhookSettings:
    """Settings from a mapping of env vars (``os.environ`` by default), as declared in
    ``qbo_connect.config.WEBHOOK_SETTINGS``.

    The overlap is given in minutes by the template (``WEBHOOK_VERIFIER_OVERLAP_MINUTES``);
    ``WEBHOOK_VERIFIER_OVERLAP_SECONDS`` wins when set (tests use a few seconds).
    """
    env = os.environ if env is None else env
    return WebhookSettings(**values_of(WEBHOOK_SETTINGS, env))  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def get_webhook_settings() -> WebhookSettings:
    """The container's settings, built on first use and then reused."""
    return load_webhook_settings()
