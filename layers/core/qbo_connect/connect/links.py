"""Connect links: created by ``create_connect_link``, opened by ``GET /connect?session=...``.

A link token is ``secrets.token_urlsafe(32)`` (256 bits), stored only as its SHA-256
(``LINK#<sha256>``) with the tenant, the scopes to request (``Scopes`` plus any extra scopes the
caller asked for, each from ``AllowedExtraScopes``), the optional return_url (which must match
``AllowedReturnUrls``, see ``qbo_connect.connect.return_url``), the optional ``tenant_name``
shown on the landing page, and an expiry (``CONNECT_LINK_TTL_SECONDS``, 30 minutes). The
answer also holds ``link_id``, which the signed return redirect repeats.

The link is *not* consumed when the page opens, so a user who reloads is not locked out; it is
consumed by a conditional write just before a connection is stored from it (``callback``), so
one link yields at most one connection, and from then on it answers 410 "already used". A link
that expired while its user was on Intuit's consent page still completes: the OAuth state,
created while the link was valid, bounds that window (``STATE_TTL_SECONDS``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from qbo_connect import validation
from qbo_connect.connect.base import LINK, TOKEN_BYTES, FlowBase, logger
from qbo_connect.connect.outcomes import Outcome
from qbo_connect.connect.request import now_iso, sha256
from qbo_connect.connect.results import Ending
from qbo_connect.connect.return_url import MAX_RETURN_URL, link_id_of, return_url_allowed
from qbo_connect.errors import ConfigurationError, InvalidRequest, Refusal

MAX_TENANT_NAME = 100
LINK_OUTCOMES = {
    "unknown": Outcome.LINK_UNKNOWN,
    "used": Outcome.LINK_USED,
    "expired": Outcome.LINK_EXPIRED,
}
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,512}$")


def requested_scopes(value: Any, base: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    """``Scopes`` plus the extra scopes a link asks for (each from ``AllowedExtraScopes``)."""
    if value is None:
        extras: list[str] = []
    elif isinstance(value, str):
        extras = value.split()
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        extras = [v.strip() for v in value if v.strip()]
    else:
        raise InvalidRequest("scopes must be a list of strings or a space-separated string")
    refused = sorted({s for s in extras if s not in allowed and s not in base})
    if refused:
        raise InvalidRequest(
            # The count, never the values: whatever a caller put there is not echoed.
            f"{len(refused)} scope(s) not allowed (allowed extra scopes: "
            f"{', '.join(allowed) or 'none'})"
        )
    return list(dict.fromkeys([*base, *extras]))


class LinkSteps(FlowBase):
    def create_link(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """ConnectionsFunction ``create_connect_link``: ``{"url", "expires_at", "link_id"}``."""
        tenant_id = validation.tenant_id(payload)
        return_url = validation.optional_str(payload, "return_url", max_length=MAX_RETURN_URL)
        if return_url is not None and not return_url_allowed(
            return_url, self.settings.allowed_return_urls
        ):
            raise InvalidRequest(
                "return_url is not allowed: it must be an http(s) URL without credentials "
                "under one of AllowedReturnUrls"
                + ("" if self.settings.allowed_return_urls else " (none are configured)")
            )
        tenant_name = validation.optional_str(payload, "tenant_name", max_length=MAX_TENANT_NAME)
        if tenant_name is not None and not tenant_name.isprintable():
            raise InvalidRequest("tenant_name must be printable text (no control characters)")
        scopes = requested_scopes(
            payload.get("scopes"), self.settings.scopes, self.settings.allowed_extra_scopes
        )
        base = self.settings.public_base_url or self.settings.connect_base_url
        if not base:
            raise ConfigurationError(
                "connect links need PUBLIC_BASE_URL or CONNECT_BASE_URL (template.yaml sets it)"
            )
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._clock()
        expires_at = now + self.settings.connect_link_ttl_seconds
        attributes: dict[str, Any] = {"tenant_id": tenant_id, "scopes": scopes, "created_at": now}
        if return_url is not None:
            attributes["return_url"] = return_url
        if tenant_name is not None:
            attributes["tenant_name"] = tenant_name
        self.single_use.put_single_use(LINK, token, attributes, expires_at=expires_at)
        link_id = link_id_of(sha256(token))
        logger.info(
            "connect link created",
            extra={
                "tenant_id": tenant_id,
                "link_id": link_id,
                "scopes": scopes,
                "has_return_url": bool(return_url),
            },
        )
        return {
            "url": f"{base}/connect?session={token}",
            "expires_at": now_iso(expires_at),
            "link_id": link_id,
        }

    def _single_use(self, kind: str, secret: str, now: float) -> tuple[str, dict[str, Any]]:
        """Classify a link or state value: ``live``, ``unknown``, ``used`` or ``expired``.

        Only a live item authorises anything; the other answers pick the page to show.
        """
        if not _TOKEN_RE.match(secret):
            return "unknown", {}
        item = self.single_use.get_single_use(kind, secret, now=now)
        if item is not None:
            return "live", item
        item = self.single_use.peek_single_use(kind, secret)
        if item is None:
            return "unknown", {}
        return ("used" if item.get("used_at") else "expired"), item

    def _live_or_refuse(
        self, kind: str, secret: str, now: float, outcomes: Mapping[str, Outcome]
    ) -> dict[str, Any]:
        """The live item's record, or a refusal with the outcome for why not."""
        status, item = self._single_use(kind, secret, now)
        if status == "live":
            return item
        raise Refusal(Ending(outcomes[status], return_url=self._return_url_of(item)))

    def _valid_link(self, session: str, now: float) -> dict[str, Any]:
        """The live link's record, or a refusal saying why not (unknown, used, expired)."""
        return self._live_or_refuse(LINK, session, now, LINK_OUTCOMES)

    def _return_url_of(self, record: Mapping[str, Any]) -> str | None:
        """The record's return_url if it is still allowed (the rule may have changed since)."""
        url = record.get("return_url")
        if isinstance(url, str) and return_url_allowed(url, self.settings.allowed_return_urls):
            return url
        return None

    def _retry_link(self, link_token: str | None, now: float) -> str | None:
        """Where "Try again" leads: the same link while it is unused, ``connect`` in open mode."""
        if link_token is not None:
            if self.single_use.get_single_use(LINK, link_token, now=now) is None:
                return None
            return f"connect?session={quote(link_token, safe='')}"
        if self.settings.connect_mode == "open":
            return "connect"
        return None
