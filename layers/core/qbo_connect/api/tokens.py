"""The proxy's tokens: the vault's read path, cached per container, and the one refresh a 401
forces.

A token is reused while it stays valid for more than ``min_valid_seconds`` (5 minutes). The
tenant guard runs in the vault's read; the cache remembers a realm's owner for at most
``owner_cache_seconds`` (30 s), so a realm that changed hands is refused within that time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from qbo_connect.vault.records import AccessToken


class TokenSource(Protocol):
    """What the proxy needs of the vault (``qbo_connect.vault.protocol.TokenVault``)."""

    def get_token(
        self, realm_id: str, min_valid_seconds: int = 300, *, tenant_id: str | None = None
    ) -> AccessToken: ...

    def refresh_past(
        self, realm_id: str, used_version: int, *, tenant_id: str | None = None
    ) -> AccessToken: ...


@dataclass(eq=False)
class ProxyTokens:
    """A per-container cache over the vault, keyed by realm and the tenant that asked."""

    vault: TokenSource
    clock: Callable[[], float] = time.time
    min_valid_seconds: int = 300
    owner_cache_seconds: float = 30.0
    _cache: dict[tuple[str, str | None], tuple[AccessToken, float]] = field(
        default_factory=dict, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self, realm_id: str, tenant_id: str | None) -> AccessToken:
        now = self.clock()
        with self._lock:
            cached = self._cache.get((realm_id, tenant_id))
        if cached is not None:
            token, checked_at = cached
            fresh = token.expires_at - now > self.min_valid_seconds
            if fresh and (tenant_id is None or now - checked_at <= self.owner_cache_seconds):
                return token
        # Ask for a little more than we reuse, so a token we take is worth caching.
        token = self.vault.get_token(realm_id, self.min_valid_seconds + 60, tenant_id=tenant_id)
        return self._keep(realm_id, tenant_id, token, now)

    def refresh(self, realm_id: str, tenant_id: str | None, used: AccessToken) -> AccessToken:
        """QuickBooks refused ``used``: a newer token, refreshed at most once for all callers."""
        token = self.vault.refresh_past(realm_id, used.version, tenant_id=tenant_id)
        return self._keep(realm_id, tenant_id, token, self.clock())

    def _keep(
        self, realm_id: str, tenant_id: str | None, token: AccessToken, now: float
    ) -> AccessToken:
        with self._lock:
            current = self._cache.get((realm_id, tenant_id))
            if current is None or current[0].version <= token.version:
                self._cache[(realm_id, tenant_id)] = (token, now)
        return token
