"""The shapes that cross a boundary: direct-invoke payloads and queue messages.

Small frozen dataclasses, each with a ``from_payload`` that validates a decoded JSON object
(raising ``InvalidRequest`` for an invoke, ``MalformedMessage`` for a queue message) and, for
messages this service sends itself, a ``to_body`` that writes it. Plain dataclasses rather than
pydantic: the handlers' cold start is measured (``bench/cold_start.py``) and a pydantic import
costs more than the whole budget left to a function.

:func:`parse_or_drop` is the one step every SQS consumer takes first: a message that can never
be processed is logged, counted and acknowledged (never retried forever), anything else goes on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger

from qbo_connect import validation
from qbo_connect.errors import InvalidRequest, MalformedMessage, MalformedPayload
from qbo_connect.fieldwise import Fieldwise, frozen

if TYPE_CHECKING:  # the webhook model is imported where a ChangesMessage is parsed, so the
    # vault's functions (GetToken's cold start) do not load the webhook payload parser
    from qbo_connect.webhooks.payload import EntityChange

logger = Logger(child=True)

T = TypeVar("T")

#: Version of the webhook gateway's queue message (``ChangesMessage``).
CHANGES_MESSAGE_VERSION = 1


def _compact(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


def _number(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedMessage(f"{name} must be a number")
    return float(value)


def parse_or_drop(
    body: str,
    parse: Callable[[Mapping[str, Any]], T],
    *,
    kind: str,
    message_id: str,
    count: Callable[[str], None],
    metric: str,
) -> T | None:
    """``parse`` the JSON object in ``body``; None (logged and counted) if it never can be."""
    try:
        try:
            payload = json.loads(body)
        except (TypeError, ValueError):
            raise MalformedMessage("body is not JSON") from None
        if not isinstance(payload, dict):
            raise MalformedMessage("body is not a JSON object")
        return parse(payload)
    except MalformedMessage as exc:
        logger.error(
            f"malformed {kind} message dropped",
            extra={"message_id": message_id, "reason": str(exc)},
        )
        count(metric)
        return None


# ----- queue messages -------------------------------------------------------------------------


#: RefreshMessage kinds: a due connection (the sweep's), or a Disconnect URL hint to verify
#: (ConnectFunction's). A message without ``kind`` is a refresh, as every earlier version sent.
REFRESH, DISCONNECT_HINT, RECONCILE = "refresh", "disconnect_hint", "reconcile"
MESSAGE_KINDS = (REFRESH, DISCONNECT_HINT, RECONCILE)


@frozen
class RefreshMessage(Fieldwise):
    """A message to the refresh worker about one connection: refresh it when due, verify a
    Disconnect URL hint for it, or reconcile its change feed with CDC."""

    realm_id: str
    due_at: float | None = None
    #: Earlier versions' claim: the item's due time while that message was in flight.
    claimed_due_at: float | None = None
    enqueued_at: float | None = None
    kind: str = REFRESH

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> RefreshMessage:
        try:
            realm_id = validation.realm_id(payload)
        except InvalidRequest as exc:
            raise MalformedMessage(exc.message) from None
        kind = payload.get("kind", REFRESH)
        if kind not in MESSAGE_KINDS:
            raise MalformedMessage(f"kind must be one of {', '.join(MESSAGE_KINDS)}")
        return cls(
            realm_id=realm_id,
            due_at=_number(payload, "due_at"),
            claimed_due_at=_number(payload, "claimed_due_at"),
            enqueued_at=_number(payload, "enqueued_at"),
            kind=kind,
        )

    def to_body(self) -> str:
        body: dict[str, Any] = {"realm_id": self.realm_id, "due_at": self.due_at}
        if self.kind != REFRESH:
            body["kind"] = self.kind
        if self.enqueued_at is not None:
            body["enqueued_at"] = round(self.enqueued_at, 3)
        return _compact(body)


@frozen
class ChangesMessage(Fieldwise):
    """The webhook gateway's message to the processor: verified changes, as Intuit sent them."""

    received_at: float
    changes: tuple[EntityChange, ...]

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ChangesMessage:
        changes = payload.get("changes")
        if not isinstance(changes, list):
            raise MalformedMessage("body has no changes array")
        from qbo_connect.webhooks.payload import EntityChange

        try:
            parsed = tuple(EntityChange.from_dict(change) for change in changes)
        except MalformedPayload as exc:
            raise MalformedMessage(str(exc)) from None
        return cls(received_at=_number(payload, "received_at") or 0.0, changes=parsed)

    def to_body(self) -> str:
        return _compact(
            {
                "v": CHANGES_MESSAGE_VERSION,
                "received_at": self.received_at,
                "changes": [change.to_dict() for change in self.changes],
            }
        )


# ----- direct invokes -------------------------------------------------------------------------


@frozen
class GetTokenRequest(Fieldwise):
    """GetTokenFunction's payload."""

    realm_id: str
    min_valid_seconds: int = 300
    tenant_id: str | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> GetTokenRequest:
        return cls(
            realm_id=validation.realm_id(payload),
            min_valid_seconds=validation.optional_int(
                payload, "min_valid_seconds", default=300, minimum=0, maximum=3000
            ),
            tenant_id=validation.optional_tenant_id(payload),
        )
