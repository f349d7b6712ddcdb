"""The HTTP gateway: API Gateway HTTP API in front of the template's routes.

Requests become payload 2.0 events (devstack.events) for the function whose route matches, most
specific first as API Gateway chooses, and the function's result is mapped back to a response.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from devstack.events import (
    MalformedResponseError,
    build_http_event,
    new_request_id,
    to_http_response,
)
from devstack.runtime import FunctionRuntime
from devstack.servers import HOST, json_response

log = logging.getLogger("devstack")


_ROUTE_PARAM = re.compile(r"\{([A-Za-z0-9_.-]+)(\+?)\}")


@dataclass(frozen=True)
class CompiledRoute:
    method: str
    path: str
    logical_id: str
    pattern: re.Pattern[str] | None  # None: a static path (or the $default catch-all)
    params: tuple[str, ...] = ()

    @property
    def route_key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"

    @property
    def specificity(self) -> tuple[int, int, bool]:
        """Sort key: static before parameterised before greedy before $default (AWS order)."""
        if self.path == "$default":
            return (3, 0, False)
        if self.pattern is None:
            return (0, -len(self.path), self.method == "ANY")
        greedy = "+}" in self.path
        return (2 if greedy else 1, -len(self.path), self.method == "ANY")


def compile_routes(routes: Iterable[tuple[str, str, str]]) -> list[CompiledRoute]:
    """Routes in the order API Gateway tries them; ``{name}`` and ``{name+}`` become groups."""
    compiled = []
    for method, path, logical_id in routes:
        pattern: re.Pattern[str] | None = None
        params: list[str] = []
        if path != "$default" and "{" in path:
            regex, pos = "", 0
            for match in _ROUTE_PARAM.finditer(path):
                regex += re.escape(path[pos : match.start()])
                body = ".+" if match.group(2) else "[^/]+"
                regex += f"(?P<p{len(params)}>{body})"
                params.append(match.group(1))
                pos = match.end()
            regex += re.escape(path[pos:])
            pattern = re.compile(f"^{regex}$")
        compiled.append(CompiledRoute(method.upper(), path, logical_id, pattern, tuple(params)))
    return sorted(compiled, key=lambda r: r.specificity)


def match_route(
    routes: Sequence[CompiledRoute], method: str, path: str
) -> tuple[CompiledRoute, dict[str, str]] | None:
    """The route API Gateway would pick for ``method path`` and its path parameters."""
    method = method.upper()
    for route in routes:
        if route.method not in ("ANY", method):
            continue
        if route.path == "$default":
            return route, {}
        if route.pattern is None:
            if route.path == path:
                return route, {}
            continue
        match = route.pattern.match(path)
        if match:
            return route, {name: match.group(f"p{i}") for i, name in enumerate(route.params)}
    return None


class GatewayHost(Protocol):
    """What the gateway needs of the stack (read on every request: they are set at start)."""

    routes: list[CompiledRoute]
    functions: dict[str, FunctionRuntime]
    account_id: str

    @property
    def api_port(self) -> int: ...


class HttpGateway:
    """The WSGI app of the gateway."""

    def __init__(self, stack: GatewayHost) -> None:
        self.stack = stack

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.path
        raw_path = raw_uri.split("?", 1)[0] or "/"
        matched = match_route(self.stack.routes, request.method, request.path)
        if matched is None:
            return json_response(404, {"message": "Not Found"})(environ, start_response)
        route, path_params = matched
        request_id = new_request_id()
        event = build_http_event(
            method=request.method,
            raw_path=raw_path,
            raw_query_string=environ.get("QUERY_STRING", ""),
            headers=list(request.headers.items()),
            body=request.get_data(cache=False),
            route_key=route.route_key,
            path_parameters=path_params,
            source_ip=request.remote_addr or HOST,
            protocol=environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
            account_id=self.stack.account_id,
            request_id=request_id,
        )
        event["headers"].setdefault("x-forwarded-for", request.remote_addr or HOST)
        event["headers"].setdefault("x-forwarded-port", str(self.stack.api_port or ""))
        event["headers"].setdefault("x-forwarded-proto", "http")
        result = self.stack.functions[route.logical_id].invoke(event)
        error_headers = {"Apigw-Requestid": request_id}
        if not result.ok:
            return json_response(500, {"message": "Internal Server Error"}, error_headers)(
                environ, start_response
            )
        try:
            mapped = to_http_response(result.payload)
        except MalformedResponseError as exc:
            log.error("%s returned a malformed response: %s", route.logical_id, exc)
            return json_response(500, {"message": "Internal Server Error"}, error_headers)(
                environ, start_response
            )
        response = Response(mapped.body, status=mapped.status)
        response.headers.clear()
        for name, value in mapped.headers:
            response.headers.add(name, value)
        response.headers["Apigw-Requestid"] = request_id
        return response(environ, start_response)
