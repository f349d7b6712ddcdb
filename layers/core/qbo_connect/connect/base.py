"""What every step of the flow shares: its dependencies and how an ending becomes an answer.

:class:`ConnectFlow` (``flow``) is one object built of the steps, one module each: ``links``
(connect links, their return_url rule and scopes), ``authorize`` (the landing page and the way
out to Intuit) and ``callback`` (the way back). They share the attributes declared here.
"""

from __future__ import annotations

from collections.abc import Callable

from aws_lambda_powertools import Logger
from aws_lambda_powertools.shared.cookies import Cookie

from qbo_connect.config import Settings
from qbo_connect.connect.branding import Branding
from qbo_connect.connect.outcomes import Outcome
from qbo_connect.connect.pages import HttpResult
from qbo_connect.connect.request import Request
from qbo_connect.connect.results import Ending, present
from qbo_connect.errors import ConfigurationError
from qbo_connect.intuit import IntuitClient
from qbo_connect.store.single_use import SingleUseRepository
from qbo_connect.vault.adoption import GrantAdopter
from qbo_connect.vault.history import History

logger = Logger(child=True)

LINK = "LINK"
STATE = "STATE"
TOKEN_BYTES = 32  # 256 bits for link tokens, states and nonces
OPEN_MODE_TENANT = "default"


class FlowBase:
    settings: Settings
    single_use: SingleUseRepository
    history: History
    adopter: GrantAdopter
    branding: Branding
    _intuit: Callable[[], IntuitClient]
    _return_key: Callable[[], bytes]
    _clock: Callable[[], float]

    def answer(self, ending: Ending, request: Request) -> HttpResult:
        return present(ending, language=request.language, branding=self.branding)


def misconfigured(exc: ConfigurationError, cookies: list[Cookie] | None = None) -> Ending:
    """The page for a deployment that is not set up; the detail goes to the log only."""
    logger.error("configuration error", extra={"detail": exc.message})
    return Ending(Outcome.CONFIGURATION_ERROR, cookies=list(cookies or ()))
