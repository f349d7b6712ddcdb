"""Lifecycle events as integration tests see them: the local stack copies every ``qbo-connect``
event from the bus to an SQS queue (``endpoints.json`` key ``events_queue``)."""

from __future__ import annotations

import json
from typing import Any


def drain_events(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every event waiting on the queue (deleted as read), oldest first as SQS returns them."""
    events: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        if not messages:
            return events
        events += [json.loads(message["Body"]) for message in messages]
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )
