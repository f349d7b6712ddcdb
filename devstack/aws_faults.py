"""A fault-injecting HTTP proxy in front of an AWS endpoint (moto server, LocalStack).

Test infrastructure: the reliability tests put it between the local stack and its AWS endpoint
(``python -m devstack --aws-endpoint <proxy URL>``) to make AWS calls fail the two ways real
AWS calls fail:

* **fail before applying**: the proxy answers an error (a 5xx, or a 400 throttling error)
  without forwarding the request. Nothing happened; boto3 retries.
* **apply, then lose the answer**: the proxy forwards the request (the upstream applies it)
  and then answers a 5xx instead of the real answer, or drops the connection without any
  answer. boto3 retries a request that was already applied: that is the case every
  conditional write must recognise as its own earlier success.

A rule selects calls by operation (the ``X-Amz-Target`` header, e.g.
``DynamoDB_20120810.UpdateItem``, ``TrentService.Decrypt``, ``AWSEvents.PutEvents``) and,
optionally, by a substring of the request body (``"#committed_by"`` picks the vault's commit out
of all UpdateItems). It fires on the ``nth`` matching call and the ``times - 1`` after it
(``times`` covers boto3's retries of one call). Rules are evaluated in the order added.

Control API on the proxy itself (JSON), or the Python methods of :class:`FaultProxy`:

* ``POST /_faults/rules`` a rule (fields of :class:`FaultRule`); answers its id;
* ``GET /_faults/rules`` the rules with their ``seen`` / ``fired`` counts;
* ``DELETE /_faults/rules`` removes every rule;
* ``GET /_faults/counts`` calls per operation since start (or the last reset);
* ``POST /_faults/reset`` clears rules and counts.

Run standalone: ``python -m devstack.aws_faults --upstream http://127.0.0.1:5000 --port 0``
prints ``{"port": n}`` on its first stdout line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOST = "127.0.0.1"
CONTROL_PREFIX = "/_faults/"
MODES = ("fail_before", "lose_answer", "drop_after")
#: Hop-by-hop headers never forwarded either way.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    }
)


@dataclass
class FaultRule:
    """When and how to break matching calls.

    ``mode``: ``fail_before`` (answer ``status``/``error`` without forwarding), ``lose_answer``
    (forward, then answer ``status``/``error``), ``drop_after`` (forward, then close the
    connection without an answer).
    """

    operation: str
    mode: str = "fail_before"
    nth: int = 1
    times: int = 1
    body_contains: str = ""
    status: int = 500
    error: str = "InternalServerError"
    id: int = 0
    seen: int = 0
    fired: int = 0

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if self.nth < 1 or self.times < 1:
            raise ValueError("nth and times must be at least 1")
        if not self.operation:
            raise ValueError("operation (the X-Amz-Target value) is required")
        if not 400 <= self.status <= 599:
            raise ValueError("status must be an HTTP error status")

    def matches(self, operation: str, body: bytes) -> bool:
        if operation != self.operation:
            return False
        return not self.body_contains or self.body_contains.encode() in body


@dataclass
class _State:
    rules: list[FaultRule] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def decide(self, operation: str, body: bytes) -> FaultRule | None:
        """Count the call against every matching rule; the first one in range fires."""
        firing: FaultRule | None = None
        with self.lock:
            self.counts[operation] += 1
            for rule in self.rules:
                if not rule.matches(operation, body):
                    continue
                rule.seen += 1
                if firing is None and rule.nth <= rule.seen < rule.nth + rule.times:
                    rule.fired += 1
                    firing = FaultRule(**asdict(rule))
        return firing


def _error_body(rule: FaultRule, operation: str) -> bytes:
    """An AWS JSON-protocol error body, as botocore parses it."""
    prefix = operation.split(".", 1)[0]
    error_type = rule.error
    if prefix.startswith("DynamoDB"):
        error_type = f"com.amazonaws.dynamodb.v20120810#{rule.error}"
    return json.dumps({"__type": error_type, "message": "injected by devstack.aws_faults"}).encode()


class FaultProxy:
    """The proxy server (a thread); ``url`` is where clients point their endpoint."""

    def __init__(self, upstream: str, *, host: str = HOST, port: int = 0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("upstream must be an http:// URL")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.state = _State()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Silent: test output is scanned for leaked tokens, not traffic."""

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                if self.path.startswith(CONTROL_PREFIX):
                    self._reply(*proxy._control(self.command, self.path, body))
                    return
                operation = self.headers.get("X-Amz-Target") or f"{self.command} {self.path}"
                rule = proxy.state.decide(operation, body)
                if rule is not None and rule.mode == "fail_before":
                    self._reply(rule.status, _error_body(rule, operation))
                    return
                status, headers, answer = proxy._forward(
                    self.command, self.path, dict(self.headers.items()), body
                )
                if rule is None:
                    self._reply(status, answer, headers)
                elif rule.mode == "lose_answer":
                    self._reply(rule.status, _error_body(rule, operation))
                else:  # drop_after: the request was applied, the client hears nothing
                    self.close_connection = True

            def _reply(
                self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None
            ) -> None:
                self.send_response(status)
                for key, value in headers or [("Content-Type", "application/x-amz-json-1.0")]:
                    if key.lower() in _HOP_BY_HOP or key.lower() == "content-length":
                        continue
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.url = f"http://{host}:{self._server.server_address[1]}"

    # ----- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----- rules -------------------------------------------------------------------------------

    def add_rule(self, operation: str, **kwargs: Any) -> FaultRule:
        rule = FaultRule(operation=operation, **kwargs)
        rule.validate()
        with self.state.lock:
            rule.id = self.state.next_id
            self.state.next_id += 1
            self.state.rules.append(rule)
        return rule

    def rules(self) -> list[FaultRule]:
        with self.state.lock:
            return [FaultRule(**asdict(r)) for r in self.state.rules]

    def clear(self) -> None:
        with self.state.lock:
            self.state.rules.clear()

    def counts(self) -> dict[str, int]:
        with self.state.lock:
            return dict(self.state.counts)

    def reset(self) -> None:
        with self.state.lock:
            self.state.rules.clear()
            self.state.counts.clear()

    # ----- plumbing ----------------------------------------------------------------------------

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            forwarded = {
                k: v
                for k, v in headers.items()
                if k.lower() not in _HOP_BY_HOP and k.lower() != "host"
            }
            # The upstream's own name: a local moto server refuses any Host but its own
            # (devstack.local_guard); signatures are not checked, so re-addressing is harmless.
            forwarded["Host"] = f"{self.upstream_host}:{self.upstream_port}"
            conn.request(method, path, body=body, headers=forwarded)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        name = path[len(CONTROL_PREFIX) :].split("?", 1)[0]

        def ok(value: Any) -> tuple[int, bytes]:
            return 200, json.dumps(value).encode()

        if name == "rules" and method == "POST":
            try:
                spec = json.loads(body or b"{}")
                rule = self.add_rule(**spec)
            except (TypeError, ValueError) as exc:
                return 400, json.dumps({"error": str(exc)}).encode()
            return ok({"id": rule.id})
        if name == "rules" and method == "GET":
            return ok([asdict(r) for r in self.rules()])
        if name == "rules" and method == "DELETE":
            self.clear()
            return ok({"ok": True})
        if name == "counts" and method == "GET":
            return ok(self.counts())
        if name == "reset" and method == "POST":
            self.reset()
            return ok({"ok": True})
        return 404, json.dumps({"error": "not_found"}).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.aws_faults",
        description="A fault-injecting proxy in front of an AWS endpoint (see the docstring).",
    )
    parser.add_argument("--upstream", required=True, help="the AWS endpoint, http://host:port")
    parser.add_argument("--port", type=int, default=0, help="listen port (0 = any free)")
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream, port=args.port).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    print(json.dumps({"port": int(proxy.url.rsplit(":", 1)[1])}), flush=True)
    stopped.wait()
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
