"""The state every part of the simulator shares, and the few helpers all of them use.

Each concern (OAuth, consent, QuickBooks API, faults, admin) is a class over this one state,
combined into :class:`devstack.intuit_sim.server.IntuitSimulator`, which sets every attribute
declared here in its ``__init__``. One lock guards all of it.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devstack.intuit_sim.oauth import SigningKey, _AccessToken, _Code, _Grant, _Pending
    from devstack.intuit_sim.webhooks import WebhookSender

PATH_AUTHORIZE = "/connect/oauth2"
PATH_TOKEN = "/oauth2/v1/tokens/bearer"
PATH_REVOKE = "/v2/oauth2/tokens/revoke"
PATH_USERINFO = "/v1/openid_connect/userinfo"
PATH_JWKS = "/op/v1/jwks"
PATH_ISSUER = "/op/v1"
PATH_DISCOVERY = "/.well-known/openid_configuration"


class SimulatorState:
    """Attributes and helpers shared by the simulator's parts (set by ``IntuitSimulator``)."""

    host: str
    port: int
    redirect_uris: list[str] | None
    auto_approve: bool
    refresh_grace_seconds: float
    rotate_every_seconds: float
    access_token_ttl: int
    refresh_token_ttl: int
    refresh_hard_ttl: int
    code_ttl: int
    default_realm_id: str
    next_realm_id: str
    company_name: str
    company_names: dict[str, str]
    app_name: str
    app_names: dict[str, str]
    kid: str
    user: dict[str, Any]
    webhooks: WebhookSender

    _clock: Callable[[], float]
    _clock_offset: float
    _lock: threading.RLock
    _clients: dict[str, str]
    _codes: dict[str, _Code]
    _pending: dict[str, _Pending]
    _grants: dict[str, _Grant]
    _rt_index: dict[str, str]
    _access: dict[str, _AccessToken]
    _counters: Counter[str]
    _refresh_log: deque[dict[str, Any]]
    _signing_key: SigningKey
    _base_url: str | None

    # ------------------------------------------------------------------ URLs

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("IntuitSimulator is not started")
        return self._base_url

    @property
    def issuer(self) -> str:
        return self.base_url + PATH_ISSUER

    @property
    def discovery_url(self) -> str:
        return self.base_url + PATH_DISCOVERY

    @property
    def endpoints(self) -> dict[str, str]:
        """The project's INTUIT_* settings pointed at this server (docs/architecture.md)."""
        base = self.base_url
        return {
            "INTUIT_AUTHORIZATION_ENDPOINT": base + PATH_AUTHORIZE,
            "INTUIT_TOKEN_ENDPOINT": base + PATH_TOKEN,
            "INTUIT_REVOCATION_ENDPOINT": base + PATH_REVOKE,
            "INTUIT_USERINFO_ENDPOINT": base + PATH_USERINFO,
            "INTUIT_JWKS_URI": base + PATH_JWKS,
            "INTUIT_ISSUER": base + PATH_ISSUER,
            "QUICKBOOKS_API_BASE_URL": base,
        }

    def now(self) -> float:
        """The simulator's time: the injected clock plus any :meth:`advance_clock` offset."""
        return self._clock() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move simulated time forward, for tests in other processes that cannot inject a clock."""
        with self._lock:
            self._clock_offset += float(seconds)

    def _count(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._counters[key] += 1

    def company_name_for(self, realm_id: str) -> str:
        """The company's name: set by the test, ``company_name`` for the default realm, else a
        generated ``Sandbox Company 1234`` (the realm's last digits), distinct per realm."""
        with self._lock:
            name = self.company_names.get(realm_id)
            if name is not None:
                return name
            if realm_id == self.default_realm_id:
                return self.company_name
            suffix = realm_id[-4:] if realm_id.isdigit() else realm_id
            name = f"Sandbox Company {suffix}"
            taken = set(self.company_names.values()) | {self.company_name}
            if name in taken:
                name = f"Sandbox Company {realm_id}"
            self.company_names[realm_id] = name
            return name
