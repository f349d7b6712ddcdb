"""Each event the service publishes, printed in the dev log as one readable line.

Lifecycle events (``connection.created``, ``connection.needs_reauthorization``...) and entity
changes from webhooks (``quickbooks.entity_changed``) go to EventBridge; locally nobody would
see them without reading a queue with boto3. The stack gives its event rule a second SQS
target, a queue only this module reads (the events queue in ``endpoints.json`` stays for your
own consumers and the tests), and prints::

    devstack: event connection.created realm_id=9130357766042906 tenant_id=acme-inc ...
    devstack: event quickbooks.entity_changed Invoice 130 Create realm_id=... tenant_id=...

Values come from Intuit and from callers, so they are printed escaped (no control character
reaches the terminal) and long ones are shortened.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["EVENT_LOG_QUEUE_SUFFIX", "EventLog", "describe_event"]

EVENT_LOG_QUEUE_SUFFIX = "dev-log"
#: Fields printed first, in this order; the rest follow sorted. ``event_id`` is left out.
_FIRST = ("realm_id", "tenant_id", "environment", "status", "reason")
_SKIPPED = frozenset({"event_id", "entity", "entity_id", "operation"})
_MAX_VALUE = 80


def _safe(value: Any) -> str:
    """A value as one printable token: JSON-quoted when it holds spaces, quotes or controls."""
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"))
    text = str(value)
    if len(text) > _MAX_VALUE:
        text = text[: _MAX_VALUE - 3] + "..."
    if not text or not text.isprintable() or any(c in text for c in ' ="'):
        return json.dumps(text, ensure_ascii=True)
    return text


def describe_event(envelope: Mapping[str, Any]) -> str:
    """One line for an EventBridge event as an SQS target receives it."""
    detail_type = _safe(envelope.get("detail-type") or "(no detail-type)")
    detail = envelope.get("detail")
    if not isinstance(detail, Mapping):
        return f"event {detail_type}"
    parts = [f"event {detail_type}"]
    entity = [detail.get(k) for k in ("entity", "entity_id", "operation")]
    if any(v is not None for v in entity):
        parts.append(" ".join(_safe(v) for v in entity if v is not None))
    keys = [k for k in _FIRST if k in detail]
    keys += sorted(k for k in detail if k not in _FIRST and k not in _SKIPPED)
    parts += [f"{_safe(k)}={_safe(detail[k])}" for k in keys if detail[k] is not None]
    return " ".join(parts)


class EventLog:
    """Reads the dev-log queue and says one line per event until ``stop`` is set."""

    def __init__(
        self, sqs: Any, queue_url: str, say: Callable[[str], None], stop: threading.Event
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.say = say
        self.stop = stop
        self.thread = threading.Thread(target=self._loop, name="event-log", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                messages = self.sqs.receive_message(
                    QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                ).get("Messages", [])
            except Exception as exc:  # moto going away at shutdown, or a hiccup: retry
                if not self.stop.is_set():
                    self.say(f"event log: receive failed ({type(exc).__name__})")
                    self.stop.wait(1)
                continue
            for message in messages:
                try:
                    envelope = json.loads(message.get("Body") or "")
                except ValueError:
                    envelope = None
                if isinstance(envelope, Mapping):
                    self.say(describe_event(envelope))
            if messages:
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ]
                with contextlib.suppress(Exception):  # else printed again later: harmless
                    self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
