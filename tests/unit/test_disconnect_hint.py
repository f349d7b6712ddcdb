"""Intuit's Disconnect URL logic (disconnect_hint.DisconnectHints) on moto + the simulator.

The HTTP tests (tests/http/test_disconnect_url_http.py) prove the two headline cases
over the local stack; these cover the cases around them quickly: an outage is not a
disconnect, the rate limits, a connection that changed meanwhile, a retried write.
"""

from __future__ import annotations

import pytest

from qbo_connect import events as lifecycle
from qbo_connect.connect.disconnect_hint import REASON
from tests.helpers.store import disconnect_hints
from tests.unit.builders import connect, make_settings, make_vault

REALM = "9130357766042906"
KEY = {"pk": f"REALM#{REALM}", "sk": "CONNECTION"}


@pytest.fixture
def vault(aws, sim):
    return make_vault(make_settings(aws, sim, invalid_grant_window_seconds=3600))


def test_a_healthy_realm_with_a_valid_access_token_is_left_untouched(vault, sim):
    connect(vault, sim, realm_id=REALM)
    before = vault.connections.table.get_item(Key={"pk": f"REALM#{REALM}", "sk": "CONNECTION"})[
        "Item"
    ]
    assert disconnect_hints(vault).handle(REALM, "203.0.113.9") == "still_connected"
    after = vault.connections.table.get_item(Key={"pk": f"REALM#{REALM}", "sk": "CONNECTION"})[
        "Item"
    ]
    assert after == before
    assert sim.refresh_calls() == []
    assert vault.events.published == []


def test_a_healthy_realm_with_an_expired_access_token_gets_one_ordinary_refresh(vault, sim):
    connect(vault, sim, realm_id=REALM, access_expires_in=0)
    assert disconnect_hints(vault).handle(REALM, "203.0.113.9") == "still_connected"
    conn = vault.connections.get_connection(REALM)
    assert conn is not None and conn.status == "active" and conn.version == 2
    assert len(sim.refresh_calls()) == 1
    assert vault.events.of(lifecycle.DISCONNECTED) == []


def test_invalid_grant_during_an_outage_is_not_a_disconnect(vault, sim):
    # Given Intuit's token endpoint answers invalid_grant (an outage), the API still works
    connect(vault, sim, realm_id=REALM)
    sim.set_faults(invalid_grant=10, endpoints=("token",))
    conn = vault.connections.get_connection(REALM)
    assert conn is not None
    # Then the valid access token proves the grant alive: nothing is refreshed or changed
    assert disconnect_hints(vault).handle(REALM, "203.0.113.9") == "still_connected"
    assert vault.connections.get_connection(REALM).version == conn.version  # type: ignore[union-attr]


def test_one_refusal_alone_is_not_confirmation(vault, sim):
    # Given an expired access token (no probe possible) and a refresh refused
    connect(vault, sim, realm_id=REALM, access_expires_in=0)
    sim.set_faults(invalid_grant=10, endpoints=("token",))
    assert disconnect_hints(vault).handle(REALM, "203.0.113.9") == "unconfirmed"
    conn = vault.connections.get_connection(REALM)
    assert conn is not None and conn.status == "active" and conn.refresh_token_enc
    assert vault.events.of(lifecycle.DISCONNECTED) == []


def test_a_revoked_grant_is_disconnected_once_and_the_realm_is_rate_limited(vault, sim):
    connect(vault, sim, realm_id=REALM, tenant_id="tenant-z")
    sim.revoke_realm(REALM)
    hints = disconnect_hints(vault)
    assert hints.handle(REALM, "203.0.113.9") == "disconnected"
    assert hints.handle(REALM, "198.51.100.1") == "realm_rate_limited"
    conn = vault.connections.get_connection(REALM)
    assert conn is not None and conn.status == "disconnected" and conn.refresh_token_enc is None
    assert vault.events.of(lifecycle.DISCONNECTED) == [
        {"realm_id": REALM, "tenant_id": "tenant-z", "reason": REASON}
    ]


def test_one_source_gets_a_bounded_number_of_verifications(aws, sim):
    vault = make_vault(make_settings(aws, sim, disconnect_hint_source_limit=2))
    hints = disconnect_hints(vault)
    verdicts = [hints.handle(f"91303577660429{i:02d}", "203.0.113.9") for i in range(3)]
    assert verdicts == ["not_connected", "not_connected", "source_rate_limited"]
    assert hints.handle("9130357766042999", "203.0.113.10") == "not_connected"
    assert hints.handle("not a realm", "203.0.113.11") == "invalid_realm"
    # The table holds no source address, only its hash.
    assert "203.0.113" not in str(vault.connections.table.scan()["Items"])


def test_the_disconnect_write_loses_to_a_newer_version_and_recognises_its_own_retry(vault, sim):
    conn, _ = connect(vault, sim, realm_id=REALM)
    store = vault.connections
    stale = store.mark_disconnected_by_intuit(
        REALM, seen_version=conn.version - 1, reason=REASON, marker="m1", now=1.0
    )
    assert stale is None
    first = store.mark_disconnected_by_intuit(
        REALM, seen_version=conn.version, reason=REASON, marker="m2", now=1.0
    )
    assert first is not None and first.status == "active"  # the item as it was before
    # boto3 retrying a write that applied but lost its answer: the condition now fails, and
    # the marker tells the caller it was its own write (so the one event still goes out).
    retried = store.mark_disconnected_by_intuit(
        REALM, seen_version=conn.version, reason=REASON, marker="m2", now=1.0
    )
    assert retried is not None and retried.tenant_id == conn.tenant_id
    other = store.mark_disconnected_by_intuit(
        REALM, seen_version=conn.version, reason=REASON, marker="m3", now=1.0
    )
    assert other is None
