"""One realm's reconciliation: ask CDC what changed since the watermark, publish what no
webhook announced, then move the watermark (the outbox rule: never before the events are
recorded).

The CDC call and the publication are injected (:class:`CdcFetch`, :class:`Publish`): the
composition root gives the QuickBooks API package's governed, metered call and EventBridge.

- The window starts at the watermark minus :data:`OVERLAP_SECONDS` (changes written just before
  a run can become visible to CDC a little later; see :func:`overlap_start`); change marks make
  the overlap free of duplicates.
- One CDC call asks every entity at once (one CorePlus call per run, whatever the entity list).
  CDC takes only ``changedSince`` and answers at most 1000 objects per entity, oldest change
  first. An entity whose answer is full is complete only before its latest change time (more
  changes of that millisecond may be cut off), so that entity alone is asked again from one
  millisecond before it (the window narrowed to what is still missing; what is asked twice is
  already seen) until its answer is not full. A full page of one millisecond cannot be
  narrowed: the run is ``partial`` there.
- A deleted object (``status: "Deleted"``) is published with ``operation: "Delete"``.
- A watermark older than CDC's 30 days cannot be recovered: the realm gets one
  ``quickbooks.resync_required`` event naming the lost window (its event id derived from the
  window, so a repeated run repeats the same id), and the watermark moves to where CDC reaches.
- A run that meets its deadline answers ``partial`` and moves the watermark only as far as
  every entity is complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from qbo_connect.api.request import ApiRequest
from qbo_connect.changes import SOURCE_CDC, change_event_id, change_time
from qbo_connect.errors import CdcFailed
from qbo_connect.store.change_marks import ChangeMarks
from qbo_connect.store.table import iso

T = TypeVar("T")

#: Re-read this much before the watermark on every run.
OVERLAP_SECONDS = 300.0
#: CDC answers at most this many objects per entity.
CDC_PAGE_LIMIT = 1000
#: CDC refuses a ``changedSince`` further back than 30 days; stay an hour inside it.
CDC_REACH_SECONDS = 30 * 86400 - 3600
#: Stop asking one entity again after this many full answers in one run (then ``partial``).
MAX_PAGES_PER_ENTITY = 50
#: CDC's times have milliseconds: a narrowed window starts one before a full answer's latest.
TICK = 0.001
#: A run that stopped early (deadline, too many pages) is scheduled to continue this soon.
CONTINUE_AFTER_SECONDS = 300.0

ENTITY_CHANGED = "quickbooks.entity_changed"
RESYNC_REQUIRED = "quickbooks.resync_required"


class CdcFetch(Protocol):
    """``GET /v3/company/<realm>/cdc?entities=<e1,e2,...>&changedSince=<iso>``: one CorePlus
    call, answering the changed objects of each entity asked (at most 1000 each)."""

    def __call__(
        self, realm_id: str, entities: Sequence[str], changed_since: str
    ) -> Mapping[str, Sequence[Mapping[str, Any]]]: ...


#: Publishes ``(detail_type, detail)`` pairs; raises when any was not published.
Publish = Callable[[Sequence[tuple[str, dict[str, Any]]]], None]


@dataclass(frozen=True)
class RealmInfo:
    realm_id: str
    tenant_id: str
    environment: str


@dataclass(frozen=True)
class Outcome:
    published: int
    already_seen: int
    watermark: float
    partial: bool
    resync_required: bool

    def answer(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "already_seen": self.already_seen,
            "watermark": iso(self.watermark),
            "partial": self.partial,
            "resync_required": self.resync_required,
        }


def parse_cdc(answer: Mapping[str, Any], entity: str) -> list[Mapping[str, Any]]:
    """The objects of ``entity`` in a CDC answer body (``CDCResponse[].QueryResponse[]``)."""
    objects: list[Mapping[str, Any]] = []
    for response in answer.get("CDCResponse") or []:
        for query in response.get("QueryResponse") or []:
            objects.extend(query.get(entity) or [])
    return objects


@dataclass(kw_only=True, eq=False)
class Reconciler:
    """Reconciles one realm at a time (see the module docstring)."""

    marks: ChangeMarks
    fetch: CdcFetch
    publish: Publish
    entities: Sequence[str]
    clock: Callable[[], float]
    page_limit: int = CDC_PAGE_LIMIT
    #: The schedule's period (0: off, the realm is not scheduled).
    period_seconds: float = 0.0
    #: Change-mark writes of one answer in flight at once.
    parallelism: int = 8

    def run(self, realm: RealmInfo, *, deadline: float) -> Outcome:
        started = self.clock()
        state = self.marks.get_watermark(realm.realm_id)
        if state is None or (state.tenant_id and state.tenant_id != realm.tenant_id):
            # A connection made before the feed existed, or a realm that changed hands, starts
            # now: nothing older is replayed.
            self.marks.start(
                realm.realm_id,
                tenant_id=realm.tenant_id,
                at=started,
                now=started,
                next_run=self._next_run(started, partial=False),
            )
            return Outcome(0, 0, started, partial=False, resync_required=False)
        seen = state.watermark
        resync = False
        since = overlap_start(seen, state.last_run)
        reach = started - CDC_REACH_SECONDS
        if since < reach:
            self._resync(realm, lost_from=seen, lost_to=reach, now=started)
            resync = True
            since = reach
        published = already = 0
        partial = False
        #: Per entity: asked again from here (full answers), or complete up to ``covered``.
        asking: dict[str, float] = dict.fromkeys(self.entities, since)
        covered: dict[str, float] = dict.fromkeys(self.entities, since)
        for _round in range(MAX_PAGES_PER_ENTITY):
            if not asking:
                break
            if self.clock() >= deadline:
                partial = True
                break
            # The first round asks every entity in one call; a narrowed one asks its entity.
            groups: dict[float, list[str]] = {}
            for entity, entity_since in asking.items():
                groups.setdefault(entity_since, []).append(entity)
            next_asking: dict[str, float] = {}
            for entity_since, entities in groups.items():
                if self.clock() >= deadline:
                    partial = True
                    break
                asked_at = self.clock()
                answers = self.fetch(realm.realm_id, entities, iso_ms(entity_since))
                for entity in entities:
                    objects = answers.get(entity) or ()
                    p, a, latest = self._record(realm, entity, objects)
                    published += p
                    already += a
                    if len(objects) < self.page_limit:
                        covered[entity] = asked_at
                        continue
                    # Full: complete only before its latest change time (more changes of that
                    # same millisecond may follow), so ask again from just before it.
                    narrowed = (latest or 0.0) - TICK
                    if narrowed <= entity_since:
                        partial = True  # a page of one millisecond: it cannot narrow
                    else:
                        covered[entity] = narrowed
                        next_asking[entity] = narrowed
            if partial:
                break
            asking = next_asking
        else:
            partial = partial or bool(asking)
        reached = min(covered.values(), default=started)
        next_run = self._next_run(started, partial=partial)
        watermark = seen
        if reached > seen:
            moved = self.marks.advance(
                realm.realm_id,
                seen=seen,
                to=reached,
                recovered=published,
                now=started,
                next_run=next_run,
            )
            if moved:
                watermark = reached
            else:  # another run moved it first (or this write's retry met its own success)
                state = self.marks.get_watermark(realm.realm_id)
                watermark = state.watermark if state else reached
        else:
            self.marks.reschedule(realm.realm_id, next_run=next_run, now=started)
        return Outcome(published, already, watermark, partial=partial, resync_required=resync)

    def _next_run(self, now: float, *, partial: bool) -> float | None:
        """When the schedule runs this realm next (None: scheduling is off). A run that ended
        early continues soon; a complete one waits a whole period."""
        if not self.period_seconds:
            return None
        return now + (
            min(self.period_seconds, CONTINUE_AFTER_SECONDS) if partial else self.period_seconds
        )

    def _record(
        self, realm: RealmInfo, entity: str, objects: Sequence[Mapping[str, Any]]
    ) -> tuple[int, int, float | None]:
        """Claim and publish the objects no path published yet; (published, seen, latest).

        The claims (and then the confirmations) of one answer are independent conditional
        writes on different items, so they run ``parallelism`` at a time: a full answer of 1000
        changes is 2000 writes, which one after another would take most of a run's time.
        """
        now = self.clock()
        changes: list[tuple[str, float, str, Mapping[str, Any]]] = []
        for obj in objects:
            meta = obj.get("MetaData") or {}
            when = change_time(str(meta.get("LastUpdatedTime", "")))
            entity_id = str(obj.get("Id", ""))
            if when is not None and entity_id:
                event_id = change_event_id(realm.realm_id, entity, entity_id, when)
                changes.append((entity_id, when, event_id, obj))
        latest = max((when for _, when, _, _ in changes), default=None)

        def claim(change: tuple[str, float, str, Mapping[str, Any]]) -> bool:
            entity_id, when, event_id, _ = change
            return self.marks.claim(
                realm.realm_id,
                entity,
                entity_id,
                change_time=when,
                event_id=event_id,
                source=SOURCE_CDC,
                now=now,
            )

        won = self._each(claim, changes)
        claimed = [change for change, ok in zip(changes, won, strict=True) if ok]
        if claimed:
            self.publish(
                [
                    (ENTITY_CHANGED, self._detail(realm, entity, obj, event_id))
                    for _, _, event_id, obj in claimed
                ]
            )

            def confirm(change: tuple[str, float, str, Mapping[str, Any]]) -> bool:
                entity_id, _, event_id, _ = change
                return self.marks.mark_published(
                    realm.realm_id, entity, entity_id, event_id=event_id, now=self.clock()
                )

            self._each(confirm, claimed)
        return len(claimed), len(changes) - len(claimed), latest

    def _each(self, write: Callable[[T], bool], items: Sequence[T]) -> list[bool]:
        """``write`` over ``items`` in order of the answers, ``parallelism`` at a time."""
        if self.parallelism <= 1 or len(items) <= 1:
            return [write(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.parallelism, len(items))) as pool:
            return list(pool.map(write, items))

    @staticmethod
    def _detail(
        realm: RealmInfo, entity: str, obj: Mapping[str, Any], event_id: str
    ) -> dict[str, Any]:
        meta = obj.get("MetaData") or {}
        if obj.get("status") == "Deleted":
            operation = "Delete"
        elif meta.get("CreateTime") and meta.get("CreateTime") == meta.get("LastUpdatedTime"):
            operation = "Create"
        else:
            operation = "Update"
        return {
            "event_id": event_id,
            "realm_id": realm.realm_id,
            "tenant_id": realm.tenant_id,
            "environment": realm.environment,
            "entity": entity,
            "entity_id": str(obj["Id"]),
            "operation": operation,
            "occurred_at": str(meta["LastUpdatedTime"]),
            "source": SOURCE_CDC,
        }

    def _resync(self, realm: RealmInfo, *, lost_from: float, lost_to: float, now: float) -> None:
        basis = f"{realm.realm_id}|resync|{lost_from:.3f}"
        self.publish(
            [
                (
                    RESYNC_REQUIRED,
                    {
                        "event_id": "rsy-" + hashlib.sha256(basis.encode()).hexdigest()[:32],
                        "realm_id": realm.realm_id,
                        "tenant_id": realm.tenant_id,
                        "environment": realm.environment,
                        "lost_from": iso(lost_from),
                        "lost_to": iso(lost_to),
                        "occurred_at": iso(now),
                    },
                )
            ]
        )


def overlap_start(watermark: float, last_run: float | None) -> float:
    """Where a run asks from: the overlap covers changes that became visible to CDC late, i.e.
    written less than :data:`OVERLAP_SECONDS` before the previous run asked. A watermark further
    back than that (a narrowed or partial run's) needs no overlap: re-reading a full page of
    changes already published would only cost its claims again."""
    if last_run is None:
        return watermark - OVERLAP_SECONDS
    return min(watermark, last_run - OVERLAP_SECONDS)


def iso_ms(epoch: float) -> str:
    """``changedSince`` with milliseconds, UTC."""
    total_ms = round(epoch * 1000)
    return iso(total_ms // 1000).replace("Z", f".{total_ms % 1000:03d}Z")


class ProxyCdc:
    """:class:`CdcFetch` over the QuickBooks API package's in-process call, so every CDC request
    is governed and metered like any proxied call (``call`` is ``QuickBooksProxy.call``)."""

    def __init__(
        self,
        call: Callable[[ApiRequest], dict[str, Any]],
        *,
        tenant_id: str,
        max_wait_seconds: float | None = None,
    ) -> None:
        self.call = call
        self.tenant_id = tenant_id
        self.max_wait_seconds = max_wait_seconds

    def __call__(
        self, realm_id: str, entities: Sequence[str], changed_since: str
    ) -> Mapping[str, Sequence[Mapping[str, Any]]]:
        answer = self.call(
            ApiRequest(
                realm_id=realm_id,
                tenant_id=self.tenant_id,
                method="GET",
                path="cdc",
                query={"entities": ",".join(entities), "changedSince": changed_since},
                body=None,
                content_type=None,
                request_id=None,
                minorversion=None,
                max_wait_seconds=self.max_wait_seconds,
            )
        )
        status = int(answer.get("status") or 0)
        body = answer.get("body")
        if not 200 <= status < 300 or not isinstance(body, Mapping) or "Fault" in body:
            # Only the status goes into the message: bodies may carry company data.
            raise CdcFailed(f"CDC answered {status}")
        return {entity: parse_cdc(body, entity) for entity in entities}
