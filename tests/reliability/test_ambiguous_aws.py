"""AWS calls with ambiguous outcomes, injected by a proxy in front of the local stack's AWS.

Each test breaks one AWS call the service makes (tests/reliability/aws_faults_stack.py): it
fails before being applied, or is applied and its answer lost (boto3 then retries a request
DynamoDB already applied). The service runs as ``python -m devstack --aws-endpoint <proxy>``
with its real handlers; Intuit calls are counted at the stack's simulator, which is strict
(no grace for a superseded refresh token, a new refresh token on every refresh) unless a test
says otherwise. The promise held here: no phantom lease, no dropped rotation, no lost event,
no leaked lease, no extra rotation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.aws_faults import FaultProxy
from devstack.moto_server import start_process
from devstack.process import start_devstack
from qbo_connect.config import Settings
from tests.reliability.aws_faults_stack import (
    EXPIRING,
    NEEDS_REAUTH,
    STACK_ENV,
    FaultStack,
    wait_for,
)
from tests.reliability.conftest import token_is_valid_at_intuit

UPDATE_ITEM = "DynamoDB_20120810.UpdateItem"
# Body markers that pick one of the vault's UpdateItems out of all of them.
ACQUIRE = "#lease_until = :v_lease_until"
COMMIT = "#committed_by"
MARK_DEAD = '"needs_reauthorization"'
EXPIRING_EVENT = '"connection.expiring"'
PUT_EVENTS = "AWSEvents.PutEvents"
KMS_DECRYPT = "TrentService.Decrypt"
DAY = 86400.0


class _Intuit:
    """What token_is_valid_at_intuit needs of a simulator: its base URL."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    moto_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "INTUIT_", "POWERTOOLS_"))
    }
    moto_env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    moto = start_process(moto_env)
    proxy = FaultProxy(moto.url).start()
    try:
        with start_devstack(
            tmp_path_factory.mktemp("ambiguous-aws"),
            env={
                **STACK_ENV,
                "LEASE_WAIT_SECONDS": "20",
                # A revoked token is dead at its first rejection here (production: 6 h, 3 tries)
                "INVALID_GRANT_WINDOW_SECONDS": "0",
                "INVALID_GRANT_MIN_ATTEMPTS": "1",
            },
            extra_args=(
                "--aws-endpoint",
                proxy.url,
                "--no-schedule",
                "--no-connect-link",
                "--refresh-grace",
                "0",
            ),
        ) as stack:
            faults = FaultStack(stack, proxy, moto.url)
            yield faults
            log = stack.log_text()
            leaked = [t[:10] for t in faults.issued if t in log]
            assert not leaked, f"token values leaked into the stack's log: {leaked}"
            assert faults.issued, "the leak check saw no token"
    finally:
        proxy.stop()
        moto.stop()


@pytest.fixture
def aws(env: FaultStack) -> FaultStack:
    env.reset()
    return env


def token_of(aws: FaultStack, response: dict[str, Any]) -> str:
    assert "access_token" in response, response
    aws.issued.add(response["access_token"])
    return str(response["access_token"])


def error_code(response: dict[str, Any]) -> str | None:
    return (response.get("error") or {}).get("code")


def proxy(aws: FaultStack) -> FaultProxy:
    assert aws.proxy is not None
    return aws.proxy


def fired(aws: FaultStack) -> list[int]:
    assert aws.proxy is not None
    return [rule.fired for rule in aws.proxy.rules()]


def test_lease_acquire_answered_lost_is_recognised_as_ours(aws: FaultStack) -> None:
    # Given DynamoDB applies the lease acquire but its answer is lost (boto3 retries it)
    realm_id, _ = aws.seed(access_left=0)
    proxy(aws).add_rule(UPDATE_ITEM, body_contains=ACQUIRE, mode="lose_answer")
    # When a caller asks for a token
    token = token_of(aws, aws.get_token(realm_id))
    # Then the retry met our own lease: one Intuit call, a valid token, no lease left
    assert fired(aws) == [1]
    assert aws.refreshes() == 1
    assert token_is_valid_at_intuit(_Intuit(aws.stack.intuit), realm_id, token)
    conn = aws.connection(realm_id)
    assert (conn.version, conn.lease_owner) == (2, None)


@pytest.mark.parametrize("mode", ["lose_answer", "drop_after"])
def test_commit_answered_lost_serves_the_committed_token(aws: FaultStack, mode: str) -> None:
    # Given the commit is applied but its answer is lost (a 500, or a dropped connection)
    realm_id, _ = aws.seed(access_left=0)
    proxy(aws).add_rule(UPDATE_ITEM, body_contains=COMMIT, mode=mode)
    # When a caller asks / Then the retry met our own commit: the token is served
    token = token_of(aws, aws.get_token(realm_id))
    assert fired(aws) == [1]
    assert aws.refreshes() == 1
    conn = aws.connection(realm_id)
    assert (conn.version, conn.lease_owner) == (2, None)
    assert token_is_valid_at_intuit(_Intuit(aws.stack.intuit), realm_id, token)


def test_commit_failing_six_times_before_applying_keeps_the_rotation(aws: FaultStack) -> None:
    # Given a strict Intuit (no grace) and a commit refused 6 times (two whole boto3 calls)
    realm_id, _ = aws.seed(access_left=0)
    proxy(aws).add_rule(UPDATE_ITEM, body_contains=COMMIT, mode="fail_before", times=6)
    # When a caller asks
    token = token_of(aws, aws.get_token(realm_id))
    # Then the commit was retried within the lease and the one rotation Intuit made is stored
    assert fired(aws) == [6]
    assert aws.refreshes() == 1
    assert token_is_valid_at_intuit(_Intuit(aws.stack.intuit), realm_id, token)
    # and once the fault is gone the connection keeps working: no invalid_grant, ever
    proxy(aws).reset()
    refreshed = aws.connections({"action": "refresh", "realm_id": realm_id})
    assert refreshed["connection"]["status"] == "active", refreshed
    assert aws.refreshes() == 2
    assert aws.invalid_grants() == 0
    assert aws.connection(realm_id).version == 3


def test_mark_dead_answered_lost_and_eventbridge_down_still_publish_one_event(
    aws: FaultStack,
) -> None:
    # Given a revoked grant, the needs_reauthorization write applied with its answer lost,
    # and EventBridge refusing every attempt of the put that follows
    realm_id, _ = aws.seed(access_left=0)
    aws.sim("POST", "revoke-realm", {"realm_id": realm_id})
    proxy(aws).add_rule(UPDATE_ITEM, body_contains=MARK_DEAD, mode="lose_answer")
    proxy(aws).add_rule(PUT_EVENTS, mode="fail_before", times=3)  # boto3's 3 attempts
    # When a caller asks
    assert error_code(aws.get_token(realm_id)) == "needs_reauthorization"
    assert fired(aws) == [1, 3]
    # Then the connection is flagged and the event waits on the item, due for the sweep
    conn = aws.connection(realm_id)
    assert (conn.status, conn.reauth_reason) == ("needs_reauthorization", "invalid_grant")
    (pending,) = conn.pending_events
    assert conn.due_at is not None
    assert aws.events(NEEDS_REAUTH, realm_id) == []
    # When EventBridge is back and the sweep comes by (its due time reached)
    proxy(aws).reset()
    aws.set_item(realm_id, due_at=int(conn.due_at) - 120)
    aws.sweep()
    # Then the worker publishes it: exactly one event, with the recorded event_id
    events = wait_for(lambda: aws.events(NEEDS_REAUTH, realm_id), "the event")
    wait_for(lambda: aws.connection(realm_id).due_at is None, "leaving the due index")
    assert [e["detail"]["event_id"] for e in events] == [pending.event_id]
    assert events[0]["detail"]["reason"] == "invalid_grant"
    # and later visits neither call Intuit again nor publish again
    assert error_code(aws.get_token(realm_id)) == "needs_reauthorization"
    assert aws.refreshes() == 1
    assert aws.connection(realm_id).pending_events == ()
    assert len(aws.events(NEEDS_REAUTH, realm_id)) == 1


def test_expiring_answered_lost_still_sends_its_event(aws: FaultStack) -> None:
    # Given a due connection 5 days from its refresh token's hard expiry, whose "7 days"
    # notice (recorded with its event) is applied but answered lost
    overdue = (Settings.keep_alive_hours + 1) * 3600
    realm_id, _ = aws.seed(access_left=3000, refreshed_ago=overdue, hard_left=5 * DAY)
    proxy(aws).add_rule(UPDATE_ITEM, body_contains=EXPIRING_EVENT, mode="lose_answer")
    # When the sweep and the worker run
    result = aws.sweep()
    assert result["enqueued"] >= 1
    # Then the event goes out once, and the connection was refreshed once
    events = wait_for(lambda: aws.events(EXPIRING, realm_id), "the expiring event")
    wait_for(lambda: aws.connection(realm_id).version == 2, "the refresh")
    assert fired(aws) == [1]
    assert [e["detail"]["threshold_days"] for e in events] == [7]
    assert aws.refreshes() == 1
    assert aws.connection(realm_id).expiring_notified == (7, 30)
    assert aws.connection(realm_id).pending_events == ()


def test_kms_throttled_under_the_lease_frees_it_for_the_next_caller(aws: FaultStack) -> None:
    # Given a realm whose data key the service has never unwrapped, and KMS throttling every
    # attempt of that Decrypt (it happens under the lease)
    realm_id, _ = aws.seed(access_left=0)
    proxy(aws).add_rule(
        KMS_DECRYPT, mode="fail_before", times=3, status=400, error="ThrottlingException"
    )
    # When a caller asks / Then it is told to retry, and the lease is not left behind
    assert error_code(aws.get_token(realm_id)) == "refresh_unavailable"
    assert fired(aws) == [3]
    conn = aws.connection(realm_id)
    assert (conn.lease_owner, conn.version) == (None, 1)
    assert conn.last_error == "kms: ThrottlingException"
    # When the next caller asks / Then it refreshes at once: one Intuit call in all
    token_of(aws, aws.get_token(realm_id))
    assert aws.refreshes() == 1
    assert aws.connection(realm_id).version == 2


def test_an_undecryptable_connection_is_flagged_once_and_not_enqueued_again(
    aws: FaultStack,
) -> None:
    # Given a connection whose refresh token ciphertext no longer opens
    realm_id, _ = aws.seed(access_left=0, refreshed_ago=(Settings.keep_alive_hours + 1) * 3600)
    blob = aws.connection(realm_id).refresh_token_enc or b""
    aws.set_item(realm_id, refresh_token_enc=blob[:-1] + bytes([blob[-1] ^ 1]))
    # When callers and the sweep come by, again and again
    codes = [error_code(aws.get_token(realm_id)) for _ in range(3)]
    aws.sweep()
    aws.sweep()
    # Then it was flagged once (a reason, one event), Intuit was never called, and it left
    # the sweep's index
    assert codes == ["needs_reauthorization"] * 3
    conn = aws.connection(realm_id)
    assert (conn.status, conn.reauth_reason, conn.lease_owner, conn.due_at) == (
        "needs_reauthorization",
        "tokens_undecryptable",
        None,
        None,
    )
    events = aws.events(NEEDS_REAUTH, realm_id)
    assert [e["detail"]["reason"] for e in events] == ["tokens_undecryptable"]
    assert aws.refreshes() == 0


def test_a_stale_touch_never_causes_a_second_rotation(aws: FaultStack) -> None:
    # Given a connection read at version 1 whose access token expires in 100 s (a reader
    # that used it now would make it due at once: keep-warm)
    realm_id, _ = aws.seed(access_left=100)
    stale = aws.connection(realm_id)
    # When a refresh commits version 2 (one rotation) ...
    refreshed = aws.connections({"action": "refresh", "realm_id": realm_id})
    assert refreshed["connection"]["status"] == "active"
    committed = aws.connection(realm_id)
    assert committed.version == 2 and committed.due_at is not None
    # ... and the reader that read version 1 records its use afterwards
    aws.vault.reader._touch(stale)
    # Then the committed due time stands, so the sweep does not claim the connection and
    # Intuit sees no second rotation
    assert aws.connection(realm_id).due_at == committed.due_at
    aws.sweep()
    assert aws.connection(realm_id).due_at == committed.due_at
    assert aws.refreshes() == 1
