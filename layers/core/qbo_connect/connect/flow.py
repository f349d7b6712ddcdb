"""The connect flow for one deployment (built by ``qbo_connect.wiring.connect``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from qbo_connect.config import Settings
from qbo_connect.connect.authorize import AuthorizeSteps
from qbo_connect.connect.callback import CallbackSteps
from qbo_connect.connect.pages import branding_from
from qbo_connect.errors import ConfigurationError
from qbo_connect.intuit import IntuitClient
from qbo_connect.store.single_use import SingleUseRepository
from qbo_connect.vault.adoption import GrantAdopter
from qbo_connect.vault.history import History


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
        *,
        settings: Settings,
        single_use: SingleUseRepository,
        adopter: GrantAdopter,
        history: History,
        intuit: Callable[[], IntuitClient],
        return_key: Callable[[], bytes] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.single_use = single_use
        self.adopter = adopter
        self.history = history
        self.branding = branding_from(settings)
        self._intuit = intuit
        self._return_key = return_key or _no_return_key
        self._clock = clock
