"""The Lambda Invoke API, as ``sam local start-lambda`` serves it, so boto3 works unchanged.

``POST /2015-03-31/functions/<name>/invocations`` (RequestResponse, Event, DryRun, Tail logs,
client context) plus two local additions: ``GET /_devstack/health`` (invocation counts) and
``POST /_devstack/schedule/<logical id>`` (run a schedule now, with its EventBridge event).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import uuid
from types import SimpleNamespace
from typing import Any, Protocol
from urllib.parse import unquote

from devstack.runtime import FunctionRuntime, InvocationResult
from devstack.servers import json_response

log = logging.getLogger("devstack")


class FunctionHost(Protocol):
    """What the Lambda API needs of the stack."""

    def resolve_function(self, name: str) -> FunctionRuntime | None: ...

    def function_arn(self, name: str) -> str: ...

    def health(self) -> dict[str, Any]: ...

    def run_schedule_now(self, logical_id: str) -> InvocationResult | None: ...


class LambdaApi:
    """The WSGI app of the Lambda Invoke API."""

    def __init__(self, stack: FunctionHost) -> None:
        self.stack = stack

    _INVOKE_PATH = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations/?$")
    _SCHEDULE_PATH = re.compile(r"^/_devstack/schedule/([^/]+)/?$")

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        from werkzeug.wrappers import Request

        request = Request(environ)
        path = request.path
        if path == "/_devstack/health" and request.method == "GET":
            response = json_response(200, self.stack.health())
        elif match := self._SCHEDULE_PATH.match(path):
            response = self._run_schedule_now(unquote(match.group(1)), request.method)
        elif match := self._INVOKE_PATH.match(path):
            response = self._invoke_api(request, unquote(match.group(1)))
        else:
            response = json_response(
                404,
                {"Type": "User", "message": f"No route for {request.method} {path}"},
                {"x-amzn-ErrorType": "ResourceNotFoundException"},
            )
        return response(environ, start_response)

    def _lambda_error(self, status: int, error_type: str, message: str) -> Any:
        return json_response(
            status,
            {"Type": "User", "message": message},
            {"x-amzn-ErrorType": error_type, "x-amzn-RequestId": str(uuid.uuid4())},
        )

    def _invoke_api(self, request: Any, name: str) -> Any:
        if request.method != "POST":
            return self._lambda_error(405, "MethodNotAllowed", "Invoke takes POST")
        runtime = self.stack.resolve_function(name)
        if runtime is None:
            arn = name if name.startswith("arn:") else self.stack.function_arn(name)
            return self._lambda_error(
                404, "ResourceNotFoundException", f"Function not found: {arn}"
            )
        raw = request.get_data(cache=False)
        try:
            event = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return self._lambda_error(
                400,
                "InvalidRequestContentException",
                "Could not parse request body into json",
            )
        invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type in ("DryRun", "Event"):
            from werkzeug.wrappers import Response

            if invocation_type == "Event":
                _background_invoke(runtime, event)
            return Response(b"", status=204 if invocation_type == "DryRun" else 202)
        client_context = _parse_client_context(request.headers.get("X-Amz-Client-Context"))
        result = runtime.invoke(event, client_context=client_context)
        headers = {
            "X-Amz-Executed-Version": "$LATEST",
            "x-amzn-RequestId": result.request_id,
        }
        if request.headers.get("X-Amz-Log-Type") == "Tail":
            lines = (
                f"START RequestId: {result.request_id} Version: $LATEST\n"
                f"END RequestId: {result.request_id}\n"
                f"REPORT RequestId: {result.request_id}\tDuration: {result.duration_ms:.2f} ms\n"
            )
            headers["X-Amz-Log-Result"] = base64.b64encode(lines.encode()).decode()
        if not result.ok:
            headers["X-Amz-Function-Error"] = "Unhandled"
        from werkzeug.wrappers import Response

        response = Response(result.body(), status=200, mimetype="application/json")
        for key, value in headers.items():
            response.headers[key] = value
        return response

    def _run_schedule_now(self, logical_id: str, method: str) -> Any:
        if method != "POST":
            return self._lambda_error(405, "MethodNotAllowed", "use POST")
        result = self.stack.run_schedule_now(logical_id)
        if result is None:
            return self._lambda_error(
                404, "ResourceNotFoundException", f"No scheduled function {logical_id}"
            )
        from werkzeug.wrappers import Response

        response = Response(result.body(), status=200, mimetype="application/json")
        if not result.ok:
            response.headers["X-Amz-Function-Error"] = "Unhandled"
        return response


def _background_invoke(runtime: FunctionRuntime, event: Any) -> None:
    """``InvocationType=Event``: run on a thread of its own, as Lambda's async queue would."""

    def run() -> None:
        result = runtime.invoke(event)
        if not result.ok:
            log.warning("async invoke of %s failed", runtime.logical_id)

    thread = threading.Thread(target=run, name=f"async-{runtime.logical_id}", daemon=True)
    thread.start()


def _parse_client_context(header: str | None) -> Any:
    if not header:
        return None
    try:
        data = json.loads(base64.b64decode(header))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(data, dict):
        return None
    return SimpleNamespace(
        client=data.get("client"), custom=data.get("custom"), env=data.get("env")
    )
