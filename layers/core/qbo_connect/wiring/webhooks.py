"""The webhooks' family: the gateway's verifier and queue, and the processor.

Deliberately apart from the vault's family: the gateway must answer Intuit within 3 seconds
including a cold start, so nothing here imports the vault, KMS, the Intuit client or
cryptography, and boto3 itself is imported on first use. The gateway's AWS clients have short
timeouts of their own (Intuit retries a failed delivery; a slow answer is a failed one).
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from qbo_connect.config import check_for
from qbo_connect.webhooks.gateway import ChangeQueue, GatewayResult, answer
from qbo_connect.webhooks.settings import WebhookSettings, get_webhook_settings
from qbo_connect.webhooks.signature import VerifierTokens

if TYPE_CHECKING:
    from collections.abc import Mapping

    from qbo_connect.webhooks.processor import WebhookProcessor


def settings() -> WebhookSettings:
    return get_webhook_settings()


@cache
def _gateway_client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=1, read_timeout=2
    )
    return boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]


@lru_cache(maxsize=1)
def verifier() -> VerifierTokens:
    check_for("WebhookFunction")
    current = settings()
    return VerifierTokens(
        _gateway_client("secretsmanager"),
        current.verifier_secret_id,
        overlap_seconds=current.overlap_seconds,
        max_age_seconds=current.secret_max_age_seconds,
    )


@lru_cache(maxsize=1)
def queue() -> ChangeQueue:
    current = settings()
    return ChangeQueue(_gateway_client("sqs"), current.queue_url, current.dead_letter_queue_url)


def gateway_answer(event: Mapping[str, Any]) -> GatewayResult:
    """``POST /webhooks`` with this container's verifier and queue."""
    return answer(event, settings=settings, verifier=verifier, queue=queue)


@lru_cache(maxsize=1)
def processor() -> WebhookProcessor:
    """The webhook processor, over the connections table (it reads the realm's owner)."""
    from qbo_connect.changes import CHANGE_MARK_TTL_SECONDS, CHANGE_TIME_TOLERANCE_SECONDS
    from qbo_connect.store.change_marks import ChangeMarks
    from qbo_connect.store.connections import ConnectionRepository
    from qbo_connect.store.webhook_ledger import Ledger
    from qbo_connect.telemetry import metrics
    from qbo_connect.webhooks.processor import WebhookProcessor
    from qbo_connect.wiring import aws

    check_for("WebhookProcessorFunction")
    current = settings()
    table = aws.table()
    return WebhookProcessor(
        connections=ConnectionRepository(table),
        ledger=Ledger(
            table,
            ttl_seconds=current.dedup_ttl_seconds,
            claim_seconds=current.claim_seconds,
        ),
        events_client=aws.aws_client("events"),
        bus_name=current.event_bus_name,
        sqs_client=aws.aws_client("sqs"),
        queue_url=current.queue_url,
        retry_base_seconds=current.retry_base_seconds,
        retry_max_seconds=current.retry_max_seconds,
        metrics=metrics,
        marks=ChangeMarks(
            table,
            ttl_seconds=CHANGE_MARK_TTL_SECONDS,
            tolerance_seconds=CHANGE_TIME_TOLERANCE_SECONDS,
        ),
    )


def _reset() -> None:
    get_webhook_settings.cache_clear()
    for cached in (_gateway_client, verifier, queue, processor):
        cached.cache_clear()
