"""A ``requests`` session whose QuickBooks API calls go through QuickBooksApiFunction.

Code written for python-quickbooks (or plain ``requests``) sends HTTP requests to
``https://(sandbox-)quickbooks.api.intuit.com/v3/company/<realm>/...`` with a bearer token.
Give it this session instead and each such request becomes one :func:`qbo_connect_client.call`:
the service adds the token (your process never holds one), governs the realm's rate limits
across containers, meters CorePlus use, retries and refreshes; the answer comes back as the
``requests.Response`` QuickBooks would have given::

    from quickbooks import QuickBooks
    from quickbooks.objects.customer import Customer
    from qbo_connect_client.session import proxy_session

    qb = QuickBooks(company_id="9130357766042906", minorversion=75)
    qb.session = proxy_session(tenant_id="acme-inc")
    customers = Customer.all(qb=qb)          # unchanged python-quickbooks code

A request that is not a QuickBooks company API call (another host or path) is refused with
:class:`ValueError` before anything is sent: this session reaches QuickBooks only through the
service. When the service gives no QuickBooks answer (``rate_limited``, ``not_connected``...)
:class:`qbo_connect_client.QboConnectError` is raised from the request, with its stable code.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from qbo_connect_client import call

__all__ = ["ProxyAdapter", "ProxySession", "proxy_session"]

_COMPANY_PATH = re.compile(r"^/v3/company/(?P<realm>[0-9]{1,20})/(?P<path>.+)$")
#: Hosts python-quickbooks talks to; anything else is not a QuickBooks company call.
QUICKBOOKS_HOSTS = frozenset({"quickbooks.api.intuit.com", "sandbox-quickbooks.api.intuit.com"})


class ProxyAdapter(BaseAdapter):
    """Sends each prepared request through :func:`call` instead of over the network."""

    def __init__(
        self,
        *,
        tenant_id: str | None = None,
        function_name: str | None = None,
        max_wait_seconds: float | None = None,
        lambda_client: Any = None,
    ) -> None:
        super().__init__()
        self.tenant_id = tenant_id
        self.function_name = function_name
        self.max_wait_seconds = max_wait_seconds
        self.lambda_client = lambda_client

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        url = urlsplit(request.url or "")
        match = _COMPANY_PATH.match(url.path)
        if url.hostname not in QUICKBOOKS_HOSTS or match is None:
            raise ValueError(
                "the qbo-connect session sends only QuickBooks company API calls "
                "(https://quickbooks.api.intuit.com/v3/company/<realm>/...)"
            )
        method = (request.method or "GET").upper()
        if method not in ("GET", "POST"):
            raise ValueError(f"the QuickBooks API proxy takes GET and POST, not {method}")
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        minorversion = query.pop("minorversion", None)
        request_id = query.pop("requestid", None)
        body, content_type = _body(request)
        answer = call(
            match["realm"],
            method,
            match["path"],
            tenant_id=self.tenant_id,
            query=query or None,
            body=body,
            content_type=content_type,
            request_id=request_id,
            minorversion=int(minorversion) if minorversion and minorversion.isdigit() else None,
            max_wait_seconds=self.max_wait_seconds,
            function_name=self.function_name,
            lambda_client=self.lambda_client,
        )
        return _response(request, answer)

    def close(self) -> None:
        """Nothing to close: the Lambda client is shared."""


class ProxySession(requests.Session):
    """A session with :class:`ProxyAdapter` on ``https://``; holds no token.

    ``access_token`` exists because python-quickbooks reads ``session.access_token`` to build
    its ``Authorization`` header; the adapter drops that header, and the service adds the real
    token on its side.
    """

    access_token = "held-by-qbo-connect"  # a placeholder, never a token

    def __init__(self, adapter: ProxyAdapter) -> None:
        super().__init__()
        self.mount("https://", adapter)
        self.mount("http://", adapter)


def proxy_session(
    *,
    tenant_id: str | None = None,
    function_name: str | None = None,
    max_wait_seconds: float | None = None,
    lambda_client: Any = None,
) -> ProxySession:
    """A ``requests.Session`` for python-quickbooks (``qb.session = proxy_session(...)``).

    ``tenant_id``: the tenant your code acts for (another tenant's company is refused);
    ``function_name`` defaults as for :func:`call` (``QBO_CONNECT_API_FUNCTION``, or the local
    stack's through ``QBO_CONNECT_ENDPOINTS``).
    """
    return ProxySession(
        ProxyAdapter(
            tenant_id=tenant_id,
            function_name=function_name,
            max_wait_seconds=max_wait_seconds,
            lambda_client=lambda_client,
        )
    )


def _body(request: requests.PreparedRequest) -> tuple[Any, str | None]:
    """The request body as :func:`call` takes it: JSON as an object, anything else as text."""
    raw = request.body
    if raw is None or raw in (b"", ""):
        return None, None
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    if text == "{}" and request.method == "GET":
        return None, None  # python-quickbooks sends an empty JSON body with every GET
    content_type = request.headers.get("Content-Type") or None
    if content_type and content_type.split(";", 1)[0].strip() == "application/json":
        try:
            return json.loads(text), None
        except ValueError:
            pass
    return text, content_type


def _response(request: requests.PreparedRequest, answer: dict[str, Any]) -> requests.Response:
    """QuickBooks' answer, as the ``requests.Response`` it would have been."""
    response = requests.Response()
    response.status_code = int(answer.get("status") or 502)
    body = answer.get("body")
    content_type = str(answer.get("content_type") or "application/json")
    if isinstance(body, str):
        response._content = body.encode("utf-8")
    else:
        response._content = json.dumps(body).encode("utf-8")
    headers = {"Content-Type": content_type}
    if answer.get("intuit_tid"):
        headers["intuit_tid"] = str(answer["intuit_tid"])
    response.headers = CaseInsensitiveDict(headers)
    response.encoding = "utf-8"
    response.url = request.url or ""
    response.request = request
    response.reason = "OK" if response.status_code < 400 else "Error"
    return response
