"""The QuickBooks Accounting API's calls, once the gateway has let a request through.

``companyinfo/{realm}``, ``{entity}/{id}``, ``{entity}`` (create; update with ``Id`` and
``SyncToken``; ``?operation=delete``), ``query``, ``batch`` (each item answered on its own, a
failing one with its ``Fault`` inside the 200), ``cdc`` (at most 30 days back, 1000 per entity)
and ``reports/ProfitAndLoss``, all over :mod:`devstack.intuit_sim.entities`. Each applied
change is also sent as a webhook unless the test drops deliveries. The gateway in front of
this (tokens, limits, faults, ``requestid``) is :mod:`devstack.intuit_sim.quickbooks`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request

from devstack.intuit_sim.entities import (
    MAX_RESULTS,
    Change,
    EntityError,
    EntityStore,
    entity_type,
    iso_time,
    parse_time,
)
from devstack.intuit_sim.oauth import OAuthServer

BATCH_MAX_ITEMS = 30
CDC_MAX_DAYS = 30
#: Counted kinds that are answers (``requests`` counts them all).
_ANSWER_KINDS = frozenset(
    {"reads", "writes", "batch", "cdc", "401", "403", "429", "5xx", "replays"}
)


@dataclass
class _Answer:
    status: int
    body: bytes
    content_type: str


class QuickBooksCalls(OAuthServer):
    """Serves one admitted call from the entity store; counts and webhooks alongside."""

    entities: EntityStore
    _api_counts: dict[str, Counter[str]]
    _drop_webhooks: bool

    def _serve(self, request: Request, realm: str, rest: str, kind: str) -> _Answer:
        parts = rest.split("/")
        head = parts[0].lower()
        method = request.method
        try:
            if head == "companyinfo" and len(parts) == 2 and method == "GET":
                return self._ok(self._companyinfo_body(realm, parts[1]))
            if head == "query" and len(parts) == 1 and method in ("GET", "POST"):
                statement = request.args.get("query")
                if statement is None and method == "POST":
                    statement = request.get_data(as_text=True)
                return self._ok({"QueryResponse": self.entities.query(realm, statement or "")})
            if head == "batch" and len(parts) == 1 and method == "POST":
                return self._ok(self._batch(realm, request))
            if head == "cdc" and len(parts) == 1 and method == "GET":
                return self._ok(self._cdc(realm, request))
            if head == "reports" and len(parts) == 2 and method == "GET":
                return self._ok(self._report(realm, parts[1], request), stamp=False)
            entity = entity_type(head)
            if entity is not None and len(parts) == 2 and method == "GET":
                return self._ok({entity: self.entities.get(realm, entity, parts[1])})
            if entity is not None and len(parts) == 1 and method == "POST":
                body = request.get_json(silent=True, force=True)
                if not isinstance(body, dict):
                    raise EntityError("Request has invalid or unsupported property", code="2010")
                operation = request.args.get("operation", "").lower()
                return self._ok(self._write(realm, entity, operation, body))
        except EntityError as exc:
            return self._fault_answer(exc)
        return self._fault_answer(
            EntityError(
                "Unsupported Operation",
                code="500",
                detail=f"Operation {method} {rest} is not supported.",
                status=400,
            )
        )

    def _write(
        self, realm: str, entity: str, operation: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        now = self.now()
        if operation == "delete":
            answer, change = self.entities.delete(realm, entity, body, now)
            self._publish(change)
            return {entity: answer}
        if operation not in ("", "update", "create"):
            raise EntityError("Unsupported Operation", code="500", detail=operation)
        if body.get("Id"):
            answer, change = self.entities.update(realm, entity, body, now)
        else:
            answer, change = self.entities.create(realm, entity, body, now)
        self._publish(change)
        return {entity: answer}

    def _batch(self, realm: str, request: Request) -> dict[str, Any]:
        payload = request.get_json(silent=True, force=True)
        items = payload.get("BatchItemRequest") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not items:
            raise EntityError("BatchItemRequest is required", code="2010")
        if len(items) > BATCH_MAX_ITEMS:
            raise EntityError(
                "Batch request size exceeded",
                code="2010",
                detail=f"A batch holds at most {BATCH_MAX_ITEMS} items; got {len(items)}",
            )
        answers = []
        for item in items:
            b_id = item.get("bId") if isinstance(item, dict) else None
            try:
                if not isinstance(item, dict) or not b_id:
                    raise EntityError("bId is required in every BatchItemRequest", code="2010")
                if "Query" in item:
                    answer = {"QueryResponse": self.entities.query(realm, str(item["Query"]))}
                else:
                    names = [k for k in item if entity_type(k) is not None]
                    if len(names) != 1 or not isinstance(item[names[0]], dict):
                        raise EntityError("One entity object is required per item", code="2010")
                    entity = entity_type(names[0])
                    assert entity is not None
                    operation = str(item.get("operation", "create")).lower()
                    body = dict(item[names[0]])
                    if operation == "create":
                        body.pop("Id", None)
                    elif operation == "update" and not body.get("Id"):
                        raise EntityError("Id is required to update", code="2020", element="Id")
                    answer = self._write(realm, entity, operation, body)
                answers.append({"bId": b_id, **answer})
            except EntityError as exc:
                answers.append({"bId": b_id, "Fault": exc.fault()})
        return {"BatchItemResponse": answers}

    def _cdc(self, realm: str, request: Request) -> dict[str, Any]:
        names = [n.strip() for n in request.args.get("entities", "").split(",") if n.strip()]
        since_text = request.args.get("changedSince", "")
        if not names or not since_text:
            raise EntityError(
                "entities and changedSince are required", code="2010", element="changedSince"
            )
        kinds = []
        for name in names:
            kind = entity_type(name)
            if kind is None:
                raise EntityError(f"Invalid entity name: {name}", code="2010", element="entities")
            kinds.append(kind)
        since = parse_time(since_text)
        if since < self.now() - CDC_MAX_DAYS * 86400:
            raise EntityError(
                "Invalid changedSince",
                code="2010",
                detail=f"changedSince cannot be more than {CDC_MAX_DAYS} days in the past",
                element="changedSince",
            )
        responses = []
        for kind in kinds:
            rows = self.entities.changed_since(realm, kind, since, MAX_RESULTS)
            if rows:
                responses.append(
                    {
                        kind: rows,
                        "startPosition": 1,
                        "maxResults": len(rows),
                        "totalCount": len(rows),
                    }
                )
            else:
                responses.append({})
        return {"CDCResponse": [{"QueryResponse": responses}]}

    def _report(self, realm: str, name: str, request: Request) -> dict[str, Any]:
        if name != "ProfitAndLoss":
            raise EntityError("Unsupported report", code="2010", detail=name)
        income = self.entities.totals(realm, "Invoice")
        expenses = self.entities.totals(realm, "Bill")
        today = datetime.fromtimestamp(self.now(), UTC).date().isoformat()

        def row(group: str, label: str, value: float) -> dict[str, Any]:
            return {
                "group": group,
                "type": "Section",
                "Summary": {"ColData": [{"value": label}, {"value": f"{value:.2f}"}]},
            }

        return {
            "Header": {
                "Time": iso_time(self.now()),
                "ReportName": "ProfitAndLoss",
                "ReportBasis": "Accrual",
                "StartPeriod": request.args.get("start_date", today[:8] + "01"),
                "EndPeriod": request.args.get("end_date", today),
                "SummarizeColumnsBy": "Total",
                "Currency": "USD",
            },
            "Columns": {
                "Column": [
                    {"ColTitle": "", "ColType": "Account"},
                    {"ColTitle": "Total", "ColType": "Money"},
                ]
            },
            "Rows": {
                "Row": [
                    row("Income", "Total Income", income),
                    row("Expenses", "Total Expenses", expenses),
                    row("NetIncome", "Net Income", income - expenses),
                ]
            },
        }

    def _companyinfo_body(self, realm: str, requested: str) -> dict[str, Any]:
        if requested != realm:
            raise EntityError("Object Not Found", code="610", detail=f"CompanyInfo {requested}")
        name = self.company_name_for(realm)
        with self._lock:
            created_at = min(
                (g.created_at for g in self._grants.values() if g.realm_id == realm),
                default=self.now(),
            )
        created = iso_time(created_at)
        return {
            "CompanyInfo": {
                "CompanyName": name,
                "LegalName": name,
                "CompanyAddr": {
                    "Id": "1",
                    "Line1": "123 Sierra Way",
                    "City": "San Pablo",
                    "CountrySubDivisionCode": "CA",
                    "PostalCode": "87999",
                },
                "Country": "US",
                "Email": {"Address": "noreply@quickbooks.com"},
                "SupportedLanguages": "en",
                "domain": "QBO",
                "sparse": False,
                "Id": "1",
                "SyncToken": "1",
                "MetaData": {"CreateTime": created, "LastUpdatedTime": created},
            }
        }

    # ----- webhooks ---------------------------------------------------------------------------

    def _publish(self, change: Change) -> None:
        """Send the change as a webhook, unless deliveries are dropped or none is configured."""
        with self._lock:
            dropping = self._drop_webhooks
        if dropping:
            self._tally(change.realm_id, "webhooks_dropped")
            return
        if not (self.webhooks.url and self.webhooks.verifier_token):
            return
        self.webhooks.send(
            [
                {
                    "realm_id": change.realm_id,
                    "name": change.entity,
                    "id": change.entity_id,
                    "operation": change.operation,
                    # The very instant MetaData.LastUpdatedTime shows, in the webhook's Z form,
                    # so a change feed can match the two exactly.
                    "lastUpdated": iso_time(change.at).replace("+00:00", "Z"),
                }
            ]
        )
        self._tally(change.realm_id, "webhooks_sent")

    # ----- answers ----------------------------------------------------------------------------

    def _tally(self, realm: str, kind: str) -> None:
        with self._lock:
            counts = self._api_counts.setdefault(realm, Counter())
            counts[kind] += 1
            if kind in _ANSWER_KINDS:
                counts["requests"] += 1

    def _ok(self, body: dict[str, Any], *, stamp: bool = True) -> _Answer:
        if stamp:
            body = {**body, "time": iso_time(self.now())}
        return _Answer(200, json.dumps(body).encode(), "application/json;charset=UTF-8")

    def _fault_answer(self, exc: EntityError) -> _Answer:
        body = {"Fault": exc.fault(), "time": iso_time(self.now())}
        return _Answer(exc.status, json.dumps(body).encode(), "application/json;charset=UTF-8")
