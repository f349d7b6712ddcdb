"""The one moto launcher: moto as the local AWS endpoint, in a thread or in its own process.

Both serve ``devstack.moto_fixes.moto_app()`` (moto with atomic DynamoDB conditional writes and
a lossless SQS) behind :class:`devstack.local_guard.LocalOnly`: moto answers CORS for any origin
and accepts any signature, so unguarded, any web page could read what it holds.

* :func:`in_thread` is what the local stack runs (``python -m devstack``).
* :func:`start_process` runs ``python -m devstack.moto_server --port 0`` for the reliability
  tests and the benchmark; the first stdout line is ``{"port": <n>}``, SIGTERM or SIGINT stops
  it. That server also counts every request by operation (``X-Amz-Target``, e.g.
  ``TrentService.Decrypt``) and exposes the counts at ``GET /_probe/counts`` (``POST
  /_probe/reset`` clears them): that is how the tests and the benchmark count KMS calls made by
  other processes.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.local_guard import LocalOnly
from devstack.servers import HOST


def in_thread(port: int) -> Any:
    """A ThreadedMotoServer that reports a bind failure instead of hanging its start().

    moto's app is served behind :class:`LocalOnly`: moto answers CORS for any origin and
    accepts any signature, so without it any web page could read the local secrets.
    """
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import make_server

    from devstack.moto_fixes import moto_app

    class Server(ThreadedMotoServer):
        error: BaseException | None = None

        def _server_entry(self) -> None:
            try:
                # moto's app with atomic conditional writes and a lossless SQS (moto_fixes).
                self._server = make_server(
                    self._ip_address,
                    self._port,
                    LocalOnly(moto_app(), name="AWS endpoint"),
                    True,
                    request_handler=MotoRequestHandler,
                )
            except BaseException as exc:  # werkzeug raises SystemExit on a bind failure
                self.error = exc
                self._server_ready_event.set()
                return
            self._server_ready_event.set()
            self._server.serve_forever()

    return Server(ip_address=HOST, port=port, verbose=False)


PROBE_PREFIX = "/_probe/"


class ProbeApp:
    """WSGI middleware: per-operation request counts."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self._counts_lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith(PROBE_PREFIX):
            return self._probe(path, environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        operation = target or f"{environ.get('REQUEST_METHOD', '?')} {path}"
        with self._counts_lock:
            self.counts[operation] += 1
        return self.app(environ, start_response)

    def _probe(
        self, path: str, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> list[bytes]:
        if path == PROBE_PREFIX + "reset" and environ.get("REQUEST_METHOD") == "POST":
            with self._counts_lock:
                self.counts.clear()
            body: dict[str, Any] = {"ok": True}
        elif path == PROBE_PREFIX + "counts":
            with self._counts_lock:
                body = dict(self.counts)
        else:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error": "not_found"}']
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]


def serve(host: str = HOST, port: int = 0) -> tuple[Any, int]:
    """Build the server (not yet serving); returns (server, bound port)."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    from devstack.moto_fixes import moto_app

    class QuietHandler(MotoRequestHandler):
        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            """No access log: the tests read this process's output for leaks, not traffic."""

    app = LocalOnly(ProbeApp(moto_app()), name="AWS endpoint")
    server = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
    return server, int(server.server_address[1])


@dataclass
class MotoServerProcess:
    """A running ``python -m devstack.moto_server`` and its probe endpoints."""

    url: str
    process: subprocess.Popen

    def counts(self) -> dict[str, int]:
        url = self.url + PROBE_PREFIX + "counts"  # always http://127.0.0.1:<port>
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310
            counts: dict[str, int] = json.loads(resp.read())
            return counts

    def reset_counts(self) -> None:
        url = self.url + PROBE_PREFIX + "reset"  # always http://127.0.0.1:<port>
        req = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310
            pass

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_process(env: dict[str, str] | None = None, timeout: float = 60) -> MotoServerProcess:
    """Start the server in its own process on a free port; returns once it is listening."""
    repo_root = Path(__file__).resolve().parents[1]
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(repo_root), child_env.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.moto_server", "--port", "0"],
        cwd=repo_root,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        raise RuntimeError(f"moto server did not start (exit code {proc.poll()})")
    port = json.loads(line)["port"]
    return MotoServerProcess(url=f"http://{HOST}:{port}", process=proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="moto as the local AWS endpoint")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server, port = serve(args.host, args.port)

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(json.dumps({"port": port}), flush=True)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
