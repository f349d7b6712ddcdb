"""devstack.aws_faults: the proxy breaks exactly the calls its rules select, the way it says.

An upstream that counts what reached it stands in for the AWS endpoint, so each mode is seen
from both sides: did the request get applied, and what did the client hear.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from devstack.aws_faults import FaultProxy

TARGET = "DynamoDB_20120810.UpdateItem"


class Upstream:
    """An HTTP server that records every request body and answers 200."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream.received.append(
                    {"target": self.headers.get("X-Amz-Target"), "body": body.decode()}
                )
                answer = b'{"Attributes": {}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxied() -> Iterator[tuple[Upstream, FaultProxy]]:
    upstream = Upstream()
    proxy = FaultProxy(upstream.url).start()
    try:
        yield upstream, proxy
    finally:
        proxy.stop()
        upstream.stop()


def call(proxy: FaultProxy, body: str, target: str = TARGET) -> requests.Response:
    return requests.post(proxy.url + "/", data=body, headers={"X-Amz-Target": target}, timeout=5)


def test_fail_before_answers_an_aws_error_without_forwarding(proxied) -> None:
    upstream, proxy = proxied
    proxy.add_rule(TARGET, mode="fail_before", status=400, error="ThrottlingException")
    response = call(proxy, '{"n": 1}')
    assert response.status_code == 400
    assert response.json()["__type"].endswith("#ThrottlingException")
    assert upstream.received == []
    # the rule fired once (times=1): the next call goes through
    assert call(proxy, '{"n": 2}').status_code == 200
    assert [r["body"] for r in upstream.received] == ['{"n": 2}']


def test_lose_answer_applies_then_answers_an_error(proxied) -> None:
    upstream, proxy = proxied
    proxy.add_rule(TARGET, mode="lose_answer")
    assert call(proxy, '{"n": 1}').status_code == 500
    assert [r["body"] for r in upstream.received] == ['{"n": 1}']


def test_drop_after_applies_then_closes_without_an_answer(proxied) -> None:
    upstream, proxy = proxied
    proxy.add_rule(TARGET, mode="drop_after")
    with pytest.raises(requests.ConnectionError):
        call(proxy, '{"n": 1}')
    assert [r["body"] for r in upstream.received] == ['{"n": 1}']


def test_rules_select_by_operation_body_and_position(proxied) -> None:
    _upstream, proxy = proxied
    # The 2nd and 3rd UpdateItems that write "#committed_by" fail; nothing else does
    proxy.add_rule(TARGET, body_contains="#committed_by", nth=2, times=2)
    statuses = [
        call(proxy, '{"x": "#committed_by"}').status_code,
        call(proxy, '{"x": "#lease_until"}').status_code,
        call(proxy, '{"x": "#committed_by"}', target="TrentService.Decrypt").status_code,
        call(proxy, '{"x": "#committed_by"}').status_code,
        call(proxy, '{"x": "#committed_by"}').status_code,
        call(proxy, '{"x": "#committed_by"}').status_code,
    ]
    assert statuses == [200, 200, 200, 500, 500, 200]
    (rule,) = proxy.rules()
    assert (rule.seen, rule.fired) == (4, 2)
    assert proxy.counts() == {TARGET: 5, "TrentService.Decrypt": 1}


def test_the_control_api_over_http(proxied) -> None:
    _upstream, proxy = proxied
    created = requests.post(
        proxy.url + "/_faults/rules",
        data=json.dumps({"operation": TARGET, "mode": "lose_answer", "times": 2}),
        timeout=5,
    )
    assert created.status_code == 200 and created.json()["id"] == 1
    bad = requests.post(
        proxy.url + "/_faults/rules", data=json.dumps({"operation": TARGET, "mode": "x"}), timeout=5
    )
    assert bad.status_code == 400 and "mode" in bad.json()["error"]
    assert call(proxy, "{}").status_code == 500
    rules = requests.get(proxy.url + "/_faults/rules", timeout=5).json()
    assert [(r["mode"], r["fired"]) for r in rules] == [("lose_answer", 1)]
    assert requests.get(proxy.url + "/_faults/counts", timeout=5).json() == {TARGET: 1}
    requests.post(proxy.url + "/_faults/reset", timeout=5)
    assert requests.get(proxy.url + "/_faults/rules", timeout=5).json() == []
    assert call(proxy, "{}").status_code == 200
