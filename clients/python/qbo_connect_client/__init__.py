"""Get a valid QuickBooks Online access token from qbo-connect, for any workload in the account.

Install it (``pip install ./clients/python``; it needs only ``boto3``, and ``requests`` for
:mod:`qbo_connect_client.session`, the session python-quickbooks code runs through) and grant
your workload
``lambda:InvokeFunction`` on the ``GetTokenFunctionArn`` output of the qbo-connect stack::

    import requests
    from qbo_connect_client import QboConnectError, get_access_token

    try:
        # tenant_id: the tenant your code acts for; another tenant's company is not_connected.
        token = get_access_token("9130357766042906", tenant_id="acme")
    except QboConnectError as err:
        if err.code == "needs_reauthorization":
            ...  # ask the company's user to reconnect (send them to the Reconnect URL)
        elif err.retryable:
            ...  # Intuit or the service is briefly unavailable: retry later
        raise
    realm = token["realm_id"]
    company = requests.get(
        f"{token['api_base_url']}/v3/company/{realm}/companyinfo/{realm}?minorversion=75",
        headers={"Authorization": f"Bearer {token['access_token']}", "Accept": "application/json"},
        timeout=30,
    )

The returned dict is GetTokenFunction's answer: ``access_token``, ``token_type`` ("bearer"),
``expires_at`` (ISO 8601 UTC; at least ``min_valid_seconds`` away), ``realm_id``,
``environment`` and ``api_base_url``. Every failure raises :class:`QboConnectError` with a
stable ``code``: the service's own codes (``invalid_request``, ``not_connected``,
``needs_reauthorization``, ``refresh_unavailable``, ``configuration_error``,
``internal_error``) or this helper's (``invoke_failed``: the Lambda API refused the invoke,
e.g. missing permission or unknown function; ``throttled``: Lambda throttled it;
``function_error``: the function itself crashed or timed out; ``invalid_response``).

**Locally**, against ``make dev``, one exported variable is enough: point
``QBO_CONNECT_ENDPOINTS`` at the stack's endpoints file and both calls use its Lambda endpoint,
region and function names, with the dummy credentials the local stack accepts::

    export QBO_CONNECT_ENDPOINTS=/path/to/qbo-connect/.devstack/endpoints.json

Do not cache tokens longer than their ``expires_at`` and do not log them: ask again instead. A
warm call costs one DynamoDB read inside the service and no KMS call.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from typing import Any

__all__ = [
    "ENV_API_FUNCTION_NAME",
    "ENV_ENDPOINTS",
    "ENV_FUNCTION_NAME",
    "QboConnectError",
    "call",
    "get_access_token",
]

#: The env var read when ``function_name`` is not given (name or ARN of GetTokenFunction).
ENV_FUNCTION_NAME = "QBO_CONNECT_GET_TOKEN_FUNCTION"
#: The env var read by :func:`call` (name or ARN of QuickBooksApiFunction).
ENV_API_FUNCTION_NAME = "QBO_CONNECT_API_FUNCTION"
#: The env var naming the local stack's endpoints file (``.devstack/endpoints.json``): when set,
#: calls go to that stack's Lambda API with its function names, and need no AWS configuration.
ENV_ENDPOINTS = "QBO_CONNECT_ENDPOINTS"
#: Codes after which the same call may succeed later without anyone doing anything.
RETRYABLE_CODES = frozenset(
    {
        "refresh_unavailable",
        "throttled",
        "function_error",
        "internal_error",
        "rate_limited",
        "quickbooks_unavailable",
    }
)

_client_lock = threading.Lock()
#: One boto3 Lambda client per process and (endpoint, region, read timeout): AWS's (endpoint and
#: region None) or the local stack's.
_clients: dict[tuple[str | None, str | None, int], Any] = {}


class QboConnectError(Exception):
    """GetTokenFunction (or the invoke itself) failed; ``code`` is stable, ``message`` is safe."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retry_after_seconds: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        #: ``rate_limited``: when to try again. ``request_id``: the id of a POST to retry with.
        self.retry_after_seconds = retry_after_seconds
        self.request_id = request_id

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES


def get_access_token(
    realm_id: str,
    *,
    tenant_id: str | None = None,
    function_name: str | None = None,
    min_valid_seconds: int = 300,
    lambda_client: Any = None,
) -> dict[str, Any]:
    """A valid access token for ``realm_id`` with at least ``min_valid_seconds`` left.

    ``tenant_id`` is the tenant guard: pass the tenant your code acts for, and a realm that
    belongs to another tenant answers ``not_connected`` exactly like an unknown one, so a
    realm id from an untrusted place (a URL, a webhook) cannot reach another tenant's company.
    ``function_name`` defaults to the ``QBO_CONNECT_GET_TOKEN_FUNCTION`` env var;
    ``lambda_client`` to a shared ``boto3.client("lambda")``. Raises :class:`QboConnectError`.
    """
    local = _local_endpoints()
    name = _function_name(function_name, ENV_FUNCTION_NAME, local, "GetTokenFunction")
    # The read timeout outlives GetTokenFunction's 90 s
    client = lambda_client if lambda_client is not None else _lambda_client(local, read_timeout=100)
    request: dict[str, Any] = {"realm_id": realm_id, "min_valid_seconds": min_valid_seconds}
    if tenant_id is not None:
        request["tenant_id"] = tenant_id
    body = _invoke(client, name, request)
    if not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise QboConnectError("invalid_response", f"{name} returned no access_token")
    return body


def call(
    realm_id: str,
    method: str,
    path: str,
    *,
    tenant_id: str | None = None,
    query: dict[str, Any] | None = None,
    body: Any = None,
    content_type: str | None = None,
    request_id: str | None = None,
    minorversion: int | None = None,
    max_wait_seconds: float | None = None,
    function_name: str | None = None,
    lambda_client: Any = None,
) -> dict[str, Any]:
    """One QuickBooks API call through QuickBooksApiFunction (the token never leaves it).

    ``path`` is relative to ``/v3/company/{realm_id}/`` (``companyinfo/<realm>``, ``query``,
    ``invoice``). The answer is QuickBooks' own: ``status``, ``body``, ``content_type``,
    ``intuit_tid``, ``attempts``, ``waited_ms``, ``fault`` when there is one. A POST gets a
    ``request_id`` made here before the first invoke unless you pass one, and the automatic
    invoke retries send the same payload, so QuickBooks creates the entity once.
    ``function_name`` defaults to the ``QBO_CONNECT_API_FUNCTION`` env var. Raises
    :class:`QboConnectError` when no answer was obtained (``rate_limited`` and the others).
    """
    local = _local_endpoints()
    name = _function_name(function_name, ENV_API_FUNCTION_NAME, local, "QuickBooksApiFunction")
    if method == "POST" and request_id is None:
        request_id = uuid.uuid4().hex[:32]
    request: dict[str, Any] = {"realm_id": realm_id, "method": method, "path": path}
    optional = {
        "tenant_id": tenant_id,
        "query": query,
        "body": body,
        "content_type": content_type,
        "request_id": request_id,
        "minorversion": minorversion,
        "max_wait_seconds": max_wait_seconds,
    }
    request.update({k: v for k, v in optional.items() if v is not None})
    # The read timeout outlives QuickBooksApiFunction's 300 s
    client = lambda_client if lambda_client is not None else _lambda_client(local, read_timeout=330)
    return _invoke(client, name, request)


def _function_name(
    given: str | None, env_var: str, local: dict[str, Any] | None, logical_id: str
) -> str:
    """The function to invoke: ``given``, else ``env_var``, else the local stack's; or a
    configuration_error saying what to set."""
    name = given or os.environ.get(env_var, "").strip() or _local_function(local, logical_id)
    if not name:
        raise QboConnectError(
            "configuration_error",
            f"pass function_name or set {env_var} to the {logical_id} name or ARN "
            f"(locally: set {ENV_ENDPOINTS} to the stack's .devstack/endpoints.json)",
        )
    return name


def _local_endpoints() -> dict[str, Any] | None:
    """The local stack's endpoints file named by ``QBO_CONNECT_ENDPOINTS``, or None if unset."""
    path = os.environ.get(ENV_ENDPOINTS, "").strip()
    if not path:
        return None
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            endpoints = json.load(handle)
    except OSError as exc:
        raise QboConnectError(
            "configuration_error",
            f"{ENV_ENDPOINTS}={path} cannot be read ({type(exc).__name__}): is `make dev` running?",
        ) from None
    except ValueError:
        raise QboConnectError(
            "configuration_error", f"{ENV_ENDPOINTS}={path} is not a local stack endpoints file"
        ) from None
    if not isinstance(endpoints, dict) or not isinstance(endpoints.get("lambda"), str):
        raise QboConnectError(
            "configuration_error", f"{ENV_ENDPOINTS}={path} is not a local stack endpoints file"
        )
    return endpoints


def _local_function(endpoints: dict[str, Any] | None, logical_id: str) -> str:
    """The local name of a function of the stack (its logical id when the file has none)."""
    if endpoints is None:
        return ""
    functions = endpoints.get("functions")
    name = functions.get(logical_id) if isinstance(functions, dict) else None
    return str(name or logical_id)


def _lambda_client(endpoints: dict[str, Any] | None, *, read_timeout: int) -> Any:
    """A shared Lambda client: AWS's (credentials and region from the environment), or the
    local stack's when ``endpoints`` is given (its endpoint and region, the dummy keys it
    accepts)."""
    local: dict[str, Any] = {}
    if endpoints is not None:
        local = {
            "endpoint_url": str(endpoints["lambda"]),
            "region_name": str(endpoints.get("region") or "us-east-1"),
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
    key = (local.get("endpoint_url"), local.get("region_name"), read_timeout)
    with _client_lock:
        client = _clients.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "lambda",
                config=Config(
                    read_timeout=read_timeout,
                    connect_timeout=5,
                    retries={"mode": "standard", "max_attempts": 3},
                ),
                **local,
            )
            _clients[key] = client
        return client


def _invoke(client: Any, name: str, request: dict[str, Any]) -> dict[str, Any]:
    """Invoke ``name`` with ``request``; its JSON object answer, or QboConnectError."""
    payload = json.dumps(request)
    try:
        response = client.invoke(
            FunctionName=name, InvocationType="RequestResponse", Payload=payload.encode()
        )
    except Exception as exc:
        code = _client_error_code(exc)
        if code is None:
            raise QboConnectError("invoke_failed", f"invoke failed: {type(exc).__name__}") from exc
        throttled = code in ("TooManyRequestsException", "ThrottlingException")
        raise QboConnectError(
            "throttled" if throttled else "invoke_failed", f"invoke of {name} failed: {code}"
        ) from None

    raw = response["Payload"].read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if response.get("FunctionError"):
        detail = body.get("errorType") if isinstance(body, dict) else None
        raise QboConnectError(
            "function_error", f"{name} failed ({detail or response['FunctionError']})"
        )
    if not isinstance(body, dict):
        raise QboConnectError("invalid_response", f"{name} returned no JSON object")
    error = body.get("error")
    if isinstance(error, dict):
        retry_after = error.get("retry_after_seconds")
        request_id = error.get("request_id")
        raise QboConnectError(
            str(error.get("code") or "internal_error"),
            str(error.get("message") or ""),
            retry_after_seconds=retry_after if isinstance(retry_after, int | float) else None,
            request_id=request_id if isinstance(request_id, str) else None,
        )
    return body


def _client_error_code(exc: Exception) -> str | None:
    """The AWS error code of a botocore ClientError, without importing botocore eagerly."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error")
        if isinstance(error, dict) and error.get("Code"):
            return str(error["Code"])
    return None
