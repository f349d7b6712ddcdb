"""Intuit's Disconnect URL: the page side queues a hint, the worker verifies it with Intuit.

``connect.disconnect_hint.announce`` runs in ConnectFunction; ``sweep.disconnect_check`` runs in
the refresh worker, on moto + the simulator here. The HTTP tests
(tests/http/test_disconnect_url_http.py) prove the headline cases over the local stack; these
cover the cases around them quickly: an outage is not a disconnect, a verdict never leans on an
earlier attempt's error, one verification per realm per day whoever asks, a retried write.
"""

from __future__ import annotations

import json
import time

import pytest

from qbo_connect import events as lifecycle
from qbo_connect.connect.disconnect_hint import announce
from qbo_connect.contracts import RefreshMessage
from qbo_connect.errors import RefreshUnavailable
from qbo_connect.store.cooldowns import Cooldowns
from qbo_connect.sweep.disconnect_check import REASON
from qbo_connect.sweep.worker import RefreshWorker
from tests.helpers.clock import Clock
from tests.helpers.store import disconnect_hints
from tests.unit.builders import connect, make_settings, make_vault

REALM = "9130357766042906"
KEY = {"pk": f"REALM#{REALM}", "sk": "CONNECTION"}
DAY = 86400


@pytest.fixture
def vault(aws, sim):
    return make_vault(make_settings(aws, sim, invalid_grant_window_seconds=3600))


# ----- the page side: the same for every realm --------------------------------------------------


def test_the_page_side_queues_one_message_per_well_formed_realm_and_reads_nothing():
    sent: list[str] = []
    # Any well-formed realm is queued, connected or not: nothing is read, so nothing differs
    assert announce(sent.append, REALM) == "queued"
    assert announce(sent.append, "9130350000009999") == "queued"
    assert [RefreshMessage.from_payload(json.loads(b)) for b in sent] == [
        RefreshMessage(realm_id=REALM, kind="disconnect_hint"),
        RefreshMessage(realm_id="9130350000009999", kind="disconnect_hint"),
    ]
    # A malformed one is not queued
    for bad in (None, "", "not-a-realm", "1" * 33, "٣١٤", "123\n"):
        assert announce(sent.append, bad) == "invalid_realm"
    assert len(sent) == 2


def test_a_queue_failure_never_fails_the_page():
    def broken(body: str) -> None:
        raise ConnectionError("SQS is down")

    assert announce(broken, REALM) == "failed"


# ----- the worker side --------------------------------------------------------------------------


def test_a_healthy_realm_with_a_valid_access_token_is_left_untouched(vault, sim):
    connect(vault, sim, realm_id=REALM)
    before = vault.connections.table.get_item(Key=KEY)["Item"]
    assert disconnect_hints(vault).handle(REALM) == "still_connected"
    assert vault.connections.table.get_item(Key=KEY)["Item"] == before
    assert sim.refresh_calls() == []
    assert vault.events.published == []


def test_the_probe_is_metered_as_a_coreplus_read_of_the_service_s_own(vault, sim):
    # Given a healthy realm and a revoked one (the probe answered 200, then 401)
    counted: list[tuple[str, str]] = []
    connect(vault, sim, realm_id=REALM, tenant_id="tenant-m")
    assert disconnect_hints(vault, usage=lambda *key: counted.append(key)).handle(REALM) == (
        "still_connected"
    )
    other = "9130357766042907"
    connect(vault, sim, realm_id=other, tenant_id="tenant-m")
    sim.revoke_realm(other)
    disconnect_hints(vault, usage=lambda *key: counted.append(key)).handle(other)
    # Then each CompanyInfo call QuickBooks answered is counted once, to the realm's tenant
    assert counted == [("tenant-m", REALM), ("tenant-m", other)]


def test_the_probe_takes_a_governor_slot_and_a_cooling_realm_is_not_probed(vault, sim):
    from qbo_connect.api.governor import Governor, Limits
    from qbo_connect.store.governor import GovernorTable

    table = vault.connections.table
    governor = Governor(GovernorTable(table), Limits())
    # Given a healthy realm: the probe is a QuickBooks call like any proxied one
    connect(vault, sim, realm_id=REALM)
    assert disconnect_hints(vault, governor=governor).handle(REALM) == "still_connected"
    item = table.get_item(Key={"pk": f"GOVERNOR#{REALM}", "sk": "GOVERNOR"})["Item"]
    assert item["next_at"] > 0  # its slot came from the realm's shared timeline
    # When QuickBooks throttled the realm (a cool-down every container honours)
    other = "9130357766042907"
    connect(vault, sim, realm_id=other)
    governor.cool_down(other, 60)
    calls = sim.counters().get("companyinfo", 0)
    # Then the hint sends nothing to QuickBooks: the refresh (Intuit's OAuth server) decides
    assert disconnect_hints(vault, governor=governor).handle(other) == "still_connected"
    assert sim.counters().get("companyinfo", 0) == calls


def test_a_healthy_realm_with_an_expired_access_token_gets_one_ordinary_refresh(vault, sim):
    connect(vault, sim, realm_id=REALM, access_expires_in=0)
    assert disconnect_hints(vault).handle(REALM) == "still_connected"
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
    assert disconnect_hints(vault).handle(REALM) == "still_connected"
    assert vault.connections.get_connection(REALM).version == conn.version  # type: ignore[union-attr]


def test_one_refusal_alone_is_not_confirmation(vault, sim):
    # Given an expired access token (no probe possible) and a refresh refused
    connect(vault, sim, realm_id=REALM, access_expires_in=0)
    sim.set_faults(invalid_grant=10, endpoints=("token",))
    assert disconnect_hints(vault).handle(REALM) == "unconfirmed"
    conn = vault.connections.get_connection(REALM)
    assert conn is not None and conn.status == "active" and conn.refresh_token_enc
    assert vault.events.of(lifecycle.DISCONNECTED) == []


@pytest.mark.parametrize("failure", ["lease_lost", "intuit_down"])
def test_the_verdict_never_leans_on_an_earlier_attempt_s_invalid_grant(aws, sim, failure):
    # Given a revoked grant whose earlier refresh left last_error = invalid_grant on the item
    vault = make_vault(
        make_settings(aws, sim, invalid_grant_window_seconds=3600, lease_wait_seconds=0.2)
    )
    connect(vault, sim, realm_id=REALM)
    sim.revoke_realm(REALM)
    with pytest.raises(RefreshUnavailable):
        vault.refresh(REALM)
    conn = vault.connections.get_connection(REALM)
    assert conn is not None and conn.last_error == "invalid_grant"
    # When this verification's own refresh loses the lease race, or meets Intuit down
    if failure == "lease_lost":
        now = time.time()
        vault.connections.acquire_lease(
            REALM, seen_version=conn.version, owner="another", now=now, until=now + 60
        )
    else:
        sim.set_faults(status_5xx=50, endpoints=("token",))
    # Then the probe's 401 alone confirms nothing: the connection is not disconnected
    assert disconnect_hints(vault).handle(REALM) == "unconfirmed"
    conn = vault.connections.get_connection(REALM)
    assert conn is not None and conn.status == "active" and conn.refresh_token_enc
    assert vault.events.of(lifecycle.DISCONNECTED) == []


def test_a_revoked_grant_is_disconnected_once_and_the_realm_verified_once_a_day(aws, sim):
    clock = Clock()
    vault = make_vault(make_settings(aws, sim, invalid_grant_window_seconds=3600))
    connect(vault, sim, realm_id=REALM, tenant_id="tenant-z")
    sim.revoke_realm(REALM)
    hints = disconnect_hints(vault, clock=clock)
    assert hints.handle(REALM) == "disconnected"
    calls = len(sim.refresh_calls())
    # However many hints follow within the day, none reaches Intuit or the item
    clock.now += DAY - 1
    assert [hints.handle(REALM) for _ in range(5)] == ["realm_rate_limited"] * 5
    assert len(sim.refresh_calls()) == calls
    conn = vault.connections.get_connection(REALM)
    assert conn is not None and conn.status == "disconnected" and conn.refresh_token_enc is None
    assert vault.events.of(lifecycle.DISCONNECTED) == [
        {"realm_id": REALM, "tenant_id": "tenant-z", "reason": REASON}
    ]
    # A day after the last verification the realm may be verified again
    clock.now += 1
    assert hints.handle(REALM) == "not_connected"


def test_hints_for_a_healthy_realm_cost_at_most_one_refresh_a_day(vault, sim):
    # Given a connection with no access token to probe (so a verification must refresh)
    connect(vault, sim, realm_id=REALM, access_expires_in=0)
    clock = Clock()
    hints = disconnect_hints(vault, clock=clock)
    # When an outsider sends a hint every 5 minutes for a day
    verdicts = []
    for _ in range(288):
        verdicts.append(hints.handle(REALM))
        clock.now += 300
    # Then one verification ran, with one refresh
    assert verdicts.count("still_connected") == 1
    assert len(sim.refresh_calls()) == 1


def test_a_cooldown_is_taken_once_per_interval_and_a_retried_take_is_refused(vault):
    cooldowns = Cooldowns(vault.connections.table)
    assert cooldowns.take("k", now=100.0, interval_seconds=60)
    # boto3 retrying the write that applied but lost its answer meets the taken key
    assert not cooldowns.take("k", now=100.0, interval_seconds=60)
    assert not cooldowns.take("k", now=159.9, interval_seconds=60)
    assert cooldowns.take("other", now=159.9, interval_seconds=60)
    assert cooldowns.take("k", now=160.0, interval_seconds=60)
    item = vault.connections.table.get_item(Key={"pk": "COOLDOWN#k", "sk": "COOLDOWN"})["Item"]
    assert "tenant_id" not in item and "due_shard" not in item and item["ttl"] > 220


def test_the_worker_verifies_hint_messages_and_always_acknowledges_them(vault, sim):
    connect(vault, sim, realm_id=REALM)
    sim.revoke_realm(REALM)
    worker = RefreshWorker(
        vault=vault,
        settings=vault.settings,
        min_remaining_ms=0,
        disconnect_hints=lambda: disconnect_hints(vault),
    )
    body = RefreshMessage(realm_id=REALM, kind="disconnect_hint").to_body()
    assert worker.process(body) == "hint_disconnected"
    assert worker.process(body) == "hint_realm_rate_limited"
    # A message of an unknown kind can never be processed: dropped
    assert worker.process(json.dumps({"realm_id": REALM, "kind": "explode"})) == "malformed"

    def failing() -> object:
        raise RuntimeError("boom")

    broken = RefreshWorker(
        vault=vault, settings=vault.settings, min_remaining_ms=0, disconnect_hints=failing
    )
    assert broken.process(body) == "hint_failed"


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


def test_the_handler_answers_every_realm_alike_without_touching_the_table(monkeypatch):
    # Given ConnectFunction's handler whose table and Intuit client fail if ever used
    from devstack.handlers import load_handler
    from qbo_connect.wiring import aws as aws_wiring
    from qbo_connect.wiring import connect as connect_wiring
    from qbo_connect.wiring import vault as vault_wiring
    from tests.unit.test_webhooks import Context

    def untouchable() -> None:
        raise AssertionError("the Disconnect URL must not read or call anything")

    sent: list[str] = []
    monkeypatch.setattr(aws_wiring, "table", untouchable)
    monkeypatch.setattr(vault_wiring, "intuit", untouchable)
    monkeypatch.setattr(connect_wiring, "send_disconnect_hint", sent.append)
    app = load_handler("connect", module_prefix="test_disconnect_hint")

    def hint(realm: str) -> dict:
        event = {
            "rawPath": "/disconnected",
            "rawQueryString": f"realmId={realm}",
            "queryStringParameters": {"realmId": realm},
            "headers": {},
            "requestContext": {"http": {"method": "GET"}, "stage": "$default"},
        }
        return app.lambda_handler(event, Context())

    # When hints come for a connected-looking realm, an unknown one and a malformed one
    answers = [hint(r) for r in (REALM, "9130350000009999", "not-a-realm")]
    # Then the same page answers each, and only the well-formed ones were queued
    assert {a["statusCode"] for a in answers} == {200}
    assert len({a["body"] for a in answers}) == 1
    assert [json.loads(b)["realm_id"] for b in sent] == [REALM, "9130350000009999"]
