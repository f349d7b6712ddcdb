"""Start ``python -m devstack`` in a subprocess: for integration tests and the benchmark.

Why a subprocess: the local stack sets one ``os.environ`` for all functions and imports the
handlers and the layer package once, exactly like a Lambda container; doing that inside the
pytest process would leak settings, cached clients and env vars between tests. A subprocess on
free ports (port 0) also lets tests run in parallel and guarantees a clean teardown.

Usage::

    from devstack.process import start_devstack

    def test_something(tmp_path):
        with start_devstack(tmp_path, extra_args=["--auto-approve"]) as stack:
            requests.get(stack.api + "/connect", allow_redirects=False)
            stack.invoke("GetTokenFunction", {"realm_id": "123"})
            stack.boto3_client("dynamodb").scan(TableName=stack.endpoints["table"])

On a failed start the exception carries the tail of the stack's log; ``log_text()`` gives the
whole captured stdout+stderr at any time (also kept in ``<tmp_path>/devstack.log``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.stack import INTUIT_ENDPOINT_KEYS

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
REGION = "us-east-1"
#: Not inherited from the test process (see start_devstack); ``env`` can still set them.
INHERITED_KEYS_DROPPED = (*INTUIT_ENDPOINT_KEYS, "AWS_ENDPOINT_URL")

__all__ = [
    "DevstackError",
    "DevstackProcess",
    "FunctionError",
    "seed_connection",
    "start_devstack",
]


class DevstackError(RuntimeError):
    """The stack did not start (or stopped unexpectedly); the message holds its log tail."""


class FunctionError(RuntimeError):
    """An invoke answered with ``X-Amz-Function-Error`` (the handler raised or timed out)."""

    def __init__(self, function: str, payload: Any) -> None:
        detail = payload if isinstance(payload, dict) else {"errorMessage": str(payload)}
        super().__init__(
            f"{function}: {detail.get('errorType', 'Error')}: {detail.get('errorMessage', '')}"
        )
        self.function = function
        self.payload = payload


@dataclass(eq=False)
class DevstackProcess:
    """A running ``python -m devstack`` and convenient clients for what it serves."""

    process: subprocess.Popen[bytes]
    state_dir: Path
    log_path: Path
    #: Where the process writes its log (closed by :meth:`stop`).
    log_file: Any
    endpoints: dict[str, Any] = field(default_factory=dict)

    # -- lifecycle

    def __enter__(self) -> DevstackProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> DevstackProcess:
        """Block until endpoints.json appears (the stack writes it last, atomically)."""
        target = self.state_dir / "endpoints.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if target.exists():
                self.endpoints = json.loads(target.read_text(encoding="utf-8"))
                return self
            if self.process.poll() is not None:
                raise DevstackError(
                    f"devstack exited with code {self.process.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            time.sleep(0.05)
        self.stop()
        raise DevstackError(f"devstack not ready within {timeout:.0f}s:\n" + self.log_tail())

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT (like Ctrl-C), wait up to ``timeout``, then kill. Returns the exit code."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGINT)
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if not self.log_file.closed:
            self.log_file.close()
        return self.process.returncode

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def log_text(self) -> str:
        """Everything the stack printed so far (stdout and stderr, interleaved)."""
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- endpoints

    @property
    def api(self) -> str:
        return str(self.endpoints["api"])

    @property
    def lambda_url(self) -> str:
        return str(self.endpoints["lambda"])

    @property
    def aws(self) -> str:
        return str(self.endpoints["aws"])

    @property
    def intuit(self) -> str:
        """The simulator's base URL ("" when the stack uses Intuit endpoints from env)."""
        return str(self.endpoints.get("intuit", ""))

    @property
    def intuit_env(self) -> dict[str, str]:
        return dict(self.endpoints.get("intuit_env", {}))

    # -- clients

    def boto3_client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for the stack's moto server (dummy credentials, us-east-1)."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.aws,
            region_name=REGION,
            **DUMMY_CREDENTIALS,
            **kwargs,
        )

    def boto3_resource(self, service: str) -> Any:
        """A boto3 resource (e.g. ``dynamodb``) for the stack's moto server."""
        import boto3

        session = boto3.session.Session(region_name=REGION, **DUMMY_CREDENTIALS)
        return session.resource(service, endpoint_url=self.aws)

    def lambda_client(self, **kwargs: Any) -> Any:
        """A boto3 Lambda client for the stack's Invoke API (no retries: tests see every call)."""
        import boto3
        from botocore.config import Config

        config = Config(retries={"total_max_attempts": 1}, read_timeout=330, connect_timeout=5)
        return boto3.client(
            "lambda",
            endpoint_url=self.lambda_url,
            region_name=REGION,
            config=kwargs.pop("config", config),
            **DUMMY_CREDENTIALS,
            **kwargs,
        )

    def invoke(self, function: str, payload: Any = None) -> Any:
        """Invoke a function by logical id and return its decoded result.

        Raises :class:`FunctionError` when the function errored (X-Amz-Function-Error).
        """
        response = self.lambda_client().invoke(
            FunctionName=function, Payload=json.dumps({} if payload is None else payload)
        )
        result = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            raise FunctionError(function, result)
        return result

    def sim(self, method: str, path: str, body: Any = None) -> Any:
        """Call the Intuit simulator's HTTP API (``/_sim/...`` controls, or Intuit's own paths)
        and return its JSON answer; an HTTP error status raises."""
        import requests

        response = requests.request(method, self.intuit + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def run_schedule(self, logical_id: str = "RefreshSweepFunction") -> Any:
        """Run a scheduled function now (``POST /_devstack/schedule/{id}``); its result."""
        import requests

        response = requests.post(f"{self.lambda_url}/_devstack/schedule/{logical_id}", timeout=330)
        result = response.json()
        if response.headers.get("X-Amz-Function-Error"):
            raise FunctionError(logical_id, result)
        response.raise_for_status()
        return result

    def health(self) -> dict[str, Any]:
        """``GET /_devstack/health``: per-function invocation and error counts."""
        import requests

        response = requests.get(f"{self.lambda_url}/_devstack/health", timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


def seed_connection(
    stack: DevstackProcess, realm_id: str, tenant_id: str, *, environment: str = "sandbox"
) -> None:
    """Store a connection in the stack's table the way the service does, with placeholder
    tokens: for what never uses them (webhook fan-out, its tests and its bench)."""
    import time

    from qbo_connect.store.connections import ConnectionRepository, SealedTokens

    table = stack.boto3_resource("dynamodb").Table(stack.endpoints["table"])
    now = time.time()
    ConnectionRepository(table).create_connection(
        realm_id=realm_id,
        tenant_id=tenant_id,
        environment=environment,
        scopes=["com.intuit.quickbooks.accounting"],
        tokens=SealedTokens(
            data_key=b"k",
            access_token_enc=b"a",
            refresh_token_enc=b"r",
            access_expires_at=now + 3600,
            refresh_expires_at=now + 86400 * 100,
        ),
        now=now,
    )


def start_devstack(
    tmp_path: str | os.PathLike[str],
    *,
    parameter_overrides: Mapping[str, str] | None = None,
    env: Mapping[str, str | None] | None = None,
    extra_args: Iterable[str] = (),
    timeout: float = START_TIMEOUT,
    readable_logs: bool = False,
) -> DevstackProcess:
    """Launch ``python -m devstack`` on free ports and wait until it is ready.

    ``env`` adds to (or, with a None value, removes from) the inherited environment, e.g.
    ``{"INTUIT_TIMEOUT_SECONDS": "2"}``; inherited Intuit endpoint variables are dropped, so the
    child runs its own simulator unless ``env`` sets ``INTUIT_AUTHORIZATION_ENDPOINT`` and
    ``INTUIT_TOKEN_ENDPOINT``; ``parameter_overrides`` become
    ``--parameter-overrides K=V ...``; ``extra_args`` are passed as they are
    (``--auto-approve``, ``--refresh-grace 0``, ``--sweep-interval 1``, ``--no-schedule``...).
    The functions' logs stay raw JSON (``--json-logs``) unless ``readable_logs`` is true.
    """
    base = Path(tmp_path)
    state_dir = base / "devstack-state"
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = base / "devstack.log"
    command = [
        sys.executable,
        "-m",
        "devstack",
        "--any-ports",
        "--state-dir",
        str(state_dir),
    ]
    if not readable_logs:
        command.append("--json-logs")  # tests scan every field of every record
    if parameter_overrides:
        command += ["--parameter-overrides", *(f"{k}={v}" for k, v in parameter_overrides.items())]
    command += list(extra_args)
    child_env = dict(os.environ)
    child_env["PYTHONUNBUFFERED"] = "1"
    # The child is its own Lambda-like process: pytest's own plumbing must not leak in, nor
    # Intuit endpoints left in this process's environment (by an in-process stack, say): those
    # would silently switch the child from its simulator to "external Intuit". Pass them in
    # ``env`` to mean it.
    child_env.pop("PYTEST_CURRENT_TEST", None)
    for key in INHERITED_KEYS_DROPPED:
        child_env.pop(key, None)
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    # The log holds the connect link: readable by this user only.
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(log_fd, 0o600)
    log_file = os.fdopen(log_fd, "wb")  # closed by DevstackProcess.stop()
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    stack = DevstackProcess(process, state_dir, log_path, log_file)
    try:
        return stack.wait_ready(timeout)
    except BaseException:
        stack.stop()
        raise
