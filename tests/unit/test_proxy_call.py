"""The proxied call with a scripted QuickBooks: requestid made once and reused on every retry,
one refresh per 401, throttles cool the realm and are not retried, answers shaped as given."""

from __future__ import annotations

import base64
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from qbo_connect.api.governor import Ticket
from qbo_connect.api.proxy import CallRecord, QuickBooksProxy
from qbo_connect.api.request import ApiRequest
from qbo_connect.api.settings import ProxySettings
from qbo_connect.api.tokens import ProxyTokens
from qbo_connect.errors import QuickBooksUnavailable, ResponseTooLarge
from qbo_connect.vault.records import AccessToken

NOW = 1_800_000_000.0


def token(version: int) -> AccessToken:
    return AccessToken(f"access-v{version}", NOW + 3600, "9130", "sandbox", "https://qb", version)


@dataclass
class FakeVault:
    version: int = 1
    reads: int = 0
    refreshes: list[int] = field(default_factory=list)

    def get_token(self, realm_id, min_valid_seconds=300, *, tenant_id=None):
        self.reads += 1
        return token(self.version)

    def refresh_past(self, realm_id, used_version, *, tenant_id=None):
        self.refreshes.append(used_version)
        self.version = max(self.version, used_version + 1)
        return token(self.version)


@dataclass
class FakeGovernor:
    cool_downs: list[float] = field(default_factory=list)
    acquired: int = 0
    #: For each ticket in turn, whether its slot has ended by the time the proxy would send.
    late: list[bool] = field(default_factory=list)

    def acquire(self, realm_id, *, batch, max_wait):
        self.acquired += 1
        return Ticket(realm_id, waited=0.0)

    def too_late(self, ticket):
        return self.late.pop(0) if self.late else False

    @contextmanager
    def holding(self, ticket):
        yield

    def cool_down(self, realm_id, seconds):
        self.cool_downs.append(seconds)
        return NOW + seconds


def response(status: int, body: bytes = b"{}", content_type="application/json", **headers):
    r = requests.Response()
    r.status_code = status
    r._content = body
    r.headers["Content-Type"] = content_type
    r.headers["intuit_tid"] = f"tid-{status}"
    r.headers.update(headers)
    return r


class ScriptedSession:
    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.sent: list[dict[str, Any]] = []

    def request(self, method, url, **kwargs):
        self.sent.append({"method": method, "url": url, **kwargs})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def make(session, vault=None, governor=None, **settings):
    records: list[CallRecord] = []
    proxy = QuickBooksProxy(
        settings=ProxySettings(**settings),
        api_base_url="https://qb.example",
        tokens=ProxyTokens(vault or FakeVault(), clock=lambda: NOW),
        governor=governor or FakeGovernor(),  # type: ignore[arg-type]
        session=session,
        observe=records.append,
        clock=lambda: NOW,
        sleep=lambda s: None,
    )
    return proxy, records


def post(**extra):
    return ApiRequest.from_payload(
        {"realm_id": "9130", "method": "POST", "path": "invoice", "body": {"Line": []}, **extra}
    )


def test_a_post_without_request_id_gets_one_and_every_retry_reuses_it():
    session = ScriptedSession(
        response(503), requests.ConnectionError("lost"), response(200, b'{"Invoice":{"Id":"1"}}')
    )
    proxy, records = make(session)
    answer = proxy.call(post())
    sent_ids = {s["params"]["requestid"] for s in session.sent}
    assert len(session.sent) == 3 and sent_ids == {answer["request_id"]}
    assert answer["status"] == 200 and answer["attempts"] == 3
    assert answer["body"] == {"Invoice": {"Id": "1"}}
    assert records[-1].outcome == "2xx" and records[-1].attempts == 3


def test_the_callers_request_id_is_sent_and_returned_even_when_no_answer_comes():
    session = ScriptedSession(*[requests.Timeout("t")] * 3)
    proxy, _ = make(session)
    with pytest.raises(QuickBooksUnavailable) as failed:
        proxy.call(post(request_id="caller-id-1"))
    assert failed.value.to_dict()["error"]["request_id"] == "caller-id-1"
    assert {s["params"]["requestid"] for s in session.sent} == {"caller-id-1"}


def test_a_get_carries_no_request_id_and_the_minor_version_floor():
    session = ScriptedSession(response(200, b'{"CompanyInfo":{}}'))
    proxy, _ = make(session)
    answer = proxy.call(
        ApiRequest.from_payload(
            {"realm_id": "9130", "method": "GET", "path": "companyinfo/9130", "minorversion": 40}
        )
    )
    sent = session.sent[0]
    assert "requestid" not in sent["params"] and sent["params"]["minorversion"] == "75"
    assert sent["url"] == "https://qb.example/v3/company/9130/companyinfo/9130"
    assert sent["headers"]["Authorization"] == "Bearer access-v1"
    assert answer["minorversion"] == 75 and answer["minorversion_raised_from"] == 40
    assert "access-v1" not in repr(answer)


def test_a_request_whose_slot_ended_before_sending_takes_another_slot():
    # Given a machine so busy that the first two slots end before the request could go out
    governor = FakeGovernor(late=[True, True])
    session = ScriptedSession(response(200, b'{"CompanyInfo":{}}'))
    proxy, _ = make(session, governor=governor)
    answer = proxy.call(
        ApiRequest.from_payload({"realm_id": "9130", "method": "GET", "path": "companyinfo/9130"})
    )
    # Then nothing is sent outside a slot: the third slot carries the one request
    assert governor.acquired == 3 and len(session.sent) == 1
    assert answer["status"] == 200 and answer["attempts"] == 1


def test_a_401_forces_one_refresh_past_the_refused_token_and_one_retry():
    vault = FakeVault()
    fault = json.dumps(
        {
            "fault": {
                "error": [{"message": "x", "detail": "Token expired", "code": "3200"}],
                "type": "AUTHENTICATION",
            }
        }
    ).encode()
    session = ScriptedSession(response(401, fault), response(401, fault))
    proxy, _ = make(session, vault)
    answer = proxy.call(post())
    assert vault.refreshes == [1]
    assert [s["headers"]["Authorization"] for s in session.sent] == [
        "Bearer access-v1",
        "Bearer access-v2",
    ]
    # the second 401 is returned as QuickBooks gave it
    assert answer["status"] == 401 and answer["fault"]["code"] == "3200"


def test_a_throttle_cools_the_realm_and_is_not_retried():
    governor = FakeGovernor()
    xml = (
        b'<IntuitResponse><Fault type="SERVICE"><Error code="3001">'
        b"<Message>ThrottleExceeded</Message></Error></Fault></IntuitResponse>"
    )
    session = ScriptedSession(response(429, xml, "application/xml"))
    proxy, records = make(session, governor=governor)
    answer = proxy.call(post())
    assert len(session.sent) == 1 and governor.cool_downs == [60.0]
    assert answer["status"] == 429 and answer["fault"]["code"] == "3001"
    assert records[-1].outcome == "throttled"


def test_retry_after_and_the_403_form_of_a_throttle():
    governor = FakeGovernor()
    error = {"Message": "message=ThrottleExceeded; errorCode=003001", "code": "3001"}
    body = json.dumps({"Fault": {"Error": [error], "type": "SERVICE"}}).encode()
    session = ScriptedSession(response(403, body, **{"Retry-After": "7"}))
    proxy, _ = make(session, governor=governor)
    proxy.call(post())
    assert governor.cool_downs == [7.0]


def test_a_binary_answer_comes_back_base64():
    pdf = b"%PDF-1.4\x00\xff"
    session = ScriptedSession(response(200, pdf, "application/pdf"))
    proxy, _ = make(session)
    answer = proxy.call(
        ApiRequest.from_payload({"realm_id": "9130", "method": "GET", "path": "invoice/1/pdf"})
    )
    assert answer["body_encoding"] == "base64" and base64.b64decode(answer["body"]) == pdf


def test_an_answer_too_large_for_lambda_is_refused_not_truncated():
    session = ScriptedSession(response(200, b'{"x":"' + b"a" * 2000 + b'"}'))
    proxy, records = make(session, max_answer_bytes=1000)
    with pytest.raises(ResponseTooLarge):
        proxy.call(ApiRequest.from_payload({"realm_id": "9130", "method": "GET", "path": "query"}))
    assert records[-1].outcome == "response_too_large"


def test_the_token_is_reused_while_valid_for_more_than_five_minutes():
    vault = FakeVault()
    session = ScriptedSession(*[response(200)] * 3)
    proxy, _ = make(session, vault)
    for _ in range(3):
        proxy.call(ApiRequest.from_payload({"realm_id": "9130", "method": "GET", "path": "cdc"}))
    assert vault.reads == 1


@dataclass
class FakeMetering:
    refuse: bool = False
    admitted: list[tuple[str, Any]] = field(default_factory=list)
    recorded: list[tuple[str, str, Any]] = field(default_factory=list)

    def classify(self, method, path, body):
        from qbo_connect.usage.classify import classify

        return classify(method, path, body=body)

    def admit(self, tenant_id, call):
        from qbo_connect.errors import BudgetExhausted

        self.admitted.append((tenant_id, call))
        if self.refuse and call.coreplus:
            raise BudgetExhausted("spent", reason="tenant_quota", used=1, limit=1, resets_at=0)

    def record(self, tenant_id, realm_id, call):
        self.recorded.append((tenant_id, realm_id, call))


def test_every_answered_attempt_is_metered_to_the_connections_owner():
    session = ScriptedSession(response(503), response(200))
    proxy, _ = make(session)
    proxy.metering = FakeMetering()  # type: ignore[assignment]
    vault_token = token(1)
    proxy.tokens._cache[("9130", None)] = (
        AccessToken("access-v1", NOW + 3600, "9130", "sandbox", "https://qb", 1, "acme"),
        NOW,
    )
    assert vault_token.tenant_id is None
    proxy.call(ApiRequest.from_payload({"realm_id": "9130", "method": "GET", "path": "cdc"}))
    recorded = proxy.metering.recorded  # type: ignore[union-attr]
    assert [(t, r, c.coreplus) for t, r, c in recorded] == [("acme", "9130", 1)] * 2


def test_a_read_past_the_budget_is_refused_before_anything_is_sent():
    from qbo_connect.errors import BudgetExhausted

    session = ScriptedSession(response(200), response(200))
    proxy, records = make(session)
    proxy.metering = FakeMetering(refuse=True)  # type: ignore[assignment]
    with pytest.raises(BudgetExhausted):
        proxy.call(
            ApiRequest.from_payload(
                {"realm_id": "9130", "tenant_id": "acme", "method": "GET", "path": "cdc"}
            )
        )
    assert session.sent == [] and records[-1].outcome == "budget_exhausted"
    # A write (Core) still goes through.
    answer = proxy.call(post(tenant_id="acme"))
    assert answer["status"] == 200 and len(session.sent) == 1


def test_a_governor_without_its_table_answers_rate_limited_and_sends_nothing():
    from botocore.exceptions import EndpointConnectionError

    from qbo_connect.api.governor import Governor, Limits
    from qbo_connect.errors import RateLimited

    class UnreachableTable:
        """DynamoDB unreachable: every read and write of the governor's item fails."""

        def read(self, *args, **kwargs):
            raise EndpointConnectionError(endpoint_url="https://dynamodb.example")

        write = read

    session = ScriptedSession(response(200))
    governor = Governor(UnreachableTable(), Limits(), clock=lambda: NOW, sleep=lambda s: None)  # type: ignore[arg-type]
    proxy, records = make(session, governor=governor)
    with pytest.raises(RateLimited) as refused:
        proxy.call(post(request_id="req-1"))
    error = refused.value.to_dict()["error"]
    assert error["code"] == "rate_limited" and error["reason"] == "store_unavailable"
    assert error["retry_after_seconds"] == 1 and error["request_id"] == "req-1"
    assert session.sent == [] and records[-1].outcome == "rate_limited"
