"""Fixtures for the reliability suite: everything over real HTTP on 127.0.0.1.

- ``moto_server`` (session): a moto server in its own process (devstack/moto_server.py:
  atomic DynamoDB conditional writes like the real service, and per-operation request counts).
- ``aws_http`` (session): on that server, the table built from template.yaml's own properties,
  a KMS key, the Intuit client secret, and an EventBridge rule on the default bus that copies
  every ``qbo-connect`` event into an SQS queue, so tests read the real lifecycle events.
- ``intuit``: the Intuit simulator over HTTP, strict by default (grace 0, a new refresh token
  on every refresh); tests that want Intuit's 24 h grace configure it.
- ``harness``: the test's own view of the vault (seeding connections with tokens the simulator
  really issued, reading and decrypting stored items), plus the env that worker processes and
  in-process handlers run with.
- ``service``: the real handlers (functions/*/app.py) loaded in this process with that env.
- ``workers``: runs tests/reliability/worker.py as separate processes (separate "containers").
- Every test that uses ``harness`` ends with a leak check: no access or refresh token the
  simulator issued (seeded, returned by get_token, or stored) appears in this process's
  captured output or logs, nor in any worker's stdout/stderr.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import requests

from devstack import aws_calls, handlers
from devstack.moto_server import MotoServerProcess, start_process
from qbo_connect.config import load_settings
from qbo_connect.events import EventPublisher
from qbo_connect.intuit import ClientCredentials, IntuitClient, TokenSet
from qbo_connect.store.connections import Connection
from qbo_connect.vault.records import ACCESS_FIELD, REFRESH_FIELD
from qbo_connect.vault.sealing import TokenCipher
from tests.helpers.store import TableRepositories, vault_over

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")
CLIENT_ID = "reliability-client"
CLIENT_SECRET = "reliability-secret"
TABLE_NAME = "reliability-connections"
REGION = "us-east-1"
EVENT_SOURCE = "qbo-connect"
ACCOUNTING = "com.intuit.quickbooks.accounting"

_rng = random.Random()


def new_realm() -> str:
    """A realm id no other test in the session uses (the table is shared)."""
    return "9" + "".join(str(_rng.randrange(10)) for _ in range(15))


# ----- moto server -----------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "INTUIT_", "POWERTOOLS_", "QUICKBOOKS_"))
    }
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env["AWS_DEFAULT_REGION"] = REGION
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "layers" / "core"), str(REPO_ROOT)])
    return env


MotoServer = MotoServerProcess

# The in-process handlers' AWS calls are recorded for the IAM test (tests/iam) when the session
# asks for it; installed before any client exists so none escapes the hooks.
aws_calls.install_from_env()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = start_process(_clean_env())
    try:
        yield server
    finally:
        server.stop()


# ----- AWS resources on the moto server --------------------------------------------------------


class EventLog:
    """Lifecycle events as EventBridge delivered them to the SQS target of our rule."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._lock = threading.Lock()
        self.received: list[dict[str, Any]] = []

    def drain(self) -> None:
        with self._lock:
            while True:
                resp = self._sqs.receive_message(
                    QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
                )
                messages = resp.get("Messages", [])
                if not messages:
                    return
                for message in messages:
                    self.received.append(json.loads(message["Body"]))
                    self._sqs.delete_message(
                        QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )

    def of(self, detail_type: str, realm_id: str) -> list[dict[str, Any]]:
        """Events of one type for one realm (the queue is shared by the whole session)."""
        self.drain()
        return [
            e
            for e in self.received
            if e.get("detail-type") == detail_type
            and e.get("source") == EVENT_SOURCE
            and (e.get("detail") or {}).get("realm_id") == realm_id
        ]


@dataclass
class AwsHttp:
    url: str
    session: boto3.session.Session
    table_name: str
    key_id: str
    secret_id: str
    queue_url: str
    events: EventLog
    server: MotoServer
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        """One client per service for the session (creating boto3 clients is slow)."""
        key = ("client", service)
        if key not in self._cache:
            self._cache[key] = self.session.client(service, endpoint_url=self.url)
        return self._cache[key]

    def resource(self, service: str) -> Any:
        key = ("resource", service)
        if key not in self._cache:
            self._cache[key] = self.session.resource(service, endpoint_url=self.url)
        return self._cache[key]


def create_aws_resources(server: MotoServer, template: Mapping[str, Any]) -> AwsHttp:
    from devstack.template import create_table_from_template

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=server.url)

    create_table_from_template(client("dynamodb"), template, TABLE_NAME)
    key_id = client("kms").create_key(Description="reliability tokens")["KeyMetadata"]["Arn"]
    secret_id = client("secretsmanager").create_secret(
        Name="reliability/intuit-client",
        SecretString=json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
    )["ARN"]
    sqs = client("sqs")
    queue_url = sqs.create_queue(QueueName="reliability-lifecycle-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events = client("events")
    events.put_rule(
        Name="reliability-lifecycle",
        EventBusName="default",
        EventPattern=json.dumps({"source": [EVENT_SOURCE]}),
    )
    events.put_targets(
        Rule="reliability-lifecycle",
        EventBusName="default",
        Targets=[{"Id": "queue", "Arn": queue_arn}],
    )
    return AwsHttp(
        url=server.url,
        session=session,
        table_name=TABLE_NAME,
        key_id=key_id,
        secret_id=secret_id,
        queue_url=queue_url,
        events=EventLog(sqs, queue_url),
        server=server,
    )


@pytest.fixture(scope="session")
def aws_http(moto_server: MotoServer, template: dict) -> AwsHttp:
    return create_aws_resources(moto_server, template)


# ----- Intuit simulator ------------------------------------------------------------------------


@pytest.fixture
def intuit() -> Iterator[Any]:
    """The simulator in strict mode: grace 0 and a new refresh token on every refresh."""
    from devstack.intuit_sim import IntuitSimulator

    sim = IntuitSimulator(
        clients={CLIENT_ID: CLIENT_SECRET},
        auto_approve=True,
        refresh_grace_seconds=0.0,
        rotate_every_seconds=0.0,
    )
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def token_is_valid_at_intuit(sim: Any, realm_id: str, access_token: str) -> bool:
    """Does the QuickBooks API (the simulator's CompanyInfo) accept this access token?"""
    resp = requests.get(
        f"{sim.base_url}/v3/company/{realm_id}/companyinfo/{realm_id}?minorversion=75",
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        timeout=10,
    )
    return resp.status_code == 200 and "CompanyInfo" in resp.json()


# ----- service env, harness, leak check --------------------------------------------------------


def service_env(aws: AwsHttp, sim: Any, **overrides: str | int | float) -> dict[str, str]:
    """The env a deployed function would have, pointed at moto server and the simulator."""
    env = {
        "AWS_ENDPOINT_URL": aws.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "TABLE_NAME": aws.table_name,
        "TOKEN_KEY_ID": aws.key_id,
        "INTUIT_CLIENT_SECRET_ID": aws.secret_id,
        "INTUIT_ENVIRONMENT": "sandbox",
        **sim.endpoints,
        "INTUIT_TIMEOUT_SECONDS": "2",
        "INTUIT_MAX_ATTEMPTS": "3",
        "INTUIT_BACKOFF_BASE_SECONDS": "0.01",
        "INTUIT_BACKOFF_MAX_SECONDS": "0.05",
        "LEASE_WAIT_SECONDS": "20",
        "EVENT_BUS_NAME": "default",
        "POWERTOOLS_SERVICE_NAME": "qbo-connect",
        "POWERTOOLS_METRICS_NAMESPACE": "QboConnect",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return env


@dataclass
class Ledger:
    """Every token value the test has seen, and every text that must not contain one."""

    tokens: set[str] = field(default_factory=set)
    realms: set[str] = field(default_factory=set)
    texts: list[tuple[str, str]] = field(default_factory=list)

    def add(self, *values: Any) -> None:
        self.tokens.update(v for v in values if isinstance(v, str) and len(v) >= 16)

    def text(self, where: str, text: str) -> None:
        self.texts.append((where, text or ""))

    def leaks(self) -> list[str]:
        found = []
        for where, text in self.texts:
            for token in self.tokens:
                if token in text:
                    found.append(f"{where}: a token ({token[:10]}...) appears in the output")
        return found


class Harness:
    """The test's own view of the service: seed connections, read and decrypt stored items."""

    def __init__(self, aws: AwsHttp, sim: Any, ledger: Ledger) -> None:
        self.aws = aws
        self.sim = sim
        self.ledger = ledger
        self.env = service_env(aws, sim)
        self.settings = load_settings(self.env)
        self.table = aws.resource("dynamodb").Table(aws.table_name)
        self.store = TableRepositories(self.table, due_shards=self.settings.due_shards)
        self.cipher = TokenCipher(aws.client("kms"), aws.key_id)
        self.intuit_client = IntuitClient(
            self.settings.intuit,
            ClientCredentials(CLIENT_ID, CLIENT_SECRET),
            timeout=5.0,
            backoff_base=0.01,
            backoff_max=0.05,
        )
        self.vault = vault_over(
            settings=self.settings,
            store=self.store,
            cipher=self.cipher,
            intuit=lambda: self.intuit_client,
            events=EventPublisher(aws.client("events"), "default"),
        )

    def issue(self, realm_id: str, *, scopes: tuple[str, ...] = (ACCOUNTING,)) -> dict[str, Any]:
        """Tokens the simulator issues as if the user had just connected (not stored)."""
        body = self.sim.issue_tokens(client_id=CLIENT_ID, realm_id=realm_id, scopes=list(scopes))
        self.ledger.add(body["access_token"], body["refresh_token"], body.get("id_token"))
        self.ledger.realms.add(realm_id)
        return body

    def connect(
        self,
        realm_id: str | None = None,
        *,
        tenant_id: str = "tenant-a",
        access_expires_in: float | None = None,
        scopes: tuple[str, ...] = (ACCOUNTING,),
    ) -> tuple[str, dict[str, Any]]:
        """Store a connection holding tokens the simulator really issued.

        ``access_expires_in=0`` stores the access token as already expired (the token itself
        is still valid at Intuit, exactly the state after an hour of idleness).
        """
        realm_id = realm_id or new_realm()
        body = self.issue(realm_id, scopes=scopes)
        now = time.time()
        expires_in = body["expires_in"] if access_expires_in is None else access_expires_in
        tokens = TokenSet(
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            expires_in=int(expires_in),
            refresh_token_expires_in=body["x_refresh_token_expires_in"],
            obtained_at=now,
        )
        sealed = self.vault.seal(realm_id, tokens)
        self.store.create_connection(
            realm_id=realm_id,
            tenant_id=tenant_id,
            environment="sandbox",
            scopes=scopes,
            tokens=sealed,
            now=now,
            due_at=self.vault.due_at_for_new(sealed, now),
        )
        return realm_id, body

    def connection(self, realm_id: str) -> Connection | None:
        return self.store.get_connection(realm_id, consistent=True)

    def item(self, realm_id: str) -> dict[str, Any] | None:
        return self.table.get_item(
            Key={"pk": f"REALM#{realm_id}", "sk": "CONNECTION"}, ConsistentRead=True
        ).get("Item")

    def stored_tokens(self, realm_id: str) -> dict[str, str | None]:
        """The stored token values, decrypted (what the vault would hand out or refresh with)."""
        conn = self.connection(realm_id)
        out: dict[str, str | None] = {"access": None, "refresh": None, "previous": None}
        if conn is None or conn.data_key is None:
            return out
        # The previous refresh token is the superseded refresh_token_enc blob, kept as it was,
        # so it opens under the refresh field's name.
        for key, attr, name in (
            ("access", "access_token_enc", ACCESS_FIELD),
            ("refresh", "refresh_token_enc", REFRESH_FIELD),
            ("previous", "previous_refresh_token_enc", REFRESH_FIELD),
        ):
            blob = getattr(conn, attr)
            if blob:
                out[key] = self.cipher.open(realm_id, conn.data_key, name, blob)
        self.ledger.add(*out.values())
        return out

    def refresh_calls(self) -> list[dict[str, Any]]:
        return self.sim.refresh_calls()


_formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")


def _format_record(record: logging.LogRecord) -> str:
    return _formatter.format(record) + " " + repr(getattr(record, "__dict__", {}))


@pytest.fixture
def ledger(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Iterator[Ledger]:
    caplog.set_level(logging.INFO)
    book = Ledger()
    yield book
    out, err = capfd.readouterr()
    book.text("pytest stdout", out)
    book.text("pytest stderr", err)
    for when in ("setup", "call"):
        records = caplog.get_records(when)  # type: ignore[arg-type]
        book.text(f"caplog ({when})", "\n".join(_format_record(r) for r in records))
    leaks = book.leaks()
    assert not leaks, "token values leaked into logs:\n" + "\n".join(leaks)
    assert book.tokens, "the leak check saw no token at all"


@pytest.fixture
def harness(aws_http: AwsHttp, intuit: Any, ledger: Ledger) -> Iterator[Harness]:
    h = Harness(aws_http, intuit, ledger)
    yield h
    # Tokens that only ever existed inside the service (rotated by a refresh) are secrets too.
    for realm_id in sorted(ledger.realms):
        with contextlib.suppress(Exception):
            h.stored_tokens(realm_id)


# ----- the real handlers, in this process ------------------------------------------------------


def load_handler(function_dir: str) -> ModuleType:
    """functions/<dir>/app.py under its own module name (every handler file is app.py)."""
    return handlers.load_handler(function_dir, module_prefix="reliability")


def LambdaContext(function_name: str) -> Any:
    return handlers.LambdaContext.for_function(function_name)


def reset_runtime() -> None:
    """Forget every per-container cache, as a new Lambda container would."""
    from qbo_connect import wiring

    wiring.reset()


@dataclass
class InProcessService:
    """GetTokenFunction and ConnectionsFunction as Lambda would call them."""

    ledger: Ledger

    def get_token(self, realm_id: str, min_valid_seconds: int | None = 300) -> dict[str, Any]:
        event: dict[str, Any] = {"realm_id": realm_id}
        if min_valid_seconds is not None:
            event["min_valid_seconds"] = min_valid_seconds
        with aws_calls.attributed_to("GetTokenFunction"):
            result = load_handler("get_token").lambda_handler(
                event, LambdaContext("GetTokenFunction")
            )
        self.ledger.add(result.get("access_token"))
        return result

    def connections(self, event: dict[str, Any]) -> dict[str, Any]:
        with aws_calls.attributed_to("ConnectionsFunction"):
            return load_handler("connections").lambda_handler(
                event, LambdaContext("ConnectionsFunction")
            )


@pytest.fixture
def service(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., InProcessService]]:
    """``service(**env_overrides)``: the real handlers with a fresh "container" and env."""

    def make(**overrides: str | int | float) -> InProcessService:
        env = service_env(harness.aws, harness.sim, **overrides)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reset_runtime()
        return InProcessService(harness.ledger)

    yield make
    reset_runtime()


# ----- worker processes ------------------------------------------------------------------------


@dataclass
class WorkerRun:
    returncode: int
    results: list[dict[str, Any]]
    stdout: str
    stderr: str
    crashed_at: str | None

    @property
    def killed(self) -> bool:
        return self.returncode == -9


class Workers:
    """Starts tests/reliability/worker.py processes: each one is like a Lambda container."""

    def __init__(self, harness: Harness, tmp_path: Path) -> None:
        self.harness = harness
        self.tmp_path = tmp_path
        self._n = 0

    def env(self, **overrides: str | int | float) -> dict[str, str]:
        env = _clean_env()
        env.update(service_env(self.harness.aws, self.harness.sim, **overrides))
        return env

    def start(
        self,
        realms: list[str],
        *,
        threads: int = 1,
        calls: int = 1,
        interval: float = 0.0,
        action: str = "get_token",
        crash_at: str | None = None,
        go_file: Path | None = None,
        env: Mapping[str, str | int | float] | None = None,
    ) -> tuple[subprocess.Popen, Path]:
        self._n += 1
        out = self.tmp_path / f"worker-{self._n}.json"
        cmd = [
            sys.executable,
            str(WORKER),
            "--out",
            str(out),
            "--threads",
            str(threads),
            "--calls",
            str(calls),
            "--interval",
            str(interval),
            "--action",
            action,
        ]
        for realm in realms:
            cmd += ["--realm", realm]
        if crash_at:
            cmd += ["--crash-at", crash_at]
        if go_file is not None:
            cmd += ["--go-file", str(go_file)]
        # Logs go to files, not pipes: a full pipe would stall a worker that holds a lease.
        with (
            out.with_suffix(".stdout").open("w") as stdout,
            out.with_suffix(".stderr").open("w") as stderr,
        ):
            proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=self.env(**(env or {})), stdout=stdout, stderr=stderr
            )
        return proc, out

    def wait_ready(self, started: list[tuple[subprocess.Popen, Path]], timeout: float = 60) -> None:
        """Each worker writes ``<out>.ready`` once it is warm (imports done, secret fetched)."""
        deadline = time.monotonic() + timeout
        for proc, out in started:
            while not out.with_suffix(".ready").exists():
                if proc.poll() is not None:
                    err = out.with_suffix(".stderr").read_text()
                    raise RuntimeError(f"worker exited with {proc.returncode}: {err[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError("worker not ready in time")
                time.sleep(0.02)

    def finish(self, proc: subprocess.Popen, out: Path, timeout: float = 120) -> WorkerRun:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stdout = out.with_suffix(".stdout").read_text()
        stderr = out.with_suffix(".stderr").read_text()
        self.harness.ledger.text(f"worker {out.name} stdout", stdout)
        self.harness.ledger.text(f"worker {out.name} stderr", stderr)
        results = json.loads(out.read_text()) if out.exists() else []
        for result in results:
            self.harness.ledger.add((result.get("response") or {}).get("access_token"))
        crash_marker = out.with_suffix(".crashed")
        crashed_at = crash_marker.read_text() if crash_marker.exists() else None
        return WorkerRun(proc.returncode, results, stdout, stderr, crashed_at)

    def run(self, realms: list[str], **kwargs: Any) -> WorkerRun:
        """Start one worker, let it go at once, wait for it."""
        go = self.tmp_path / f"go-{self._n + 1}"
        proc, out = self.start(realms, go_file=go, **kwargs)
        self.wait_ready([(proc, out)])
        go.touch()
        return self.finish(proc, out)


@pytest.fixture
def workers(harness: Harness, tmp_path: Path) -> Workers:
    return Workers(harness, tmp_path)
