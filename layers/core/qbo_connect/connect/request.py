"""What the flow reads of an HTTP request, typed, and the state cookie it sets and reads.

Handlers build a :class:`Request` from Powertools' ``APIGatewayProxyEventV2`` (the HttpApi
payload 2.0 event): the raw query string (API Gateway comma-joins duplicates in
``queryStringParameters``, so parameters are read from the raw string, where a duplicate can be
seen and refused), the cookies, the domain, ``Sec-Fetch-Site``, ``Accept-Language`` and the
source address. The flow never sees the event itself.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from aws_lambda_powertools.shared.cookies import Cookie, SameSite

from qbo_connect.connect.copy_table import EN, choose_language
from qbo_connect.errors import ParameterError

if TYPE_CHECKING:
    # Only for the type: importing Powertools' data classes loads every event source's class
    # (bench/cold_start.py), and the handlers pass the raw event to ``from_raw``.
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

COOKIE_NAME = "__Host-qbo_connect_state"
MAX_QUERY_LENGTH = 4096


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def now_iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(frozen=True)
class Request:
    """The parts of an HttpApi request the flow reads."""

    raw_query: str
    cookies: tuple[str, ...]
    domain_name: str
    #: ``Sec-Fetch-Site`` as the browser sent it (lower case), None when absent.
    fetch_site: str | None = None
    #: The page language, from ``Accept-Language`` (``en`` or ``fr-CA``).
    language: str = EN
    source_ip: str = ""

    @classmethod
    def from_event(cls, event: APIGatewayProxyEventV2) -> Request:
        return cls.from_raw(event.raw_event)

    @classmethod
    def from_raw(cls, event: Mapping[str, Any]) -> Request:
        """The same from the payload 2.0 event as Lambda passes it (a dict)."""
        raw_headers = event.get("headers")
        raw_headers = raw_headers if isinstance(raw_headers, Mapping) else {}
        headers = {str(k).lower(): str(v) for k, v in raw_headers.items()}
        fetch_site = headers.get("sec-fetch-site")
        context = event.get("requestContext")
        context = context if isinstance(context, dict) else {}
        http = context.get("http")
        http = http if isinstance(http, dict) else {}
        raw_cookies = event.get("cookies")
        return cls(
            raw_query=str(event.get("rawQueryString") or ""),
            cookies=tuple(str(c) for c in (raw_cookies if isinstance(raw_cookies, list) else ())),
            domain_name=str(context.get("domainName") or headers.get("host") or ""),
            fetch_site=fetch_site.strip().lower() if fetch_site is not None else None,
            language=choose_language(headers.get("accept-language")),
            source_ip=str(http.get("sourceIp") or ""),
        )

    def cookie_values(self, name: str) -> list[str]:
        values = []
        for entry in self.cookies:
            key, sep, value = entry.partition("=")
            if sep and key.strip() == name:
                values.append(value.strip())
        return values


def read_params(raw_query: str, limits: Mapping[str, int]) -> dict[str, str]:
    """The parameters named in ``limits``: each at most once and within its length.

    Parameters the route does not read are ignored; an empty value counts as missing.
    """
    if len(raw_query) > MAX_QUERY_LENGTH:
        raise ParameterError("The address is too long.")
    try:
        pairs = parse_qsl(raw_query, keep_blank_values=True, max_num_fields=64)
    except ValueError:
        raise ParameterError("The address has too many parameters.") from None
    found: dict[str, str] = {}
    for key, value in pairs:
        if key not in limits:
            continue
        if key in found:
            raise ParameterError(f"The parameter “{key}” was given more than once.")
        if len(value) > limits[key]:
            raise ParameterError(f"The parameter “{key}” is too long.")
        found[key] = value
    return {k: v for k, v in found.items() if v}


def state_cookie(value: str, max_age: int) -> Cookie:
    return Cookie(
        name=COOKIE_NAME,
        value=value,
        path="/",
        secure=True,
        http_only=True,
        max_age=max(1, int(max_age)),
        same_site=SameSite.LAX_MODE,
    )


def clear_state_cookie() -> Cookie:
    return Cookie(
        name=COOKIE_NAME,
        value="",
        path="/",
        secure=True,
        http_only=True,
        max_age=0,
        same_site=SameSite.LAX_MODE,
    )
