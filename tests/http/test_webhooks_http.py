"""QuickBooks webhooks end to end over HTTP: Intuit (or the simulator) -> POST /webhooks ->
WebhookQueue -> WebhookProcessorFunction -> EventBridge, all in the local stack.

Events are read from the stack's events queue (an EventBridge rule copies every ``qbo-connect``
event there). "Nothing enqueued" is shown with a sentinel: after the refused requests, one valid
delivery is sent and waited for; the processor must have run exactly once (for the sentinel) and
only the sentinel's events may have appeared.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import pytest
import requests

from devstack.process import start_devstack
from tests.helpers.webhooks import (
    EventCollector,
    change,
    cloudevents_body,
    details,
    disconnect,
    legacy_body,
    new_realm,
    post_webhook,
    seed_connection,
    simulate_entity_change,
)

OVERLAP_SECONDS = 3
#: As a developer testing a real Intuit app through a tunnel would set it.
VERIFIER_TOKEN = "it-verifier-" + secrets.token_urlsafe(16)
MAX_BODY = 65536

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with start_devstack(
        tmp_path_factory.mktemp("webhooks"),
        env={
            "WEBHOOK_VERIFIER_OVERLAP_SECONDS": str(OVERLAP_SECONDS),
            "SECRET_MAX_AGE_SECONDS": "1",
            "WEBHOOK_MAX_BODY_BYTES": str(MAX_BODY),
            "INTUIT_WEBHOOK_VERIFIER_TOKEN": VERIFIER_TOKEN,
        },
        extra_args=("--no-schedule", "--no-connect-link"),
    ) as running:
        yield running


@pytest.fixture
def events(stack):
    collector = EventCollector(stack)
    collector.drain()
    collector.events.clear()
    return collector


def processor_invocations(stack: Any) -> int:
    return int(stack.health()["functions"]["WebhookProcessorFunction"]["invocations"])


def invocations_after_sentinel(stack: Any, before: int) -> int:
    """The processor's invocation count once the sentinel's invocation has been counted.

    The event is on the bus before the invocation returns (and is counted), so wait for the
    count to move, then a moment more for anything else in flight.
    """
    deadline = time.monotonic() + 10
    while processor_invocations(stack) <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    return processor_invocations(stack)


def sentinel(stack: Any, events: EventCollector) -> dict[str, Any]:
    """Send one valid change for a fresh realm and wait until it is published."""
    realm = new_realm()
    seed_connection(stack, realm, "tenant-sentinel")
    body = cloudevents_body([change(realm, "Customer", "1", "Create")], source="intuit.test")
    assert post_webhook(stack, body).status_code == 200
    (event,) = events.wait_for(lambda found: len(found) >= 1, realms=[realm])
    return event


def test_the_verifier_token_from_the_environment_is_the_local_secret(stack):
    assert stack.endpoints["webhook_url"] == f"{stack.api}/webhooks"
    assert stack.endpoints["webhook_verifier_token"] == VERIFIER_TOKEN
    secret = stack.boto3_client("secretsmanager").get_secret_value(SecretId=_secret_arn(stack))
    assert secret["SecretString"] == VERIFIER_TOKEN


def test_legacy_payload_with_two_changes_publishes_two_events_for_the_right_tenants(stack, events):
    # Given two realms of two tenants
    realm_a, realm_b = new_realm(), new_realm()
    seed_connection(stack, realm_a, "tenant-a")
    seed_connection(stack, realm_b, "tenant-b", environment="production")
    created = change(realm_a, "Customer", "11", "Create")
    body = legacy_body([created, change(realm_b, "Invoice", "22", "Delete", deletedId="21")])
    # When Intuit delivers one legacy notification
    response = post_webhook(stack, body)
    # Then it is accepted at once and two events reach the bus, one per tenant
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "changes": 2, "messages": 1}
    found = events.wait_for(lambda e: len(e) >= 2, realms=[realm_a, realm_b])
    assert len(found) == 2
    assert {e["source"] for e in found} == {"qbo-connect"}
    got = details(found)
    by_realm = {d["realm_id"]: d for d in got}
    assert by_realm[realm_a]["tenant_id"] == "tenant-a"
    assert by_realm[realm_a] | {"event_id": ""} == {
        "event_id": "",
        "realm_id": realm_a,
        "tenant_id": "tenant-a",
        "environment": "sandbox",
        "entity": "Customer",
        "entity_id": "11",
        "operation": "Create",
        "occurred_at": created["lastUpdated"],
        "source": "webhook",
    }
    assert by_realm[realm_b]["tenant_id"] == "tenant-b"
    assert by_realm[realm_b]["environment"] == "production"
    assert by_realm[realm_b]["operation"] == "Delete"
    assert by_realm[realm_b]["deleted_id"] == "21"
    assert by_realm[realm_a]["event_id"].startswith("legacy-")


def test_cloudevents_payload_with_two_changes_publishes_two_events(stack, events):
    realm_a, realm_b = new_realm(), new_realm()
    seed_connection(stack, realm_a, "tenant-ce-a")
    seed_connection(stack, realm_b, "tenant-ce-b")
    first = change(realm_a, "JournalEntry", "5", "Update")
    second = change(realm_b, "Bill", "6", "Void")
    body = cloudevents_body([first, second], source="intuit.test")

    response = post_webhook(stack, body)

    assert response.status_code == 200
    found = events.wait_for(lambda e: len(e) >= 2, realms=[realm_a, realm_b])
    got = {d["realm_id"]: d for d in details(found)}
    assert len(found) == 2
    assert got[realm_a]["tenant_id"] == "tenant-ce-a"
    assert got[realm_a]["entity"] == "JournalEntry"  # Intuit's spelling, not the type's
    assert got[realm_a]["operation"] == "Update"
    assert got[realm_a]["event_id"] == first["event_id"]  # the CloudEvents id is kept
    assert got[realm_b]["tenant_id"] == "tenant-ce-b"
    assert got[realm_b]["operation"] == "Void"
    assert got[realm_b]["event_id"] == second["event_id"]


def test_refused_deliveries_answer_401_or_413_and_enqueue_nothing(stack, events):
    realm = new_realm()
    seed_connection(stack, realm, "tenant-refused")
    body = legacy_body([change(realm, "Customer", "1", "Update")])
    token = stack.endpoints["webhook_verifier_token"]
    before = processor_invocations(stack)

    wrong = post_webhook(stack, body, token="not-the-verifier-token")
    missing = post_webhook(stack, body, token="")
    garbage = post_webhook(stack, body, signature="%%% not base64 %%%")
    tampered_body = body.replace(b'"Update"', b'"Delete"')
    tampered = post_webhook(stack, tampered_body, signature=post_webhook_signature(body, token))
    padding = b" " * (MAX_BODY + 1 - len(body))
    oversized = post_webhook(stack, body + padding)

    assert [r.status_code for r in (wrong, missing, garbage, tampered)] == [401] * 4
    assert wrong.json() == {"error": "invalid_signature"}
    assert missing.json() == {"error": "missing_signature"}
    assert oversized.status_code == 413
    assert oversized.json() == {"error": "payload_too_large"}
    assert "Traceback" not in wrong.text
    # The sentinel is the only thing the processor ever saw after the refusals.
    sentinel(stack, events)
    assert invocations_after_sentinel(stack, before) - before == 1
    assert events.entity_events([realm]) == []


def post_webhook_signature(body: bytes, token: str) -> str:
    from tests.helpers.webhooks import sign

    return sign(body, token)


def test_one_event_delivered_three_times_is_published_once(stack, events):
    realm = new_realm()
    seed_connection(stack, realm, "tenant-dup")
    cloud = cloudevents_body([change(realm, "Payment", "9", "Create")], source="intuit.test")
    legacy = legacy_body([change(realm, "Payment", "10", "Update")])

    answers = [post_webhook(stack, body).status_code for body in (cloud, legacy) for _ in range(3)]

    assert answers == [200] * 6
    sentinel(stack, events)  # every delivery above was processed before it
    found = events.wait_for(lambda e: len(e) >= 2, realms=[realm])
    time.sleep(1)  # room for a wrongly duplicated event to show up
    events.drain()
    found = events.entity_events([realm])
    assert sorted(d["entity_id"] for d in details(found)) == ["10", "9"]


def test_a_signed_body_that_is_no_intuit_payload_is_kept_on_the_dlq(stack, events):
    # Given a correctly signed body Intuit never documented
    body = b'{"eventNotifications": "surprise"}'
    before = processor_invocations(stack)

    response = post_webhook(stack, body)

    # Then Intuit gets its 200 (a retry could never succeed, and would hold the feed back) ...
    assert response.status_code == 200
    reference = response.json()["reference"]
    # ... nothing reaches the processor, and the body waits on the DLQ for the operator
    sentinel(stack, events)
    assert invocations_after_sentinel(stack, before) - before == 1
    sqs = stack.boto3_client("sqs")
    dlq = stack.endpoints["queues"]["WebhookDeadLetterQueue"]
    kept = [
        json.loads(m["Body"])
        for m in sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    ]
    (record,) = [k for k in kept if k.get("reference") == reference]
    assert base64.b64decode(record["body_base64"]) == body
    assert "eventNotifications" in record["reason"]


def test_changes_for_realms_not_connected_are_dropped(stack, events):
    unknown, gone, connected = new_realm(), new_realm(), new_realm()
    seed_connection(stack, gone, "tenant-gone")
    disconnect(stack, gone)
    seed_connection(stack, connected, "tenant-here")
    body = legacy_body(
        [
            change(unknown, "Customer", "1", "Create"),
            change(gone, "Customer", "2", "Create"),
            change(connected, "Customer", "3", "Create"),
        ]
    )

    assert post_webhook(stack, body).status_code == 200

    found = events.wait_for(lambda e: len(e) >= 1, realms=[unknown, gone, connected])
    sentinel(stack, events)
    found = events.entity_events([unknown, gone, connected])
    assert [d["realm_id"] for d in details(found)] == [connected]


def test_simulator_sends_signed_webhooks_in_both_shapes(stack, events):
    realm = new_realm()
    seed_connection(stack, realm, "tenant-sim")
    for shape, entity_id in (("legacy", "31"), ("cloudevents", "32")):
        response = requests.post(
            f"{stack.intuit}/_sim/webhooks/send",
            json={
                "shape": shape,
                "wait": 20,
                "changes": [
                    {"realm_id": realm, "name": "Estimate", "id": entity_id, "operation": "Emailed"}
                ],
            },
            timeout=30,
        )
        response.raise_for_status()
        delivery = response.json()
        assert delivery["status"] == "delivered", delivery
        assert delivery["shape"] == shape
    # And after a simulated entity change in the company
    simulate_entity_change(stack, realm, "Vendor", "33", "Merge", deletedId="34")

    found = events.wait_for(lambda e: len(e) >= 3, realms=[realm])
    got = {d["entity_id"]: d for d in details(found)}
    assert got["31"]["operation"] == "Emailed" and got["31"]["tenant_id"] == "tenant-sim"
    assert got["32"]["entity"] == "Estimate"
    assert got["33"]["operation"] == "Merge" and got["33"]["deleted_id"] == "34"


def test_simulator_retries_a_refused_delivery_on_the_compressed_schedule(stack, events):
    realm = new_realm()
    seed_connection(stack, realm, "tenant-retry")
    sim = stack.intuit
    token = stack.endpoints["webhook_verifier_token"]
    # Given the simulator signs with a token the service does not know
    requests.post(f"{sim}/_sim/webhooks/config", json={"verifier_token": "stale"}, timeout=10)
    try:
        response = requests.post(
            f"{sim}/_sim/webhooks/send",
            json={
                "changes": [{"realm_id": realm, "name": "Item", "id": "7", "operation": "Update"}]
            },
            timeout=10,
        )
        delivery_id = response.json()["id"]
        deadline = time.monotonic() + 20
        attempts: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(attempts) < 3:
            time.sleep(0.2)
            attempts = _delivery(sim, delivery_id)["attempts"]
        # Then it is refused (401) and retried
        assert len(attempts) >= 3
        assert {a.get("status") for a in attempts} == {401}
    finally:
        # When the right token is back, the pending delivery goes through on a later retry
        requests.post(f"{sim}/_sim/webhooks/config", json={"verifier_token": token}, timeout=10)
    found = events.wait_for(lambda e: len(e) >= 1, realms=[realm], timeout=60)
    assert details(found)[0]["entity_id"] == "7"
    assert _delivery(sim, delivery_id)["status"] == "delivered"


def _delivery(sim: str, delivery_id: str) -> dict[str, Any]:
    listing = requests.get(f"{sim}/_sim/webhooks", timeout=10).json()
    return next(d for d in listing["deliveries"] if d["id"] == delivery_id)


def test_rotated_verifier_token_old_one_accepted_during_overlap_then_refused(stack, events):
    realm = new_realm()
    seed_connection(stack, realm, "tenant-rotate")
    old = stack.endpoints["webhook_verifier_token"]
    new = "rotated-" + base64.urlsafe_b64encode(b"a new verifier token!").decode()
    secrets = stack.boto3_client("secretsmanager")
    secret_id = _secret_arn(stack)

    def deliver(token: str, entity_id: str) -> int:
        body = legacy_body([change(realm, "Customer", entity_id, "Update")])
        return post_webhook(stack, body, token=token).status_code

    secrets.put_secret_value(SecretId=secret_id, SecretString=new)
    rotated_at = time.time()
    # A container re-reads the secret early on an unknown signature, but at most once per
    # max age (1 s here): wait that long, as Intuit's own retry would.
    time.sleep(1.2)
    try:
        assert deliver(new, "1") == 200
        assert deliver(old, "2") == 200  # within the overlap
        time.sleep(max(0.0, rotated_at + OVERLAP_SECONDS + 1.5 - time.time()))
        assert deliver(old, "3") == 401  # after it
        assert deliver(new, "4") == 200
        found = events.wait_for(lambda e: len(e) >= 3, realms=[realm])
        assert sorted(d["entity_id"] for d in details(found)) == ["1", "2", "4"]
    finally:
        secrets.put_secret_value(SecretId=secret_id, SecretString=old)
        # The service reads the secret again within its max age (1 s here).
        deadline = time.monotonic() + 10
        while deliver(old, "5") != 200 and time.monotonic() < deadline:
            time.sleep(0.5)


def _secret_arn(stack: Any) -> str:
    secrets = stack.boto3_client("secretsmanager")
    for page in secrets.get_paginator("list_secrets").paginate():
        for entry in page["SecretList"]:
            if entry["Name"].endswith("WebhookVerifierSecret"):
                return str(entry["ARN"])
    raise AssertionError("no WebhookVerifierSecret in the local stack")


def test_no_verifier_token_signature_or_body_in_the_stack_log(stack, events):
    realm = new_realm()
    seed_connection(stack, realm, "tenant-log")
    body = legacy_body([change(realm, "Customer", "marker-entity-8812", "Create")])
    signature = post_webhook_signature(body, VERIFIER_TOKEN)
    assert post_webhook(stack, body, signature=signature).status_code == 200
    events.wait_for(lambda e: len(e) >= 1, realms=[realm])
    text = stack.log_text()
    assert VERIFIER_TOKEN not in text
    assert signature not in text
    assert "lastUpdated" not in text  # no body


def test_processor_failure_is_retried_then_dead_lettered(tmp_path):
    # Given a stack whose event bus disappears (EventBridge refuses every event)
    with start_devstack(
        tmp_path,
        parameter_overrides={"EventBusName": "qbo-webhooks-failing"},
        env={"WEBHOOK_RETRY_BASE_SECONDS": "0", "INTUIT_WEBHOOK_VERIFIER_TOKEN": None},
        extra_args=("--no-schedule", "--no-connect-link"),
    ) as failing:
        # (and, without INTUIT_WEBHOOK_VERIFIER_TOKEN, a generated verifier token)
        generated = failing.endpoints["webhook_verifier_token"]
        assert len(generated) >= 32 and generated != VERIFIER_TOKEN
        realm = new_realm()
        seed_connection(failing, realm, "tenant-dlq")
        eb = failing.boto3_client("events")
        for rule in eb.list_rules(EventBusName="qbo-webhooks-failing")["Rules"]:
            targets = eb.list_targets_by_rule(Rule=rule["Name"], EventBusName=rule["EventBusName"])
            ids = [t["Id"] for t in targets["Targets"]]
            if ids:
                eb.remove_targets(Rule=rule["Name"], EventBusName=rule["EventBusName"], Ids=ids)
            eb.delete_rule(Name=rule["Name"], EventBusName=rule["EventBusName"])
        eb.delete_event_bus(Name="qbo-webhooks-failing")
        body = cloudevents_body([change(realm, "Customer", "1", "Create")], source="intuit.test")

        # When a delivery is accepted
        assert post_webhook(failing, body).status_code == 200

        # Then the processor tries it maxReceiveCount times and SQS moves it to the DLQ
        sqs = failing.boto3_client("sqs")
        dlq = failing.endpoints["queues"]["WebhookDeadLetterQueue"]
        deadline = time.monotonic() + 60
        messages: list[dict[str, Any]] = []
        while not messages and time.monotonic() < deadline:
            messages = sqs.receive_message(
                QueueUrl=dlq, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"]
            ).get("Messages", [])
        assert messages, "the failing message never reached the DLQ"
        dead = json.loads(messages[0]["Body"])
        assert dead["changes"][0]["realm_id"] == realm
        assert int(messages[0]["Attributes"]["ApproximateReceiveCount"]) >= 5
        assert failing.health()["functions"]["WebhookProcessorFunction"]["invocations"] >= 5
        assert failing.log_text().count("webhook message failed; SQS redelivers it") >= 5
