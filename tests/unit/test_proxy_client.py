"""``call()`` in the Python client: the request id of a POST is made before the first invoke,
so every automatic retry of that invoke (botocore resends the same payload) carries it."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from tests.helpers.client import load_client


class RecordingLambda:
    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.payloads: list[dict[str, Any]] = []

    def invoke(self, *, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:
        self.payloads.append(json.loads(Payload))
        return {"Payload": io.BytesIO(json.dumps(self.answers.pop(0)).encode())}


def test_a_post_gets_its_request_id_before_the_invoke_and_keeps_the_callers():
    client = load_client("qbo_connect_client_for_call")
    lam = RecordingLambda({"status": 200, "body": {}}, {"status": 200, "body": {}})
    client.call("9130", "POST", "invoice", body={"Line": []}, function_name="f", lambda_client=lam)
    client.call(
        "9130", "POST", "invoice", request_id="mine-1", function_name="f", lambda_client=lam
    )
    made, given = lam.payloads
    assert len(made["request_id"]) == 32 and given["request_id"] == "mine-1"
    assert made["body"] == {"Line": []} and "query" not in made


def test_a_get_sends_no_request_id_and_errors_raise_with_their_code():
    client = load_client("qbo_connect_client_for_call")
    lam = RecordingLambda(
        {"error": {"code": "rate_limited", "message": "wait", "retry_after_seconds": 3}}
    )
    with pytest.raises(client.QboConnectError) as refused:
        client.call("9130", "GET", "companyinfo/9130", function_name="f", lambda_client=lam)
    assert refused.value.code == "rate_limited" and refused.value.retryable
    assert refused.value.retry_after_seconds == 3
    assert "request_id" not in lam.payloads[0]
