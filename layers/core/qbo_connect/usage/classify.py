"""Which QuickBooks Accounting API calls Intuit meters (CorePlus) and which it does not (Core).

Intuit's App Partner Program (2025) meters data coming *out* of QuickBooks (CorePlus: entity
reads, queries, reports, CompanyInfo, change data capture) per developer workspace per month,
and leaves data going *in* (Core: creates, updates, deletes) free. The table below is how this
service classes a call; the README repeats it. What Intuit has not settled is a setting:

- a batch (``POST batch``) is counted per item by default (``CorePlusBatchCounting=per_item``):
  the cautious reading, since the budget is what protects the app; ``per_call`` counts one;
- a non-2xx answer is counted like a 2xx (the request reached Intuit);
- sandbox calls are not metered by Intuit: they are counted apart (``sandbox``) and never
  spend the budget.

A batch's items are classed one by one (a batch of writes is Core, a batch with queries holds
CorePlus items).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CORE = "core"
COREPLUS = "coreplus"
API = "api"  # a call a workload made through the QuickBooks API proxy
SERVICE = "service"  # a call the service made itself (realm proofs, Disconnect URL, change feed)
SOURCES = (API, SERVICE)
PER_ITEM = "per_item"
PER_CALL = "per_call"

#: Read-only kinds of path, by their first segment (relative to /v3/company/{realm}/).
READ_KINDS = frozenset({"query", "reports", "cdc", "companyinfo", "preferences"})
#: Batch item operations that put data in (everything else in a batch item reads).
WRITE_BATCH_KEYS = frozenset({"operation"})


@dataclass(frozen=True)
class Call:
    """One classed call: how many CorePlus and Core units it spends."""

    core: int = 0
    coreplus: int = 0


def classify(
    method: str,
    path: str,
    *,
    body: Any = None,
    batch_counting: str = PER_ITEM,
) -> Call:
    """Class one QuickBooks API call from its method, its path (relative to the company) and,
    for a batch, its body.

    ``GET`` anything is a read. ``POST query`` is a read (a query sent in the body). ``POST``
    to an entity (create, update, delete, void, send) is a write. A batch is classed per item.
    """
    kind = path.strip("/").split("/", 1)[0].lower()
    method = method.upper()
    if kind == "batch" and method == "POST":
        return _batch(body, batch_counting)
    if method == "GET" or kind in READ_KINDS:
        return Call(coreplus=1)
    return Call(core=1)


def _batch(body: Any, batch_counting: str) -> Call:
    items = _batch_items(body)
    reads = sum(1 for item in items if _item_reads(item))
    writes = len(items) - reads
    if batch_counting == PER_CALL:
        return Call(coreplus=1) if reads else Call(core=1)
    return Call(core=writes, coreplus=reads)


def _batch_items(body: Any) -> list[Mapping[str, Any]]:
    if isinstance(body, Mapping):
        items = body.get("BatchItemRequest")
        if isinstance(items, list):
            return [item for item in items if isinstance(item, Mapping)]
    return []


def _item_reads(item: Mapping[str, Any]) -> bool:
    """A batch item reads when it is a query or a report; an entity with ``operation`` writes."""
    if "Query" in item or "Report" in item or "CDCQuery" in item:
        return True
    return not any(key in item for key in WRITE_BATCH_KEYS)


def total(calls: Iterable[Call]) -> Call:
    core = coreplus = 0
    for call in calls:
        core += call.core
        coreplus += call.coreplus
    return Call(core=core, coreplus=coreplus)
