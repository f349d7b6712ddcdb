"""The flow for one deployment, and the entry points the handlers call."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from qbo_connect.connect.authorize import AuthorizeSteps
from qbo_connect.connect.callback import CallbackSteps
from qbo_connect.connect.pages import HttpResult, branding_from
from qbo_connect.connect.request import Request
from qbo_connect.errors import ConfigurationError
from qbo_connect.intuit import IntuitClient
from qbo_connect.vault.adoption import GrantAdopter
from qbo_connect.vault.protocol import TokenVault


def _no_return_key() -> bytes:
    raise ConfigurationError("RETURN_SIGNING_SECRET_ID is not set (template.yaml sets it)")


class ConnectFlow(AuthorizeSteps, CallbackSteps):
    """Connect links, the authorize redirect and the callback, for one deployment.

    ``connect`` and ``callback`` take a typed :class:`Request` and answer an ``HttpResult``
    whose ``outcome`` is an :class:`~qbo_connect.connect.outcomes.Outcome`; ``create_link`` answers
    the ``create_connect_link`` action.
    """

    def __init__(
        self,
        vault: TokenVault,
        *,
        intuit: Callable[[], IntuitClient] | None = None,
        return_key: Callable[[], bytes] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vault = vault
        self.settings = vault.settings
        self.store = vault.store
        self.adopter = GrantAdopter(vault, clock=clock)
        self.branding = branding_from(vault.settings)
        self._intuit = intuit or vault.intuit_client
        self._return_key = return_key or _no_return_key
        self._clock = clock


def _flow() -> ConnectFlow:
    from qbo_connect.wiring import vault as runtime

    return ConnectFlow(runtime.vault(), return_key=runtime.return_signing_key)


def create_connect_link_action(payload: Mapping[str, Any]) -> dict[str, Any]:
    """ConnectionsFunction ``create_connect_link``: ``{"url", "expires_at", "link_id"}``."""
    return _flow().create_link(payload)


def handle_connect(request: Request, *, reconnect: bool = False) -> HttpResult:
    """``GET /connect`` and ``GET /reconnect``."""
    return _flow().connect(request, reconnect=reconnect)


def handle_callback(request: Request) -> HttpResult:
    """``GET /callback``."""
    return _flow().callback(request)
