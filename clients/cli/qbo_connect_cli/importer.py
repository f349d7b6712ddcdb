"""``qbo-connect connections import``: adopt connections made by another system, row by row.

Why it is built this way:

* The file is read and checked completely before the first invoke. A file that cannot be read
  as a whole (no header, a missing required column) imports nothing; a bad row fails alone.
* Safe to re-run: a row whose realm is already active for the same tenant is reported
  ``unchanged`` without calling ``import_connection`` (which would refuse it anyway, and must
  never spend a refresh token twice). The tenants' connections are listed once up front (a
  page per 200 connections), so a re-run of 1,000 done rows costs a handful of invokes. A row
  whose import answer was lost (boto3 retried and met its own earlier success as a
  ``conflict``) is re-read and recognised as ``imported``.
* Rows run on a few threads (``--concurrency``): each import is one Intuit refresh, so 1,000
  rows take minutes, not an hour. If the stack becomes unreachable the remaining rows are not
  attempted and say so; every row appears in the report.
* The refresh token is sent to the function and nowhere else: never printed, never in a report.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbo_connect_cli.backend import (
    CONNECTIONS_FUNCTION,
    CliError,
    ServiceError,
    Target,
    Unreachable,
)

REQUIRED = ("realm_id", "tenant_id", "refresh_token")
OPTIONAL = ("environment", "scopes")
ENVIRONMENTS = ("sandbox", "production")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")

#: Row results. Success: imported, unchanged, would_create, would_reconnect.
IMPORTED = "imported"
UNCHANGED = "unchanged"
FAILED = "failed"
NOT_ATTEMPTED = "not_attempted"
SUCCESSES = frozenset({IMPORTED, UNCHANGED, "would_create", "would_reconnect", "would_import"})


class ImportFileError(CliError):
    """The file as a whole cannot be imported (nothing was attempted)."""


@dataclass
class Row:
    """One line of the file: its line number, the fields it gave, and a problem if any."""

    line: int
    fields: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def realm_id(self) -> str:
        return str(self.fields.get("realm_id") or "")

    @property
    def tenant_id(self) -> str:
        return str(self.fields.get("tenant_id") or "")

    def payload(self, dry_run: bool) -> dict[str, Any]:
        """The ``import_connection`` request for this row."""
        payload: dict[str, Any] = {"action": "import_connection"}
        for name in (*REQUIRED, "environment"):
            if self.fields.get(name):
                payload[name] = self.fields[name]
        scopes = self.fields.get("scopes")
        if scopes:
            payload["scopes"] = scopes.split() if isinstance(scopes, str) else scopes
        if dry_run:
            payload["dry_run"] = True
        return payload


#: What a realm id and a tenant id look like (the service's own rules). A value that does not
#: is never shown back: with two columns swapped, it may be a refresh token.
REALM_SHAPE = re.compile(r"[0-9]{1,32}")
TENANT_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")
HIDDEN = "(hidden)"


def shown(value: str, shape: re.Pattern[str]) -> str:
    """``value`` if it has the expected shape, else a placeholder (it may be a secret)."""
    return value if shape.fullmatch(value) else HIDDEN


@dataclass
class RowResult:
    line: int
    realm_id: str
    tenant_id: str
    result: str
    code: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.result in SUCCESSES

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "row": self.line,
            "realm_id": shown(self.realm_id, REALM_SHAPE),
            "tenant_id": shown(self.tenant_id, TENANT_SHAPE),
            "result": self.result,
        }
        if self.code:
            data["code"] = self.code
        if self.message:
            data["message"] = self.message
        return data


def read_rows(path: Path) -> list[Row]:
    """Every data row of a CSV or JSON-lines file, each checked on its own."""
    try:
        content = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ImportFileError("file_not_found", f"{path} does not exist", 2) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError("unreadable_file", f"cannot read {path}: {exc}", 2) from None
    rows = _json_lines(content) if _is_json_lines(path, content) else _csv_rows(content, path)
    if not rows:
        raise ImportFileError("empty_file", f"{path} has no rows to import", 2)
    _check(rows)
    return rows


def _is_json_lines(path: Path, content: str) -> bool:
    if path.suffix.lower() in JSON_SUFFIXES:
        return True
    if path.suffix.lower() == ".csv":
        return False
    return content.lstrip().startswith("{")


def _json_lines(content: str) -> list[Row]:
    rows = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            rows.append(Row(number, problem="not valid JSON"))
            continue
        if not isinstance(value, dict):
            rows.append(Row(number, problem="not a JSON object"))
            continue
        rows.append(Row(number, {k: v for k, v in value.items() if k in (*REQUIRED, *OPTIONAL)}))
    return rows


def _csv_rows(content: str, path: Path) -> list[Row]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise ImportFileError(
            "bad_header",
            f"{path}: the header row must name {', '.join(REQUIRED)} "
            f"(optional: {', '.join(OPTIONAL)}); missing: {', '.join(missing)}",
            2,
        )
    reader.fieldnames = header
    rows = []
    for record in reader:
        if not any((v or "").strip() for k, v in record.items() if k is not None):
            continue  # a blank line
        fields = {k: (record.get(k) or "").strip() for k in (*REQUIRED, *OPTIONAL) if k in header}
        row = Row(reader.line_num, {k: v for k, v in fields.items() if v})
        if record.get(None):  # type: ignore[call-overload]
            row.problem = "more values than columns in the header"
        rows.append(row)
    return rows


def _check(rows: Iterable[Row]) -> None:
    """Problems the service would refuse anyway, found before anything is sent."""
    first_line: dict[str, int] = {}
    for row in rows:
        if row.problem:
            continue
        missing = [
            n for n in REQUIRED if not isinstance(row.fields.get(n), str) or not row.fields[n]
        ]
        if missing:
            row.problem = f"missing {', '.join(missing)}"
            continue
        if not REALM_SHAPE.fullmatch(row.realm_id):
            row.problem = "realm_id must be the numeric QuickBooks company id (columns swapped?)"
            continue
        if not TENANT_SHAPE.fullmatch(row.tenant_id):
            row.problem = "tenant_id must be 1-128 characters: letters, digits and . _ : @ / + = -"
            continue
        environment = row.fields.get("environment")
        if environment and environment not in ENVIRONMENTS:
            row.problem = f"environment must be {' or '.join(ENVIRONMENTS)}"
            continue
        earlier = first_line.setdefault(row.realm_id, row.line)
        if earlier != row.line:
            row.problem = f"realm {row.realm_id} is also in row {earlier}"


class Importer:
    """Runs the rows against ConnectionsFunction; ``on_done`` is called once per row."""

    def __init__(self, target: Target, *, dry_run: bool = False, concurrency: int = 8) -> None:
        self.target = target
        self.dry_run = dry_run
        self.concurrency = max(1, concurrency)
        self._stopped: Unreachable | None = None
        self._lock = threading.Lock()
        self._connected: dict[tuple[str, str], Mapping[str, Any]] = {}

    @property
    def stopped(self) -> Unreachable | None:
        """Why the run stopped early (the stack became unreachable), if it did."""
        return self._stopped

    def run(
        self, rows: list[Row], on_done: Callable[[RowResult], None] = lambda r: None
    ) -> list[RowResult]:
        def one(row: Row) -> RowResult:
            result = self._one(row)
            on_done(result)
            return result

        tenants = sorted({row.tenant_id for row in rows if not row.problem})
        try:
            self._connected = self._connections_of(tenants)
        except Unreachable as exc:
            self._stopped = exc
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="import") as pool:
            results = list(pool.map(one, rows))
        return sorted(results, key=lambda r: r.line)

    def _connections_of(self, tenants: Iterable[str]) -> dict[tuple[str, str], Mapping[str, Any]]:
        """Every stored connection of the file's tenants: one page per 200, not one per row."""
        found: dict[tuple[str, str], Mapping[str, Any]] = {}
        for tenant in tenants:
            cursor: str | None = None
            while True:
                payload: dict[str, Any] = {
                    "action": "list_connections",
                    "tenant_id": tenant,
                    "limit": 200,
                }
                if cursor:
                    payload["cursor"] = cursor
                try:
                    answer = self.target.invoke(CONNECTIONS_FUNCTION, payload)
                except ServiceError:
                    break  # e.g. a malformed tenant id: its rows fail on their own
                for connection in answer.get("connections") or []:
                    found[(tenant, str(connection.get("realm_id")))] = connection
                cursor = answer.get("next_cursor")
                if not cursor:
                    break
        return found

    def _one(self, row: Row) -> RowResult:
        def result(kind: str, code: str | None = None, message: str | None = None) -> RowResult:
            return RowResult(row.line, row.realm_id, row.tenant_id, kind, code, message)

        if row.problem:
            return result(FAILED, "invalid_row", row.problem)
        if self._stopped is not None:
            return result(NOT_ATTEMPTED, self._stopped.code, "not attempted: the run stopped")
        try:
            if _is_ours(self._connected.get((row.tenant_id, row.realm_id)), row.tenant_id):
                return result(UNCHANGED, message="already connected to this tenant")
            try:
                answer = self.target.invoke(CONNECTIONS_FUNCTION, row.payload(self.dry_run))
            except ServiceError as exc:
                # A retried invoke meeting its own earlier success answers "already
                # connected": the stored state, not the answer, says what happened.
                if exc.code == "conflict" and not self.dry_run:
                    current = self._current(row.realm_id)
                    if _is_ours(current, row.tenant_id):
                        return result(IMPORTED, message="connected (confirmed by re-reading)")
                    if _is_theirs(current, row.tenant_id):
                        # The code the dry run gives the same row (its reason), not "conflict".
                        return result(FAILED, "other_tenant", exc.message)
                return result(FAILED, exc.code, exc.message)
        except Unreachable as exc:
            with self._lock:
                self._stopped = self._stopped or exc
            return result(FAILED, exc.code, exc.message)
        except CliError as exc:
            return result(FAILED, exc.code, exc.message)
        if self.dry_run:
            kind = _dry_run_result(answer)
            if kind == "would_refuse":
                reason = answer.get("reason")
                code = reason if isinstance(reason, str) and reason else "refused"
                return result(FAILED, code, _dry_run_message(answer) or "would be refused")
            return result(kind, message=_dry_run_message(answer))
        return result(IMPORTED)

    def _current(self, realm_id: str) -> Mapping[str, Any] | None:
        try:
            answer = self.target.invoke(
                CONNECTIONS_FUNCTION, {"action": "get_connection", "realm_id": realm_id}
            )
        except ServiceError as exc:
            if exc.code in ("not_connected", "invalid_request"):
                return None  # invalid_request: let import_connection say what is wrong
            raise
        connection = answer.get("connection")
        return connection if isinstance(connection, Mapping) else None


def _is_ours(connection: Mapping[str, Any] | None, tenant_id: str) -> bool:
    return (
        connection is not None
        and connection.get("status") == "active"
        and connection.get("tenant_id") == tenant_id
    )


def _is_theirs(connection: Mapping[str, Any] | None, tenant_id: str) -> bool:
    """Connected to another tenant: the row is refused as ``other_tenant``."""
    return (
        connection is not None
        and connection.get("status") == "active"
        and connection.get("tenant_id") != tenant_id
    )


def _dry_run_result(answer: Mapping[str, Any]) -> str:
    """``would_<outcome>`` from the service's dry-run answer (``would_import`` if unsaid)."""
    outcome = answer.get("outcome") or answer.get("would")
    if not isinstance(outcome, str) or not outcome.isidentifier():
        return "would_import"
    outcome = outcome.removeprefix("would_")
    verbs = {"created": "create", "reconnected": "reconnect", "refused": "refuse"}
    return f"would_{verbs.get(outcome, outcome)}"


def _dry_run_message(answer: Mapping[str, Any]) -> str | None:
    message = answer.get("message")
    return message if isinstance(message, str) else None


def summarize(results: Iterable[RowResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in results:
        counts[item.result] = counts.get(item.result, 0) + 1
    return dict(sorted(counts.items()))
