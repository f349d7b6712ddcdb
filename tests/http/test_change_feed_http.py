"""The change feed end to end over HTTP: the simulator's changes reach the bus once each,
whether a webhook announced them, CDC reconciliation found them, or both.

One local stack in production mode (so CorePlus is metered and the schedule can stand back),
its reconciliation period shortened so a realm is due seconds after it is connected, and its
schedule run on demand. Events are read from the stack's events queue.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from devstack.process import DevstackProcess, start_devstack
from tests.helpers.webhooks import EventCollector, legacy_body, post_webhook
from tests.http.test_cli_http import Cli

pytestmark = pytest.mark.timeout(300)
CLIENT_ID = "change-feed-client"
TENANT = "acme-books"
#: A realm is due again this long after a run (a first run lands within it).
PERIOD_HOURS = 0.001
SOFT_LIMIT = 900  # CorePlusMonthlyBudget 1000 at 90 %


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[DevstackProcess]:
    process = start_devstack(
        tmp_path_factory.mktemp("changes"),
        env={"INTUIT_CLIENT_ID": CLIENT_ID, "INTUIT_CLIENT_SECRET": "change-feed-secret-value"},
        extra_args=[
            "--no-schedule",
            "--auto-approve",
            "--parameter-overrides",
            "IntuitEnvironment=production",
            f"ReconcileEveryHours={PERIOD_HOURS}",
            "CorePlusMonthlyBudget=1000",
            "ReconcileEntities=Customer,Invoice,Vendor",
        ],
    )
    try:
        yield process
        # Nothing the tests issued (refresh and access tokens) reached the stack's log
        logged = process.log_text()
        assert _issued and not [t for t in _issued if t in logged], "a token was logged"
    finally:
        process.stop()


_issued: list[str] = []


@pytest.fixture
def events(stack) -> EventCollector:
    collector = EventCollector(stack)
    collector.drain()
    collector.events.clear()
    return collector


_realms = iter(range(1, 10**6))


def connect(stack: DevstackProcess) -> str:
    """A company imported for TENANT now: its change feed starts here."""
    realm = f"9130356{int(time.time()) % 10**6:06d}{next(_realms):03d}"
    issued = stack.sim("POST", "/_sim/issue-tokens", {"client_id": CLIENT_ID, "realm_id": realm})
    _issued.extend(v for k, v in issued.items() if k.endswith("_token") and isinstance(v, str))
    answer = invoke(
        stack,
        {
            "action": "import_connection",
            "realm_id": realm,
            "tenant_id": TENANT,
            "refresh_token": issued["refresh_token"],
        },
    )
    assert "connection" in answer, answer
    return realm


def invoke(stack: DevstackProcess, payload: dict[str, Any]) -> dict[str, Any]:
    response = stack.lambda_client().invoke(
        FunctionName="ConnectionsFunction", Payload=json.dumps(payload)
    )
    assert "FunctionError" not in response, response
    return json.loads(response["Payload"].read())


def reconcile(stack: DevstackProcess, realm: str) -> dict[str, Any]:
    return invoke(stack, {"action": "reconcile_changes", "realm_id": realm, "tenant_id": TENANT})


def customer(stack: DevstackProcess, realm: str, name: str) -> str:
    """A customer created in QuickBooks itself; its id."""
    return str(new_customer(stack, realm, name)["Id"])


def new_customer(stack: DevstackProcess, realm: str, name: str) -> dict[str, Any]:
    """A customer created in QuickBooks itself, as QuickBooks stored it."""
    made = stack.sim(
        "POST",
        "/_sim/api/change",
        {
            "realm_id": realm,
            "entity": "Customer",
            "operation": "Create",
            "body": {"DisplayName": name},
        },
    )
    return dict(made["Customer"])


def drop_webhooks(stack: DevstackProcess, drop: bool) -> None:
    stack.sim("POST", "/_sim/webhooks/drop", {"drop": drop})


def by_entity(found: list[dict[str, Any]]) -> dict[str, list[str]]:
    """entity_id -> the sources it was published by, in order."""
    out: dict[str, list[str]] = {}
    for event in found:
        detail = event["detail"]
        out.setdefault(f"{detail['entity']}/{detail['entity_id']}", []).append(detail["source"])
    return out


def settle(events: EventCollector, realm: str, seconds: float = 1.5) -> list[dict[str, Any]]:
    """What reached the bus for ``realm`` once nothing more arrives for ``seconds``."""
    seen = -1
    while True:
        time.sleep(seconds)
        events.drain()
        found = events.entity_events([realm])
        if len(found) == seen:
            return found
        seen = len(found)


def test_changes_whose_webhooks_were_dropped_are_recovered_once(stack, events):
    # Given a connected company whose first change is delivered by webhook
    realm = connect(stack)
    first = customer(stack, realm, "Delivered Before")
    events.wait_for(lambda e: len(e) >= 1, realms=[realm])
    # When Intuit drops the deliveries of two changes, and delivers a later one again
    drop_webhooks(stack, True)
    try:
        lost = [customer(stack, realm, "Lost One"), customer(stack, realm, "Lost Two")]
    finally:
        drop_webhooks(stack, False)
    last = customer(stack, realm, "Delivered After")
    events.wait_for(lambda e: len(e) >= 2, realms=[realm])
    answer = reconcile(stack, realm)
    # Then exactly the missed changes are published by CDC, each once
    assert (answer["published"], answer["already_seen"], answer["partial"]) == (2, 2, False)
    found = settle(events, realm)
    assert by_entity(found) == {
        f"Customer/{first}": ["webhook"],
        f"Customer/{lost[0]}": ["cdc"],
        f"Customer/{lost[1]}": ["cdc"],
        f"Customer/{last}": ["webhook"],
    }
    # And a second run, and its overlap, publish nothing again
    again = reconcile(stack, realm)
    assert (again["published"], again["already_seen"]) == (0, 4)
    assert len(settle(events, realm, 1.0)) == 4
    status = invoke(stack, {"action": "change_status", "realm_id": realm, "tenant_id": TENANT})
    assert status["recovered"] == 2 and status["watermark"] == again["watermark"]


def test_a_change_delivered_by_both_paths_is_published_once_whichever_comes_first(stack, events):
    realm = connect(stack)
    # Webhook first, CDC second
    delivered = customer(stack, realm, "Both Paths")
    events.wait_for(lambda e: len(e) >= 1, realms=[realm])
    assert reconcile(stack, realm)["published"] == 0
    # CDC first (the webhook held back), the webhook second: Intuit's late retry
    drop_webhooks(stack, True)
    try:
        made = new_customer(stack, realm, "Late")
    finally:
        drop_webhooks(stack, False)
    assert reconcile(stack, realm)["published"] == 1
    late = legacy_body(
        [
            {
                "realm_id": realm,
                "name": "Customer",
                "id": made["Id"],
                "operation": "Create",
                "lastUpdated": made["MetaData"]["LastUpdatedTime"],
            }
        ]
    )
    assert post_webhook(stack, late).status_code == 200
    found = settle(events, realm)
    assert by_entity(found) == {
        f"Customer/{delivered}": ["webhook"],
        f"Customer/{made['Id']}": ["cdc"],
    }


def test_a_full_cdc_page_is_narrowed_until_every_change_is_published(stack, events):
    realm = connect(stack)
    drop_webhooks(stack, True)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            made = set(pool.map(lambda n: customer(stack, realm, f"Bulk {n:04d}"), range(1005)))
    finally:
        drop_webhooks(stack, False)
    stack.sim("POST", "/_sim/api/reset-counts", {})
    answer = reconcile(stack, realm)
    assert (answer["published"], answer["partial"]) == (1005, False)
    # One call for every entity, then Customer alone from just before its 1000th change
    counts = stack.sim("GET", f"/_sim/api/counts?realm_id={realm}", None)
    assert counts["cdc"] == 2, counts
    found = events.wait_for(lambda e: len(e) >= 1005, realms=[realm], timeout=90)
    ids = [e["detail"]["entity_id"] for e in found]
    assert set(ids) == made and len(ids) == len(made)


def test_a_realm_offline_longer_than_cdc_reaches_gets_one_resync_required(stack, events):
    realm = connect(stack)
    table = stack.boto3_resource("dynamodb").Table(stack.endpoints["table"])
    offline_since = time.time() - 31 * 86400
    table.update_item(
        Key={"pk": f"REALM#{realm}", "sk": "CHANGES"},
        UpdateExpression="SET watermark = :w",
        ExpressionAttributeValues={":w": Decimal(str(round(offline_since, 3)))},
    )
    first = reconcile(stack, realm)
    second = reconcile(stack, realm)
    assert first["resync_required"] is True and "resync_required" not in second
    events.drain()
    resyncs = [
        e["detail"]
        for e in events.events
        if e.get("detail-type") == "quickbooks.resync_required" and e["detail"]["realm_id"] == realm
    ]
    assert len(resyncs) == 1
    assert resyncs[0]["lost_from"] == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(offline_since))
    )


def test_the_schedule_stands_back_near_the_budget_and_catches_up_after(stack, events):
    realm = connect(stack)
    drop_webhooks(stack, True)
    try:
        lost = customer(stack, realm, "Lost While Near The Limit")
    finally:
        drop_webhooks(stack, False)
    time.sleep(PERIOD_HOURS * 3600 + 0.5)  # the realm's first run is due
    table = stack.boto3_resource("dynamodb").Table(stack.endpoints["table"])
    month = time.strftime("%Y-%m", time.gmtime())
    total = {"pk": f"USAGE#{month}", "sk": "TOTAL"}
    before = table.get_item(Key=total).get("Item", {}).get("coreplus_api", 0)
    # When the month's use is at 85 % of the soft limit
    table.update_item(
        Key=total,
        UpdateExpression="SET coreplus_api = :c",
        ExpressionAttributeValues={":c": Decimal(int(SOFT_LIMIT * 0.85))},
    )
    try:
        stack.sim("POST", "/_sim/api/reset-counts", {})
        stood = stack.run_schedule("RefreshSweepFunction")["reconcile"]
        # Then the schedule enqueues nothing and says why, and no CDC call is made
        assert stood["stood_back"] is True and stood["enqueued"] == 0, stood
        time.sleep(1.0)
        assert stack.sim("GET", f"/_sim/api/counts?realm_id={realm}", None)["cdc"] == 0
    finally:
        table.update_item(
            Key=total,
            UpdateExpression="SET coreplus_api = :c",
            ExpressionAttributeValues={":c": before},
        )
    # When use is back below / Then the next run catches the realm up through the worker
    resumed = stack.run_schedule("RefreshSweepFunction")["reconcile"]
    assert resumed["stood_back"] is False and resumed["enqueued"] >= 1, resumed
    found = events.wait_for(lambda e: len(e) >= 1, realms=[realm], timeout=60)
    assert by_entity(found) == {f"Customer/{lost}": ["cdc"]}


def test_the_cli_reconciles_a_realm_and_shows_the_feed_of_a_tenant(stack, events):
    realm = connect(stack)
    drop_webhooks(stack, True)
    try:
        customer(stack, realm, "Found By The CLI")
    finally:
        drop_webhooks(stack, False)
    cli = Cli(stack)
    run = cli("changes", "reconcile", realm, "--tenant", TENANT)
    assert run.returncode == 0, run.stderr
    assert f"Reconciled {realm}" in run.stdout and "1 published, 0 already seen" in run.stdout
    status = cli.json("changes", "status", "--tenant", TENANT)
    mine = [r for r in status["realms"] if r["realm_id"] == realm]
    assert mine and mine[0]["recovered"] == 1 and mine[0]["status"] == "active"
    table = cli("changes", "status", "--realm", realm)
    assert table.returncode == 0 and realm in table.stdout
    assert "webhooks are losing deliveries" in table.stderr
    other = cli("changes", "reconcile", realm, "--tenant", "someone-else")
    assert other.returncode != 0 and "not_connected" in (other.stdout + other.stderr)
    neither = cli("changes", "status")
    assert neither.returncode == 2 and "--realm" in neither.stderr
