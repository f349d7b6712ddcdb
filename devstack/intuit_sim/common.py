"""HTTP helpers every part of the simulator shares: JSON and HTML answers, redirects, ids.

Kept apart so the OAuth, QuickBooks and admin modules answer in one consistent way (no-store
caching, Intuit's ``intuit_tid`` shape) without importing one another.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import secrets
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Response

log = logging.getLogger("devstack.intuit_sim")


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _new_tid() -> str:
    """An id shaped like Intuit's ``intuit_tid`` so log parsers treat both alike."""
    return f"1-{secrets.token_hex(4)}-{secrets.token_hex(12)}"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    resp = Response(json.dumps(body), status=status, content_type="application/json;charset=UTF-8")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def _oauth_error(
    error: str, status: int = 400, description: str | None = None, **headers: str
) -> Response:
    body = {"error": error}
    if description:
        body["error_description"] = description
    return _json(body, status, headers)


def _with_params(uri: str, params: Iterable[tuple[str, str | None]]) -> str:
    """Append callback parameters, keeping any query the (unregistered-mode) URI carries."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _redirect(location: str) -> Response:
    resp = Response("", status=302)
    resp.headers["Location"] = location
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _html_page(title: str, body: str, status: int = 200) -> Response:
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        # Readable from 320 px up: fluid width, wrapping text, full-width touch targets.
        "<style>body{font-family:sans-serif;font-size:1rem;line-height:1.5;max-width:40em;"
        "margin:2em auto;padding:0 1em;overflow-wrap:anywhere}"
        "h1{font-size:1.4rem}.note{color:#555;font-size:.9rem}ul{padding-left:1.2em}"
        "input{font-size:1rem;padding:.5em;width:100%;box-sizing:border-box}"
        "button{font-size:1rem;padding:.75em 1.5em;margin:.5em 1em .5em 0;min-height:44px}"
        "@media (max-width:480px){button{width:100%;margin-right:0}}</style></head>"
        f"<body>{body}</body></html>"
    )
    resp = Response(page, status=status, content_type="text/html; charset=utf-8")
    # No external assets at all; inline style only. Framing is refused like Intuit's page.
    resp.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Cache-Control"] = "no-store"
    return resp


class _QuietHandler(WSGIRequestHandler):
    """Request handler that never prints query strings and tracks live connections.

    Werkzeug's access log prints the full URL; a callback URL carries ``code=``, so only the
    path goes to our logger, at DEBUG. Connections are tracked so :meth:`IntuitSimulator.stop`
    can cut keep-alive sockets that would otherwise keep answering after the server stopped.
    """

    def setup(self) -> None:
        super().setup()
        tracker = getattr(self.server, "sim_connections", None)
        if tracker is not None:
            tracker.add(self.connection)

    def finish(self) -> None:
        tracker = getattr(self.server, "sim_connections", None)
        if tracker is not None:
            tracker.discard(self.connection)
        super().finish()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = getattr(self, "path", "").split("?", 1)[0]
        log.debug("%s %s -> %s", getattr(self, "command", "-"), path, code)

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("http error: " + format, *args)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)
