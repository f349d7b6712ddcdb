"""The local stack speaks AWS's wire formats: HTTP API 2.0 events, Lambda Invoke, SQS events.

Three layers of tests: the pure event builders and response mapper (exact shapes, no I/O), the
stack in-process with handlers swapped for recorders (what the handler received, what the poller
deleted), and ``python -m devstack`` as a subprocess with the real handler files, asserting only
transport-level facts (the handlers are being written by others and may change).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
import requests

from devstack import events, gateway, runtime
from devstack import stack as ds
from devstack.process import FunctionError, start_devstack

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 12, 19, 3, 58, 390000, tzinfo=UTC)


# ============================================================================ HTTP API events


def http_event(**overrides):
    kwargs = {
        "method": "GET",
        "raw_path": "/callback",
        "raw_query_string": "",
        "headers": [("Host", "127.0.0.1:3000"), ("User-Agent", "curl/8")],
        "body": b"",
        "route_key": "GET /callback",
        "now": NOW,
        "request_id": "req-1",
    }
    kwargs.update(overrides)
    return events.build_http_event(**kwargs)


def test_http_event_has_the_aws_shape():
    # When a plain GET arrives
    event = http_event()
    # Then the event is payload 2.0 with AWS's request context and no optional fields
    assert event == {
        "version": "2.0",
        "routeKey": "GET /callback",
        "rawPath": "/callback",
        "rawQueryString": "",
        "headers": {"host": "127.0.0.1:3000", "user-agent": "curl/8"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "127.0.0.1:3000",
            "domainPrefix": "127",
            "http": {
                "method": "GET",
                "path": "/callback",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "curl/8",
            },
            "requestId": "req-1",
            "routeKey": "GET /callback",
            "stage": "$default",
            "time": "12/Mar/2026:19:03:58 +0000",
            "timeEpoch": 1773342238390,
        },
        "isBase64Encoded": False,
    }


def test_http_event_query_cookies_and_headers():
    # Given duplicate query keys, encoded values, cookies and a repeated header
    event = http_event(
        raw_query_string="code=a%2Bb&state=s1&x=1&x=2&empty=",
        headers=[
            ("Host", "127.0.0.1:3000"),
            ("Cookie", "qbo_state=abc; other=1"),
            ("X-Multi", "a"),
            ("x-multi", "b"),
        ],
    )
    # Then rawQueryString is verbatim and the parsed parameters are decoded and comma-joined
    assert event["rawQueryString"] == "code=a%2Bb&state=s1&x=1&x=2&empty="
    assert event["queryStringParameters"] == {"code": "a+b", "state": "s1", "x": "1,2", "empty": ""}
    # And cookies are a list, moved out of the headers
    assert event["cookies"] == ["qbo_state=abc", "other=1"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-multi"] == "a,b"


def test_http_event_bodies():
    text = http_event(
        method="POST", body=b'{"a": 1}', headers=[("Content-Type", "application/json")]
    )
    assert text["body"] == '{"a": 1}'
    assert text["isBase64Encoded"] is False
    binary = http_event(method="POST", body=b"\x00\xff", headers=[("Content-Type", "image/png")])
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == b"\x00\xff"


def test_http_response_structured():
    # Given a handler result with headers, multi-value headers, cookies and a base64 body
    result = {
        "statusCode": 302,
        "headers": {"Location": "https://intuit.example/auth", "Cache-Control": "no-store"},
        "multiValueHeaders": {"X-Two": ["1", "2"]},
        "cookies": ["a=1; HttpOnly; Secure", "b=2"],
        "body": base64.b64encode(b"\x01\x02").decode(),
        "isBase64Encoded": True,
    }
    # When it is mapped to HTTP
    response = events.to_http_response(result)
    # Then each cookie is its own Set-Cookie and the body is decoded
    assert response.status == 302
    assert ("Location", "https://intuit.example/auth") in response.headers
    assert [v for k, v in response.headers if k == "Set-Cookie"] == ["a=1; HttpOnly; Secure", "b=2"]
    assert [v for k, v in response.headers if k == "X-Two"] == ["1", "2"]
    assert response.body == b"\x01\x02"


def test_http_response_inferred_like_aws():
    # A result without statusCode is a 200 JSON body (format 2.0 inference)
    assert events.to_http_response({"a": 1}) == (
        200,
        [("Content-Type", "application/json")],
        b'{"a": 1}',
    )
    assert events.to_http_response("hello").body == b"hello"
    assert events.to_http_response(None).body == b"null"
    html = events.to_http_response(
        {"statusCode": 200, "headers": {"content-type": "text/html"}, "body": "<p>"}
    )
    assert html.headers == [("content-type", "text/html")]


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": "abc"},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "body": "!!", "isBase64Encoded": True},
        {"statusCode": 200, "cookies": "a=1"},
    ],
)
def test_malformed_http_response(result):
    with pytest.raises(events.MalformedResponseError):
        events.to_http_response(result)


def test_route_matching():
    routes = gateway.compile_routes(
        [
            ("GET", "/connect", "A"),
            ("ANY", "/items/{id}", "B"),
            ("GET", "/files/{path+}", "C"),
            ("GET", "/items/special", "D"),
        ]
    )
    assert gateway.match_route(routes, "GET", "/connect")[0].logical_id == "A"
    assert gateway.match_route(routes, "POST", "/connect") is None
    assert gateway.match_route(routes, "GET", "/nope") is None
    route, params = gateway.match_route(routes, "DELETE", "/items/42")
    assert (route.logical_id, route.route_key, params) == ("B", "ANY /items/{id}", {"id": "42"})
    assert gateway.match_route(routes, "GET", "/items/special")[0].logical_id == "D"
    assert gateway.match_route(routes, "GET", "/files/a/b.txt")[1] == {"path": "a/b.txt"}


# ============================================================================ SQS and schedule


def test_sqs_event_from_receive_message():
    # Given a message as boto3's receive_message returns it
    message = {
        "MessageId": "m-1",
        "ReceiptHandle": "rh-1",
        "MD5OfBody": "md5",
        "Body": '{"realm_id": "1"}',
        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1"},
        "MD5OfMessageAttributes": "md5a",
        "MessageAttributes": {
            "kind": {"StringValue": "due", "DataType": "String"},
            "blob": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
        },
    }
    # When it becomes a Lambda event
    event = events.build_sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:q")
    # Then the record has the SQS event source's field names
    (record,) = event["Records"]
    assert record["messageId"] == "m-1"
    assert record["receiptHandle"] == "rh-1"
    assert record["body"] == '{"realm_id": "1"}'
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["md5OfBody"] == "md5"
    assert record["md5OfMessageAttributes"] == "md5a"
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == "arn:aws:sqs:us-east-1:123456789012:q"
    assert record["awsRegion"] == "us-east-1"
    assert record["messageAttributes"]["kind"] == {
        "stringValue": "due",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    assert record["messageAttributes"]["blob"]["binaryValue"] == "AAE="


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": None}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "m2"}]}, {"m2"}),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, None),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, None),
        ({"batchItemFailures": [{"id": "m2"}]}, None),
        ({"batchItemFailures": [{"itemIdentifier": "unknown"}]}, None),
        ("not an object", None),
    ],
)
def test_partial_batch_response_rules(result, expected):
    assert events.parse_batch_item_failures(result, ["m1", "m2"]) == expected


def test_scheduled_event():
    event = events.build_scheduled_event("arn:aws:events:us-east-1:123456789012:rule/r", now=NOW)
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/r"]
    assert event["time"] == "2026-03-12T19:03:58Z"
    assert event["detail"] == {}


# ============================================================================ function runtime


def make_runtime(
    tmp_path: Path, name: str, code: str, timeout: float = 5
) -> runtime.FunctionRuntime:
    code_dir = tmp_path / name
    code_dir.mkdir()
    (code_dir / "app.py").write_text(code)
    return runtime.FunctionRuntime(
        name,
        code_dir=code_dir,
        handler="app.lambda_handler",
        timeout=timeout,
        memory_size=256,
        physical_name=f"stack-{name}",
        arn=f"arn:aws:lambda:us-east-1:123456789012:function:stack-{name}",
    )


def test_runtime_loads_each_app_py_separately_with_a_context(tmp_path):
    # Given two functions whose files are both called app.py
    one = make_runtime(
        tmp_path,
        "One",
        "def lambda_handler(event, context):\n"
        "    return {'me': 'one', 'fn': context.function_name,\n"
        "            'mem': context.memory_limit_in_mb,\n"
        "            'left': context.get_remaining_time_in_millis(),\n"
        "            'rid': context.aws_request_id, 'event': event}\n",
    )
    two = make_runtime(tmp_path, "Two", "def lambda_handler(event, context):\n    return 'two'\n")
    # When both are invoked
    first, second = one.invoke({"x": 1}), two.invoke({})
    # Then each ran its own module with a Lambda-like context
    assert first.ok and second.ok
    assert first.payload["me"] == "one"
    assert first.payload["fn"] == "stack-One"
    assert first.payload["mem"] == 256
    assert 0 < first.payload["left"] <= 5000
    assert first.payload["rid"] == first.request_id
    assert first.payload["event"] == {"x": 1}
    assert second.payload == "two"
    assert sys.modules["qbo_fn_One"] is not sys.modules["qbo_fn_Two"]


def test_runtime_errors_are_lambda_function_errors(tmp_path):
    raising = make_runtime(
        tmp_path, "Raise", "def lambda_handler(event, context):\n    raise ValueError('boom')\n"
    )
    broken = make_runtime(tmp_path, "Broken", "import no_such_module_here\n")
    slow = make_runtime(
        tmp_path,
        "Slow",
        "import time\ndef lambda_handler(event, context):\n    time.sleep(3)\n",
        timeout=0.3,
    )
    unmarshallable = make_runtime(
        tmp_path, "Obj", "def lambda_handler(event, context):\n    return object()\n"
    )
    assert raising.invoke({}).error == {"errorMessage": "boom", "errorType": "ValueError"}
    assert broken.invoke({}).error["errorType"] == "Runtime.ImportModuleError"
    timed_out = slow.invoke({}).error
    assert timed_out["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 0.30 seconds" in timed_out["errorMessage"]
    assert unmarshallable.invoke({}).error["errorType"] == "Runtime.MarshalError"
    assert raising.stats.errors == 1


# ============================================================================ in-process stack


@pytest.fixture(scope="class")
def local_stack(tmp_path_factory):
    """The real template in-process on free ports, with no schedule thread."""
    with ds.LocalStack(
        api_port=0,
        lambda_port=0,
        aws_port=0,
        state_dir=tmp_path_factory.mktemp("state"),
        schedule=False,
        out=lambda line: None,
    ) as stack:
        yield stack


class TestInProcess:
    """One stack per class: it sets os.environ, which must be restored before the subprocess
    tests (their child would inherit it)."""

    def test_gateway_passes_the_aws_event_and_maps_the_response(self, local_stack):
        # Given ConnectFunction replaced by a recorder answering with a cookie and a redirect
        seen = []

        def recorder(event, context):
            seen.append(event)
            return {
                "statusCode": 302,
                "headers": {"Location": "http://example.test/x"},
                "cookies": ["s=1; HttpOnly", "t=2"],
            }

        local_stack.functions["ConnectFunction"].set_handler(recorder)
        try:
            # When a browser-like request reaches /connect
            response = requests.get(
                f"{local_stack.api_url}/connect?session=abc&x=1&x=2",
                headers={"Cookie": "a=1; b=2"},
                allow_redirects=False,
                timeout=10,
            )
        finally:
            local_stack.functions["ConnectFunction"].set_handler(None)
        # Then the handler got the payload 2.0 event for its route
        (event,) = seen
        assert event["routeKey"] == "GET /connect"
        assert event["rawQueryString"] == "session=abc&x=1&x=2"
        assert event["queryStringParameters"] == {"session": "abc", "x": "1,2"}
        assert event["cookies"] == ["a=1", "b=2"]
        port = local_stack.api_url.rsplit(":", 1)[1]
        assert event["requestContext"]["domainName"] == f"127.0.0.1:{port}"
        assert event["headers"]["x-forwarded-proto"] == "http"
        # And the response is what API Gateway would send
        assert response.status_code == 302
        assert response.headers["Location"] == "http://example.test/x"
        assert response.raw.headers.getlist("Set-Cookie") == ["s=1; HttpOnly", "t=2"]

    def test_gateway_errors_look_like_api_gateway(self, local_stack):
        local_stack.functions["CallbackFunction"].set_handler(lambda e, c: 1 / 0)
        try:
            failed = requests.get(f"{local_stack.api_url}/callback?code=secret", timeout=10)
        finally:
            local_stack.functions["CallbackFunction"].set_handler(None)
        assert failed.status_code == 500
        assert failed.json() == {"message": "Internal Server Error"}
        missing = requests.post(f"{local_stack.api_url}/connect", timeout=10)
        assert missing.status_code == 404
        assert missing.json() == {"message": "Not Found"}

    def test_environment_is_set_from_the_template(self, local_stack):
        import os

        assert os.environ["TABLE_NAME"] == "qbo-connect-local-ConnectionsTable"
        assert os.environ["AWS_ENDPOINT_URL"] == local_stack.aws_url
        assert os.environ["PUBLIC_BASE_URL"] == local_stack.api_url
        assert os.environ["REFRESH_QUEUE_URL"] == local_stack.endpoints["queues"]["RefreshQueue"]
        assert os.environ["INTUIT_TOKEN_ENDPOINT"].startswith(local_stack.simulator.base_url)
        assert os.environ["TOKEN_KEY_ID"] == local_stack.endpoints["key"]

    def test_sqs_poller_deletes_only_successful_messages(self, local_stack):
        # Given a worker that fails the message whose body is "bad"
        batches = []
        done = threading.Event()

        def worker(event, context):
            batches.append(event)
            done.set()
            return {
                "batchItemFailures": [
                    {"itemIdentifier": r["messageId"]}
                    for r in event["Records"]
                    if r["body"] == "bad"
                ]
            }

        runtime = local_stack.functions["RefreshWorkerFunction"]
        runtime.set_handler(worker)
        sqs = local_stack.client("sqs")
        queue_url = local_stack.endpoints["queues"]["RefreshQueue"]
        try:
            # When three messages arrive in one batch
            sqs.send_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "MessageBody": b} for i, b in enumerate(["ok1", "bad", "ok2"])
                ],
            )
            assert done.wait(10)
            # Then the two successes are deleted and the failure waits for its visibility timeout
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])[
                    "Attributes"
                ]
                if attrs["ApproximateNumberOfMessagesNotVisible"] == "1":
                    break
                time.sleep(0.1)
            assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"
            assert attrs["ApproximateNumberOfMessages"] == "0"
        finally:
            runtime.set_handler(None)
        records = [r for batch in batches for r in batch["Records"]]
        assert sorted(r["body"] for r in records) == ["bad", "ok1", "ok2"]
        assert all(r["eventSource"] == "aws:sqs" for r in records)
        assert records[0]["eventSourceARN"].endswith(":qbo-connect-local-RefreshQueue")

    def test_schedule_endpoint_runs_the_sweep_with_a_scheduled_event(self, local_stack):
        seen = []
        runtime = local_stack.functions["RefreshSweepFunction"]
        runtime.set_handler(lambda event, context: seen.append(event) or {"enqueued": 0})
        try:
            response = requests.post(
                f"{local_stack.lambda_url}/_devstack/schedule/RefreshSweepFunction", timeout=10
            )
        finally:
            runtime.set_handler(None)
        assert response.status_code == 200
        assert response.json() == {"enqueued": 0}
        assert seen[0]["detail-type"] == "Scheduled Event"
        assert seen[0]["resources"][0].endswith(":rule/qbo-connect-local-RefreshSweepFunctionSweep")
        unknown = requests.post(f"{local_stack.lambda_url}/_devstack/schedule/GetTokenFunction")
        assert unknown.status_code == 404

    def test_lambda_api_error_and_async_invocations(self, local_stack):
        runtime = local_stack.functions["GetTokenFunction"]
        calls = threading.Event()

        def handler(event, context):
            if event.get("fail"):
                raise RuntimeError("nope")
            calls.set()
            return {"echo": event, "arn": context.invoked_function_arn}

        runtime.set_handler(handler)
        client = boto3.client(
            "lambda",
            endpoint_url=local_stack.lambda_url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        try:
            failed = client.invoke(FunctionName="GetTokenFunction", Payload=b'{"fail": true}')
            assert failed["FunctionError"] == "Unhandled"
            assert json.loads(failed["Payload"].read()) == {
                "errorMessage": "nope",
                "errorType": "RuntimeError",
            }
            queued = client.invoke(
                FunctionName="GetTokenFunction", InvocationType="Event", Payload=b"{}"
            )
            assert queued["StatusCode"] == 202
            assert calls.wait(5)
            arn = local_stack.functions["GetTokenFunction"].arn
            by_arn = client.invoke(FunctionName=arn, Payload=b'{"a": 1}')
            assert json.loads(by_arn["Payload"].read()) == {"echo": {"a": 1}, "arn": arn}
        finally:
            runtime.set_handler(None)


# ============================================================================ subprocess


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_devstack_process_end_to_end(tmp_path):
    with start_devstack(tmp_path, extra_args=["--sweep-interval", "0.5"]) as stack:
        # endpoints.json has what other tests build on
        ep = stack.endpoints
        for key in ("api", "lambda", "aws", "intuit", "intuit_env", "events_queue", "table"):
            assert ep[key], key
        assert set(ep["intuit_env"]) >= {
            "INTUIT_AUTHORIZATION_ENDPOINT",
            "INTUIT_TOKEN_ENDPOINT",
            "INTUIT_JWKS_URI",
            "QUICKBOOKS_API_BASE_URL",
        }
        assert ep["intuit_env"]["INTUIT_TOKEN_ENDPOINT"].startswith(stack.intuit)
        assert ep["functions"]["GetTokenFunction"] == "qbo-connect-local-GetTokenFunction"

        # The gateway routes template routes to their handler and 404s anything else
        connect = requests.get(f"{stack.api}/connect", allow_redirects=False, timeout=30)
        assert connect.status_code != 404 or connect.json() != {"message": "Not Found"}
        assert "Apigw-Requestid" in connect.headers
        nope = requests.get(f"{stack.api}/nope", timeout=10)
        assert (nope.status_code, nope.json()) == (404, {"message": "Not Found"})
        assert stack.health()["functions"]["ConnectFunction"]["invocations"] == 1

        # boto3's Lambda client works unchanged against the Invoke API
        client = stack.lambda_client()
        for name in (
            "GetTokenFunction",
            "qbo-connect-local-GetTokenFunction",
            "arn:aws:lambda:us-east-1:123456789012:function:qbo-connect-local-GetTokenFunction",
        ):
            response = client.invoke(FunctionName=name, Payload=json.dumps({"realm_id": "1"}))
            assert response["StatusCode"] == 200
            assert response["ExecutedVersion"] == "$LATEST"
            json.loads(response["Payload"].read())  # a JSON document, whatever the handler says
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.invoke(FunctionName="NoSuchFunction", Payload=b"{}")
        # The helper raises FunctionError for a handler failure; either outcome is transport-ok.
        with contextlib.suppress(FunctionError):
            stack.invoke("GetTokenFunction", {"realm_id": "1"})

        # The resources exist in moto as template.yaml declares them
        ddb = stack.boto3_client("dynamodb").describe_table(TableName=ep["table"])["Table"]
        assert {i["IndexName"] for i in ddb["GlobalSecondaryIndexes"]} == {
            "TenantIndex",
            "DueIndex",
        }
        # (on the AWS managed key, as the template says: not on the tokens' key)
        assert ddb["SSEDescription"]["Status"] == "ENABLED"
        assert ddb["SSEDescription"]["SSEType"] == "KMS"
        assert not ep["key"].endswith(
            ddb["SSEDescription"].get("KMSMasterKeyArn", "none").split("/")[-1]
        )
        secret = json.loads(
            stack.boto3_client("secretsmanager").get_secret_value(SecretId=ep["secret"])[
                "SecretString"
            ]
        )
        assert secret["client_id"] and secret["client_secret"]
        kms = stack.boto3_client("kms")
        assert kms.describe_key(KeyId=ep["key"])["KeyMetadata"]["KeySpec"] == "SYMMETRIC_DEFAULT"
        aliases = {a["AliasName"] for a in kms.list_aliases()["Aliases"]}
        assert "alias/qbo-connect-local-tokens" in aliases
        sqs = stack.boto3_client("sqs")
        attrs = sqs.get_queue_attributes(
            QueueUrl=ep["queues"]["RefreshQueue"], AttributeNames=["All"]
        )["Attributes"]
        assert attrs["VisibilityTimeout"] == "1080"
        assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] == 5

        # Lifecycle events put on the bus are copied to the events queue
        stack.boto3_client("events").put_events(
            Entries=[
                {
                    "Source": "qbo-connect",
                    "DetailType": "connection.created",
                    "Detail": json.dumps({"realm_id": "1"}),
                    "EventBusName": ep["event_bus"],
                }
            ]
        )
        received = sqs.receive_message(QueueUrl=ep["events_queue"], WaitTimeSeconds=2)
        (message,) = received["Messages"]
        assert json.loads(message["Body"])["detail-type"] == "connection.created"

        # --sweep-interval runs the scheduled function on that interval
        deadline = time.monotonic() + 5
        while stack.health()["functions"]["RefreshSweepFunction"]["invocations"] == 0:
            assert time.monotonic() < deadline, "the sweep never ran"
            time.sleep(0.1)

        ports = [int(ep[k].rsplit(":", 1)[1]) for k in ("api", "lambda", "aws", "intuit")]
        started = time.monotonic()
        code = stack.stop()
        assert code == 0
        assert time.monotonic() - started < 10
    # Ctrl-C freed every port and no secret reached the log
    assert all(port_is_free(p) for p in ports)
    log = stack.log_text()
    assert secret["client_secret"] not in log
    assert "connect" in log  # the connect link (or the reason there is none) was printed
    assert "devstack: stopped" in log


def test_port_in_use_is_a_one_line_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "devstack",
                "--api-port",
                str(port),
                "--lambda-port",
                "0",
                "--aws-port",
                "0",
                "--state-dir",
                str(tmp_path),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--api-port" in lines[0] and str(port) in lines[0]
    assert "Traceback" not in result.stderr
