"""The sweep's family: the scheduled sweep over the DueIndex and the refresh worker."""

from __future__ import annotations

from functools import lru_cache

from aws_lambda_powertools.metrics import EphemeralMetrics

from qbo_connect.store.cooldowns import Cooldowns
from qbo_connect.store.sweep_state import SweepStateRepository
from qbo_connect.sweep.disconnect_check import DisconnectHints
from qbo_connect.sweep.sweeper import Sweeper
from qbo_connect.sweep.worker import RefreshWorker
from qbo_connect.telemetry import metrics
from qbo_connect.wiring import aws, usage, vault


@lru_cache(maxsize=1)
def sweeper() -> Sweeper:
    aws.ready("RefreshSweepFunction")
    settings = aws.settings()
    return Sweeper(
        connections=vault.connections(),
        sweep_state=SweepStateRepository(aws.table()),
        sqs=aws.aws_client("sqs"),
        queue_url=settings.refresh_queue_url,
        shards=settings.due_shards,
        requeue_seconds=settings.sweep_requeue_seconds,
        # Its own metric set per run (not the process-wide Powertools registry): one EMF
        # document per sweep, whatever else runs in the process (the local stack runs the
        # worker's invocations in threads next to it).
        metrics=EphemeralMetrics,
    )


@lru_cache(maxsize=1)
def disconnect_hints() -> DisconnectHints:
    # The proxy's family only when a hint is verified: the sweep's cold start stays as it was.
    from qbo_connect.wiring import api

    return DisconnectHints(
        vault.vault(),
        connections=vault.connections(),
        cooldowns=Cooldowns(aws.table()),
        settings=aws.settings(),
        cipher=vault.cipher(),
        intuit=vault.intuit,
        history=vault.history(),
        usage=usage.count_service_read,
        governor=api.governor(),
        throttle_cool_down_seconds=api.proxy_settings().cool_down_seconds,
    )


@lru_cache(maxsize=1)
def worker() -> RefreshWorker:
    return RefreshWorker(
        vault=vault.vault(),
        settings=aws.settings(),
        metrics=metrics,
        disconnect_hints=disconnect_hints,
    )


def _reset() -> None:
    for cached in (sweeper, worker, disconnect_hints):
        cached.cache_clear()
