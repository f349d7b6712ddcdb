"""The call: governed, with the vault's token, retried safely, answered as QuickBooks gave it.

Every attempt takes room from the governor first. A POST always carries ``requestid`` (the
caller's, or one made here and returned), and every retry of the call reuses it, so a create
happens once even when an answer is lost. A 401 forces one refresh past the token that was
refused (shared by every caller that met it) and one retry; a throttle cools the realm for
every container and is returned, not retried. 5xx answers, timeouts and connection errors are
retried with jittered backoff.
"""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from qbo_connect.api.faults import is_throttle, normalise
from qbo_connect.api.governor import Governor
from qbo_connect.api.metering import ProxyMetering
from qbo_connect.api.paths import company_url, masked
from qbo_connect.api.request import ApiRequest
from qbo_connect.api.settings import ProxySettings
from qbo_connect.api.tokens import ProxyTokens
from qbo_connect.errors import QuickBooksUnavailable, ResponseTooLarge, ServiceError

_TEXT_TYPES = ("json", "xml", "text/", "javascript")


@dataclass(frozen=True)
class CallRecord:
    """What the log line and the metrics say about one call (never a token or a body)."""

    realm_id: str
    tenant_id: str | None
    method: str
    path: str
    outcome: str
    status: int | None
    intuit_tid: str | None
    attempts: int
    waited_ms: int
    throttled: bool = False


@dataclass(eq=False)
class QuickBooksProxy:
    """Makes one QuickBooks call for a caller (QuickBooksApiFunction's only action)."""

    settings: ProxySettings
    api_base_url: str
    tokens: ProxyTokens
    governor: Governor
    session: requests.Session
    observe: Callable[[CallRecord], None] = lambda record: None
    #: CorePlus metering (None: calls are not metered, e.g. in unit tests of the call itself).
    metering: ProxyMetering | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def call(self, request: ApiRequest) -> dict[str, Any]:
        request_id = request.request_id
        if request.method == "POST" and request_id is None:
            request_id = uuid.uuid4().hex[:32]  # within the batch limit of 36
        state: dict[str, Any] = {
            "attempts": 0,
            "waited": 0.0,
            "status": None,
            "tid": None,
            "throttled": False,
        }
        outcome = "error"
        try:
            answer = self._call(request, request_id, state)
            outcome = _outcome_of(answer)
            return answer
        except ServiceError as exc:
            outcome = exc.code
            if request_id is not None:
                exc.details["request_id"] = request_id
            raise
        finally:
            self.observe(
                CallRecord(
                    realm_id=request.realm_id,
                    tenant_id=request.tenant_id,
                    method=request.method,
                    path=masked(request.path),
                    outcome=outcome,
                    status=state["status"],
                    intuit_tid=state["tid"],
                    attempts=state["attempts"],
                    waited_ms=int(state["waited"] * 1000),
                    throttled=bool(state["throttled"]),
                )
            )

    def _call(
        self, request: ApiRequest, request_id: str | None, state: dict[str, Any]
    ) -> dict[str, Any]:
        settings = self.settings
        minor = max(request.minorversion or settings.minor_version, settings.minor_version)
        params = dict(request.query)
        params["minorversion"] = str(minor)
        if request_id is not None:
            params["requestid"] = request_id
        data, content_type = _encode_body(request)
        url = company_url(self.api_base_url, request.realm_id, request.path)
        max_wait = (
            settings.default_max_wait_seconds
            if request.max_wait_seconds is None
            else request.max_wait_seconds
        )
        token = self.tokens.get(request.realm_id, request.tenant_id)
        tenant = request.tenant_id or token.tenant_id
        usage = None
        if self.metering is not None and tenant:
            usage = self.metering.classify(request.method, request.path, request.body)
            self.metering.admit(tenant, usage)  # budget_exhausted: nothing is sent
        refreshed = False
        transient_attempts = 0
        while True:
            ticket = self.governor.acquire(
                request.realm_id, batch=request.batch, max_wait=max(0.0, max_wait - state["waited"])
            )
            state["waited"] += ticket.waited
            state["attempts"] += 1
            headers = {
                "Authorization": f"Bearer {token.access_token}",
                "Accept": "application/json",
            }
            if content_type:
                headers["Content-Type"] = content_type
            with self.governor.holding(ticket):
                if self.governor.too_late(ticket):
                    late = True  # sent now, it could bunch with the next slots: take another
                else:
                    late = False
                    try:
                        response = self.session.request(
                            request.method,
                            url,
                            params=params,
                            data=data,
                            headers=headers,
                            timeout=(settings.connect_timeout_seconds, settings.timeout_seconds),
                            allow_redirects=False,
                        )
                    except (requests.Timeout, requests.ConnectionError):
                        response = None
            if late:
                state["attempts"] -= 1
                continue
            if response is None:
                transient_attempts += 1
                if transient_attempts < settings.max_attempts:
                    self._back_off(transient_attempts, state)
                    continue  # a POST retries with the same requestid: created once
                raise QuickBooksUnavailable(
                    f"QuickBooks did not answer after {state['attempts']} attempts",
                    reason="no_answer",
                )
            if self.metering is not None and usage is not None and tenant:
                self.metering.record(tenant, request.realm_id, usage)  # Intuit counts attempts
            tid = response.headers.get("intuit_tid")
            state["status"], state["tid"] = response.status_code, tid
            answer = self._shape(response, request_id, state, minor, request.minorversion)
            fault = answer.get("fault")
            if is_throttle(response.status_code, fault) or (
                response.status_code == 403 and fault is not None and is_throttle(429, fault)
            ):
                state["throttled"] = True
                self.governor.cool_down(
                    request.realm_id,
                    _retry_after(response, self.clock()) or settings.cool_down_seconds,
                )
                return answer
            if response.status_code == 401 and not refreshed:
                refreshed = True
                token = self.tokens.refresh(request.realm_id, request.tenant_id, token)
                continue
            if response.status_code >= 500:
                transient_attempts += 1
                if transient_attempts < settings.max_attempts:
                    self._back_off(transient_attempts, state)
                    continue
            return answer

    def _back_off(self, attempt: int, state: dict[str, Any]) -> None:
        delay = min(
            self.settings.backoff_max_seconds,
            self.settings.backoff_base_seconds * 2 ** (attempt - 1),
        ) * random.uniform(0.5, 1.0)
        state["waited"] += delay
        self.sleep(delay)

    def _shape(
        self,
        response: requests.Response,
        request_id: str | None,
        state: dict[str, Any],
        minor: int,
        asked_minor: int | None,
    ) -> dict[str, Any]:
        raw = response.content
        tid = response.headers.get("intuit_tid")
        if len(raw) > self.settings.max_answer_bytes:
            raise ResponseTooLarge(
                "QuickBooks' answer is larger than a direct invoke may return: page the query",
                intuit_tid=tid,
            )
        content_type = response.headers.get("Content-Type", "")
        body: Any
        encoding = None
        if "json" in content_type.lower():
            try:
                body = response.json()
            except ValueError:
                body = raw.decode("utf-8", "replace")
        elif any(t in content_type.lower() for t in _TEXT_TYPES) or not raw:
            body = raw.decode("utf-8", "replace")
        else:
            body = base64.b64encode(raw).decode("ascii")
            encoding = "base64"
        answer: dict[str, Any] = {
            "status": response.status_code,
            "body": body,
            "content_type": content_type,
            "intuit_tid": tid,
            "attempts": state["attempts"],
            "waited_ms": int(state["waited"] * 1000),
            "minorversion": minor,
        }
        if encoding:
            answer["body_encoding"] = encoding
        if asked_minor is not None and asked_minor < minor:
            answer["minorversion_raised_from"] = asked_minor
        if request_id is not None:
            answer["request_id"] = request_id
        fault = normalise(body, content_type) if encoding is None else None
        if fault is not None:
            answer["fault"] = fault
        if len(json.dumps(answer, separators=(",", ":"))) > self.settings.max_answer_bytes:
            raise ResponseTooLarge(
                "QuickBooks' answer is larger than a direct invoke may return: page the query",
                intuit_tid=tid,
            )
        return answer


def _encode_body(request: ApiRequest) -> tuple[bytes | None, str | None]:
    if request.body is None:
        return None, request.content_type
    if isinstance(request.body, str):
        return request.body.encode(), request.content_type or "application/text"
    return (
        json.dumps(request.body, separators=(",", ":")).encode(),
        request.content_type or "application/json",
    )


def _retry_after(response: requests.Response, now: float) -> float | None:
    """Retry-After in seconds or as an HTTP date, if QuickBooks sent one (bounded to 10 min)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 1.0), 600.0)


def _outcome_of(answer: dict[str, Any]) -> str:
    status = int(answer["status"])
    if status == 429 or ("fault" in answer and is_throttle(status, answer["fault"])):
        return "throttled"
    return f"{status // 100}xx"
