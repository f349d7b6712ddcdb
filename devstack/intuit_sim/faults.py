"""Fault injection: latency, outages, throttling, timeouts and invalid_grant bursts on demand.

A fault plan counts "the next N matching requests" and is consumed atomically under the
simulator's lock, so "exactly N failures" holds when many threads arrive together. Injected
faults never touch grant state: an invalid_grant burst models an outage, not a revocation.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from werkzeug.wrappers import Response

from devstack.intuit_sim.common import _oauth_error, log
from devstack.intuit_sim.state import SimulatorState

#: Names accepted in ``set_faults(endpoints=...)``; "all" matches every non-admin endpoint.
FAULT_ENDPOINTS = frozenset(
    {
        "all",
        "authorize",
        "token",
        "token.authorization_code",
        "token.refresh_token",
        "revoke",
        "userinfo",
        "jwks",
        "companyinfo",
        "discovery",
    }
)


@dataclass
class _Faults:
    latency_seconds: float = 0.0
    status_5xx: int = 0
    rate_429: int = 0
    retry_after: float | None = None
    timeouts: int = 0
    timeout_seconds: float = 30.0
    invalid_grant: int = 0
    endpoints: frozenset[str] = frozenset({"token"})
    probability: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "endpoints": sorted(self.endpoints)}


@dataclass
class _Fault:
    """One request's share of the fault plan: its delay and, maybe, its failure."""

    kind: str | None
    latency_seconds: float
    retry_after: float | None
    timeout_seconds: float


class FaultInjection(SimulatorState):
    """The fault plan: set by tests (or ``/_sim/faults``), taken by each request."""

    _faults: _Faults
    _rng: random.Random
    _stopping: threading.Event

    def set_faults(
        self,
        *,
        latency_seconds: float = 0.0,
        status_5xx: int = 0,
        rate_429: int = 0,
        retry_after: float | None = None,
        timeouts: int = 0,
        timeout_seconds: float = 30.0,
        invalid_grant: int = 0,
        endpoints: Iterable[str] = ("token",),
        probability: float | None = None,
        seed: int | None = None,
    ) -> None:
        """Replace the fault plan (it is not additive).

        Counts mean "the next N matching requests"; one request takes at most one fault, in the
        order timeout, 5xx, 429, invalid_grant (the last only on the token endpoint). With
        ``probability`` each matching request takes the next fault only with that chance
        (``seed`` makes it repeatable). Latency delays every matching request until cleared.
        """
        names = frozenset([endpoints] if isinstance(endpoints, str) else endpoints)
        unknown = names - FAULT_ENDPOINTS
        if unknown:
            raise ValueError(f"unknown fault endpoint(s): {', '.join(sorted(unknown))}")
        counts = {
            "status_5xx": status_5xx,
            "rate_429": rate_429,
            "timeouts": timeouts,
            "invalid_grant": invalid_grant,
        }
        for key, count in counts.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"{key} must be a non-negative integer")
        for key, seconds in (
            ("latency_seconds", latency_seconds),
            ("timeout_seconds", timeout_seconds),
        ):
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                raise ValueError(f"{key} must be a non-negative number")
        if retry_after is not None and (
            isinstance(retry_after, bool) or not isinstance(retry_after, int | float)
        ):
            raise ValueError("retry_after must be a number or None")
        if probability is not None and not 0.0 <= float(probability) <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        with self._lock:
            self._faults = _Faults(
                latency_seconds=float(latency_seconds),
                status_5xx=status_5xx,
                rate_429=rate_429,
                retry_after=retry_after,
                timeouts=timeouts,
                timeout_seconds=float(timeout_seconds),
                invalid_grant=invalid_grant,
                endpoints=names,
                probability=None if probability is None else float(probability),
            )
            if seed is not None:
                self._rng.seed(seed)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = _Faults()

    def faults(self) -> dict[str, Any]:
        """The fault plan with the counts still left to serve."""
        with self._lock:
            return self._faults.as_dict()

    def _take_fault(self, names: set[str], *, token_endpoint: bool) -> _Fault | None:
        """Decide, atomically under the lock, whether this request is delayed or faulted.

        Deciding and consuming in one locked step is what makes "the next N requests" exact
        when 50 threads arrive together. The sleeping happens later, in :meth:`_serve_fault`.
        """
        with self._lock:
            plan = self._faults
            if not (names & plan.endpoints or "all" in plan.endpoints):
                return None
            kind: str | None = None
            if plan.probability is None or self._rng.random() < plan.probability:
                if plan.timeouts > 0:
                    plan.timeouts -= 1
                    kind = "timeout"
                elif plan.status_5xx > 0:
                    plan.status_5xx -= 1
                    kind = "5xx"
                elif plan.rate_429 > 0:
                    plan.rate_429 -= 1
                    kind = "429"
                elif plan.invalid_grant > 0 and token_endpoint:
                    plan.invalid_grant -= 1
                    kind = "invalid_grant"
            if kind is not None:
                self._counters["faults"] += 1
                self._counters[f"faults.{kind}"] += 1
                log.info("injecting fault %s on %s", kind, sorted(names))
            return _Fault(kind, plan.latency_seconds, plan.retry_after, plan.timeout_seconds)

    def _serve_fault(self, fault: _Fault | None) -> Response | None:
        """Sleep outside the lock (latency, then timeout), then build the fault's response.

        Sleeps wait on the stop event so :meth:`stop` never hangs behind a 30 s timeout fault.
        """
        if fault is None:
            return None
        if fault.latency_seconds > 0:
            self._stopping.wait(fault.latency_seconds)
        if fault.kind is None:
            return None
        if fault.kind == "timeout":
            self._stopping.wait(fault.timeout_seconds)
            return _oauth_error("gateway_timeout", 504, "simulated upstream timeout")
        if fault.kind == "5xx":
            return _oauth_error("server_error", 503, "simulated outage")
        if fault.kind == "429":
            headers = {}
            if fault.retry_after is not None:
                ra = fault.retry_after
                headers["Retry-After"] = str(int(ra) if float(ra).is_integer() else ra)
            return _oauth_error("too_many_requests", 429, "simulated throttling", **headers)
        return _oauth_error("invalid_grant", 400)


#: Accepted ``throttle_format`` and ``lost_mode`` values of :class:`ApiFaultPlan`.
THROTTLE_FORMATS = ("json", "xml")
LOST_MODES = ("drop", "timeout")


@dataclass
class ApiFaultPlan:
    """Faults of the QuickBooks API, for one realm or for all (realm ``None``).

    Counts mean "the next N matching requests". ``lost_answers`` applies the write and then
    drops the connection (``drop``) or holds it for ``timeout_seconds`` first (``timeout``): the
    client never learns that the write happened. ``throttle_format`` and ``throttle_status``
    shape every throttle of the realm, injected (``throttles``) or from the limits.
    """

    latency_seconds: float = 0.0
    status_5xx: int = 0
    status_code: int = 503
    throttles: int = 0
    lost_answers: int = 0
    lost_mode: str = "drop"
    timeout_seconds: float = 30.0
    throttle_format: str = "json"
    throttle_status: int = 429

    def __post_init__(self) -> None:
        for key in ("status_5xx", "throttles", "lost_answers"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be a non-negative integer")
        for key in ("latency_seconds", "timeout_seconds"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{key} must be a non-negative number")
        if self.status_code not in (500, 502, 503, 504):
            raise ValueError("status_code must be 500, 502, 503 or 504")
        if self.throttle_format not in THROTTLE_FORMATS:
            raise ValueError(f"throttle_format must be one of {THROTTLE_FORMATS}")
        if self.throttle_status not in (429, 403):
            raise ValueError("throttle_status must be 429 or 403")
        if self.lost_mode not in LOST_MODES:
            raise ValueError(f"lost_mode must be one of {LOST_MODES}")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
