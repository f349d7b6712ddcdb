"""clients/python/qbo_connect_client/ against a real Lambda Invoke API over HTTP.

The local stack (``python -m devstack`` via devstack/process.py) serves the
Lambda Invoke API the way ``sam local start-lambda`` does, in front of the real handlers, moto
and its own Intuit simulator. A connection is imported through ConnectionsFunction with tokens
the stack's simulator issued; then the helper is used exactly as another workload would.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devstack.process import DevstackProcess, start_devstack
from tests.helpers.client import load_client
from tests.reliability.conftest import new_realm

client = load_client()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevstackProcess]:
    with start_devstack(
        tmp_path_factory.mktemp("devstack"),
        extra_args=["--auto-approve", "--no-schedule", "--no-poller", "--no-connect-link"],
    ) as running:
        yield running


@pytest.fixture(scope="module")
def connected(stack: DevstackProcess) -> dict[str, Any]:
    """A realm imported into the stack with tokens its simulator issued."""
    secret = stack.boto3_client("secretsmanager").get_secret_value(
        SecretId=stack.endpoints["secret"]
    )
    client_id = json.loads(secret["SecretString"])["client_id"]
    realm_id = new_realm()
    issued = requests.post(
        f"{stack.intuit}/_sim/issue-tokens",
        json={"client_id": client_id, "realm_id": realm_id},
        timeout=10,
    ).json()
    imported = stack.invoke(
        "ConnectionsFunction",
        {
            "action": "import_connection",
            "realm_id": realm_id,
            "tenant_id": "tenant-client-helper",
            "refresh_token": issued["refresh_token"],
        },
    )
    assert imported["connection"]["status"] == "active", imported
    return {"realm_id": realm_id, "issued": issued}


def test_returns_a_valid_token_through_the_lambda_invoke_api(
    stack: DevstackProcess, connected: dict[str, Any]
) -> None:
    realm_id = connected["realm_id"]
    token = client.get_access_token(
        realm_id, function_name="GetTokenFunction", lambda_client=stack.lambda_client()
    )
    assert token["realm_id"] == realm_id and token["token_type"] == "bearer"
    response = requests.get(
        f"{token['api_base_url']}/v3/company/{realm_id}/companyinfo/{realm_id}?minorversion=75",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=10,
    )
    assert response.status_code == 200 and "CompanyInfo" in response.json()
    # Nothing the stack logged holds a token
    log = stack.log_text()
    for secret in (token["access_token"], *connected["issued"].values()):
        if isinstance(secret, str) and len(secret) > 16:
            assert secret not in log


def test_function_name_comes_from_the_environment(
    stack: DevstackProcess, connected: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(client.ENV_FUNCTION_NAME, "GetTokenFunction")
    token = client.get_access_token(
        connected["realm_id"], min_valid_seconds=600, lambda_client=stack.lambda_client()
    )
    assert token["access_token"]


def test_service_errors_become_typed_errors(stack: DevstackProcess) -> None:
    lam = stack.lambda_client()
    with pytest.raises(client.QboConnectError) as unknown:
        client.get_access_token(new_realm(), function_name="GetTokenFunction", lambda_client=lam)
    assert unknown.value.code == "not_connected" and not unknown.value.retryable
    with pytest.raises(client.QboConnectError) as bad:
        client.get_access_token("not-a-realm", function_name="GetTokenFunction", lambda_client=lam)
    assert bad.value.code == "invalid_request"


def test_invoke_failures_become_typed_errors(
    stack: DevstackProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(client.ENV_FUNCTION_NAME, raising=False)
    with pytest.raises(client.QboConnectError) as missing:
        client.get_access_token("1", lambda_client=stack.lambda_client())
    assert missing.value.code == "configuration_error"
    with pytest.raises(client.QboConnectError) as unknown_function:
        client.get_access_token(
            "1", function_name="NoSuchFunction", lambda_client=stack.lambda_client()
        )
    assert unknown_function.value.code == "invoke_failed"
    assert "ResourceNotFound" in unknown_function.value.message


class CrashingFunction:
    """What the Lambda API answers when the function itself failed (X-Amz-Function-Error)."""

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        body = {"errorMessage": "Task timed out after 60.00 seconds", "errorType": "Sandbox"}
        return {"FunctionError": "Unhandled", "Payload": io.BytesIO(json.dumps(body).encode())}


def test_function_errors_become_a_retryable_typed_error() -> None:
    with pytest.raises(client.QboConnectError) as crashed:
        client.get_access_token("1", function_name="F", lambda_client=CrashingFunction())
    assert crashed.value.code == "function_error" and crashed.value.retryable
