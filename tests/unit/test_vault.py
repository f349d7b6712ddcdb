"""The refresh protocol against the simulator over HTTP (AWS in-process via moto)."""

from __future__ import annotations

import threading
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from qbo_connect.errors import (
    ConfigurationError,
    InvalidRequest,
    NeedsReauthorization,
    NotConnected,
    RefreshUnavailable,
)
from qbo_connect.store.connections import Connection
from qbo_connect.vault.protocol import TokenVault
from qbo_connect.vault.sealing import TokenCipher
from tests.helpers.threads import at_once
from tests.unit.builders import RecordingEvents, connect, make_settings, make_vault

REALM = "9130357766042906"


@pytest.fixture
def strict_sim(sim):
    sim.configure(refresh_grace_seconds=0)
    return sim


def failed_and_released(vault: TokenVault, answer: type[Exception], last_error: str) -> Connection:
    """A caller asks and is answered ``answer``; the connection, which must be back to its
    stored version 1 with no lease and ``last_error`` recorded."""
    with pytest.raises(answer):
        vault.get_token(REALM, 300)
    conn = vault.connections.get_connection(REALM)
    assert conn is not None
    assert (conn.lease_owner, conn.version, conn.last_error) == (None, 1, last_error)
    return conn


def test_warm_read_returns_the_stored_token_without_intuit_or_kms(aws, strict_sim):
    # Given a connection whose access token is fresh
    vault = make_vault(make_settings(aws, strict_sim))
    _, body = connect(vault, strict_sim)
    strict_sim.reset_counters()
    kms_before = vault.cipher.kms_calls
    # When it is read twice
    first = vault.get_token(REALM, 300)
    second = vault.get_token(REALM, 300)
    # Then the issued token comes back, Intuit is not called and KMS is not called again
    assert first.access_token == body["access_token"] == second.access_token
    assert strict_sim.counters().get("token", 0) == 0
    assert vault.cipher.kms_calls == kms_before


def test_expired_access_token_is_refreshed_once_and_rotation_is_stored(aws, strict_sim):
    vault = make_vault(make_settings(aws, strict_sim))
    _, body = connect(vault, strict_sim, access_expires_in=10)
    token = vault.get_token(REALM, 300)
    assert token.access_token != body["access_token"]
    conn = vault.connections.get_connection(REALM)
    assert conn.version == 2
    assert conn.previous_refresh_token_enc is None  # the superseded token is not kept
    # and the rotated refresh token works (strict mode: the old one would not)
    assert vault.refresh(REALM).version == 3
    assert strict_sim.counters()["token.refresh_token.ok"] == 2


def test_concurrent_readers_cause_exactly_one_refresh(aws, strict_sim):
    # Given an expired access token and a strict simulator (grace 0)
    vault = make_vault(make_settings(aws, strict_sim))
    connect(vault, strict_sim, access_expires_in=0)
    strict_sim.reset_counters()
    strict_sim.set_faults(latency_seconds=0.3)
    # When 20 threads ask at once (none may fail)
    results = at_once(20, lambda _: vault.get_token(REALM, 300).access_token)
    # Then one refresh reached Intuit and everyone got the same token
    assert len(set(results)) == 1
    assert strict_sim.counters()["token.refresh_token"] == 1


def test_transient_failures_leave_tokens_untouched(aws, strict_sim):
    vault = make_vault(make_settings(aws, strict_sim))
    connect(vault, strict_sim, access_expires_in=0)
    before = vault.connections.get_connection(REALM)
    strict_sim.set_faults(status_5xx=10)
    with pytest.raises(RefreshUnavailable):
        vault.get_token(REALM, 300)
    after = vault.connections.get_connection(REALM)
    assert (after.version, after.refresh_token_enc) == (before.version, before.refresh_token_enc)
    assert after.status == "active" and after.lease_owner is None
    strict_sim.clear_faults()
    assert vault.get_token(REALM, 300).access_token  # recovers once Intuit is back


def test_invalid_grant_burst_during_an_outage_does_not_kill_the_connection(aws, strict_sim):
    events = RecordingEvents()
    vault = make_vault(
        make_settings(aws, strict_sim, invalid_grant_window_seconds=3600), events=events
    )
    connect(vault, strict_sim, access_expires_in=0)
    strict_sim.set_faults(invalid_grant=5)
    for _ in range(5):
        with pytest.raises(RefreshUnavailable):
            vault.get_token(REALM, 300)
    conn = vault.connections.get_connection(REALM)
    assert conn.status == "active" and conn.invalid_grant_count == 5
    assert events.of("connection.needs_reauthorization") == []
    strict_sim.clear_faults()
    vault.get_token(REALM, 300)
    assert vault.connections.get_connection(REALM).invalid_grant_count == 0


def test_revoked_token_ends_in_needs_reauthorization_with_one_event(aws, strict_sim):
    events = RecordingEvents()
    vault = make_vault(
        make_settings(
            aws, strict_sim, invalid_grant_window_seconds=0, invalid_grant_min_attempts=2
        ),
        events=events,
    )
    connect(vault, strict_sim, access_expires_in=0)
    strict_sim.revoke_realm(REALM)
    with pytest.raises(RefreshUnavailable):
        vault.get_token(REALM, 300)
    with pytest.raises(NeedsReauthorization):
        vault.get_token(REALM, 300)
    with pytest.raises(NeedsReauthorization):
        vault.get_token(REALM, 300)
    assert len(events.of("connection.needs_reauthorization")) == 1
    conn = vault.connections.get_connection(REALM)
    assert conn.status == "needs_reauthorization"
    assert conn.refresh_token_enc is not None  # kept for forensics; never used again


def test_refresh_token_past_its_expiry_is_dead_at_once(aws, strict_sim):
    events = RecordingEvents()
    vault = make_vault(make_settings(aws, strict_sim), events=events)
    connect(vault, strict_sim, access_expires_in=0)
    vault.connections.table.update_item(
        Key={"pk": f"REALM#{REALM}", "sk": "CONNECTION"},
        UpdateExpression="SET refresh_expires_at = :t",
        ExpressionAttributeValues={":t": int(time.time()) - 1},
    )
    strict_sim.revoke_realm(REALM)
    with pytest.raises(NeedsReauthorization):
        vault.get_token(REALM, 300)
    assert events.of("connection.needs_reauthorization")[0]["reason"] == "refresh_token_expired"


def test_wrong_client_credentials_are_a_configuration_error(aws, strict_sim):
    vault = make_vault(make_settings(aws, strict_sim))
    connect(vault, strict_sim, access_expires_in=0)
    from qbo_connect.intuit import ClientCredentials, IntuitClient

    bad = IntuitClient(vault.settings.intuit, ClientCredentials("test-client", "wrong"))
    vault.intuit_client = lambda: bad
    with pytest.raises(ConfigurationError):
        vault.get_token(REALM, 300)
    assert vault.connections.get_connection(REALM).status == "active"


def test_unknown_realm_and_bad_input(aws, strict_sim):
    vault = make_vault(make_settings(aws, strict_sim))
    with pytest.raises(NotConnected):
        vault.get_token("42", 300)
    with pytest.raises(InvalidRequest):
        vault.get_token(REALM, 99999)


def test_waiters_do_not_retry_intuit_after_the_leader_failed(aws, strict_sim):
    # Given an expired access token and an Intuit that answers 503 slowly
    vault = make_vault(make_settings(aws, strict_sim, intuit_max_attempts=3))
    connect(vault, strict_sim, access_expires_in=0)
    strict_sim.reset_counters()
    strict_sim.set_faults(status_5xx=100, latency_seconds=0.5)
    outcomes: list[str] = []

    def read() -> None:
        try:
            vault.get_token(REALM, 300)
            outcomes.append("ok")
        except RefreshUnavailable:
            outcomes.append("refresh_unavailable")

    # When one caller leads the refresh and 9 more arrive while it holds the lease
    leader = threading.Thread(target=read)
    leader.start()
    deadline = time.time() + 5
    while not vault.connections.get_connection(REALM).lease_owner:
        assert time.time() < deadline, "the leader never took the lease"
        time.sleep(0.01)
    followers = [threading.Thread(target=read) for _ in range(9)]
    for t in followers:
        t.start()
    for t in [leader, *followers]:
        t.join()
    # Then all learn that Intuit is down, from the leader's three attempts only
    assert outcomes == ["refresh_unavailable"] * 10
    assert strict_sim.counters()["token"] == 3


def test_get_token_response_holds_the_access_token_only(aws, strict_sim):
    # Given a connection (its refresh token is what a GetTokenFunction invoker must never see)
    vault = make_vault(make_settings(aws, strict_sim))
    _, body = connect(vault, strict_sim)
    # When the invoke contract's response is built
    response = vault.get_token(REALM, 300).to_response()
    # Then it carries the access token and its metadata, and no refresh or id token
    assert set(response) == {
        "access_token",
        "token_type",
        "expires_at",
        "realm_id",
        "environment",
        "api_base_url",
    }
    assert body["refresh_token"] not in repr(response)


def test_min_valid_beyond_what_intuit_grants_costs_at_most_one_refresh(aws, strict_sim):
    # Given Intuit grants access tokens of 10 minutes and a caller wants 50 minutes
    vault = make_vault(make_settings(aws, strict_sim))
    connect(vault, strict_sim, access_expires_in=0)
    strict_sim.configure(access_token_ttl=600)
    strict_sim.reset_counters()
    # When it asks twice
    first = vault.get_token(REALM, 3000)
    # Then one refresh gives the freshest token there is, and it is returned
    assert strict_sim.counters()["token.refresh_token"] == 1
    assert 500 < first.expires_at - time.time() <= 600
    # (a later call with the same wish refreshes once more, never in a loop)
    vault.get_token(REALM, 3000)
    assert strict_sim.counters()["token.refresh_token"] == 2


class FailingKms:
    """A KMS client whose Decrypt is throttled ``times`` times, then works."""

    def __init__(self, real, times: int) -> None:
        self._real = real
        self.exceptions = real.exceptions
        self.times = times

    def decrypt(self, **kwargs):
        if self.times > 0:
            self.times -= 1
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "Decrypt"
            )
        return self._real.decrypt(**kwargs)

    def generate_data_key(self, **kwargs):
        return self._real.generate_data_key(**kwargs)


def test_kms_throttled_under_the_lease_releases_it_and_the_next_caller_refreshes(aws, strict_sim):
    # Given a cold container (no cached data key) whose KMS Decrypt is throttled once
    settings = make_settings(aws, strict_sim)
    seeded = make_vault(settings)
    connect(seeded, strict_sim, access_expires_in=0)
    vault = make_vault(settings)
    vault.cipher = TokenCipher(FailingKms(boto3.client("kms"), times=1), settings.token_key_id)
    strict_sim.reset_counters()
    # When a caller asks
    # Then the lease is released (not leaked for the whole lease), the tokens are untouched,
    # the failure is recorded, and the connection is due again after a short backoff
    conn = failed_and_released(vault, RefreshUnavailable, "kms: ThrottlingException")
    assert conn.due_at < time.time() + settings.retry_backoff_base_seconds + 1
    # and the next caller refreshes at once
    assert vault.get_token(REALM, 300).access_token
    assert strict_sim.counters()["token.refresh_token"] == 1


def test_undecryptable_tokens_are_flagged_once_with_an_event(aws, strict_sim):
    # Given a connection whose refresh token ciphertext was damaged
    events = RecordingEvents()
    vault = make_vault(make_settings(aws, strict_sim), events=events)
    conn, _ = connect(vault, strict_sim, access_expires_in=0)
    damaged = conn.refresh_token_enc[:-1] + bytes([conn.refresh_token_enc[-1] ^ 1])
    vault.connections.table.update_item(
        Key={"pk": f"REALM#{REALM}", "sk": "CONNECTION"},
        UpdateExpression="SET refresh_token_enc = :b",
        ExpressionAttributeValues={":b": damaged},
    )
    strict_sim.reset_counters()
    # When callers ask, again and again
    for _ in range(3):
        with pytest.raises(NeedsReauthorization) as info:
            vault.get_token(REALM, 300)
        assert info.value.reason == "tokens_undecryptable"
    # Then it was flagged once, with one event, no lease left, out of the sweep's index
    conn = vault.connections.get_connection(REALM)
    assert (conn.status, conn.reauth_reason, conn.lease_owner, conn.due_at) == (
        "needs_reauthorization",
        "tokens_undecryptable",
        None,
        None,
    )
    assert [e["reason"] for e in events.of("connection.needs_reauthorization")] == [
        "tokens_undecryptable"
    ]
    assert strict_sim.counters().get("token", 0) == 0


class FlakyTable:
    """A DynamoDB Table whose UpdateItem fails before applying, for the next ``times`` calls
    whose update writes ``attribute`` (boto3 has already given up on each)."""

    def __init__(self, real, attribute: str, times: int) -> None:
        self._real = real
        self.attribute = attribute
        self.times = times

    def __getattr__(self, name):
        return getattr(self._real, name)

    def update_item(self, **kwargs):
        if self.times > 0 and self.attribute in kwargs.get("ExpressionAttributeNames", {}).values():
            self.times -= 1
            raise ClientError(
                {"Error": {"Code": "InternalServerError", "Message": "try again"}}, "UpdateItem"
            )
        return self._real.update_item(**kwargs)


def test_a_commit_failing_transiently_is_retried_within_the_lease(aws, strict_sim):
    # Given DynamoDB refuses the commit twice (each after boto3's own retries), no grace
    vault = make_vault(make_settings(aws, strict_sim), sleep=lambda s: None)
    connect(vault, strict_sim, access_expires_in=0)
    vault.connections.table = FlakyTable(vault.connections.table, "committed_by", times=2)
    strict_sim.reset_counters()
    # When a caller asks / Then the rotation Intuit made is stored, not thrown away
    token = vault.get_token(REALM, 300)
    conn = vault.connections.get_connection(REALM)
    assert (conn.version, conn.lease_owner) == (2, None)
    assert strict_sim.counters()["token.refresh_token"] == 1
    # and the stored refresh token is Intuit's current one (strict mode)
    assert vault.refresh(REALM).version == 3
    assert token.access_token


def test_a_holder_whose_lease_lapsed_unchallenged_keeps_its_tokens(aws, strict_sim):
    # Given a holder whose lease expired while Intuit answered, and nobody took it over
    vault = make_vault(make_settings(aws, strict_sim))
    connect(vault, strict_sim, access_expires_in=0)
    original = vault.intuit_client

    def slow_refresh():
        client = original()

        class Late:
            def refresh(self, token):
                tokens = client.refresh(token)
                # the lease lapses: someone else's acquire would succeed now
                vault.connections.table.update_item(
                    Key={"pk": f"REALM#{REALM}", "sk": "CONNECTION"},
                    UpdateExpression="SET lease_until = :t",
                    ExpressionAttributeValues={":t": 0},
                )
                vault.connections.release_lease(REALM, owner=vault_owner(), now=time.time())
                return tokens

        return Late()

    def vault_owner():
        return vault.connections.get_connection(REALM).lease_owner

    vault.intuit_client = slow_refresh
    strict_sim.reset_counters()
    # When its commit meets LeaseLost with the version unchanged
    token = vault.get_token(REALM, 300)
    # Then the new tokens are committed late, not thrown away: one rotation, and it works
    conn = vault.connections.get_connection(REALM)
    assert conn.version == 2
    assert strict_sim.counters()["token.refresh_token"] == 1
    vault.intuit_client = original
    assert vault.refresh(REALM).version == 3
    assert token.access_token


def test_a_missing_client_secret_under_the_lease_releases_it(aws, strict_sim):
    # Given the Intuit client cannot be built (the secret lacks client_id)
    vault = make_vault(make_settings(aws, strict_sim))
    connect(vault, strict_sim, access_expires_in=0)

    def no_client():
        raise ConfigurationError("the Intuit client secret lacks client_id")

    vault.intuit_client = no_client
    # When a caller asks / Then it learns the configuration is wrong and the lease is free
    failed_and_released(vault, ConfigurationError, "configuration: configuration_error")
