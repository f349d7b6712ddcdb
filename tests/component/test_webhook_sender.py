"""The simulator's webhook sender over real HTTP: signed bodies in both shapes, Intuit's retry
schedule (compressed), the same bytes on every retry, and later deliveries held back while one
keeps failing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from devstack.intuit_sim.webhooks import INTUIT_RETRY_SCHEDULE, WebhookSender
from qbo_connect.webhooks.payload import parse
from qbo_connect.webhooks.signature import signature_matches

TOKEN = "sim-verifier-token"


class Receiver:
    """A webhook endpoint that refuses the first ``fail`` requests (500), then answers 200."""

    def __init__(self) -> None:
        self.fail = 0
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        with self.lock:
            self.received.append(
                {"body": body, "signature": request.headers.get("intuit-signature")}
            )
            status = 500 if self.fail > 0 else 200
            self.fail -= 1
        return Response("{}", status=status)(environ, start_response)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}/webhooks"
    finally:
        server.shutdown()


def test_both_shapes_are_signed_and_parse_as_intuit_sends_them(receiver):
    app, url = receiver
    sender = WebhookSender(url=url, verifier_token=TOKEN, time_scale=0.001)
    try:
        change = {"realm_id": "123", "name": "Invoice", "id": "9", "operation": "Void"}
        for shape in ("legacy", "cloudevents"):
            delivery = sender.send([change], shape=shape)
            assert delivery.done.wait(10)
            assert delivery.status == "delivered"
        legacy, cloud = app.received
        for received in (legacy, cloud):
            assert signature_matches(received["body"], received["signature"], [TOKEN])
        assert parse(legacy["body"])[0] == "legacy"
        assert parse(cloud["body"])[0] == "cloudevents"
        assert parse(cloud["body"])[1][0].operation == "Void"
    finally:
        sender.stop()


def test_a_failing_delivery_is_retried_with_the_same_bytes_and_holds_later_ones_back(receiver):
    app, url = receiver
    app.fail = 3
    sender = WebhookSender(url=url, verifier_token=TOKEN, time_scale=0.001)
    try:
        first = sender.send([{"realm_id": "1", "name": "Bill", "id": "1", "operation": "Create"}])
        second = sender.send([{"realm_id": "1", "name": "Bill", "id": "2", "operation": "Create"}])
        assert second.done.wait(10)
        assert [a["status"] for a in first.as_dict()["attempts"]] == [500, 500, 500, 200]
        assert [a["status"] for a in second.as_dict()["attempts"]] == [200]
        bodies = [r["body"] for r in app.received]
        assert bodies[:4] == [first.body] * 4  # the same bytes each time ...
        assert bodies[4] == second.body  # ... and the second only after the first went through
    finally:
        sender.stop()


def test_a_delivery_is_abandoned_after_max_attempts_and_the_queue_moves_on(receiver):
    app, url = receiver
    app.fail = 100
    sender = WebhookSender(url=url, verifier_token=TOKEN, time_scale=0.0001, max_attempts=4)
    try:
        delivery = sender.send(
            [{"realm_id": "1", "name": "Item", "id": "1", "operation": "Update"}]
        )
        assert delivery.done.wait(10)
        assert delivery.status == "abandoned"
        assert len(delivery.attempts) == 4
    finally:
        sender.stop()


def test_the_schedule_is_intuits_scaled():
    sender = WebhookSender(time_scale=0.01)
    assert sender.config()["retry_schedule_seconds"][:5] == [
        s * 0.01 for s in INTUIT_RETRY_SCHEDULE[:5]
    ]
    assert sender._delay_before(1) == 0.0  # the delivery itself
    assert sender._delay_before(2) == 0.0  # the first retry: at once
    assert sender._delay_before(3) == pytest.approx(0.1)  # then 10 s, 20 s, ...
    assert sender._delay_before(20) == pytest.approx(216.0)  # every 6 h after the schedule
    assert "verifier_token" not in sender.config()
