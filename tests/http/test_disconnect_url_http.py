"""Intuit's Disconnect URL over HTTP, against the local stack and its Intuit simulator.

``GET /disconnected?realmId=...`` is not authenticated. ConnectFunction answers at once with the
same page for every realm and queues the hint; the refresh worker verifies it out of band, at
most once per realm per day. So a forged hint for a healthy realm must change nothing (not a
byte of the item, no event, no refresh at Intuit), while one that follows a real revocation at
Intuit (the simulator's ``/_sim/revoke-realm``, what Intuit does when a user disconnects the
app inside QuickBooks) marks the connection disconnected and emits exactly one
``connection.disconnected`` event. Events are read from the stack's events queue (an
EventBridge rule copies every ``qbo-connect`` event there).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from devstack.process import DevstackProcess
from tests.helpers.events import drain_events as drain_sqs
from tests.helpers.stack import module_stack

COOKIE = "__Host-qbo_connect_state"
TIMEOUT = 10

pytestmark = pytest.mark.timeout(180)


stack = module_stack(
    "disconnect-url",
    parameter_overrides={"AppName": "Acme Books"},
    extra_args=["--no-schedule", "--auto-approve"],
)


def connect(stack: DevstackProcess, realm: str, tenant: str) -> None:
    """The whole connect flow as a browser runs it (the state cookie carried by hand:
    ``requests`` never sends a ``Secure`` cookie over http://)."""
    stack.sim("POST", "/_sim/config", {"auto_approve": True, "next_realm_id": realm})
    link = stack.invoke(
        "ConnectionsFunction", {"action": "create_connect_link", "tenant_id": tenant}
    )
    http = requests.Session()
    start = http.get(link["url"] + "&go=1", allow_redirects=False, timeout=TIMEOUT)
    assert start.status_code == 302, start.text
    cookie = start.headers["Set-Cookie"].split(";", 1)[0]
    assert cookie.startswith(COOKIE + "=")
    approved = http.get(start.headers["Location"], allow_redirects=False, timeout=TIMEOUT)
    assert approved.status_code == 302, approved.text
    done = http.get(
        approved.headers["Location"],
        headers={"Cookie": cookie},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert done.status_code == 200, done.text


def item(stack: DevstackProcess, realm: str) -> dict[str, Any]:
    return stack.boto3_client("dynamodb").get_item(
        TableName=stack.endpoints["table"],
        Key={"pk": {"S": f"REALM#{realm}"}, "sk": {"S": "CONNECTION"}},
        ConsistentRead=True,
    )["Item"]


def drain_events(stack: DevstackProcess) -> list[dict[str, Any]]:
    return drain_sqs(stack.boto3_client("sqs"), stack.endpoints["events_queue"])


def hint(stack: DevstackProcess, realm: str) -> requests.Response:
    response = requests.get(
        f"{stack.api}/disconnected",
        params={"realmId": realm},
        allow_redirects=False,
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<h1>QuickBooks disconnected</h1>" in response.text
    assert "If you just disconnected Acme Books in QuickBooks" in response.text
    return response


def verified(stack: DevstackProcess, realm: str) -> None:
    """Wait until the worker has taken the realm's hint: its cool-down is stored and the
    refresh queue holds nothing, visible or in flight."""
    dynamodb, sqs = stack.boto3_client("dynamodb"), stack.boto3_client("sqs")
    queue = stack.endpoints["queues"]["RefreshQueue"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cooldown = dynamodb.get_item(
            TableName=stack.endpoints["table"],
            Key={"pk": {"S": f"COOLDOWN#DISCONNECT_HINT#{realm}"}, "sk": {"S": "COOLDOWN"}},
            ConsistentRead=True,
        ).get("Item")
        counts = sqs.get_queue_attributes(
            QueueUrl=queue,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        if cooldown and not any(int(v) for v in counts.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"the hint for {realm} was not verified within 60 s")


def test_a_forged_hint_for_a_healthy_realm_changes_nothing(stack):
    # Given a healthy connection and a quiet event queue
    realm = "9130350000000001"
    connect(stack, realm, "tenant-healthy")
    drain_events(stack)
    before = item(stack, realm)
    refreshes_before = len(stack.sim("GET", "/_sim/refresh-calls"))

    # When anyone sends its realm to the Disconnect URL, twice, and the worker verifies it
    hint(stack, realm)
    hint(stack, realm)
    verified(stack, realm)

    # Then not a byte of the item changed, Intuit saw no refresh, and no event went out
    assert item(stack, realm) == before
    assert len(stack.sim("GET", "/_sim/refresh-calls")) == refreshes_before
    assert drain_events(stack) == []
    token = stack.invoke("GetTokenFunction", {"realm_id": realm})
    assert token.get("access_token"), token


def test_a_hint_after_a_revocation_disconnects_and_emits_one_event(stack):
    # Given a connection whose user then disconnects the app inside QuickBooks
    realm = "9130350000000002"
    connect(stack, realm, "tenant-gone")
    drain_events(stack)
    assert stack.sim("POST", "/_sim/revoke-realm", {"realm_id": realm})["revoked_grants"] == 1

    # When Intuit sends the browser to the Disconnect URL (and it is reloaded), and the
    # worker verifies the hint
    hint(stack, realm)
    hint(stack, realm)
    verified(stack, realm)

    # Then the connection is disconnected, its tokens deleted, and exactly one event went out
    stored = item(stack, realm)
    assert stored["status"]["S"] == "disconnected"
    assert stored["disconnect_reason"]["S"] == "disconnected_in_quickbooks"
    assert not {"access_token_enc", "refresh_token_enc", "data_key"} & set(stored)
    events = drain_events(stack)
    assert [e["detail-type"] for e in events] == ["connection.disconnected"]
    detail = events[0]["detail"]
    assert detail["realm_id"] == realm and detail["tenant_id"] == "tenant-gone"
    assert detail["reason"] == "disconnected_in_quickbooks"
    token = stack.invoke("GetTokenFunction", {"realm_id": realm})
    assert token["error"]["code"] == "not_connected"


def test_a_hint_for_an_unknown_or_malformed_realm_shows_the_same_page(stack):
    for realm in ("9130350000009999", "not-a-realm", ""):
        hint(stack, realm)
    verified(stack, "9130350000009999")
    assert drain_events(stack) == []
