"""The local stack behind the fault-injecting AWS proxy, and what the tests read from it.

One moto server process (atomic conditional writes, like DynamoDB) and a
:class:`devstack.aws_faults.FaultProxy` in front of it; ``python -m devstack --aws-endpoint
<proxy>`` runs the real handlers against the proxy, so every AWS call the service makes can be
made to fail before it is applied or to lose its answer. The tests seed and read the table
directly on the moto server (never through the proxy), count Intuit calls at the stack's
simulator, and read lifecycle events from the stack's events queue (an EventBridge rule copies
every ``qbo-connect`` event there).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
import requests

from devstack.aws_faults import FaultProxy
from devstack.process import DUMMY_CREDENTIALS, REGION, DevstackProcess
from qbo_connect.config import load_settings
from qbo_connect.intuit import TokenSet
from qbo_connect.store.connections import Connection
from qbo_connect.store.table import connection_key
from qbo_connect.vault.sealing import TokenCipher
from tests.helpers.store import TableRepositories, vault_over

CLIENT_ID = "faults-client"
CLIENT_SECRET = "faults-secret"
#: The stack's env: the simulator knows this client; Intuit calls fail fast.
STACK_ENV = {
    "INTUIT_CLIENT_ID": CLIENT_ID,
    "INTUIT_CLIENT_SECRET": CLIENT_SECRET,
    "INTUIT_TIMEOUT_SECONDS": "2",
    "INTUIT_BACKOFF_BASE_SECONDS": "0.01",
    "INTUIT_BACKOFF_MAX_SECONDS": "0.05",
}
NEEDS_REAUTH = "connection.needs_reauthorization"
EXPIRING = "connection.expiring"


@dataclass
class FaultStack:
    """A running stack behind the proxy, with the tests' direct view of its moto server."""

    stack: DevstackProcess
    proxy: FaultProxy | None
    moto_url: str
    http: requests.Session = field(default_factory=requests.Session)
    issued: set[str] = field(default_factory=set)  # token values that must never be logged
    _events: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _realm: int = 5_100_000_000

    def __post_init__(self) -> None:
        endpoints = self.stack.endpoints
        self.settings = load_settings(
            {
                "TABLE_NAME": endpoints["table"],
                "TOKEN_KEY_ID": endpoints["key"],
                "INTUIT_CLIENT_SECRET_ID": endpoints["secret"],
                **self.stack.intuit_env,
            }
        )
        session = boto3.session.Session(region_name=REGION, **DUMMY_CREDENTIALS)
        self.table = session.resource("dynamodb", endpoint_url=self.moto_url).Table(
            self.settings.table_name
        )
        self.sqs = session.client("sqs", endpoint_url=self.moto_url)
        # The tests' own vault: seeds and reads, on the moto server directly; it never calls
        # Intuit (intuit=None), so every Intuit call the simulator counts is the service's.
        self.vault = vault_over(
            settings=self.settings,
            store=TableRepositories(self.table, due_shards=self.settings.due_shards),
            cipher=TokenCipher(
                session.client("kms", endpoint_url=self.moto_url), self.settings.token_key_id
            ),
            intuit=lambda: None,  # type: ignore[arg-type,return-value]
        )

    # ----- the simulator ---------------------------------------------------------------------

    def sim(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        response = self.http.request(
            method, f"{self.stack.intuit}/_sim/{path}", json=body, timeout=10
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def refreshes(self) -> int:
        """Refresh-token grants the simulator answered (any outcome) since the last reset."""
        return int(self.sim("GET", "counters").get("token.refresh_token", 0))

    def invalid_grants(self) -> int:
        """invalid_grant answers: to stale or revoked tokens, and injected ones (an outage)."""
        counters = self.sim("GET", "counters")
        return int(counters.get("token.refresh_token.invalid_grant", 0)) + int(
            counters.get("faults.invalid_grant", 0)
        )

    def reset(self, *, grace: float = 0.0) -> None:
        """Between tests: no fault rules, fresh counters, a strict (or graceful) Intuit."""
        if self.proxy is not None:
            self.proxy.reset()
        self.sim("DELETE", "faults")
        self.sim("POST", "reset-counters")
        self.sim("POST", "config", {"refresh_grace_seconds": grace})

    # ----- connections -----------------------------------------------------------------------

    def seed(
        self,
        *,
        access_left: float = 0.0,
        refreshed_ago: float = 60.0,
        hard_left: float | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A connection holding tokens the simulator really issued, stored as the service
        stores them (an access token with ``access_left`` seconds to live)."""
        with self._lock:
            self._realm += 1
            realm_id = str(self._realm)
        body = self.sim("POST", "issue-tokens", {"client_id": CLIENT_ID, "realm_id": realm_id})
        self.issued.update({body["access_token"], body["refresh_token"]})
        now = time.time()
        tokens = TokenSet(
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            expires_in=int(refreshed_ago + access_left),
            refresh_token_expires_in=int(refreshed_ago + body["x_refresh_token_expires_in"]),
            refresh_token_hard_expires_in=(
                None if hard_left is None else int(refreshed_ago + hard_left)
            ),
            obtained_at=now - refreshed_ago,
        )
        sealed = self.vault.seal(realm_id, tokens)
        self.vault.connections.create_connection(
            realm_id=realm_id,
            tenant_id="tenant-faults",
            environment="sandbox",
            scopes=["com.intuit.quickbooks.accounting"],
            tokens=sealed,
            now=now - refreshed_ago,
            due_at=self.vault.due_at_for_new(sealed, now),
        )
        return realm_id, body

    def connection(self, realm_id: str) -> Connection:
        conn = self.vault.connections.get_connection(realm_id, consistent=True)
        assert conn is not None
        return conn

    def set_item(self, realm_id: str, **values: Any) -> None:
        """Change stored attributes directly (what time passing would do)."""
        names = {f"#{k}": k for k in values}
        self.table.update_item(
            Key=connection_key(realm_id),
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in values),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":{k}": v for k, v in values.items()},
        )

    # ----- the service -----------------------------------------------------------------------

    def get_token(self, realm_id: str, min_valid_seconds: int = 300) -> dict[str, Any]:
        result: dict[str, Any] = self.stack.invoke(
            "GetTokenFunction", {"realm_id": realm_id, "min_valid_seconds": min_valid_seconds}
        )
        return result

    def connections(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.stack.invoke("ConnectionsFunction", dict(payload))
        return result

    def sweep(self) -> dict[str, Any]:
        result: dict[str, Any] = self.stack.run_schedule("RefreshSweepFunction")
        return result

    # ----- lifecycle events ------------------------------------------------------------------

    def events(self, detail_type: str, realm_id: str) -> list[dict[str, Any]]:
        """Every event of a type for a realm the stack's bus delivered so far."""
        queue = self.stack.endpoints["events_queue"]
        with self._lock:
            while True:
                messages = self.sqs.receive_message(
                    QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0
                ).get("Messages", [])
                if not messages:
                    break
                for message in messages:
                    self._events.append(json.loads(message["Body"]))
                    self.sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            return [
                e
                for e in self._events
                if e.get("detail-type") == detail_type
                and (e.get("detail") or {}).get("realm_id") == realm_id
            ]


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll until ``predicate`` is truthy (background work: the SQS poller, the worker)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
