"""The QuickBooks Accounting API's gateway under ``/v3/company/{realm}/...``, like Intuit's.

Every request goes through the same steps, in Intuit's order: the Bearer token must be live and
issued for this company with the accounting scope (an expired or revoked one gets the gateway's
lower-case ``fault`` 401, another company's token 403); the realm's limits admit it or it is
throttled (:mod:`devstack.intuit_sim.limits`); injected faults apply (latency, 5xx, throttles,
applied-then-lost answers); a POST carrying ``requestid`` that was seen before gets the first
answer again and changes nothing. What is let through is served by
:mod:`devstack.intuit_sim.quickbooks_calls`. Per-realm call counts (by kind) let tests see what
reached "Intuit".
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections import Counter
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from werkzeug.wrappers import Request, Response

from devstack.intuit_sim.common import _json, log
from devstack.intuit_sim.entities import (
    EntityError,
    EntityStore,
    entity_type,
    iso_time,
)
from devstack.intuit_sim.faults import ApiFaultPlan
from devstack.intuit_sim.limits import Limits, RealmLimiter
from devstack.intuit_sim.oauth import ACCOUNTING_SCOPE
from devstack.intuit_sim.quickbooks_calls import QuickBooksCalls, _Answer

_API_RE = re.compile(r"^/v3/company/([^/]+)/(.+)$")
_COMPANYINFO_RE = re.compile(r"^/v3/company/([^/]+)/companyinfo/([^/]+)$")
#: Intuit: ``requestid`` is at most 50 characters (36 for batch).
REQUEST_ID_MAX = 50
BATCH_REQUEST_ID_MAX = 36
#: Kinds counted per realm (``api_counts``); every answer adds one to ``requests`` too.
COUNT_KINDS = (
    "requests",
    "reads",
    "writes",
    "batch",
    "cdc",
    "401",
    "403",
    "429",
    "5xx",
    "lost",
    "replays",
    "webhooks_sent",
    "webhooks_dropped",
)
_AUTH_FAILED_401 = {
    "fault": {
        "error": [
            {
                "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                "detail": "Token expired or invalid",
                "code": "3200",
            }
        ],
        "type": "AUTHENTICATION",
    }
}
_AUTHZ_FAILED_403 = {
    "fault": {
        "error": [
            {
                "message": "message=ApplicationAuthorizationFailed; errorCode=003100; "
                "statusCode=403",
                "detail": "Token not authorised for this company or scope",
                "code": "3100",
            }
        ],
        "type": "AUTHORIZATION",
    }
}
_THROTTLE_MESSAGE = "message=ThrottleExceeded; errorCode=003001; statusCode={status}"
_THROTTLE_DETAIL = "The request limit was reached.  Try again later"


class _LostAnswer(Exception):
    """The write was applied; the connection must now be dropped (after ``wait`` seconds)."""

    def __init__(self, wait: float) -> None:
        super().__init__("answer lost")
        self.wait = wait


class QuickBooksApi(QuickBooksCalls):
    """``/v3/company/{realm}/...`` endpoints, limits, faults, idempotency and call counts."""

    entities: EntityStore
    api_limits: Limits
    _limiter: RealmLimiter
    _api_faults: dict[str | None, ApiFaultPlan]
    _api_counts: dict[str, Counter[str]]
    _request_ids: dict[tuple[str, str], _Answer]
    _request_ids_pending: dict[tuple[str, str], threading.Event]
    _drop_webhooks: bool
    _stopping: threading.Event

    def _init_quickbooks(self) -> None:
        self.entities = EntityStore()
        self.api_limits = Limits()
        self._limiter = RealmLimiter(self.api_limits)
        self._api_faults = {}
        self._api_counts = {}
        self._request_ids = {}
        self._request_ids_pending = {}
        self._drop_webhooks = False

    # ----- test controls ----------------------------------------------------------------------

    def set_company_name(self, realm_id: str, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        with self._lock:
            self.company_names[str(realm_id)] = name

    def configure_api(self, **limits: int) -> dict[str, int]:
        """Change the QuickBooks API limits (``per_minute``, ``per_second``, ``in_flight``,
        ``batch_per_minute``); the windows keep what they counted."""
        allowed = set(Limits().as_dict())
        unknown = set(limits) - allowed
        if unknown:
            raise ValueError(f"unknown limit(s): {', '.join(sorted(unknown))}")
        for key, value in limits.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer")
        with self._lock:
            for key, value in limits.items():
                setattr(self.api_limits, key, value)
            return self.api_limits.as_dict()

    def set_api_faults(self, realm_id: str | None = None, **plan: Any) -> dict[str, Any]:
        """Replace the API fault plan of one realm (or, with no realm, of every realm)."""
        new_plan = ApiFaultPlan(**plan)
        with self._lock:
            self._api_faults[realm_id] = new_plan
            return self.api_faults()

    def clear_api_faults(self) -> None:
        with self._lock:
            self._api_faults.clear()

    def api_faults(self) -> dict[str, Any]:
        with self._lock:
            return {(k or "*"): v.as_dict() for k, v in self._api_faults.items()}

    def api_counts(self, realm_id: str | None = None) -> dict[str, Any]:
        """Calls per realm by kind; with a realm, that realm's counts only (zeros included)."""
        with self._lock:
            if realm_id is not None:
                out = dict.fromkeys(COUNT_KINDS, 0)
                out.update(self._api_counts.get(realm_id, Counter()))
                out["in_flight"] = self._limiter.in_flight(realm_id)
                return out
            return {realm: dict(counts) for realm, counts in self._api_counts.items()}

    def reset_api_counts(self) -> None:
        with self._lock:
            self._api_counts.clear()

    def drop_webhooks(self, drop: bool) -> None:
        """While on, changes are not delivered (counted as ``webhooks_dropped``): Intuit gave
        up on them. CDC still reports them."""
        with self._lock:
            self._drop_webhooks = bool(drop)

    def change_entity(
        self, realm_id: str, entity: str, operation: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """A change made in QuickBooks itself (no API call, no token, not counted): stored,
        seen by query and CDC, and sent as a webhook like any other change."""
        kind = entity_type(entity)
        if kind is None:
            raise ValueError(f"unknown entity {entity!r}")
        op = operation.lower()
        if op not in ("create", "update", "delete"):
            raise ValueError("operation must be Create, Update or Delete")
        try:
            answer, change = getattr(self.entities, op)(str(realm_id), kind, body, self.now())
        except EntityError as exc:
            raise ValueError(f"{exc.message}: {exc.detail}") from exc
        self._publish(change)
        return answer if op == "delete" else {kind: answer}

    # ----- HTTP -------------------------------------------------------------------------------

    def _quickbooks(self, request: Request) -> Response:
        match = _API_RE.match(request.path)
        assert match is not None
        realm, rest = match.groups()
        token = self._bearer(request)
        grant = self._grant_for_access_token(token) if token else None
        if grant is None:
            self._tally(realm, "401")
            return self._fault_json(_AUTH_FAILED_401, 401)
        info = _COMPANYINFO_RE.match(request.path)
        other_company = info is not None and info.group(2) != realm
        if grant.realm_id != realm or ACCOUNTING_SCOPE not in grant.scopes or other_company:
            self._tally(realm, "403")
            return self._fault_json(_AUTHZ_FAILED_403, 403)
        kind = self._kind(request, rest)
        with self._lock:
            plan = self._api_faults.get(realm) or self._api_faults.get(None) or ApiFaultPlan()
        refused = self._limiter.admit(realm, batch=kind == "batch", app=grant.client_id)
        if refused is not None:
            self._tally(realm, "429")
            log.info("throttling realm %s (%s)", realm, refused)
            return self._throttle(plan)
        try:
            return self._admitted(request, realm, rest, kind, plan)
        except _LostAnswer as lost:
            if lost.wait > 0:
                self._stopping.wait(lost.wait)
            sock = request.environ.get("werkzeug.socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return Response("", status=500)  # never reaches the client
        finally:
            self._limiter.release(realm)

    def _admitted(
        self, request: Request, realm: str, rest: str, kind: str, plan: ApiFaultPlan
    ) -> Response:
        fault = self._take_api_fault(realm, plan, write=request.method == "POST")
        if plan.latency_seconds > 0:
            self._stopping.wait(plan.latency_seconds)
        if fault == "5xx":
            self._tally(realm, "5xx")
            return self._system_fault(plan.status_code)
        if fault == "throttle":
            self._tally(realm, "429")
            return self._throttle(plan)
        request_id = request.args.get("requestid") if request.method == "POST" else None
        if request_id is not None:
            limit = BATCH_REQUEST_ID_MAX if kind == "batch" else REQUEST_ID_MAX
            if not request_id or len(request_id) > limit:
                self._tally(realm, kind)
                return self._entity_fault(
                    EntityError(
                        "Invalid requestid",
                        code="2010",
                        detail=f"requestid must be 1-{limit} characters",
                    )
                )
            replay = self._replay(realm, request_id)
            if replay is not None:
                self._tally(realm, "replays")
                return self._answer_response(replay)
        try:
            self._tally(realm, kind)
            answer = self._serve(request, realm, rest, kind)
            if request_id is not None:
                with self._lock:
                    self._request_ids[(realm, request_id)] = answer
            if fault == "lost":
                self._tally(realm, "lost")
                raise _LostAnswer(plan.timeout_seconds if plan.lost_mode == "timeout" else 0.0)
            return self._answer_response(answer)
        finally:
            if request_id is not None:
                with self._lock:
                    event = self._request_ids_pending.pop((realm, request_id), None)
                if event is not None:
                    event.set()

    def _replay(self, realm: str, request_id: str) -> _Answer | None:
        """The first answer to this ``requestid``, waiting for it if the first is in flight;
        None (and the id now marked in flight) when it is new."""
        key = (realm, request_id)
        while True:
            with self._lock:
                if key in self._request_ids:
                    return self._request_ids[key]
                pending = self._request_ids_pending.get(key)
                if pending is None:
                    self._request_ids_pending[key] = threading.Event()
                    return None
            pending.wait(timeout=130)

    def _take_api_fault(self, realm: str, plan: ApiFaultPlan, *, write: bool) -> str | None:
        with self._lock:
            if plan.status_5xx > 0:
                plan.status_5xx -= 1
                return "5xx"
            if plan.throttles > 0:
                plan.throttles -= 1
                return "throttle"
            if write and plan.lost_answers > 0:
                plan.lost_answers -= 1
                return "lost"
            return None

    @staticmethod
    def _kind(request: Request, rest: str) -> str:
        head = rest.split("/", 1)[0].lower()
        if head == "batch":
            return "batch"
        if head == "cdc":
            return "cdc"
        if request.method == "POST" and head != "query":
            return "writes"
        return "reads"

    def _entity_fault(self, exc: EntityError) -> Response:
        return self._answer_response(self._fault_answer(exc))

    @staticmethod
    def _answer_response(answer: _Answer) -> Response:
        return Response(answer.body, status=answer.status, content_type=answer.content_type)

    def _fault_json(self, fault: dict[str, Any], status: int) -> Response:
        return _json({**fault, "time": int(self.now() * 1000)}, status)

    def _system_fault(self, status: int) -> Response:
        exc = EntityError(
            "An application error has occurred while processing your request",
            code="10000",
            detail="System Failure Error: simulated",
            fault_type="SystemFault",
            status=status,
        )
        return self._answer_response(self._fault_answer(exc))

    def _throttle(self, plan: ApiFaultPlan) -> Response:
        status = plan.throttle_status
        message = _THROTTLE_MESSAGE.format(status=status)
        if plan.throttle_format == "xml":
            body = (
                '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                '<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" '
                f'time="{xml_escape(iso_time(self.now()))}">'
                '<Fault type="SERVICE"><Error code="3001">'
                f"<Message>{xml_escape(message)}</Message>"
                f"<Detail>{xml_escape(_THROTTLE_DETAIL)}</Detail>"
                "</Error></Fault></IntuitResponse>"
            )
            return Response(body, status=status, content_type="application/xml;charset=UTF-8")
        fault = {
            "Fault": {
                "Error": [{"Message": message, "Detail": _THROTTLE_DETAIL, "code": "3001"}],
                "type": "SERVICE",
            },
            "time": iso_time(self.now()),
        }
        return _json(fault, status)
