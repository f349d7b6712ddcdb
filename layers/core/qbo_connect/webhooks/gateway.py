"""``POST /webhooks``: what Intuit gets back, decided before any per-entity work.

In order, each step cheap and none of them touching ConnectionsTable:

1. The body is bounded (413 above ``max_body_bytes``), read as the raw bytes Intuit signed.
2. ``intuit-signature`` must sign those bytes with a valid verifier token (401 otherwise, and
   nothing is stored or enqueued).
3. The body is parsed (either shape) into :class:`EntityChange` values. A change whose own time
   (``lastUpdated``, or a CloudEvent's ``time``) is older than ``max_change_age_seconds`` is
   dropped and counted: a signature proves who sent a body, not when, and the ledger that
   deduplicates replays forgets ids after ``dedup_ttl_seconds``. The freshness bound sits a day
   inside that window, so a captured body replayed later publishes nothing.
4. The changes are sent to the webhook queue in as few SQS calls as the limits allow, and only
   then does Intuit get its 200. A failed enqueue answers 503, so Intuit retries the delivery
   (the processor drops whatever part of it was already queued).

A signed body that is not a payload Intuit documents can never succeed on retry, and a non-200
makes Intuit hold back every later notification; it is answered 200 and kept, whole, on the
dead-letter queue (whose alarm tells the operator) instead of being lost or blocking the feed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from qbo_connect.changes import change_time
from qbo_connect.contracts import CHANGES_MESSAGE_VERSION, ChangesMessage
from qbo_connect.errors import ConfigurationError, EnqueueFailed, MalformedPayload
from qbo_connect.webhooks.payload import EntityChange, parse
from qbo_connect.webhooks.settings import WebhookSettings
from qbo_connect.webhooks.signature import SIGNATURE_HEADER, VerifierTokens

#: Changes per queue message: keeps every message far below SQS's size limit.
CHANGES_PER_MESSAGE = 50
#: A malformed body larger than this is kept on the DLQ as its size and hash only.
DEAD_LETTER_BODY_LIMIT = 200_000

_log = Logger(child=True)


@dataclass
class GatewayResult:
    """The HTTP answer and what happened, for logs and metrics (never the body or a token)."""

    status: int
    body: dict[str, Any]
    outcome: str
    changes: int = 0
    #: Changes dropped as older than the freshness bound.
    stale: int = 0
    shape: str = ""
    realms: list[str] = field(default_factory=list)

    def to_response(self) -> dict[str, Any]:
        return {
            "statusCode": self.status,
            "headers": {
                "content-type": "application/json",
                "cache-control": "no-store",
                # Intuit posts over HTTPS only; the header costs nothing and keeps it so.
                "strict-transport-security": "max-age=31536000",
            },
            "body": json.dumps(self.body),
        }


class ChangeQueue:
    """Sends changes to the webhook queue (and malformed bodies to its DLQ)."""

    def __init__(self, sqs_client: Any, queue_url: str, dead_letter_queue_url: str = "") -> None:
        if not queue_url:
            raise ConfigurationError("WEBHOOK_QUEUE_URL is not set")
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._dlq_url = dead_letter_queue_url

    def send(self, changes: Sequence[EntityChange], *, received_at: float) -> int:
        """Enqueue every change; returns the number of messages. Raises EnqueueFailed."""
        bodies = [
            ChangesMessage(
                received_at=received_at, changes=tuple(changes[i : i + CHANGES_PER_MESSAGE])
            ).to_body()
            for i in range(0, len(changes), CHANGES_PER_MESSAGE)
        ]
        for start in range(0, len(bodies), 10):
            self._send_batch(self._queue_url, bodies[start : start + 10])
        return len(bodies)

    def dead_letter(self, body: bytes, reason: str, *, received_at: float, reference: str) -> None:
        """Keep a signed but unusable body for the operator (alarmed through the DLQ)."""
        if not self._dlq_url:
            raise ConfigurationError("WEBHOOK_DEAD_LETTER_QUEUE_URL is not set")
        record: dict[str, Any] = {
            "v": CHANGES_MESSAGE_VERSION,
            "received_at": received_at,
            "reason": reason,
            "reference": reference,
            "sha256": hashlib.sha256(body).hexdigest(),
            "size": len(body),
        }
        if len(body) <= DEAD_LETTER_BODY_LIMIT:
            record["body_base64"] = base64.b64encode(body).decode("ascii")
        self._send_batch(self._dlq_url, [json.dumps(record)])

    def _send_batch(self, url: str, bodies: Sequence[str]) -> None:
        entries = {str(i): body for i, body in enumerate(bodies)}
        for _attempt in range(2):
            response = self._sqs.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": key, "MessageBody": body} for key, body in entries.items()],
            )
            failed = {f["Id"] for f in response.get("Failed") or []}
            entries = {key: body for key, body in entries.items() if key in failed}
            if not entries:
                return
        raise EnqueueFailed(f"{len(entries)} message(s) refused by SQS")


def raw_body(event: Mapping[str, Any]) -> bytes:
    """The request body as Intuit sent it (API Gateway base64-encodes non-text bodies)."""
    body = event.get("body")
    if body is None:
        return b""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return b""
    return str(body).encode("utf-8")


def _header(event: Mapping[str, Any], name: str) -> str | None:
    headers = event.get("headers") or {}
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def _json(http_status: int, outcome: str, /, **body: Any) -> GatewayResult:
    return GatewayResult(status=http_status, body=body, outcome=outcome)


def handle(
    event: Mapping[str, Any],
    *,
    verifier: Callable[[], VerifierTokens],
    queue: Callable[[], ChangeQueue],
    max_body_bytes: int,
    max_change_age_seconds: float = 6 * 86400,
    clock: Callable[[], float] = time.time,
) -> GatewayResult:
    """Answer one ``POST /webhooks`` (HttpApi payload 2.0 event); see the module docstring.

    ``verifier`` and ``queue`` are factories so a refused request costs no client at all.
    """
    received_at = clock()
    declared = _header(event, "content-length")
    if declared and declared.strip().isdigit() and int(declared) > max_body_bytes:
        return _json(413, "too_large", error="payload_too_large")
    body = raw_body(event)
    if len(body) > max_body_bytes:
        return _json(413, "too_large", error="payload_too_large")
    signature = _header(event, SIGNATURE_HEADER)
    if not signature:
        return _json(401, "missing_signature", error="missing_signature")
    if not verifier().verify(body, signature):
        return _json(401, "bad_signature", error="invalid_signature")
    try:
        shape, changes = parse(body)
    except MalformedPayload as exc:
        reference = str(uuid.uuid4())
        try:
            queue().dead_letter(body, str(exc), received_at=received_at, reference=reference)
        except (EnqueueFailed, ClientError, BotoCoreError):
            return _json(503, "enqueue_failed", error="unavailable")
        result = _json(200, "malformed", status="kept", reference=reference)
        result.shape = "unknown"
        return result
    changes, stale = fresh_changes(changes, now=received_at, max_age=max_change_age_seconds)
    if stale:
        _log.warning("stale webhook changes dropped", extra={"stale": stale})
    try:
        messages = queue().send(changes, received_at=received_at) if changes else 0
    except (EnqueueFailed, ClientError, BotoCoreError):
        # Intuit retries a non-200; whatever part was queued is deduplicated downstream.
        return _json(503, "enqueue_failed", error="unavailable")
    result = _json(200, "accepted", status="accepted", changes=len(changes), messages=messages)
    if stale:
        result.body["stale"] = stale
    result.stale = stale
    result.changes = len(changes)
    result.shape = shape
    result.realms = sorted({c.realm_id for c in changes})
    return result


def fresh_changes(
    changes: Sequence[EntityChange], *, now: float, max_age: float
) -> tuple[list[EntityChange], int]:
    """The changes young enough to publish, and how many were too old.

    A time that cannot be read is kept: the body is Intuit's (its signature was checked), and
    the ledger still deduplicates it within its window.
    """
    fresh = []
    for change in changes:
        at = change_time(change.occurred_at)
        if at is None or now - at <= max_age:
            fresh.append(change)
    return fresh, len(changes) - len(fresh)


def answer(
    event: Mapping[str, Any],
    *,
    settings: Callable[[], WebhookSettings],
    verifier: Callable[[], VerifierTokens],
    queue: Callable[[], ChangeQueue],
) -> GatewayResult:
    """:func:`handle` with the container's collaborators (built by ``qbo_connect.wiring``).

    Configuration problems answer 503 (Intuit retries; the operator sees the logged error);
    anything unexpected answers 500. Neither says more than a code to the caller.
    """
    try:
        return handle(
            event,
            verifier=verifier,
            queue=queue,
            max_body_bytes=settings().max_body_bytes,
            max_change_age_seconds=settings().max_change_age_seconds,
        )
    except ConfigurationError as exc:
        _log.error("webhook configuration error", extra={"detail": exc.message})
        return _json(503, "not_configured", error="unavailable")
    except Exception:
        _log.exception("unexpected webhook failure")
        return _json(500, "internal_error", error="internal_error")
