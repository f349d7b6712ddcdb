"""A moto server for the reliability tests and the benchmark, run as its own process.

It serves ``devstack.moto_fixes.moto_app()`` (moto with atomic DynamoDB conditional writes and
a lossless SQS, as the local stack does), and adds one thing, test infrastructure only:

* Every request is counted by operation (``X-Amz-Target``, e.g. ``TrentService.Decrypt``), and
  ``GET /_probe/counts`` / ``POST /_probe/reset`` expose the counts. That is how the tests and
  the benchmark count KMS calls made by other processes.

Run: ``python -m tests.reliability.motoserver --port 0``; the first stdout line is
``{"port": <n>}``. SIGTERM or SIGINT stops it. :func:`start_process` does all of that.
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


def serve(host: str = "127.0.0.1", port: int = 0) -> tuple[Any, int]:
    """Build the server (not yet serving); returns (server, bound port)."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    from devstack.moto_fixes import moto_app

    class QuietHandler(MotoRequestHandler):
        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            """No access log: the tests read this process's output for leaks, not traffic."""

    app = ProbeApp(moto_app())
    server = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
    return server, int(server.server_address[1])


@dataclass
class MotoServerProcess:
    """A running ``python -m tests.reliability.motoserver`` and its probe endpoints."""

    url: str
    process: subprocess.Popen

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url + PROBE_PREFIX + "counts", timeout=10) as resp:
            counts: dict[str, int] = json.loads(resp.read())
            return counts

    def reset_counts(self) -> None:
        req = urllib.request.Request(self.url + PROBE_PREFIX + "reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10):
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
    repo_root = Path(__file__).resolve().parents[2]
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(repo_root), child_env.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.motoserver", "--port", "0"],
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
    return MotoServerProcess(url=f"http://127.0.0.1:{port}", process=proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
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
