"""Keep the local stack's servers to this machine: no foreign website may drive them.

While ``make dev`` runs, every page the developer's browser opens can send requests to
127.0.0.1. Without a guard, a page on any site could read the local secrets (moto answers CORS
for any Origin and accepts any signature) or run a function (the Lambda API takes a
``text/plain`` POST), and a DNS-rebinding name (``evil.example`` resolving to 127.0.0.1) would
make such requests same-origin for the browser. So each server the stack runs is wrapped in
:class:`LocalOnly`, which refuses (403 JSON, before the wrapped app sees anything):

* a ``Host`` header other than ``127.0.0.1``, ``localhost`` or ``[::1]`` with this server's own
  port, or a configured public host (the tunnel that brings real Intuit traffic to the gateway);
* an ``Origin`` header other than those same hosts over ``http`` (or the public base's origin):
  a browser adds ``Origin`` to every cross-origin fetch and form post, so a foreign page is
  refused whatever content type it sends;
* a request a browser marks with ``Sec-Fetch-Site: cross-site`` or ``same-site`` (another port
  of localhost) that is not allowed to be one: ``no-cors`` GETs and image loads carry no
  ``Origin`` but do carry this. Servers that serve people (the gateway, the Intuit simulator)
  still take top-level navigations from anywhere, since that is how a connect link, Intuit's
  redirect and the Disconnect URL arrive.

Requests without these headers (boto3, the CLI, curl, the functions themselves) pass: they are
not a browser and the browser is the only way in for a website. No answer keeps an
``Access-Control-Allow-*`` header: nothing the stack serves is meant to be read cross-origin.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = ["LOOPBACK_NAMES", "LocalOnly", "public_host"]

#: The names a same-machine client uses for the stack (as they appear in ``Host``).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

_CROSS_SITE = ("cross-site", "same-site")

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def public_host(base_url: str) -> tuple[str, str] | None:
    """``(host[:port], origin)`` of a configured public base URL, or None when none is set.

    The host is lower-cased and carries the port only when the URL names a non-default one, as
    a browser or tunnel writes it in ``Host``.
    """
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    if parts.port is not None and parts.port != default:
        host = f"{host}:{parts.port}"
    return host, f"{parts.scheme}://{host}"


class LocalOnly:
    """WSGI middleware: answer 403 to anything a foreign web page could have sent.

    ``public`` lists ``(host, origin)`` pairs accepted besides the loopback names (see
    :func:`public_host`); ``navigations`` lets browser top-level navigations in from any site.
    The server's own port comes from ``SERVER_PORT`` (set by werkzeug from the bound socket), so
    one guard works on a server started on port 0.
    """

    def __init__(
        self,
        app: WsgiApp,
        *,
        name: str,
        public: Sequence[tuple[str, str]] = (),
        navigations: bool = False,
    ) -> None:
        self.app = app
        self.name = name
        self.public_hosts = {host for host, _ in public}
        self.public_origins = {origin for _, origin in public}
        self.navigations = navigations

    def _local_hosts(self, environ: dict[str, Any]) -> set[str]:
        port = str(environ.get("SERVER_PORT", ""))
        return {f"{name}:{port}" for name in LOOPBACK_NAMES}

    def refusal(self, environ: dict[str, Any]) -> str | None:
        """Why this request is refused, or None when it may reach the server."""
        local = self._local_hosts(environ)
        host = str(environ.get("HTTP_HOST", "")).strip().lower()
        if host and host not in local and host not in self.public_hosts:
            return "this server answers only on 127.0.0.1, localhost or [::1]"
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None:
            origin = str(origin).strip().lower()
            allowed = {f"http://{h}" for h in local} | self.public_origins
            if origin not in allowed:
                return "requests from other web origins are refused"
        site = str(environ.get("HTTP_SEC_FETCH_SITE", "")).strip().lower()
        if site in _CROSS_SITE:
            mode = str(environ.get("HTTP_SEC_FETCH_MODE", "")).strip().lower()
            if not (self.navigations and mode == "navigate"):
                return "requests from other web sites are refused"
        return None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        reason = self.refusal(environ)
        if reason is not None:
            body = json.dumps({"message": f"Forbidden: {reason} ({self.name})"}).encode()
            start_response(
                "403 Forbidden",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("Vary", "Origin"),
                ],
            )
            return [body]

        def start_without_cors(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            kept = [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]
            return start_response(status, kept, *exc)

        return self.app(environ, start_without_cors)
