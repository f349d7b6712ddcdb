"""The simulated companies' books: one entity store per realm, queried like QuickBooks.

Every QuickBooks answer the simulator gives (reads, queries, batch items, change data capture,
webhooks) comes from this one store, so a test can change a customer and see the change in the
query, in CDC and in the webhook alike. Entities carry Intuit's bookkeeping fields: ``Id`` (a
per-entity-type sequence per realm), ``SyncToken`` (bumped on every update; an update with a
stale one is refused as Intuit does) and ``MetaData.CreateTime/LastUpdatedTime`` from the
simulator's clock (millisecond precision, UTC). A deletion leaves a tombstone so CDC can report
``{"Id": ..., "status": "Deleted"}``.

The query language is the small subset integrations use: ``select * | count(*) from Entity``,
an optional ``where`` of ``field op 'value'`` conditions joined by ``and`` (``=``, ``<``, ``>``,
``<=``, ``>=``, ``!=``, ``in (...)``, ``like '%x%'``; dotted fields such as
``MetaData.LastUpdatedTime``), ``orderby field [asc|desc]``, ``startposition N`` and
``maxresults N`` (at most 1000).
"""

from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Entities the store serves; names as QuickBooks spells them (and as URL paths, lower-cased).
ENTITY_TYPES = (
    "Account",
    "Bill",
    "Customer",
    "Estimate",
    "Invoice",
    "Item",
    "JournalEntry",
    "Payment",
    "Vendor",
)
#: Name-list entities cannot be deleted in QuickBooks, only made inactive (``Active: false``).
NAME_LIST_TYPES = frozenset({"Account", "Customer", "Item", "Vendor"})
_BY_LOWER = {name.lower(): name for name in ENTITY_TYPES}
#: What each type must carry on create (Intuit answers 400 ValidationFault 2020 without it).
_REQUIRED = {
    "Account": ("Name",),
    "Bill": ("VendorRef", "Line"),
    "Customer": ("DisplayName",),
    "Estimate": ("CustomerRef", "Line"),
    "Invoice": ("CustomerRef", "Line"),
    "Item": ("Name",),
    "JournalEntry": ("Line",),
    "Payment": ("CustomerRef", "TotalAmt"),
    "Vendor": ("DisplayName",),
}
_UNIQUE_NAME = {
    "Customer": "DisplayName",
    "Vendor": "DisplayName",
    "Item": "Name",
    "Account": "Name",
}
MAX_RESULTS = 1000


class EntityError(Exception):
    """A request QuickBooks would refuse: becomes a ``Fault`` (status, type, code, message)."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "2020",
        detail: str = "",
        fault_type: str = "ValidationFault",
        status: int = 400,
        element: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail or message
        self.fault_type = fault_type
        self.status = status
        self.element = element

    def fault(self) -> dict[str, Any]:
        error = {"Message": self.message, "Detail": self.detail, "code": self.code}
        if self.element:
            error["element"] = self.element
        return {"Error": [error], "type": self.fault_type}


def entity_type(name: str) -> str | None:
    """The canonical name of an entity type from a URL segment or query (any case), or None."""
    return _BY_LOWER.get(name.lower())


def iso_time(epoch: float) -> str:
    """QuickBooks-style timestamp (UTC offset, milliseconds kept so changes order exactly)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def parse_time(value: str) -> float:
    """Epoch seconds of an ISO 8601 time (``Z`` or an offset; a bare date is midnight UTC)."""
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise EntityError(
            f"Invalid date/time: {value}", code="2030", detail="Expected ISO 8601"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass
class _Record:
    body: dict[str, Any]
    created: float
    updated: float
    deleted: bool = False


@dataclass
class Change:
    """One applied change, as the webhook sender and the call log see it."""

    realm_id: str
    entity: str
    entity_id: str
    operation: str  # Create | Update | Delete
    at: float


@dataclass
class _Books:
    records: dict[str, dict[str, _Record]] = field(default_factory=dict)
    next_id: dict[str, int] = field(default_factory=dict)


class EntityStore:
    """All realms' entities; every method is atomic under one lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._books: dict[str, _Books] = {}

    # ----- writes -----------------------------------------------------------------------------

    def create(
        self, realm: str, kind: str, body: dict[str, Any], now: float
    ) -> tuple[dict, Change]:
        missing = [name for name in _REQUIRED.get(kind, ()) if body.get(name) in (None, "", [])]
        if missing:
            raise EntityError(
                "Required param missing, need to supply the required value for the API",
                detail=f"Required parameter {missing[0]} is missing in the request",
                element=missing[0],
            )
        with self._lock:
            books = self._books.setdefault(realm, _Books())
            records = books.records.setdefault(kind, {})
            self._check_unique(kind, records, body, None)
            if kind in ("Invoice", "Estimate", "Payment", "Bill"):
                self._check_refs(books, kind, body)
            number = books.next_id.get(kind, 0) + 1
            books.next_id[kind] = number
            entity_id = str(number)
            stored = {k: copy.deepcopy(v) for k, v in body.items() if k not in _SYSTEM_FIELDS}
            stored.update(Id=entity_id, SyncToken="0", domain="QBO", sparse=False)
            self._derive(kind, stored)
            records[entity_id] = _Record(stored, now, now)
            return self._render(records[entity_id]), Change(realm, kind, entity_id, "Create", now)

    def update(
        self, realm: str, kind: str, body: dict[str, Any], now: float
    ) -> tuple[dict, Change]:
        with self._lock:
            record = self._live(realm, kind, str(body.get("Id", "")))
            self._check_sync_token(record, body)
            books = self._books[realm]
            self._check_unique(kind, books.records[kind], body, record.body["Id"])
            changes = {k: copy.deepcopy(v) for k, v in body.items() if k not in _SYSTEM_FIELDS}
            next_token = str(int(record.body["SyncToken"]) + 1)
            if body.get("sparse") is True:
                record.body.update(changes)
            else:  # a full update replaces every field the caller may set
                keep: dict[str, Any] = {"Id": record.body["Id"], "domain": "QBO"}
                record.body = {**changes, **keep}
            record.body["SyncToken"] = next_token
            record.body["sparse"] = False
            self._derive(kind, record.body)
            record.updated = now
            return self._render(record), Change(realm, kind, record.body["Id"], "Update", now)

    def delete(
        self, realm: str, kind: str, body: dict[str, Any], now: float
    ) -> tuple[dict, Change]:
        if kind in NAME_LIST_TYPES:
            raise EntityError(
                "Operation Delete is not supported.",
                code="500",
                detail=f"{kind} cannot be deleted; make it inactive (Active: false) instead",
            )
        with self._lock:
            record = self._live(realm, kind, str(body.get("Id", "")))
            self._check_sync_token(record, body)
            record.deleted, record.updated = True, now
            entity_id = record.body["Id"]
            answer = {"status": "Deleted", "domain": "QBO", "Id": entity_id}
            return answer, Change(realm, kind, entity_id, "Delete", now)

    # ----- reads ------------------------------------------------------------------------------

    def get(self, realm: str, kind: str, entity_id: str) -> dict[str, Any]:
        with self._lock:
            return self._render(self._live(realm, kind, entity_id))

    def query(self, realm: str, statement: str) -> dict[str, Any]:
        """The ``QueryResponse`` object for one ``select`` statement."""
        parsed = _parse_query(statement)
        with self._lock:
            records = self._books.get(realm, _Books()).records.get(parsed.kind, {})
            rows = [self._render(r) for r in records.values() if not r.deleted]
        rows = [row for row in rows if all(cond.matches(row) for cond in parsed.where)]
        if parsed.count:
            return {"totalCount": len(rows)}
        if parsed.order_by:
            name, descending = parsed.order_by
            rows.sort(key=lambda row: _sort_key(_lookup(row, name)), reverse=descending)
        else:
            rows.sort(key=lambda row: int(row["Id"]))
        page = rows[parsed.start - 1 : parsed.start - 1 + parsed.max_results]
        if not page:
            return {}
        return {parsed.kind: page, "startPosition": parsed.start, "maxResults": len(page)}

    def changed_since(
        self, realm: str, kind: str, since: float, limit: int = MAX_RESULTS
    ) -> list[dict[str, Any]]:
        """Entities of ``kind`` changed after ``since``, oldest change first, at most ``limit``;
        deleted ones as ``{"Id", "status": "Deleted", "domain", "MetaData"}``."""
        with self._lock:
            records = self._books.get(realm, _Books()).records.get(kind, {})
            changed = sorted(
                (r for r in records.values() if r.updated > since), key=lambda r: r.updated
            )[:limit]
            out = []
            for record in changed:
                if record.deleted:
                    out.append(
                        {
                            "Id": record.body["Id"],
                            "status": "Deleted",
                            "domain": "QBO",
                            "MetaData": {"LastUpdatedTime": iso_time(record.updated)},
                        }
                    )
                else:
                    out.append(self._render(record))
            return out

    def totals(self, realm: str, kind: str) -> float:
        """Sum of ``TotalAmt`` over live entities of a kind (the report's figures)."""
        with self._lock:
            records = self._books.get(realm, _Books()).records.get(kind, {})
            return sum(
                float(r.body.get("TotalAmt", 0) or 0) for r in records.values() if not r.deleted
            )

    # ----- helpers (lock held) ----------------------------------------------------------------

    def _live(self, realm: str, kind: str, entity_id: str) -> _Record:
        records = self._books.get(realm, _Books()).records.get(kind, {})
        record = records.get(entity_id)
        if record is None or record.deleted:
            raise EntityError(
                "Object Not Found",
                code="610",
                detail=f"Object Not Found : Something you're trying to use has been made "
                f"inactive or deleted. Check the fields with accounts, customers, items, "
                f"vendors or employees. ({kind} {entity_id})",
            )
        return record

    @staticmethod
    def _check_sync_token(record: _Record, body: dict[str, Any]) -> None:
        if str(body.get("SyncToken", "")) != record.body["SyncToken"]:
            raise EntityError(
                "Stale Object Error",
                code="5010",
                detail=f"Stale Object Error : You and another user were working on the same "
                f"thing. Please try again. (SyncToken {record.body['SyncToken']} is current)",
            )

    @staticmethod
    def _check_unique(
        kind: str, records: dict[str, _Record], body: dict[str, Any], own_id: str | None
    ) -> None:
        name_field = _UNIQUE_NAME.get(kind)
        if name_field is None or not body.get(name_field):
            return
        name = body[name_field]
        for record in records.values():
            if record.deleted or record.body["Id"] == own_id:
                continue
            if record.body.get(name_field) == name:
                raise EntityError(
                    "Duplicate Name Exists Error",
                    code="6240",
                    detail=f"The name supplied already exists. : Id={record.body['Id']}",
                )

    @staticmethod
    def _check_refs(books: _Books, kind: str, body: dict[str, Any]) -> None:
        for ref_name, target in (("CustomerRef", "Customer"), ("VendorRef", "Vendor")):
            ref = body.get(ref_name)
            if ref is None:
                continue
            ref_id = str(ref.get("value", "")) if isinstance(ref, dict) else ""
            record = books.records.get(target, {}).get(ref_id)
            if record is None or record.deleted:
                raise EntityError(
                    "Invalid Reference Id",
                    code="2500",
                    detail=f"Invalid Reference Id : {target} assigned to this transaction "
                    f"has been deleted or does not exist ({ref_id})",
                    element=ref_name,
                )

    @staticmethod
    def _derive(kind: str, body: dict[str, Any]) -> None:
        """Fields QuickBooks computes: a transaction's ``TotalAmt`` from its lines."""
        if kind in ("Invoice", "Estimate", "Bill") and isinstance(body.get("Line"), list):
            total = 0.0
            for line in body["Line"]:
                if isinstance(line, dict) and line.get("DetailType") != "SubTotalLineDetail":
                    try:
                        total += float(line.get("Amount", 0) or 0)
                    except (TypeError, ValueError):
                        raise EntityError(
                            "Invalid Number", code="2040", element="Line.Amount"
                        ) from None
            body["TotalAmt"] = round(total, 2)
            if kind == "Invoice":
                body.setdefault("Balance", body["TotalAmt"])

    @staticmethod
    def _render(record: _Record) -> dict[str, Any]:
        body = copy.deepcopy(record.body)
        body["MetaData"] = {
            "CreateTime": iso_time(record.created),
            "LastUpdatedTime": iso_time(record.updated),
        }
        return body


_SYSTEM_FIELDS = frozenset({"Id", "SyncToken", "MetaData", "domain", "sparse", "status"})

# ----- the query subset -----------------------------------------------------------------------

_QUERY_RE = re.compile(
    r"^\s*select\s+(?P<what>\*|count\(\s*\*\s*\))\s+from\s+(?P<kind>\w+)"
    r"(?:\s+where\s+(?P<where>.+?))?"
    r"(?:\s+orderby\s+(?P<order>[\w.]+)(?:\s+(?P<dir>asc|desc))?)?"
    r"(?:\s+startposition\s+(?P<start>\d+))?"
    r"(?:\s+maxresults\s+(?P<max>\d+))?\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_COND_RE = re.compile(
    r"^\s*(?P<field>[A-Za-z][\w.]*)\s*(?P<op>=|!=|<=|>=|<|>|\bin\b|\blike\b)\s*(?P<value>.+?)\s*$",
    re.IGNORECASE | re.DOTALL,
)
_LITERAL_RE = re.compile(r"'((?:[^'\\]|\\.)*)'")


def _lookup(row: dict[str, Any], dotted: str) -> Any:
    value: Any = row
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if isinstance(value, dict) and "value" in value:  # a Ref: compare its id
        value = value["value"]
    return value


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, str) and value.isdigit():
        return (0, int(value))
    return (1, str(value) if value is not None else "")


def _compare_values(actual: Any, expected: str) -> tuple[Any, Any]:
    """Both sides as numbers, times or strings, whichever they both are."""
    if isinstance(actual, bool):
        return str(actual).lower(), expected.lower()
    try:
        return float(actual), float(expected)
    except (TypeError, ValueError):
        pass
    if isinstance(actual, str) and len(actual) >= 10 and actual[4:5] == "-":
        try:
            return parse_time(actual), parse_time(expected)
        except EntityError:
            pass
    return ("" if actual is None else str(actual)), expected


@dataclass
class _Condition:
    field: str
    op: str
    values: list[str]

    def matches(self, row: dict[str, Any]) -> bool:
        actual = _lookup(row, self.field)
        if self.op == "in":
            return any(
                _compare_values(actual, v)[0] == _compare_values(actual, v)[1] for v in self.values
            )
        if self.op == "like":
            pattern = "^" + re.escape(self.values[0]).replace("%", ".*") + "$"
            return actual is not None and re.match(pattern, str(actual), re.IGNORECASE) is not None
        if actual is None:
            return False
        left, right = _compare_values(actual, self.values[0])
        try:
            return bool(
                {
                    "=": left == right,
                    "!=": left != right,
                    "<": left < right,
                    ">": left > right,
                    "<=": left <= right,
                    ">=": left >= right,
                }[self.op]
            )
        except TypeError:
            return False


@dataclass
class _Query:
    kind: str
    count: bool
    where: list[_Condition]
    order_by: tuple[str, bool] | None
    start: int
    max_results: int


def _query_error(detail: str) -> EntityError:
    return EntityError(
        "Error parsing query",
        code="4000",
        detail=f"QueryParserError: {detail}",
        fault_type="ValidationFault",
    )


def _split_and(where: str) -> list[str]:
    """Split on ``and`` outside quotes and parentheses."""
    parts, depth, quoted, start, i = [], 0, False, 0, 0
    lower = where.lower()
    while i < len(where):
        char = where[i]
        if char == "'" and (i == 0 or where[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and lower.startswith(" and ", i):
            parts.append(where[start:i])
            i += 5
            start = i
            continue
        i += 1
    parts.append(where[start:])
    return parts


def _parse_query(statement: str) -> _Query:
    match = _QUERY_RE.match(statement or "")
    if match is None:
        raise _query_error("expected select * | count(*) from <Entity> [where ...] ...")
    kind = entity_type(match["kind"])
    if kind is None:
        raise _query_error(f"Invalid entity name: {match['kind']}")
    conditions = []
    if match["where"]:
        for text in _split_and(match["where"]):
            cond = _COND_RE.match(text)
            if cond is None:
                raise _query_error(f"cannot read condition {text.strip()!r}")
            op = cond["op"].lower()
            literals = [v.replace("\\'", "'") for v in _LITERAL_RE.findall(cond["value"])]
            if not literals:
                bare = cond["value"].strip().strip("()")
                if op in ("in", "like") or not re.fullmatch(r"[\w.-]+", bare):
                    raise _query_error(f"values must be quoted in {text.strip()!r}")
                literals = [bare]
            conditions.append(_Condition(cond["field"], op, literals))
    start = int(match["start"] or 1)
    max_results = int(match["max"] or 100)
    if start < 1 or not 1 <= max_results <= MAX_RESULTS:
        raise _query_error(f"startposition must be >= 1 and maxresults 1-{MAX_RESULTS}")
    order = (match["order"], (match["dir"] or "").lower() == "desc") if match["order"] else None
    return _Query(kind, match["what"] != "*", conditions, order, start, max_results)
