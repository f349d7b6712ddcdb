"""The simulator's webhook sender: Intuit's change notifications, signed, retried, in order.

Intuit POSTs change notifications for all of an app's companies to one URL, signs each body in
``intuit-signature`` (base64 HMAC-SHA256 keyed by the app's verifier token), counts anything but
a 200 within 3 seconds as a failure, retries it after 0 s, 10 s, 20 s, 30 s, 5 min, 20 min, 2 h,
4 h, 6 h and then every 6 h, and holds later notifications back while one keeps failing. This
module does the same over real HTTP, with the schedule multiplied by ``time_scale`` (the local
stack compresses it) and a ``max_attempts`` after which a delivery is abandoned so the queue
moves on. Bodies come in the legacy shape (``eventNotifications``) or as a CloudEvents array;
a retry resends the very same bytes (same CloudEvents ids), as Intuit does.

Used by :class:`devstack.intuit_sim.IntuitSimulator` (admin routes under ``/_sim/webhooks`` and
``/_sim/entity-change``), or on its own in tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import requests

#: Seconds before each retry after a failure (the 1st, 2nd, ...); after the last, every 6 hours.
INTUIT_RETRY_SCHEDULE = (0.0, 10.0, 20.0, 30.0, 300.0, 1200.0, 7200.0, 14400.0, 21600.0)
INTUIT_TIMEOUT_SECONDS = 3.0
SHAPES = ("legacy", "cloudevents")
_VERBS = {
    "Create": "created",
    "Update": "updated",
    "Delete": "deleted",
    "Merge": "merged",
    "Void": "voided",
    "Emailed": "emailed",
}


def sign(body: bytes, token: str) -> str:
    digest = hmac.new(token.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _iso(epoch: float) -> str:
    millis = int(epoch * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{millis:03d}Z"


def legacy_body(changes: Iterable[Mapping[str, Any]]) -> bytes:
    """``{"eventNotifications": [...]}``: one notification per realm, entities in order."""
    by_realm: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        entity = {
            "name": change["name"],
            "id": str(change["id"]),
            "operation": change["operation"],
            "lastUpdated": change["lastUpdated"],
        }
        if change.get("deletedId"):
            entity["deletedId"] = str(change["deletedId"])
        by_realm.setdefault(str(change["realm_id"]), []).append(entity)
    document = {
        "eventNotifications": [
            {"realmId": realm, "dataChangeEvent": {"entities": entities}}
            for realm, entities in by_realm.items()
        ]
    }
    return json.dumps(document, separators=(",", ":")).encode()


def cloudevents_body(changes: Iterable[Mapping[str, Any]], *, source: str) -> bytes:
    """A CloudEvents array: one event per change, ``type`` ``qbo.<entity>.<verb>.v1``."""
    events = []
    for change in changes:
        data: dict[str, Any] = {}
        if change.get("deletedId"):
            data["deletedId"] = str(change["deletedId"])
        events.append(
            {
                "specversion": "1.0",
                "id": change.get("event_id") or str(uuid.uuid4()),
                "source": source,
                "type": f"qbo.{str(change['name']).lower()}.{_VERBS[change['operation']]}.v1",
                "datacontenttype": "application/json",
                "time": change["lastUpdated"],
                "intuitentityid": str(change["id"]),
                "intuitaccountid": str(change["realm_id"]),
                "data": data,
            }
        )
    return json.dumps(events, separators=(",", ":")).encode()


@dataclass
class Delivery:
    id: str
    shape: str
    body: bytes = field(repr=False)
    realm_ids: list[str]
    changes: int
    status: str = "pending"  # pending -> delivered | abandoned
    attempts: list[dict[str, Any]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The delivery as ``GET /_sim/webhooks`` shows it: the body only as its hash."""
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.repr}
        shown["attempts"] = list(self.attempts)
        return {**shown, "body_sha256": hashlib.sha256(self.body).hexdigest()}


class WebhookSender:
    """Delivers signed notifications to one URL, one at a time, on Intuit's retry schedule."""

    def __init__(
        self,
        *,
        url: str = "",
        verifier_token: str = "",
        shape: str = "legacy",
        time_scale: float = 1.0,
        max_attempts: int = 12,
        app_source: str = "intuit.simulator",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.verifier_token = verifier_token
        self.shape = shape
        self.time_scale = float(time_scale)
        self.max_attempts = int(max_attempts)
        self.app_source = app_source
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[Delivery] = deque()
        self._log: deque[Delivery] = deque(maxlen=1000)
        self._stopping = False
        self._http = requests.Session()
        self._thread: threading.Thread | None = None

    # ----- configuration ----------------------------------------------------------------------

    def configure(self, **settings: Any) -> dict[str, Any]:
        allowed = {"url", "verifier_token", "shape", "time_scale", "max_attempts"}
        unknown = set(settings) - allowed
        if unknown:
            raise ValueError(f"unknown webhook settings: {sorted(unknown)}")
        if "shape" in settings and settings["shape"] not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}")
        with self._lock:
            for key, value in settings.items():
                if key == "time_scale":
                    value = float(value)
                elif key == "max_attempts":
                    value = int(value)
                setattr(self, key, value)
        return self.config()

    def config(self) -> dict[str, Any]:
        """The settings, without the verifier token itself (only whether one is set)."""
        return {
            "url": self.url,
            "verifier_token_set": bool(self.verifier_token),
            "shape": self.shape,
            "time_scale": self.time_scale,
            "max_attempts": self.max_attempts,
            "retry_schedule_seconds": [s * self.time_scale for s in INTUIT_RETRY_SCHEDULE],
        }

    # ----- sending ----------------------------------------------------------------------------

    def send(self, changes: list[Mapping[str, Any]], *, shape: str | None = None) -> Delivery:
        """Queue one notification carrying ``changes`` (each: realm_id, name, id, operation,
        optional lastUpdated, deletedId, event_id)."""
        shape = shape or self.shape
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}")
        if not changes:
            raise ValueError("a notification needs at least one change")
        normalised = []
        for change in changes:
            if change.get("operation") not in _VERBS:
                raise ValueError(f"operation must be one of {sorted(_VERBS)}")
            for key in ("realm_id", "name", "id"):
                if not change.get(key):
                    raise ValueError(f"each change needs {key}")
            normalised.append(
                {**change, "lastUpdated": change.get("lastUpdated") or _iso(self._clock())}
            )
        body = (
            legacy_body(normalised)
            if shape == "legacy"
            else cloudevents_body(normalised, source=self.app_source)
        )
        delivery = Delivery(
            id=str(uuid.uuid4()),
            shape=shape,
            body=body,
            realm_ids=sorted({str(c["realm_id"]) for c in normalised}),
            changes=len(normalised),
        )
        with self._lock:
            if not self.url or not self.verifier_token:
                raise ValueError("no webhook url or verifier token configured")
            self._queue.append(delivery)
            self._log.append(delivery)
            self._ensure_thread()
            self._wake.notify_all()
        return delivery

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [d.as_dict() for d in self._log]

    def delivery(self, delivery_id: str) -> Delivery | None:
        with self._lock:
            return next((d for d in self._log if d.id == delivery_id), None)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._stopping = False  # a later send starts a new loop
            self._thread = None

    # ----- the delivery loop ------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="intuit-sim-webhooks", daemon=True
            )
            self._thread.start()

    def _delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (1 = the first delivery), scaled:
        the first retry follows at once, the next after 10 s, and so on."""
        if attempt <= 1:
            return 0.0
        index = attempt - 2
        base = INTUIT_RETRY_SCHEDULE[index] if index < len(INTUIT_RETRY_SCHEDULE) else 21600.0
        return base * self.time_scale

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                delivery = self._queue[0]  # later ones wait while this one fails
            attempt = len(delivery.attempts) + 1
            delay = self._delay_before(attempt)
            if delay > 0:
                with self._lock:
                    if self._wake.wait_for(lambda: self._stopping, timeout=delay):
                        return
            ok = self._attempt(delivery)
            with self._lock:
                finished = ok or len(delivery.attempts) >= self.max_attempts
                if finished:
                    delivery.status = "delivered" if ok else "abandoned"
                    self._queue.popleft()
                    delivery.done.set()

    def _attempt(self, delivery: Delivery) -> bool:
        started = time.monotonic()
        record: dict[str, Any] = {"at": _iso(self._clock())}
        try:
            response = self._http.post(
                self.url,
                data=delivery.body,
                headers={
                    "content-type": "application/json; charset=utf-8",
                    "intuit-signature": sign(delivery.body, self.verifier_token),
                    "user-agent": "intuit-simulator-webhooks",
                },
                timeout=INTUIT_TIMEOUT_SECONDS,
            )
            record["status"] = response.status_code
            ok = response.status_code == 200
        except requests.RequestException as exc:
            record["error"] = type(exc).__name__
            ok = False
        record["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
        with self._lock:
            delivery.attempts.append(record)
        return ok

    # ----- admin API --------------------------------------------------------------------------

    def admin(self, method: str, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        """``/_sim/webhooks...`` and ``/_sim/entity-change``: (status, JSON answer)."""
        if (method, path) == ("GET", "/_sim/webhooks"):
            return 200, {"config": self.config(), "deliveries": self.deliveries()}
        if (method, path) == ("POST", "/_sim/webhooks/config"):
            return 200, self.configure(**body)
        if (method, path) == ("POST", "/_sim/webhooks/send"):
            changes = body.get("changes")
            if not isinstance(changes, list):
                raise ValueError("changes must be a list")
            return self._send_and_wait(changes, body)
        if (method, path) == ("POST", "/_sim/entity-change"):
            # A change made in the simulated company (as if a user edited it in QuickBooks):
            # Intuit notifies the app about it.
            change = {
                "realm_id": body["realm_id"],
                "name": body.get("entity") or body["name"],
                "id": body["id"],
                "operation": body.get("operation", "Update"),
                "deletedId": body.get("deletedId"),
            }
            return self._send_and_wait([change], body)
        return 404, {"error": "not_found"}

    def _send_and_wait(
        self, changes: list[Mapping[str, Any]], body: Mapping[str, Any]
    ) -> tuple[int, Any]:
        delivery = self.send(changes, shape=body.get("shape"))
        wait = float(body.get("wait") or 0)
        if wait > 0:
            delivery.done.wait(min(wait, 60.0))
        with self._lock:
            return 200, delivery.as_dict()
