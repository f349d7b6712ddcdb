"""The refresh path end to end through the local stack: schedule -> sweep -> SQS -> worker.

500 connections of mixed due times are stored with tokens the stack's Intuit simulator really
issued (``/_sim/issue-tokens``), sealed with the real ``TokenVault.seal`` under the stack's KMS
key and written with the real ``ConnectionRepository.create_connection``. One sweep (the
devstack's schedule
endpoint runs RefreshSweepFunction now) must refresh exactly the due ones, each exactly once,
counted at the simulator by refresh-token hash, and none of the others; a sweep right after
must enqueue nothing (nor re-enqueue, while the queue holds messages) and a later one must find
nothing due. Lifecycle events are read from the
stack's events queue (an EventBridge rule copies every ``qbo-connect`` event there) and metrics
from the EMF lines in the stack's log.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import requests

from devstack.process import DUMMY_CREDENTIALS, REGION, start_devstack
from devstack.seed import store_tokens
from qbo_connect.config import Settings, load_settings
from qbo_connect.intuit import TokenSet
from qbo_connect.store.table import connection_key
from qbo_connect.vault.protocol import TokenVault
from qbo_connect.vault.sealing import TokenCipher
from tests.helpers.events import drain_events
from tests.helpers.store import TableRepositories, vault_over

CLIENT_ID = "sweep-it-client"
CLIENT_SECRET = "sweep-it-secret"
HOUR = 3600.0
DAY = 86400.0
#: A connection not refreshed for this long is due (the keep-alive, the service's default).
KEEP_ALIVE = Settings.keep_alive_hours * HOUR


@dataclass(frozen=True)
class Kind:
    """One group of connections: how many, their state, whether the sweep must refresh them."""

    name: str
    count: int
    due: bool
    refreshed_ago: float
    used_ago: float | None = None
    access_left: float = 3600.0
    hard_left: float | None = None
    refresh_expired: bool = False  # the refresh token is past its known expiry ...
    revoked: bool = False  # ... and revoked at Intuit: the refresh ends the connection


KINDS = (
    # Due: keep-alive, keep-warm, the three expiring thresholds, and dead ones.
    Kind("keep_alive", 140, True, refreshed_ago=KEEP_ALIVE + HOUR),
    Kind("keep_warm", 50, True, refreshed_ago=HOUR - 120, used_ago=60, access_left=120),
    Kind("expiring_30", 10, True, refreshed_ago=HOUR, hard_left=20 * DAY),
    Kind("expiring_7", 10, True, refreshed_ago=HOUR, hard_left=5 * DAY),
    Kind("expiring_1", 10, True, refreshed_ago=HOUR, hard_left=0.5 * DAY),
    Kind("dead", 10, True, refreshed_ago=KEEP_ALIVE + HOUR, refresh_expired=True, revoked=True),
    # Not due: fresh, due in 10 minutes, warm tokens nobody read lately, far hard expiry.
    Kind("fresh", 150, False, refreshed_ago=HOUR),
    Kind("due_soon", 50, False, refreshed_ago=KEEP_ALIVE - 600),
    Kind("idle", 40, False, refreshed_ago=HOUR - 120, used_ago=3 * HOUR, access_left=120),
    Kind("hard_far", 30, False, refreshed_ago=HOUR, hard_left=90 * DAY),
)
TOTAL = sum(k.count for k in KINDS)
DUE = sum(k.count for k in KINDS if k.due)
EXPECTED_THRESHOLD = {"expiring_30": 30, "expiring_7": 7, "expiring_1": 1}


@dataclass
class Seeded:
    realm_id: str
    kind: Kind
    token_sha256: str


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def emf_totals(text: str) -> dict[str, float]:
    """Sum of every metric over the EMF documents printed in the log."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        start = line.find('{"_aws"')
        if start < 0:
            continue
        try:
            # raw_decode: EMF documents are print()ed, and under load another thread's log
            # record can land between the document and its newline.
            doc, _ = json.JSONDecoder().raw_decode(line[start:])
        except ValueError:
            continue
        for directive in doc["_aws"].get("CloudWatchMetrics", []):
            for metric in directive.get("Metrics", []):
                value = doc.get(metric["Name"], 0)
                values = value if isinstance(value, list) else [value]
                totals[metric["Name"]] = totals.get(metric["Name"], 0.0) + float(sum(values))
    return totals


class Seeder:
    """Stores connections the way the service does, against the stack's moto server."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        endpoints = stack.endpoints
        self.settings = load_settings(
            {
                "TABLE_NAME": endpoints["table"],
                "TOKEN_KEY_ID": endpoints["key"],
                "INTUIT_CLIENT_SECRET_ID": endpoints["secret"],
                **stack.intuit_env,
            }
        )
        self.http = requests.Session()
        self._local = threading.local()
        self._realms = iter(range(4_100_000_000, 4_200_000_000))
        self._lock = threading.Lock()

    def _vault(self) -> TokenVault:
        vault = getattr(self._local, "vault", None)
        if vault is None:
            session = boto3.session.Session(region_name=REGION, **DUMMY_CREDENTIALS)
            resource = session.resource("dynamodb", endpoint_url=self.stack.aws)
            vault = vault_over(
                settings=self.settings,
                store=TableRepositories(resource.Table(self.settings.table_name)),
                cipher=TokenCipher(
                    session.client("kms", endpoint_url=self.stack.aws), self.settings.token_key_id
                ),
                intuit=lambda: None,  # type: ignore[arg-type,return-value]  # never refreshes
            )
            self._local.vault = vault
        return vault

    def seed(self, kind: Kind) -> Seeded:
        with self._lock:
            realm_id = str(next(self._realms))
        response = self.http.post(
            f"{self.stack.intuit}/_sim/issue-tokens",
            json={"client_id": CLIENT_ID, "realm_id": realm_id},
            timeout=10,
        )
        response.raise_for_status()
        body = response.json()
        vault = self._vault()
        now = time.time()
        refreshed_at = now - kind.refreshed_ago
        rt_left = -60.0 if kind.refresh_expired else float(body["x_refresh_token_expires_in"])
        tokens = TokenSet(
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            expires_in=int(kind.refreshed_ago + kind.access_left),
            refresh_token_expires_in=int(kind.refreshed_ago + rt_left),
            refresh_token_hard_expires_in=(
                None if kind.hard_left is None else int(kind.refreshed_ago + kind.hard_left)
            ),
            obtained_at=refreshed_at,
        )
        used_at = None if kind.used_ago is None else now - kind.used_ago
        conn = store_tokens(vault, realm_id, tokens, f"tenant-{kind.name}", used_at)
        assert conn.due_at is not None
        # due now (its due time was computed while storing, which can take a second on a busy
        # machine) or not for minutes at least
        stored = time.time()
        assert (conn.due_at <= stored + 1) == kind.due, (kind.name, conn.due_at - stored)
        if kind.revoked:
            self.http.post(
                f"{self.stack.intuit}/_sim/revoke-realm", json={"realm_id": realm_id}, timeout=10
            ).raise_for_status()
        return Seeded(realm_id, kind, sha256(body["refresh_token"]))


def refresh_calls(stack: Any) -> list[dict[str, Any]]:
    response = requests.get(f"{stack.intuit}/_sim/refresh-calls", timeout=10)
    response.raise_for_status()
    calls: list[dict[str, Any]] = response.json()
    return calls


def queue_depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


@pytest.fixture
def stack(tmp_path):
    with start_devstack(
        tmp_path,
        parameter_overrides={"WorkerMaxConcurrency": "8"},
        env={
            "INTUIT_CLIENT_ID": CLIENT_ID,
            "INTUIT_CLIENT_SECRET": CLIENT_SECRET,
            "INTUIT_TIMEOUT_SECONDS": "5",
            "POWERTOOLS_LOG_LEVEL": "WARNING",  # 500 refreshes: keep the log to what we read
            # Every run is due for a stale pass, so each one after the first checks the queue
            # depth first (the real GetQueueAttributes, which the IAM test sees)
            "SWEEP_REQUEUE_SECONDS": "0",
        },
        extra_args=("--no-schedule",),
    ) as running:
        yield running


def test_one_sweep_refreshes_exactly_the_due_connections_once(stack):
    assert stack.endpoints.get("events_queue"), "the devstack copies lifecycle events to SQS"
    sqs = stack.boto3_client("sqs")
    refresh_queue = stack.endpoints["queues"]["RefreshQueue"]
    events_queue = stack.endpoints["events_queue"]

    # Given 500 connections of mixed due times with genuine tokens
    seeder = Seeder(stack)
    with ThreadPoolExecutor(max_workers=8) as pool:
        seeded = list(pool.map(seeder.seed, [k for k in KINDS for _ in range(k.count)]))
    assert len(seeded) == TOTAL == 500
    due = [s for s in seeded if s.kind.due]
    not_due = [s for s in seeded if not s.kind.due]
    assert len(due) == DUE
    assert refresh_calls(stack) == []

    # When one sweep runs, and another right after it (the worker is still busy)
    first = stack.run_schedule("RefreshSweepFunction")
    second = stack.run_schedule("RefreshSweepFunction")

    # Then the first enqueued every due connection and the second nothing: it skipped what the
    # first remembered, and its stale pass stood back while the queue held messages
    assert first["due"] == first["enqueued"] == DUE, first
    assert first["failed"] == 0 and first["complete"] is True and first["shards"] == 16
    assert first["stood_aside"] is False and first["requeued"] == 0
    assert second["enqueued"] == second["requeued"] == 0, second
    assert second["stood_aside"] is False and second["complete"] is True

    # and once the worker has drained the queue, each due connection was refreshed exactly once
    deadline = time.monotonic() + 75
    while time.monotonic() < deadline:
        if len(refresh_calls(stack)) >= DUE and queue_depth(sqs, refresh_queue) == 0:
            break
        time.sleep(0.25)
    time.sleep(0.5)  # anything still in flight would show up now
    calls = refresh_calls(stack)
    by_token: dict[str, int] = {}
    for call in calls:
        by_token[call["refresh_token_sha256"]] = by_token.get(call["refresh_token_sha256"], 0) + 1
    assert len(calls) == DUE, stack.log_tail()
    assert {s.token_sha256: 1 for s in due} == by_token
    assert not {s.token_sha256 for s in not_due} & set(by_token)
    assert queue_depth(sqs, refresh_queue) == 0

    # and the stored state agrees: refreshed ones moved a version, dead ones are flagged
    table = stack.boto3_client("dynamodb")
    for s in seeded[::7]:
        item = table.get_item(
            TableName=stack.endpoints["table"],
            Key={k: {"S": v} for k, v in connection_key(s.realm_id).items()},
            ConsistentRead=True,
        )["Item"]
        if s.kind.name == "dead":
            assert item["status"]["S"] == "needs_reauthorization"
        else:
            assert item["status"]["S"] == "active"
            assert float(item["version"]["N"]) == (2 if s.kind.due else 1)

    # When a sweep runs again (the queue is empty: a stale pass from the bottom of each shard):
    # nothing is due, nothing reaches Intuit
    third = stack.run_schedule("RefreshSweepFunction")
    assert third["due"] == third["enqueued"] == third["requeued"] == 0, third
    time.sleep(1.0)
    assert len(refresh_calls(stack)) == DUE

    # Lifecycle events arrived on the bus: one expiring per connection for its threshold, one
    # needs_reauthorization per dead connection, nothing else from the refresh path
    events = drain_events(sqs, events_queue)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        assert event["source"] == "qbo-connect"
        by_type.setdefault(event["detail-type"], []).append(event["detail"])
    kind_of = {s.realm_id: s.kind.name for s in seeded}
    expiring = by_type.get("connection.expiring", [])
    assert sorted(e["realm_id"] for e in expiring) == sorted(
        s.realm_id for s in seeded if s.kind.name in EXPECTED_THRESHOLD
    )
    for detail in expiring:
        kind = kind_of[detail["realm_id"]]
        assert detail["threshold_days"] == EXPECTED_THRESHOLD[kind]
        assert detail["tenant_id"] == f"tenant-{kind}"
        assert 0 < detail["days_left"] <= detail["threshold_days"]
        assert detail["hard_expires_at"].endswith("Z")
    dead = by_type.get("connection.needs_reauthorization", [])
    assert sorted(d["realm_id"] for d in dead) == sorted(
        s.realm_id for s in seeded if s.kind.name == "dead"
    )
    assert {d["reason"] for d in dead} == {"refresh_token_expired"}
    assert set(by_type) <= {"connection.expiring", "connection.needs_reauthorization"}

    # Metrics: the sweeps' EMF documents carry the counts; the worker's carry the outcomes
    totals = emf_totals(stack.log_text())
    # (ConnectionsDue counts what each run visited: the second run's skipped entries too)
    assert totals["ConnectionsDue"] == first["due"] + second["due"] + third["due"]
    assert totals["ConnectionsEnqueued"] == DUE
    assert totals["ConnectionsRequeued"] == 0 and totals["SweepStoodAside"] == 0
    assert totals["EnqueueFailed"] == 0 and totals["SweepIncomplete"] == 0
    assert "SweepDuration" in totals
    # Powertools keeps one metric registry per process; the local stack runs several worker
    # invocations in threads of one process, so a flush can interleave with another thread's
    # add. Lambda runs one invocation per container; here only bounds hold exactly.
    succeeded = DUE - 10
    assert 0 < totals.get("RefreshSucceeded", 0) <= succeeded
    assert 0 < totals.get("InvalidGrant", 0) <= 10
    assert 0 < totals.get("ExpiringNotified", 0) <= 30
