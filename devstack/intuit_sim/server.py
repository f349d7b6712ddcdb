"""The simulator itself: one HTTP server that routes to each concern, and its test controls.

:class:`IntuitSimulator` combines the OAuth server, the consent page, the QuickBooks API and
fault injection over one shared state, serves them with werkzeug on 127.0.0.1, and answers the
``/_sim/`` admin API that tests in other processes use.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from devstack.intuit_sim.authorize import AuthorizeEndpoint
from devstack.intuit_sim.common import _json, _new_tid, _oauth_error, _QuietHandler, log
from devstack.intuit_sim.faults import _Faults
from devstack.intuit_sim.oauth import SigningKey, _AccessToken, _Code, _Grant, _Pending
from devstack.intuit_sim.quickbooks import _API_RE, _COMPANYINFO_RE, QuickBooksApi
from devstack.intuit_sim.state import (
    PATH_AUTHORIZE,
    PATH_DISCOVERY,
    PATH_JWKS,
    PATH_REVOKE,
    PATH_TOKEN,
    PATH_USERINFO,
)
from devstack.intuit_sim.webhooks import WebhookSender

_COUNTER_KEYS = (
    "authorize",
    "token",
    "token.authorization_code",
    "token.refresh_token",
    "token.refresh_token.ok",
    "token.refresh_token.invalid_grant",
    "revoke",
    "userinfo",
    "jwks",
    "companyinfo",
    "faults",
)


class IntuitSimulator(AuthorizeEndpoint, QuickBooksApi):
    """Intuit's OAuth server, QuickBooks CompanyInfo and a ``/_sim/`` admin API on one port.

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``next_realm_id``,
    ``auto_approve``, ``refresh_grace_seconds`` and ``rotate_every_seconds`` may be changed at any
    time (directly or via ``POST /_sim/config``); they apply to the next request.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clients: dict[str, str] | None = None,
        redirect_uris: list[str] | None = None,
        auto_approve: bool = False,
        refresh_grace_seconds: float = 86400.0,
        rotate_every_seconds: float = 0.0,
        access_token_ttl: int = 3600,
        refresh_token_ttl: int = 8726400,
        refresh_hard_ttl: int = 5 * 365 * 86400,
        code_ttl: int = 600,
        default_realm_id: str = "9130357766042906",
        company_name: str = "Sandbox Company_US_1",
        app_name: str = "Simulated App",
        clock: Callable[[], float] = time.time,
        webhook_url: str = "",
        webhook_verifier_token: str = "",
        webhook_shape: str = "legacy",
        webhook_time_scale: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.redirect_uris = list(redirect_uris) if redirect_uris is not None else None
        self.auto_approve = auto_approve
        self.refresh_grace_seconds = float(refresh_grace_seconds)
        self.rotate_every_seconds = float(rotate_every_seconds)
        self.access_token_ttl = int(access_token_ttl)
        self.refresh_token_ttl = int(refresh_token_ttl)
        self.refresh_hard_ttl = int(refresh_hard_ttl)
        self.code_ttl = int(code_ttl)
        self.default_realm_id = default_realm_id
        #: Realm the next approval connects (auto-approve, and the consent form's default).
        self.next_realm_id = default_realm_id
        self.company_name = company_name
        #: Optional per-realm company names; realms not listed use ``company_name``.
        self.company_names: dict[str, str] = {}
        #: What the consent page calls the app: per client id, else ``app_name``.
        self.app_name = app_name
        self.app_names: dict[str, str] = {}
        self._clock = clock
        self._clock_offset = 0.0

        self._lock = threading.RLock()
        self._clients: dict[str, str] = dict(clients or {})
        self._codes: dict[str, _Code] = {}
        self._pending: dict[str, _Pending] = {}
        self._grants: dict[str, _Grant] = {}
        self._rt_index: dict[str, str] = {}  # every refresh token ever issued -> grant id
        self._access: dict[str, _AccessToken] = {}
        self._counters: Counter[str] = Counter()
        self._refresh_log: deque[dict[str, Any]] = deque(maxlen=10000)
        self._faults = _Faults()
        self._rng = random.Random()

        # One key per instance: tests that cache a JWKS across simulators must notice.
        self._signing_key = SigningKey()

        # The sandbox user behind every consent; stable per instance so `sub` is comparable.
        self.user: dict[str, Any] = {
            "sub": str(uuid.uuid4()),
            "email": "sim.user@example.com",
            "emailVerified": True,
            "givenName": "Sim",
            "familyName": "User",
            "phoneNumber": "+1 5555550100",
            "phoneNumberVerified": False,
            "address": {
                "streetAddress": "2700 Coast Avenue",
                "locality": "Mountain View",
                "region": "CA",
                "postalCode": "94043",
                "country": "US",
            },
        }

        #: Change notifications to the app's webhook URL (admin: ``/_sim/webhooks``,
        #: ``/_sim/entity-change``).
        self.webhooks = WebhookSender(
            url=webhook_url,
            verifier_token=webhook_verifier_token,
            shape=webhook_shape,
            time_scale=webhook_time_scale,
        )

        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._base_url: str | None = None
        self._init_quickbooks()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> IntuitSimulator:
        """Bind and serve in a daemon thread.

        The socket is bound here rather than by werkzeug because werkzeug calls ``sys.exit`` on
        a bind failure; a test suite wants an ``OSError`` that says which port was taken.
        """
        if self._server is not None:
            raise RuntimeError("IntuitSimulator is already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(256)
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno,
                f"IntuitSimulator cannot listen on {self.host}:{self.port}: {exc.strerror} "
                "(port in use? pass port=0 to pick a free one)",
            ) from exc
        try:
            server = make_server(
                self.host,
                self.port,
                self._wsgi,
                threaded=True,
                request_handler=_QuietHandler,
                fd=sock.fileno(),
            )
        finally:
            sock.close()  # the server holds its own duplicate of the descriptor
        server.sim_connections = self._connections  # type: ignore[attr-defined]
        self._stopping.clear()
        self._server = server
        host = f"[{self.host}]" if family == socket.AF_INET6 else self.host
        self._base_url = f"http://{host}:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.name = f"intuit-sim-{server.server_address[1]}"
        self._thread.start()
        log.info("Intuit simulator listening on %s", self._base_url)
        return self

    def stop(self) -> None:
        """Stop serving, wake requests sleeping in an injected fault, cut keep-alive sockets."""
        self.webhooks.stop()
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        for conn in list(self._connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> IntuitSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def add_client(self, client_id: str, client_secret: str, app_name: str | None = None) -> None:
        with self._lock:
            self._clients[client_id] = client_secret
            if app_name:
                self.app_names[client_id] = app_name

    def configure(self, **settings: Any) -> None:
        """Change behaviour at runtime; the admin API's ``POST /_sim/config`` lands here."""
        allowed = {
            "refresh_grace_seconds": float,
            "rotate_every_seconds": float,
            "auto_approve": bool,
            "next_realm_id": str,
            "access_token_ttl": int,
            "refresh_token_ttl": int,
            "code_ttl": int,
            "company_name": str,
            "app_name": str,
        }
        unknown = set(settings) - set(allowed)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            for key, value in settings.items():
                kind = allowed[key]
                if kind is bool and not isinstance(value, bool):
                    raise ValueError(f"{key} must be a boolean")
                if kind in (int, float) and (
                    isinstance(value, bool) or not isinstance(value, int | float) or value < 0
                ):
                    raise ValueError(f"{key} must be a non-negative number")
                if kind is str and (not isinstance(value, str) or not value):
                    raise ValueError(f"{key} must be a non-empty string")
                setattr(self, key, kind(value))

    #: What ``GET /_sim/config`` shows (the settings above, the token lifetimes, the clock).
    SHOWN_CONFIG = (
        "refresh_grace_seconds",
        "rotate_every_seconds",
        "auto_approve",
        "next_realm_id",
        "access_token_ttl",
        "refresh_token_ttl",
        "refresh_hard_ttl",
        "code_ttl",
        "company_name",
        "app_name",
    )

    def config(self) -> dict[str, Any]:
        shown = {name: getattr(self, name) for name in self.SHOWN_CONFIG}
        return {**shown, "clock_offset": self._clock_offset}

    def counters(self) -> dict[str, int]:
        with self._lock:
            out = dict.fromkeys(_COUNTER_KEYS, 0)
            out.update(self._counters)
            return out

    def reset_counters(self) -> None:
        with self._lock:
            self._counters.clear()
            self._refresh_log.clear()

    # ------------------------------------------------------------------ HTTP

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except Exception:
            log.exception("simulator error on %s %s", request.method, request.path)
            response = _oauth_error("server_error", 500, "simulator bug")
        response.headers["intuit_tid"] = _new_tid()
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/_sim/"):
            return self._admin(request)
        routes: dict[str, tuple[str, Callable[[Request], Response], tuple[str, ...]]] = {
            PATH_AUTHORIZE: ("authorize", self._authorize, ("GET", "POST")),
            PATH_TOKEN: ("token", self._token, ("POST",)),
            PATH_REVOKE: ("revoke", self._revoke, ("POST",)),
            PATH_USERINFO: ("userinfo", self._userinfo, ("GET",)),
            PATH_JWKS: ("jwks", self._jwks, ("GET",)),
            PATH_DISCOVERY: ("discovery", self._discovery, ("GET",)),
        }
        route = routes.get(path)
        if route is None and _COMPANYINFO_RE.match(path):
            route = ("companyinfo", self._quickbooks, ("GET",))
        elif route is None and _API_RE.match(path):
            if request.method not in ("GET", "POST"):
                resp = _json({"error": "method_not_allowed"}, 405)
                resp.headers["Allow"] = "GET, POST"
                return resp
            return self._quickbooks(request)
        if route is None:
            return _json({"error": "not_found"}, 404)
        name, handler, methods = route
        if request.method not in methods:
            resp = _json({"error": "method_not_allowed"}, 405)
            resp.headers["Allow"] = ", ".join(methods)
            return resp
        if name == "token":
            return handler(request)  # counts and faults per grant type
        # The consent form's POST is the same page answering, not a new authorize request.
        self._count(
            "authorize.decision" if name == "authorize" and request.method == "POST" else name
        )
        faulted = self._serve_fault(self._take_fault({name}, token_endpoint=False))
        return faulted if faulted is not None else handler(request)

    # --- admin API

    def _admin(self, request: Request) -> Response:
        """JSON control surface for tests and tools running in other processes."""
        route = (request.method, request.path)
        payload = request.get_json(silent=True, force=True) if request.method == "POST" else None
        body: dict[str, Any] = payload if isinstance(payload, dict) else {}
        try:
            if route == ("GET", "/_sim/counters"):
                return _json(self.counters())
            if route == ("POST", "/_sim/reset-counters"):
                self.reset_counters()
                return _json({"ok": True})
            if route == ("GET", "/_sim/faults"):
                return _json(self.faults())
            if route == ("POST", "/_sim/faults"):
                if isinstance(body.get("endpoints"), list):
                    body["endpoints"] = tuple(body["endpoints"])
                self.set_faults(**body)
                return _json(self.faults())
            if route == ("DELETE", "/_sim/faults"):
                self.clear_faults()
                return _json(self.faults())
            if route == ("GET", "/_sim/refresh-calls"):
                return _json(self.refresh_calls())
            if route == ("POST", "/_sim/revoke-realm"):
                return _json({"revoked_grants": self.revoke_realm(str(body["realm_id"]))})
            if route == ("POST", "/_sim/issue-tokens"):
                tokens = self.issue_tokens(
                    client_id=body["client_id"],
                    realm_id=body.get("realm_id"),
                    scopes=body.get("scopes"),
                )
                return _json(tokens)
            if route == ("GET", "/_sim/config"):
                return _json(self.config())
            if route == ("POST", "/_sim/config"):
                self.configure(**body)
                return _json(self.config())
            if route == ("POST", "/_sim/clients"):
                self.add_client(
                    str(body["client_id"]), str(body["client_secret"]), body.get("app_name")
                )
                return _json({"ok": True})
            if route == ("POST", "/_sim/advance-clock"):
                self.advance_clock(float(body["seconds"]))
                return _json({"now": self.now()})
            if request.path.startswith("/_sim/api/") or request.path == "/_sim/webhooks/drop":
                return self._api_admin(request, body)
            if route == ("GET", "/_sim/grants"):
                return _json(self.grants())
            if request.path.startswith("/_sim/webhooks") or request.path == "/_sim/entity-change":
                status, answer = self.webhooks.admin(request.method, request.path, body)
                return _json(answer, status)
        except (KeyError, TypeError, ValueError) as exc:
            return _json({"error": "invalid_request", "error_description": str(exc)}, 400)
        return _json({"error": "not_found"}, 404)

    def _api_admin(self, request: Request, body: dict[str, Any]) -> Response:
        """``/_sim/api/...``: the QuickBooks API's limits, faults, counts, companies, changes."""
        route = (request.method, request.path)
        if route == ("GET", "/_sim/api/counts"):
            return _json(self.api_counts(request.args.get("realm_id")))
        if route == ("POST", "/_sim/api/reset-counts"):
            self.reset_api_counts()
            return _json({"ok": True})
        if route == ("GET", "/_sim/api/limits"):
            return _json(self.api_limits.as_dict())
        if route == ("POST", "/_sim/api/limits"):
            return _json(self.configure_api(**body))
        if route == ("GET", "/_sim/api/faults"):
            return _json(self.api_faults())
        if route == ("POST", "/_sim/api/faults"):
            realm = body.pop("realm_id", None)
            return _json(self.set_api_faults(None if realm is None else str(realm), **body))
        if route == ("DELETE", "/_sim/api/faults"):
            self.clear_api_faults()
            return _json(self.api_faults())
        if route == ("POST", "/_sim/api/company-name"):
            self.set_company_name(str(body["realm_id"]), body["name"])
            return _json({"realm_id": body["realm_id"], "name": body["name"]})
        if route == ("POST", "/_sim/api/change"):
            answer = self.change_entity(
                str(body["realm_id"]),
                str(body["entity"]),
                str(body.get("operation", "Update")),
                dict(body.get("body") or {}),
            )
            return _json(answer)
        if route == ("POST", "/_sim/webhooks/drop"):
            self.drop_webhooks(bool(body["drop"]))
            return _json({"drop": bool(body["drop"])})
        return _json({"error": "not_found"}, 404)
