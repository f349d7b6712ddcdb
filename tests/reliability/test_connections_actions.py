"""ConnectionsFunction actions through the real handler, against moto server and the simulator.

get_connection and list_connections return metadata only; refresh makes exactly one refresh;
disconnect revokes at Intuit and then deletes the token material locally, even when Intuit's
revoke fails (and says so); import_connection proves a foreign refresh token with one refresh
and stores the result, or refuses clearly without storing anything and without spending a
token that belongs to someone else.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from qbo_connect.store.table import TOKEN_ATTRIBUTES
from tests.reliability.conftest import ACCOUNTING, Harness, new_realm, token_is_valid_at_intuit

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")


def assert_metadata_only(harness: Harness, response: dict[str, Any]) -> None:
    """No token value and no token-material field anywhere in a response."""
    text = json.dumps(response)
    for token in harness.ledger.tokens:
        assert token not in text
    for word in ("_enc", "data_key", "lease_owner", 'access_token"', 'refresh_token"'):
        assert word not in text, f"{word!r} in {text[:300]}"


def error_code(response: dict[str, Any]) -> str | None:
    return (response.get("error") or {}).get("code")


def test_get_connection_returns_metadata_only(harness: Harness, service) -> None:
    svc = service()
    realm_id, _ = harness.connect(tenant_id="tenant-meta")
    harness.stored_tokens(realm_id)  # make every stored value known to the check below
    response = svc.connections({"action": "get_connection", "realm_id": realm_id})
    conn = response["connection"]
    assert (conn["realm_id"], conn["tenant_id"], conn["status"]) == (
        realm_id,
        "tenant-meta",
        "active",
    )
    assert conn["scopes"] == [ACCOUNTING]
    assert conn["access_expires_at"] and conn["refresh_expires_at"]
    assert_metadata_only(harness, response)
    unknown = svc.connections({"action": "get_connection", "realm_id": new_realm()})
    assert error_code(unknown) == "not_connected"
    assert error_code(svc.connections({"action": "get_connection", "realm_id": "x1"})) == (
        "invalid_request"
    )


def test_list_connections_by_tenant_is_paginated(harness: Harness, service) -> None:
    svc = service()
    tenant = f"tenant-list-{new_realm()}"
    mine = {harness.connect(tenant_id=tenant)[0] for _ in range(5)}
    harness.connect(tenant_id=f"{tenant}-other")
    pages, seen, cursor = 0, [], None
    while True:
        event: dict[str, Any] = {"action": "list_connections", "tenant_id": tenant, "limit": 2}
        if cursor:
            event["cursor"] = cursor
        response = svc.connections(event)
        assert_metadata_only(harness, response)
        assert len(response["connections"]) <= 2
        seen += [c["realm_id"] for c in response["connections"]]
        pages += 1
        cursor = response["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(mine)  # every connection once, none of another tenant
    assert pages >= 3
    bad = svc.connections({"action": "list_connections", "tenant_id": tenant, "cursor": "!!"})
    assert error_code(bad) == "invalid_request"


def test_refresh_action_refreshes_exactly_once(harness: Harness, service) -> None:
    svc = service()
    realm_id, issued = harness.connect()
    harness.sim.reset_counters()
    response = svc.connections({"action": "refresh", "realm_id": realm_id})
    assert response["connection"]["status"] == "active"
    assert_metadata_only(harness, response)
    assert harness.sim.counters()["token.refresh_token.ok"] == 1
    conn = harness.connection(realm_id)
    assert conn is not None and conn.version == 2
    stored = harness.stored_tokens(realm_id)
    assert stored["access"] != issued["access_token"]
    assert token_is_valid_at_intuit(harness.sim, realm_id, stored["access"])


def assert_token_material_deleted(harness: Harness, realm_id: str) -> None:
    item = harness.item(realm_id)
    assert item is not None and item["status"] == "disconnected"
    assert not set(TOKEN_ATTRIBUTES) & set(item)
    assert "due_at" not in item and "lease_owner" not in item


def test_disconnect_revokes_at_intuit_then_deletes_token_material(
    harness: Harness, service
) -> None:
    svc = service()
    realm_id, _ = harness.connect(tenant_id="tenant-bye")
    response = svc.connections({"action": "disconnect", "realm_id": realm_id})
    assert response == {"realm_id": realm_id, "status": "disconnected", "revoked": True}
    grants = [g for g in harness.sim.grants() if g["realm_id"] == realm_id]
    assert [g["revoked"] for g in grants] == [True]
    assert_token_material_deleted(harness, realm_id)
    assert error_code(svc.get_token(realm_id)) == "not_connected"
    again = svc.connections({"action": "disconnect", "realm_id": realm_id})
    assert error_code(again) == "not_connected"
    (event,) = harness.aws.events.of("connection.disconnected", realm_id)
    assert event["detail"]["revoked"] is True and event["detail"]["tenant_id"] == "tenant-bye"


def test_disconnect_when_intuit_revoke_fails_still_disconnects_locally_and_says_so(
    harness: Harness, service
) -> None:
    svc = service()
    realm_id, _ = harness.connect()
    harness.sim.set_faults(status_5xx=10, endpoints=("revoke",))
    response = svc.connections({"action": "disconnect", "realm_id": realm_id})
    assert (response["status"], response["revoked"]) == ("disconnected", False)
    assert "revoke failed" in response["revoke_error"]
    assert harness.sim.counters()["faults.5xx"] >= 1
    # Intuit still holds the grant (the response said so); locally nothing is left to use
    grants = [g for g in harness.sim.grants() if g["realm_id"] == realm_id]
    assert [g["revoked"] for g in grants] == [False]
    assert_token_material_deleted(harness, realm_id)
    (event,) = harness.aws.events.of("connection.disconnected", realm_id)
    assert event["detail"]["revoked"] is False


def test_import_connection_refreshes_once_and_stores(harness: Harness, service) -> None:
    svc = service()
    realm_id = new_realm()
    foreign = harness.issue(realm_id)  # tokens another system obtained
    harness.sim.reset_counters()
    response = svc.connections(
        {
            "action": "import_connection",
            "realm_id": realm_id,
            "tenant_id": "tenant-import",
            "refresh_token": foreign["refresh_token"],
            "environment": "sandbox",
        }
    )
    conn = response["connection"]
    assert (conn["realm_id"], conn["tenant_id"], conn["status"]) == (
        realm_id,
        "tenant-import",
        "active",
    )
    assert conn["company_name"] == harness.sim.company_name_for(realm_id)
    assert_metadata_only(harness, response)
    assert harness.sim.counters()["token.refresh_token.ok"] == 1
    # The imported connection serves tokens without another refresh, and they work
    token = svc.get_token(realm_id)["access_token"]
    assert token != foreign["access_token"]
    assert token_is_valid_at_intuit(harness.sim, realm_id, token)
    assert harness.sim.counters()["token.refresh_token"] == 1
    (event,) = harness.aws.events.of("connection.created", realm_id)
    assert event["detail"]["imported"] is True


def test_import_with_a_bad_token_is_refused_and_stores_nothing(harness: Harness, service) -> None:
    svc = service()
    realm_id = new_realm()
    harness.issue(realm_id)
    bogus = "RT1-sim-not-a-token-this-intuit-ever-issued-0000"
    harness.ledger.add(bogus)
    response = svc.connections(
        {
            "action": "import_connection",
            "realm_id": realm_id,
            "tenant_id": "tenant-import",
            "refresh_token": bogus,
        }
    )
    assert error_code(response) == "invalid_request"
    assert "rejected the refresh token" in response["error"]["message"]
    assert harness.item(realm_id) is None
    assert harness.sim.counters()["token.refresh_token.invalid_grant"] == 1


def test_import_of_a_realm_held_by_another_tenant_is_refused_without_calling_intuit(
    harness: Harness, service
) -> None:
    svc = service()
    realm_id, _ = harness.connect(tenant_id="tenant-owner")
    before = harness.item(realm_id)
    foreign = harness.issue(realm_id)
    harness.sim.reset_counters()
    response = svc.connections(
        {
            "action": "import_connection",
            "realm_id": realm_id,
            "tenant_id": "tenant-intruder",
            "refresh_token": foreign["refresh_token"],
        }
    )
    assert error_code(response) == "conflict"
    assert "another tenant" in response["error"]["message"]
    # Intuit was not called, so the other system's token was not spent, and nothing changed
    assert harness.sim.counters()["token"] == 0
    assert harness.item(realm_id) == before
