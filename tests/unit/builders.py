"""Builders for unit tests: settings, a vault wired to moto + the simulator, connections."""

from __future__ import annotations

import time
from typing import Any

import boto3

from devstack.seed import store_tokens
from qbo_connect.config import IntuitEndpoints, Settings, load_settings
from qbo_connect.intuit import ClientCredentials, IntuitClient, TokenSet
from qbo_connect.store.connections import Connection
from qbo_connect.vault.protocol import TokenVault
from qbo_connect.vault.sealing import TokenCipher
from tests.helpers.store import TableRepositories, vault_over


def sim_endpoints(sim: Any) -> IntuitEndpoints:
    """The simulator's endpoints, read the way a deployed function reads its env vars."""
    return load_settings(sim.endpoints).intuit


def make_settings(aws: dict[str, str], sim: Any, **overrides: Any) -> Settings:
    settings = Settings(
        table_name=aws["table_name"],
        token_key_id=aws["key_id"],
        client_secret_id=aws["secret_id"],
        intuit=sim_endpoints(sim),
        intuit_timeout_seconds=2.0,
        intuit_backoff_base_seconds=0.01,
        intuit_backoff_max_seconds=0.05,
        lease_wait_seconds=10.0,
    )
    return settings.with_overrides(**overrides) if overrides else settings


class RecordingEvents:
    """Stands in for EventBridge in unit tests (integration tests read real events)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.event_ids: list[str] = []  # of the outbox events, in publishing order

    def publish(self, detail_type: str, detail: dict[str, Any]) -> bool:
        self.published.append((detail_type, detail))
        return True

    def publish_pending(self, event: Any) -> bool:
        self.published.append((event.detail_type, dict(event.detail)))
        self.event_ids.append(event.event_id)
        return True

    def of(self, detail_type: str) -> list[dict[str, Any]]:
        return [d for t, d in self.published if t == detail_type]


def make_vault(settings: Settings, **kwargs: Any) -> TokenVault:
    store = TableRepositories(boto3.resource("dynamodb").Table(settings.table_name))
    cipher = TokenCipher(boto3.client("kms"), settings.token_key_id)
    client = IntuitClient(
        settings.intuit,
        ClientCredentials("test-client", "test-secret"),
        timeout=settings.intuit_timeout_seconds,
        max_attempts=settings.intuit_max_attempts,
        backoff_base=settings.intuit_backoff_base_seconds,
        backoff_max=settings.intuit_backoff_max_seconds,
    )
    return vault_over(
        settings=settings,
        store=store,
        cipher=cipher,
        intuit=lambda: client,
        events=kwargs.pop("events", RecordingEvents()),  # type: ignore[arg-type]
        **kwargs,
    )


def connect(
    vault: TokenVault,
    sim: Any,
    *,
    realm_id: str = "9130357766042906",
    tenant_id: str = "tenant-a",
    access_expires_in: float | None = None,
) -> tuple[Connection, dict[str, Any]]:
    """Store a connection with tokens the simulator really issued; returns (conn, raw body)."""
    body = sim.issue_tokens(client_id="test-client", realm_id=realm_id)
    now = time.time()
    tokens = TokenSet(
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
        expires_in=int(access_expires_in if access_expires_in is not None else body["expires_in"]),
        refresh_token_expires_in=body["x_refresh_token_expires_in"],
        obtained_at=now,
    )
    # Just obtained: due when the policy says for new tokens
    return store_tokens(vault, realm_id, tokens, tenant_id), body
