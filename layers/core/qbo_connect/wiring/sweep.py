"""The sweep's family: the scheduled sweep over the DueIndex, the refresh worker, and the change
feed's schedule and runs that share them (its own family is built on first use)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

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


def reconcile(realm_id: str, remaining_seconds: float | None) -> str:
    """A scheduled reconciliation (the change feed's family, built on the first one)."""
    from qbo_connect.wiring import changes

    return changes.service().run_scheduled(realm_id, remaining_seconds=remaining_seconds)


def join_feed(realm_id: str) -> None:
    from qbo_connect.wiring import changes

    changes.join_feed(realm_id)


def reconcile_schedule(remaining_ms: Callable[[], int]) -> dict[str, Any]:
    """The change feed's schedule, run by the sweep's function after the refresh sweep."""
    from qbo_connect.wiring import changes

    return changes.scheduler().run(remaining_ms=remaining_ms).as_dict()


@lru_cache(maxsize=1)
def worker() -> RefreshWorker:
    return RefreshWorker(
        vault=vault.vault(),
        settings=aws.settings(),
        metrics=metrics,
        disconnect_hints=disconnect_hints,
        reconcile=reconcile,
        join_feed=join_feed,
    )


def _reset() -> None:
    for cached in (sweeper, worker, disconnect_hints):
        cached.cache_clear()
