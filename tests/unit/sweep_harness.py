"""The sweep and worker tests' shared harness: moto in-process, the Intuit simulator over HTTP.

Connections are seeded with tokens the simulator really issued and a due time computed by the
real due policy; every Intuit call is counted at the simulator.
"""

import itertools
import json
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

from devstack.events import build_sqs_event
from devstack.seed import store_tokens
from qbo_connect.config import Settings
from qbo_connect.intuit import TokenSet
from qbo_connect.store.connections import Connection
from qbo_connect.sweep.sweeper import (
    Sweeper,
)
from qbo_connect.sweep.worker import RefreshWorker
from qbo_connect.telemetry import metrics
from qbo_connect.vault.observer import refresh_observer
from qbo_connect.vault.protocol import TokenVault
from tests.helpers.store import TableRepositories
from tests.unit.builders import RecordingEvents, make_settings, make_vault

REPO_ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600.0
DAY = 86400.0
#: A connection not refreshed for this long is due (the keep-alive, the service's default).
KEEP_ALIVE = Settings.keep_alive_hours * HOUR
_realms = itertools.count(1000)


# ----- builders ------------------------------------------------------------------------------


class Context:
    """The bits of the Lambda context the handlers and Powertools use."""

    function_name = "test-function"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    memory_limit_in_mb = 512
    aws_request_id = "req-1"
    log_group_name = "/aws/lambda/test-function"
    log_stream_name = "stream"

    def __init__(self, remaining_ms: int = 300_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def seed(
    vault: TokenVault,
    sim: Any,
    *,
    refreshed_ago: float = 0.0,
    used_ago: float | None = None,
    access_left: float = 3600.0,
    hard_left: float | None = None,
    realm_id: str | None = None,
    tenant_id: str = "tenant-a",
) -> Connection:
    """A connection with simulator-issued tokens, in the state described, due by the policy."""
    realm_id = realm_id or str(next(_realms))
    body = sim.issue_tokens(client_id="test-client", realm_id=realm_id)
    now = time.time()
    refreshed_at = now - refreshed_ago
    tokens = TokenSet(
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
        expires_in=int(refreshed_ago + access_left),
        refresh_token_expires_in=body["x_refresh_token_expires_in"],
        refresh_token_hard_expires_in=(
            None if hard_left is None else int(refreshed_ago + hard_left)
        ),
        obtained_at=refreshed_at,
    )
    used_at = None if used_ago is None else now - used_ago
    store_tokens(vault, realm_id, tokens, tenant_id, used_at)
    conn = vault.connections.get_connection(realm_id)
    assert conn is not None
    return conn


class Harness:
    """A vault, a queue, a sweeper and a worker over the same moto account and simulator."""

    def __init__(self, aws: dict[str, str], sim: Any, **settings: Any) -> None:
        metrics.clear_metrics()  # the process-wide metrics start empty for each test
        self.sim = sim
        self.events = RecordingEvents()
        self.settings = make_settings(aws, sim, **settings)
        self.vault = make_vault(self.settings, events=self.events, observer=refresh_observer())
        self.store = TableRepositories(
            self.vault.connections.table, due_shards=self.settings.due_shards
        )
        self.sqs = boto3.client("sqs")
        self.queue_url = self.sqs.create_queue(
            QueueName=f"refresh-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "60"}
        )["QueueUrl"]
        self.batch_sizes: list[int] = []
        self.dynamodb_ops: list[str] = []
        self.sqs.meta.events.register(
            "provide-client-params.sqs.SendMessageBatch",
            lambda params, **_: self.batch_sizes.append(len(params["Entries"])),
        )
        self.store.table.meta.client.meta.events.register(
            "before-call.dynamodb.*",
            lambda model, **_: self.dynamodb_ops.append(model.name),
        )
        self.worker = RefreshWorker(vault=self.vault, settings=self.settings, metrics=metrics)

    def sweeper(self, **kwargs: Any) -> Sweeper:
        kwargs.setdefault("sqs", self.sqs)
        return Sweeper(
            connections=self.store.connections,
            sweep_state=self.store.sweep_state,
            queue_url=self.queue_url,
            shards=self.settings.due_shards,
            metrics=kwargs.pop("metrics", lambda: metrics),
            **kwargs,
        )

    def sweep(self, **kwargs: Any) -> dict[str, Any]:
        return self.sweeper(**kwargs).run(remaining_ms=lambda: 300_000).as_dict()

    def drain(self) -> list[dict[str, Any]]:
        """Receive and delete every message: the queue is empty afterwards."""
        messages = self.receive_all()
        for m in messages:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return messages

    def receive_all(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not batch:
                return messages
            messages.extend(batch)

    def work(self, messages: list[dict[str, Any]], context: Any = None) -> list[str]:
        """Run the worker over the messages in batches of 10; returns the failed message ids."""
        failed: list[str] = []
        for start in range(0, len(messages), 10):
            event = sqs_event(messages[start : start + 10])
            response = self.worker.handle(event, context or Context())
            failed += [f["itemIdentifier"] for f in response["batchItemFailures"]]
        return failed

    def refreshes_by_token(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for call in self.sim.refresh_calls():
            key = call["refresh_token_sha256"]
            counts[key] = counts.get(key, 0) + 1
        return counts


def sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda's poller makes of ``receive_message`` results from the refresh queue."""
    return build_sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:refresh")


def emf_metrics(text: str) -> dict[str, float]:
    """Sum every metric in the EMF lines Powertools printed."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        doc = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = doc[metric["Name"]]
                values = value if isinstance(value, list) else [value]
                totals[metric["Name"]] = totals.get(metric["Name"], 0.0) + sum(values)
    return totals


def sha256(value: str) -> str:
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()


def realms_of(messages: list[dict[str, Any]]) -> list[str]:
    return sorted(json.loads(m["Body"])["realm_id"] for m in messages)
