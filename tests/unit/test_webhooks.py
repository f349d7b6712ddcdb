"""Webhooks in-process: payload shapes, signatures, verifier rotation, the dedup ledger, the
processor and the gateway's answers. AWS is moto's in-process mock (table from template.yaml);
the HTTP path through the local stack is tests/http/test_webhooks_http.py.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from devstack.events import build_sqs_event
from devstack.intuit_sim.webhooks import cloudevents_body, legacy_body
from qbo_connect.errors import MalformedPayload
from qbo_connect.store.connections import ConnectionRepository
from qbo_connect.store.webhook_ledger import Ledger
from qbo_connect.webhooks import gateway
from qbo_connect.webhooks.payload import legacy_event_id, parse
from qbo_connect.webhooks.processor import WebhookProcessor
from qbo_connect.webhooks.settings import load_webhook_settings
from qbo_connect.webhooks.signature import (
    VerifierTokens,
    sign,
    signature_matches,
    token_from_secret,
)
from tests.helpers.store import placeholder_connection
from tests.helpers.webhooks import change as entity

# ----------------------------------------------------------------------------- payload shapes


def test_legacy_shape_becomes_one_change_per_entity_with_stable_ids():
    body = legacy_body(
        [
            entity("111", "Customer", "1", "Create", lastUpdated="2026-12-01T10:00:00.000Z"),
            entity("222", "Invoice", "2", "Delete", deletedId="3"),
        ]
    )
    shape, changes = parse(body)
    assert shape == "legacy"
    assert [(c.realm_id, c.entity, c.entity_id, c.operation) for c in changes] == [
        ("111", "Customer", "1", "Create"),
        ("222", "Invoice", "2", "Delete"),
    ]
    assert changes[1].deleted_id == "3"
    assert changes[0].occurred_at == "2026-12-01T10:00:00.000Z"
    # The same change delivered again hashes to the same id; a later change to a new one.
    assert parse(body)[1][0].event_id == changes[0].event_id
    later = legacy_body([entity("111", "Customer", "1", "Create", lastUpdated="2026-12-02")])
    assert parse(later)[1][0].event_id != changes[0].event_id
    assert changes[0].event_id == legacy_event_id(
        "111", "Customer", "1", "Create", "2026-12-01T10:00:00.000Z"
    )


def test_cloudevents_shape_keeps_ids_and_restores_intuits_entity_names():
    body = cloudevents_body(
        [
            entity("111", "JournalEntry", "5", "Update", event_id="ce-1"),
            entity("222", "SalesReceipt", "6", "Void", event_id="ce-2"),
            entity("222", "Estimate", "7", "Emailed", event_id="ce-3"),
            entity("222", "Vendor", "8", "Merge", event_id="ce-4", deletedId="9"),
        ],
        source="intuit.x",
    )
    shape, changes = parse(body)
    assert shape == "cloudevents"
    assert [(c.event_id, c.entity, c.operation) for c in changes] == [
        ("ce-1", "JournalEntry", "Update"),
        ("ce-2", "SalesReceipt", "Void"),
        ("ce-3", "Estimate", "Emailed"),
        ("ce-4", "Vendor", "Merge"),
    ]
    assert changes[3].deleted_id == "9"


def test_a_single_cloudevent_and_duplicates_inside_one_body():
    event = json.loads(cloudevents_body([entity("1", "Bill", "2", "Create")], source="s"))[0]
    assert len(parse(json.dumps(event).encode())[1]) == 1
    assert len(parse(json.dumps([event, event]).encode())[1]) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b'{"something": "else"}',
        b'{"eventNotifications": {}}',
        b'{"eventNotifications": [{"realmId": "abc", "dataChangeEvent": {"entities": []}}]}',
        b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": '
        b'[{"name": "Customer", "id": "1", "operation": "Explode", "lastUpdated": "x"}]}}]}',
        b'[{"specversion": "1.0", "id": "a", "type": "customer.created", "time": "t",'
        b' "intuitaccountid": "1", "intuitentityid": "2"}]',
        b'[{"specversion": "1.0", "id": "a", "type": "qbo.customer.exploded.v1", "time": "t",'
        b' "intuitaccountid": "1", "intuitentityid": "2"}]',
        b'[{"specversion": "2.0", "id": "a", "type": "qbo.customer.created.v1", "time": "t",'
        b' "intuitaccountid": "1", "intuitentityid": "2"}]',
        b'[{"specversion": "1.0", "type": "qbo.customer.created.v1", "time": "t",'
        b' "intuitaccountid": "1", "intuitentityid": "2"}]',
        # a trailing newline, a zero-padded realm: never a second spelling of a realm or name
        b'{"eventNotifications": [{"realmId": "1\\n", "dataChangeEvent": {"entities": []}}]}',
        b'{"eventNotifications": [{"realmId": "0123", "dataChangeEvent": {"entities": []}}]}',
        b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": '
        b'[{"name": "Customer\\n", "id": "1", "operation": "Create", "lastUpdated": "x"}]}}]}',
        b'[{"specversion": "1.0", "id": "a", "type": "qbo.customer.created.v1\\n", "time": "t",'
        b' "intuitaccountid": "1", "intuitentityid": "2"}]',
    ],
)
def test_malformed_bodies_are_refused_whole(body):
    with pytest.raises(MalformedPayload):
        parse(body)


# ----------------------------------------------------------------------------- signatures


def test_signature_matches_only_the_exact_body_and_token():
    body = b'{"eventNotifications": []}'
    signature = sign(body, "token-1")
    assert signature_matches(body, signature, ["token-1"])
    assert signature_matches(body, signature, ["other", "token-1"])
    assert not signature_matches(body + b" ", signature, ["token-1"])
    assert not signature_matches(body, signature, ["token-2"])
    assert not signature_matches(body, "", ["token-1"])
    assert not signature_matches(body, "%%%", ["token-1"])
    assert not signature_matches(body, sign(body, ""), [""])  # an empty key signs nothing


def test_token_from_secret_reads_bare_and_json_values():
    assert token_from_secret("  abc \n") == "abc"
    assert token_from_secret('{"verifier_token": "xyz"}') == "xyz"
    assert token_from_secret('{"other": 1}') == ""
    assert token_from_secret(None) == ""


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


class CountingSecrets:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = 0

    def get_secret_value(self, **kwargs: Any) -> Any:
        self.calls += 1
        return self.client.get_secret_value(**kwargs)


def test_rotation_keeps_the_previous_token_for_the_overlap_only(aws):
    # Given a verifier secret and a container that cached it
    sm = boto3.client("secretsmanager")
    arn = sm.create_secret(Name="webhook-verifier", SecretString="old-token")["ARN"]
    clock = Clock()
    tokens = VerifierTokens(
        sm,
        arn,
        overlap_seconds=600,
        max_age_seconds=300,
        clock=clock.time,
        monotonic=clock.monotonic,
    )
    body = b"[]"
    assert tokens.verify(body, sign(body, "old-token"))
    # When the token is rotated
    sm.put_secret_value(SecretId=arn, SecretString="new-token")
    clock.offset = 10  # past the early re-read interval, well within the cache age
    # Then the new one is accepted at once (an early re-read) and the old one too...
    assert tokens.verify(body, sign(body, "new-token"))
    assert tokens.verify(body, sign(body, "old-token"))
    # ... until the overlap has passed
    clock.offset = 700
    assert not tokens.verify(body, sign(body, "old-token"))
    assert tokens.verify(body, sign(body, "new-token"))


def test_forged_signatures_do_not_turn_into_a_flood_of_secret_reads(aws):
    sm = CountingSecrets(boto3.client("secretsmanager"))
    arn = sm.client.create_secret(Name="webhook-verifier", SecretString="tok")["ARN"]
    tokens = VerifierTokens(sm, arn, overlap_seconds=60, max_age_seconds=300)
    for _ in range(50):
        assert not tokens.verify(b"x", sign(b"x", "forged"))
    assert sm.calls == 2  # AWSCURRENT and AWSPREVIOUS, once


def test_an_empty_verifier_secret_is_a_configuration_error(aws):
    from qbo_connect.errors import ConfigurationError

    sm = boto3.client("secretsmanager")
    arn = sm.create_secret(Name="webhook-verifier", SecretString=" ")["ARN"]
    tokens = VerifierTokens(sm, arn, overlap_seconds=60, max_age_seconds=300)
    with pytest.raises(ConfigurationError):
        tokens.verify(b"x", sign(b"x", ""))


# ----------------------------------------------------------------------------- ledger


@pytest.fixture
def table(aws) -> Any:
    return boto3.resource("dynamodb").Table(aws["table_name"])


def test_ledger_claims_once_recognises_its_own_retry_and_takes_over_dead_claims(table):
    ledger = Ledger(table, ttl_seconds=3600, claim_seconds=60)
    now = time.time()
    assert ledger.claim("e1", owner="m1", now=now)
    assert ledger.claim("e1", owner="m1", now=now + 1)  # redelivery / lost answer: ours
    assert not ledger.claim("e1", owner="m2", now=now + 1)  # live claim of another message
    # m1's retry renewed its claim until now + 61; after that m1 counts as dead
    assert not ledger.claim("e1", owner="m2", now=now + 60)
    assert ledger.claim("e1", owner="m2", now=now + 62)  # m2 takes over
    assert not ledger.mark_published("e1", owner="m1", now=now + 63)
    assert ledger.mark_published("e1", owner="m2", now=now + 63)
    assert ledger.mark_published("e1", owner="m2", now=now + 63)  # a retried write of ours
    for owner in ("m1", "m2", "m3"):
        assert not ledger.claim("e1", owner=owner, now=now + 10_000)
    item = ledger.get("e1")
    assert item is not None
    assert item["status"] == "published"
    assert int(item["ttl"]) == int(now + 62) + 3600


# ----------------------------------------------------------------------------- processor


class FlakyEvents:
    """EventBridge stand-in: records entries, refuses the ones listed in ``refuse``."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.refuse: set[str] = set()

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        results = []
        for entry in Entries:
            detail = json.loads(entry["Detail"])
            if detail["entity_id"] in self.refuse:
                results.append({"ErrorCode": "InternalFailure", "ErrorMessage": "nope"})
            else:
                self.entries.append(entry)
                results.append({"EventId": f"ev-{len(self.entries)}"})
        failed = sum(1 for r in results if "ErrorCode" in r)
        return {"FailedEntryCount": failed, "Entries": results}


def seed(table: Any, realm: str, tenant: str) -> None:
    placeholder_connection(table, realm, tenant, now=time.time())


def message(*changes: Any) -> str:
    _, parsed = parse(legacy_body(list(changes)))
    return json.dumps({"v": 1, "received_at": 0, "changes": [c.to_dict() for c in parsed]})


def test_processor_publishes_per_tenant_drops_unknown_realms_and_skips_duplicates(table):
    seed(table, "100", "tenant-x")
    events = FlakyEvents()
    processor = WebhookProcessor(
        connections=ConnectionRepository(table),
        ledger=Ledger(table, ttl_seconds=3600, claim_seconds=60),
        events_client=events,
        bus_name="default",
    )
    body = message(entity("100", "Customer", "1", "Create"), entity("999", "Item", "2", "Update"))

    first = processor.process(body, message_id="m1")
    again = processor.process(body, message_id="m2")

    assert first == {"published": 1, "duplicates": 0, "dropped": 1}
    assert again == {"published": 0, "duplicates": 1, "dropped": 1}
    (entry,) = events.entries
    assert entry["Source"] == "qbo-connect"
    assert entry["DetailType"] == "quickbooks.entity_changed"
    detail = json.loads(entry["Detail"])
    assert detail["tenant_id"] == "tenant-x"
    assert detail["realm_id"] == "100"
    assert "deleted_id" not in detail


def test_a_refused_event_fails_the_message_and_only_it_goes_out_again(table):
    seed(table, "100", "tenant-x")
    events = FlakyEvents()
    events.refuse = {"2"}
    processor = WebhookProcessor(
        connections=ConnectionRepository(table),
        ledger=Ledger(table, ttl_seconds=3600, claim_seconds=60),
        events_client=events,
        bus_name="default",
    )
    body = message(
        entity("100", "Customer", "1", "Create"), entity("100", "Customer", "2", "Create")
    )
    with pytest.raises(RuntimeError):
        processor.process(body, message_id="m1")
    assert [json.loads(e["Detail"])["entity_id"] for e in events.entries] == ["1"]
    # A duplicate delivery meanwhile stands back: m1 still owns the claim on "2"
    assert processor.process(body, message_id="m2")["published"] == 0
    # SQS redelivers m1 (same message id) once EventBridge takes events again
    events.refuse = set()
    assert processor.process(body, message_id="m1") == {
        "published": 1,
        "duplicates": 1,
        "dropped": 0,
    }
    assert [json.loads(e["Detail"])["entity_id"] for e in events.entries] == ["1", "2"]


def test_backoff_doubles_and_is_capped():
    processor = WebhookProcessor(
        connections=None,  # type: ignore[arg-type]
        ledger=None,  # type: ignore[arg-type]
        events_client=None,
        bus_name="default",
        retry_base_seconds=10,
        retry_max_seconds=900,
    )
    assert [processor.backoff_seconds(n) for n in (1, 2, 3, 7, 20)] == [10, 20, 40, 640, 900]


# ----------------------------------------------------------------------------- gateway


class FakeSqs:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[str, list[dict[str, Any]]]] = []
        self.fail = fail

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict:
        if self.fail:
            raise ClientError({"Error": {"Code": "ServiceUnavailable"}}, "SendMessageBatch")
        self.batches.append((QueueUrl, Entries))
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


class FakeVerifier:
    def __init__(self, token: str = "tok") -> None:
        self.token = token
        self.calls = 0

    def verify(self, body: bytes, signature: str | None) -> bool:
        self.calls += 1
        return signature_matches(body, signature, [self.token])


def http_event(body: bytes, signature: str | None, *, b64: bool = False) -> dict[str, Any]:
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    if signature is not None:
        headers["intuit-signature"] = signature
    return {
        "headers": headers,
        "body": base64.b64encode(body).decode() if b64 else body.decode("utf-8", "replace"),
        "isBase64Encoded": b64,
    }


def answer(event: dict[str, Any], sqs: FakeSqs, verifier: FakeVerifier, limit: int = 10_000):
    queue = gateway.ChangeQueue(sqs, "https://queue", "https://dlq")
    return gateway.handle(
        event, verifier=lambda: verifier, queue=lambda: queue, max_body_bytes=limit
    )


def test_gateway_refuses_before_touching_the_verifier_or_the_queue():
    body = legacy_body([entity("1", "Customer", "1", "Create")])
    sqs, verifier = FakeSqs(), FakeVerifier()
    too_large = answer(http_event(body, sign(body, "tok")), sqs, verifier, limit=len(body) - 1)
    missing = answer(http_event(body, None), sqs, verifier)
    assert (too_large.status, missing.status) == (413, 401)
    assert verifier.calls == 0 and sqs.batches == []
    bad = answer(http_event(body, sign(body, "other")), sqs, verifier)
    assert bad.status == 401 and bad.body == {"error": "invalid_signature"}
    assert sqs.batches == []


def test_gateway_enqueues_in_chunks_and_reads_base64_bodies():
    changes = [entity("1", "Customer", str(i), "Create") for i in range(120)]
    body = legacy_body(changes)
    sqs = FakeSqs()
    result = answer(http_event(body, sign(body, "tok"), b64=True), sqs, FakeVerifier(), 10**6)
    assert result.status == 200
    assert result.body == {"status": "accepted", "changes": 120, "messages": 3}
    assert result.to_response()["headers"]["strict-transport-security"] == "max-age=31536000"
    ((url, entries),) = sqs.batches
    assert url == "https://queue"
    sizes = [len(json.loads(e["MessageBody"])["changes"]) for e in entries]
    assert sizes == [50, 50, 20]


def test_gateway_keeps_a_signed_malformed_body_on_the_dlq_and_answers_200():
    body = b'{"not": "intuit"}'
    sqs = FakeSqs()
    result = answer(http_event(body, sign(body, "tok")), sqs, FakeVerifier())
    assert result.status == 200 and result.outcome == "malformed"
    ((url, entries),) = sqs.batches
    record = json.loads(entries[0]["MessageBody"])
    assert url == "https://dlq"
    assert base64.b64decode(record["body_base64"]) == body
    assert record["reference"] == result.body["reference"]


def test_gateway_answers_503_when_sqs_fails_so_intuit_retries():
    body = legacy_body([entity("1", "Customer", "1", "Create")])
    result = answer(http_event(body, sign(body, "tok")), FakeSqs(fail=True), FakeVerifier())
    assert result.status == 503
    assert json.loads(result.to_response()["body"]) == {"error": "unavailable"}


def test_a_signed_body_replayed_after_the_freshness_bound_publishes_nothing():
    # Given a signed delivery captured when it was sent (one change new, one 6 days old)
    now = datetime(2026, 12, 10, 12, tzinfo=UTC).timestamp()
    iso = lambda t: datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")  # noqa: E731
    legacy = legacy_body(
        [
            entity("1", "Customer", "1", "Update", lastUpdated=iso(now - 60)),
            entity("1", "Customer", "2", "Update", lastUpdated=iso(now - 6 * 86400 - 1)),
            entity("1", "Customer", "3", "Update", lastUpdated="not a time"),
        ]
    )
    cloud = cloudevents_body(
        [entity("1", "Invoice", "9", "Create", lastUpdated="2026-12-10T04:00:00-0700")],
        source="intuit.test",
    )
    settings = load_webhook_settings({})
    assert settings.max_change_age_seconds == 6 * 86400  # a day inside the ledger's 7 days

    def deliver(body: bytes, at: float) -> tuple[Any, FakeSqs]:
        sqs = FakeSqs()
        queue = gateway.ChangeQueue(sqs, "https://queue", "https://dlq")
        result = gateway.handle(
            http_event(body, sign(body, "tok")),
            verifier=FakeVerifier,
            queue=lambda: queue,
            max_body_bytes=10_000,
            max_change_age_seconds=settings.max_change_age_seconds,
            clock=lambda: at,
        )
        return result, sqs

    # When it arrives: the stale change is dropped and counted, the others queued (a time that
    # cannot be read is Intuit's to send: kept, and deduplicated by the ledger)
    result, sqs = deliver(legacy, now)
    assert (result.status, result.changes, result.stale) == (200, 2, 1)
    queued = [c["entity_id"] for c in json.loads(sqs.batches[0][1][0]["MessageBody"])["changes"]]
    assert queued == ["1", "3"]
    # When the same bytes are replayed after the ledger may have forgotten them
    result, sqs = deliver(legacy, now + 7 * 86400)
    assert (result.status, result.changes, result.stale) == (200, 1, 2)
    # A CloudEvent's time with Intuit's -0700 offset is read too
    assert deliver(cloud, now)[0].stale == 0
    assert deliver(cloud, now + 7 * 86400)[0].stale == 1


def test_settings_overlap_in_minutes_unless_seconds_are_given():
    assert load_webhook_settings({}).overlap_seconds == 3600
    assert load_webhook_settings({"WEBHOOK_VERIFIER_OVERLAP_MINUTES": "5"}).overlap_seconds == 300
    both = {"WEBHOOK_VERIFIER_OVERLAP_MINUTES": "5", "WEBHOOK_VERIFIER_OVERLAP_SECONDS": "2"}
    assert load_webhook_settings(both).overlap_seconds == 2


# ----------------------------------------------------------------------------- the handlers


class Context:
    """The bits of the Lambda context the handlers and Powertools use."""

    function_name = "webhook-test"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:webhook-test"
    memory_limit_in_mb = 512
    aws_request_id = "req-1"
    log_group_name = "/aws/lambda/webhook-test"
    log_stream_name = "stream"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def _clear_caches() -> None:
    from qbo_connect import wiring

    wiring.reset()


def test_handlers_with_the_sample_events(aws, monkeypatch, capsys):
    # Given the verifier token the sample event is signed with, the queues and a connection
    from devstack.handlers import load_handler
    from tests.conftest import REPO_ROOT

    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="webhooks")["QueueUrl"]
    dlq = sqs.create_queue(QueueName="webhooks-dlq")["QueueUrl"]
    secret = boto3.client("secretsmanager").create_secret(
        Name="verifier", SecretString="REPLACE-with-your-verifier-token"
    )["ARN"]
    for key, value in {
        "TABLE_NAME": aws["table_name"],
        "TOKEN_KEY_ID": aws["key_id"],
        "INTUIT_CLIENT_SECRET_ID": aws["secret_id"],
        "WEBHOOK_VERIFIER_SECRET_ID": secret,
        # The sample's changes carry a fixed date: remember ids (and accept changes) for years.
        "WEBHOOK_DEDUP_TTL_SECONDS": str(20 * 365 * 86400),
        "WEBHOOK_QUEUE_URL": queue,
        "WEBHOOK_DEAD_LETTER_QUEUE_URL": dlq,
    }.items():
        monkeypatch.setenv(key, value)
    _clear_caches()
    table = boto3.resource("dynamodb").Table(aws["table_name"])
    seed(table, "9130357766042906", "tenant-sample")
    webhook = load_handler("webhook", module_prefix="test_webhooks")
    processor_app = load_handler("webhook_processor", module_prefix="test_webhooks")
    sample = json.loads((REPO_ROOT / "events" / "webhook.json").read_text())
    try:
        # When the gateway gets the sample delivery and the processor gets what it enqueued
        answer = webhook.lambda_handler(sample, Context())
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        records = build_sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:webhooks")
        result = processor_app.lambda_handler(records, Context())
        forged = dict(sample, headers={**sample["headers"], "intuit-signature": sign(b"x", "y")})
        refused = webhook.lambda_handler(forged, Context())
    finally:
        _clear_caches()
    # Then: 200, one message, both changes published for the tenant, and the metrics say so
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"]) == {"status": "accepted", "changes": 2, "messages": 1}
    assert len(messages) == 1
    assert result == {"batchItemFailures": []}
    assert refused["statusCode"] == 401
    out = capsys.readouterr().out
    assert '"WebhookPublished":[2.0]' in out.replace(" ", "")
    assert '"WebhookRejected":[1.0]' in out.replace(" ", "")
    assert "REPLACE-with-your-verifier-token" not in out
    sample_processor = json.loads((REPO_ROOT / "events" / "webhook_processor.json").read_text())
    assert len(json.loads(sample_processor["Records"][0]["body"])["changes"]) == 2


def test_an_unconfigured_verifier_answers_503_and_says_nothing_more(monkeypatch):
    from qbo_connect.errors import ConfigurationError
    from qbo_connect.webhooks import settings

    def no_token() -> Any:
        raise ConfigurationError("the webhook verifier secret holds no token")

    settings.get_webhook_settings.cache_clear()
    try:
        body = legacy_body([entity("1", "Customer", "1", "Create")])
        result = gateway.answer(
            http_event(body, sign(body, "tok")),
            settings=settings.get_webhook_settings,
            verifier=no_token,
            queue=no_token,
        )
    finally:
        settings.get_webhook_settings.cache_clear()
    assert (result.status, result.outcome, result.body) == (
        503,
        "not_configured",
        {"error": "unavailable"},
    )
