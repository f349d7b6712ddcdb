"""Helpers for webhook tests against the local stack: signed deliveries, seeded connections,
and the ``quickbooks.entity_changed`` events the stack's events queue receives.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import boto3
import requests

from devstack.intuit_sim.webhooks import cloudevents_body, legacy_body, sign
from devstack.process import DUMMY_CREDENTIALS, REGION, seed_connection
from tests.helpers.events import drain_events
from tests.helpers.store import TableRepositories

DETAIL_TYPE = "quickbooks.entity_changed"

__all__ = [
    "EventCollector",
    "cloudevents_body",
    "legacy_body",
    "new_realm",
    "post_webhook",
    "seed_connection",
    "sign",
    "simulate_entity_change",
]

_counter = iter(range(10**9))


def new_realm() -> str:
    """A realm id no other test uses (digits, like Intuit's)."""
    return f"77{int(time.time() * 1000) % 10**9:09d}{next(_counter):04d}"


def now_iso() -> str:
    """The current time as Intuit writes ``lastUpdated`` (the gateway drops stale changes)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def change(realm_id: str, name: str, entity_id: str, operation: str, **extra: Any) -> dict:
    """One change as the simulator's body builders take it."""
    return {
        "realm_id": realm_id,
        "name": name,
        "id": entity_id,
        "operation": operation,
        "lastUpdated": extra.pop("lastUpdated", None) or now_iso(),
        "event_id": extra.pop("event_id", str(uuid.uuid4())),
        **extra,
    }


def post_webhook(
    stack: Any, body: bytes, *, token: str | None = None, signature: str | None = None
) -> requests.Response:
    """POST ``body`` to the stack's /webhooks, signed with ``token`` (default: the stack's)."""
    headers = {"content-type": "application/json"}
    if signature is None and token != "":
        signature = sign(body, token or stack.endpoints["webhook_verifier_token"])
    if signature is not None:
        headers["intuit-signature"] = signature
    return requests.post(f"{stack.api}/webhooks", data=body, headers=headers, timeout=30)


def _resource(stack: Any) -> Any:
    session = boto3.session.Session(region_name=REGION, **DUMMY_CREDENTIALS)
    return session.resource("dynamodb", endpoint_url=stack.aws)


def disconnect(stack: Any, realm_id: str) -> None:
    TableRepositories(_resource(stack).Table(stack.endpoints["table"])).disconnect(
        realm_id, now=time.time()
    )


class EventCollector:
    """Reads the stack's events queue (every ``qbo-connect`` event lands there)."""

    def __init__(self, stack: Any) -> None:
        self.sqs = stack.boto3_client("sqs")
        self.url = stack.endpoints["events_queue"]
        self.events: list[dict[str, Any]] = []

    def drain(self) -> list[dict[str, Any]]:
        new = drain_events(self.sqs, self.url)
        self.events.extend(new)
        return new

    def entity_events(self, realms: Iterable[str] | None = None) -> list[dict[str, Any]]:
        wanted = set(realms) if realms is not None else None
        return [
            e
            for e in self.events
            if e.get("detail-type") == DETAIL_TYPE
            and (wanted is None or e["detail"]["realm_id"] in wanted)
        ]

    def wait_for(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool],
        *,
        realms: Iterable[str] | None = None,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Drain until ``predicate(entity events of realms)`` holds; returns those events."""
        realms = list(realms) if realms is not None else None
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            events = self.entity_events(realms)
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"events not seen in {timeout}s; have {len(events)}")


def details(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        (dict(e["detail"]) for e in events), key=lambda d: (d["realm_id"], d["entity_id"])
    )


def simulate_entity_change(
    stack: Any, realm_id: str, entity: str, entity_id: str, operation: str, **extra: Any
) -> None:
    """An entity changes in the company at Intuit (the simulator): its webhook is delivered to
    the stack, and this returns once the stack accepted it."""
    response = requests.post(
        f"{stack.intuit}/_sim/entity-change",
        json={
            "realm_id": realm_id,
            "entity": entity,
            "id": entity_id,
            "operation": operation,
            **extra,
            "wait": 20,
        },
        timeout=30,
    )
    assert response.json()["status"] == "delivered", response.text
