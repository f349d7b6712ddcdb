"""How the flow ends: an :class:`Ending` (an Outcome and what its page needs), rendered once.

The flow decides *what* happened; ``pages`` and the copy table decide what the person reads,
in the request's language, with the deployment's branding. A refusal deep in the callback is
raised as :class:`Refusal` and caught at the top, so every early exit is one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aws_lambda_powertools.shared.cookies import Cookie

from qbo_connect.connect import pages
from qbo_connect.connect.branding import Branding
from qbo_connect.connect.outcomes import Outcome
from qbo_connect.connect.pages import HttpResult


@dataclass
class Ending:
    """What the flow decided. ``location`` makes it a redirect; otherwise it is a page."""

    outcome: Outcome
    cookies: list[Cookie] = field(default_factory=list)
    #: Where "Try again" leads (shown only where the copy table allows it).
    retry: str | None = None
    #: The link's return URL: "Return to <AppName>" on the page.
    return_url: str | None = None
    location: str | None = None
    company_name: str | None = None
    realm_id: str | None = None
    #: Which parameter was wrong, for a bad request (shown as it is, and logged).
    detail: str | None = None


def present(ending: Ending, *, language: str, branding: Branding) -> HttpResult:
    """The HTTP answer for ``ending``: a redirect, or the outcome's page."""
    if ending.location is not None:
        return pages.redirect(ending.location, cookies=ending.cookies, outcome=ending.outcome)
    return pages.outcome_page(
        ending.outcome,
        language=language,
        branding=branding,
        retry=ending.retry,
        return_url=ending.return_url,
        company_name=ending.company_name,
        realm_id=ending.realm_id,
        cookies=ending.cookies,
        detail=ending.detail,
    )
