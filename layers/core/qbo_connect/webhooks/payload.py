"""Intuit's two webhook payload shapes, read into one internal form.

Legacy (``{"eventNotifications": [{"realmId", "dataChangeEvent": {"entities": [...]}}]}``) and
CloudEvents (a JSON array of events with ``specversion``, ``id``, ``type`` such as
``qbo.customer.created.v1``, ``time``, ``intuitaccountid`` = the realm, ``intuitentityid``) both
become :class:`EntityChange` values, so nothing after this module knows which shape arrived.

Plain dataclasses and hand-written checks rather than pydantic models behind a discriminated
union: the gateway must answer Intuit within 3 seconds including a cold start, and importing
pydantic and building equivalent models cost about nine times what importing this module and
parsing a body does (``python bench/webhooks.py --parser-import``, figures in the README), on
top of a pydantic-core wheel in the layer. The checks are strict where a wrong value would
mislead a subscriber (realm, entity, id, operation) and lenient elsewhere (unknown extra fields
are ignored, as CloudEvents allows extensions).

Event ids: CloudEvents carry their own ``id``. The legacy shape has none, so the id is a hash of
realm, entity, entity id, operation and lastUpdated: a redelivery of the same change hashes to
the same id, a later change of the same entity (new lastUpdated) to a new one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from qbo_connect.errors import MalformedPayload
from qbo_connect.validation import is_realm_id

#: Operations as Intuit names them in the legacy shape (and in our events).
OPERATIONS = ("Create", "Update", "Delete", "Merge", "Void", "Emailed")
#: CloudEvents ``type`` verbs -> the operation names above.
_VERBS = {
    "created": "Create",
    "updated": "Update",
    "deleted": "Delete",
    "merged": "Merge",
    "voided": "Void",
    "emailed": "Emailed",
}
#: Entities QuickBooks Online sends webhooks for, as Intuit spells them. CloudEvents types carry
#: them in lower case (``qbo.journalentry.updated.v1``); this table restores Intuit's spelling.
ENTITY_NAMES = (
    "Account",
    "Bill",
    "BillPayment",
    "Budget",
    "Class",
    "CreditMemo",
    "Currency",
    "Customer",
    "Department",
    "Deposit",
    "Employee",
    "Estimate",
    "Invoice",
    "Item",
    "JournalCode",
    "JournalEntry",
    "Payment",
    "PaymentMethod",
    "Preferences",
    "Purchase",
    "PurchaseOrder",
    "RefundReceipt",
    "SalesReceipt",
    "TaxAgency",
    "Term",
    "TimeActivity",
    "Transfer",
    "Vendor",
    "VendorCredit",
)
_BY_LOWER = {name.lower(): name for name in ENTITY_NAMES}
# ``fullmatch`` with ``\Z``-free patterns: ``$`` would also accept a trailing newline.
_CLOUDEVENT_TYPE = re.compile(r"qbo\.([a-z][a-z0-9]*)\.([a-z]+)\.v[0-9]+")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
_MAX_TEXT = 128

LEGACY = "legacy"
CLOUDEVENTS = "cloudevents"


@dataclass(frozen=True)
class EntityChange:
    """One changed entity of one company: what the processor dedupes and publishes."""

    event_id: str
    realm_id: str
    entity: str
    entity_id: str
    operation: str
    occurred_at: str
    deleted_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["deleted_id"] is None:
            del data["deleted_id"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EntityChange:
        """The inverse of :meth:`to_dict` (queue messages), re-checked like a payload."""
        try:
            change = cls(
                event_id=_text(data, "event_id", "message"),
                realm_id=_realm(data.get("realm_id"), "message"),
                entity=_entity_name(data.get("entity"), "message"),
                entity_id=_text(data, "entity_id", "message"),
                operation=_operation(data.get("operation"), "message"),
                occurred_at=_text(data, "occurred_at", "message"),
                deleted_id=_optional_text(data, "deleted_id", "message"),
            )
        except AttributeError:
            raise MalformedPayload("message: a change must be an object") from None
        return change


def parse(body: bytes) -> tuple[str, list[EntityChange]]:
    """The shape (``legacy`` or ``cloudevents``) and the changes a webhook body carries.

    Raises :class:`MalformedPayload` when the body is not JSON, is neither shape, or any entry
    breaks its shape: a signed body is all or nothing, so a subscriber never sees half of it.
    Duplicates inside one body (same event id) are kept once.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise MalformedPayload("body is not JSON") from None
    if isinstance(document, list):
        changes = [_cloudevent(event, f"[{i}]") for i, event in enumerate(document)]
        shape = CLOUDEVENTS
    elif isinstance(document, dict) and "eventNotifications" in document:
        changes = _legacy(document["eventNotifications"])
        shape = LEGACY
    elif isinstance(document, dict) and "specversion" in document:
        # A single CloudEvent (structured mode) rather than a batch: accept it too.
        changes = [_cloudevent(document, "event")]
        shape = CLOUDEVENTS
    else:
        raise MalformedPayload("body is neither eventNotifications nor a CloudEvents array")
    unique: dict[str, EntityChange] = {}
    for change in changes:
        unique.setdefault(change.event_id, change)
    return shape, list(unique.values())


def legacy_event_id(
    realm_id: str, entity: str, entity_id: str, operation: str, last_updated: str
) -> str:
    """The stable id of a legacy-shape change (the shape has none of its own)."""
    material = "\x1f".join((realm_id, entity, entity_id, operation, last_updated))
    return "legacy-" + hashlib.sha256(material.encode()).hexdigest()


def _legacy(notifications: Any) -> list[EntityChange]:
    if not isinstance(notifications, list):
        raise MalformedPayload("eventNotifications must be an array")
    changes: list[EntityChange] = []
    for i, notification in enumerate(notifications):
        where = f"eventNotifications[{i}]"
        if not isinstance(notification, dict):
            raise MalformedPayload(f"{where} must be an object")
        realm_id = _realm(notification.get("realmId"), f"{where}.realmId")
        event = notification.get("dataChangeEvent")
        entities = event.get("entities") if isinstance(event, dict) else None
        if not isinstance(entities, list):
            raise MalformedPayload(f"{where}.dataChangeEvent.entities must be an array")
        for j, entity in enumerate(entities):
            at = f"{where}.dataChangeEvent.entities[{j}]"
            if not isinstance(entity, dict):
                raise MalformedPayload(f"{at} must be an object")
            name = _entity_name(entity.get("name"), f"{at}.name")
            entity_id = _text(entity, "id", at)
            operation = _operation(entity.get("operation"), f"{at}.operation")
            last_updated = _text(entity, "lastUpdated", at)
            changes.append(
                EntityChange(
                    event_id=legacy_event_id(realm_id, name, entity_id, operation, last_updated),
                    realm_id=realm_id,
                    entity=name,
                    entity_id=entity_id,
                    operation=operation,
                    occurred_at=last_updated,
                    deleted_id=_optional_text(entity, "deletedId", at),
                )
            )
    return changes


def _cloudevent(event: Any, where: str) -> EntityChange:
    if not isinstance(event, dict):
        raise MalformedPayload(f"{where} must be an object")
    if str(event.get("specversion", "")).split(".", 1)[0] != "1":
        raise MalformedPayload(f"{where}.specversion must be 1.x")
    event_type = event.get("type")
    match = _CLOUDEVENT_TYPE.fullmatch(event_type) if isinstance(event_type, str) else None
    if match is None:
        raise MalformedPayload(f"{where}.type must look like qbo.<entity>.<verb>.v<n>")
    entity_lower, verb = match.groups()
    if verb not in _VERBS:
        raise MalformedPayload(f"{where}.type has an unknown operation {verb!r}")
    data = event.get("data")
    deleted_id = None
    if isinstance(data, dict):
        deleted_id = _optional_text(data, "deletedId", f"{where}.data") or _optional_text(
            data, "deletedid", f"{where}.data"
        )
    return EntityChange(
        event_id=_text(event, "id", where),
        realm_id=_realm(event.get("intuitaccountid"), f"{where}.intuitaccountid"),
        entity=_BY_LOWER.get(entity_lower) or entity_lower[:1].upper() + entity_lower[1:],
        entity_id=_text(event, "intuitentityid", where),
        operation=_VERBS[verb],
        occurred_at=_text(event, "time", where),
        deleted_id=deleted_id,
    )


def _realm(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not is_realm_id(value):
        raise MalformedPayload(f"{where} must be a realm id (digits, no leading zero)")
    return value


def _entity_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise MalformedPayload(f"{where} must be an entity name")
    return _BY_LOWER.get(value.lower(), value)


def _operation(value: Any, where: str) -> str:
    if value not in OPERATIONS:
        raise MalformedPayload(f"{where} must be one of {', '.join(OPERATIONS)}")
    return str(value)


def _text(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
        raise MalformedPayload(f"{where}.{key} must be a non-empty string")
    return value


def _optional_text(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    if obj.get(key) in (None, ""):
        return None
    return _text(obj, key, where)
