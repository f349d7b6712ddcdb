"""The local stack's HTTP servers: sockets we bind ourselves, werkzeug serving from a thread.

Binding ourselves turns a taken port into :class:`PortInUseError` (werkzeug would exit the
process); the request log names method, path and status, never a query string (``/callback``'s
holds the authorization code).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("devstack")

#: Every local server listens here only.
HOST = "127.0.0.1"


class PortInUseError(RuntimeError):
    """A port given on the command line is taken; ``flag`` names the option to change."""

    def __init__(self, flag: str, port: int, reason: str = "address already in use") -> None:
        super().__init__(f"{flag} {port}: {reason}")
        self.flag = flag
        self.port = port
        self.reason = reason


def bind_port(flag: str, port: int) -> socket.socket:
    """Bind and listen ourselves: werkzeug would ``sys.exit`` on a taken port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else str(exc)
        raise PortInUseError(flag, port, reason) from None
    return sock


def check_port_free(flag: str, port: int) -> None:
    if port:
        bind_port(flag, port).close()


def _quiet_handler_class() -> type:
    from werkzeug.serving import WSGIRequestHandler

    class QuietHandler(WSGIRequestHandler):
        """Logs method, path (never the query string: /callback's holds the code) and status."""

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            status = getattr(code, "value", code)
            log.info("%s %s %s", self.command, urlsplit(self.path).path, status)

        def log_error(self, format: str, *args: Any) -> None:
            # werkzeug's messages quote the request line, query string included: not logged.
            log.debug("HTTP protocol error on %s", HOST)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return QuietHandler


class HttpServer:
    """A threaded werkzeug server on a socket we bound, served from a daemon thread."""

    def __init__(self, name: str, sock: socket.socket, app: Callable[..., Any]) -> None:
        from werkzeug.serving import make_server

        port = sock.getsockname()[1]
        try:
            self.server = make_server(
                HOST,
                port,
                app,
                threaded=True,
                request_handler=_quiet_handler_class(),
                fd=sock.fileno(),
            )
        finally:
            sock.close()  # the server holds its own duplicate
        self.port = int(self.server.server_address[1])
        self.url = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=name,
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        # shutdown() waits for serve_forever to acknowledge: never call it if that never ran.
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.server.shutdown()
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.server.server_close()


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Any:
    from werkzeug.wrappers import Response

    response = Response(json.dumps(body), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
