"""The get_token read path: one consistent GetItem when the stored token is fresh enough.

What a caller of GetTokenFunction meets: the tenant guard, the freshness rule, and only when
the stored token is too old, a refresh through the protocol (``qbo_connect.vault.protocol``),
whose lease makes concurrent callers share one Intuit refresh. Last use is recorded at most
once per interval, decided in memory first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from qbo_connect.config import Settings
from qbo_connect.errors import DecryptionError, InvalidRequest, RefreshUnavailable
from qbo_connect.fieldwise import Fieldwise, record
from qbo_connect.store.connections import Connection, ConnectionRepository
from qbo_connect.vault.due import due_at_for
from qbo_connect.vault.records import ACCESS_FIELD, AccessToken, owned_by
from qbo_connect.vault.sealing import TokenCipher

if TYPE_CHECKING:
    from qbo_connect.vault.protocol import TokenVault

logger = Logger(child=True)

MAX_MIN_VALID_SECONDS = 3000  # Intuit access tokens live 3600 s; ask for less than that.


@record
class TokenReader(Fieldwise):
    """Serves get_token; refreshes through ``refresher`` (the protocol) only when it must."""

    settings: Settings
    connections: ConnectionRepository
    cipher: TokenCipher
    refresher: TokenVault
    clock: Callable[[], float] = time.time

    def get_token(
        self, realm_id: str, min_valid_seconds: int, tenant_id: str | None
    ) -> AccessToken:
        """A token valid for at least ``min_valid_seconds``: one GetItem when warm.

        With ``tenant_id`` (the tenant guard), another tenant's realm answers not_connected,
        exactly like an unknown one.

        If Intuit grants access tokens shorter than ``min_valid_seconds``, the token of one
        new refresh (ours or another caller's) is the freshest there can be: it is returned
        rather than refreshing again, so such a request costs at most one refresh.
        """
        if not isinstance(min_valid_seconds, int) or isinstance(min_valid_seconds, bool):
            raise InvalidRequest("min_valid_seconds must be an integer")
        if not 0 <= min_valid_seconds <= MAX_MIN_VALID_SECONDS:
            raise InvalidRequest(f"min_valid_seconds must be between 0 and {MAX_MIN_VALID_SECONDS}")

        conn = self.refresher.require_usable(
            owned_by(self.connections.get_connection(realm_id, consistent=True), tenant_id),
            realm_id,
        )
        started_version = conn.version

        def fresh_enough(c: Connection) -> bool:
            # A version without an access token (an idle connection's keep-alive) never is.
            return c.access_token_enc is not None and (
                c.access_expires_at - self.clock() >= min_valid_seconds
                or c.version > started_version
            )

        if not fresh_enough(conn):
            conn = self.refresher.require_usable(
                owned_by(self.refresher.refresh_until(realm_id, fresh_enough, conn), tenant_id),
                realm_id,
            )
        assert conn.data_key is not None and conn.access_token_enc is not None
        try:
            token = self.cipher.open(realm_id, conn.data_key, ACCESS_FIELD, conn.access_token_enc)
        except DecryptionError:
            self.refresher.flag_undecryptable_unleased(conn)
        except (ClientError, BotoCoreError):
            raise RefreshUnavailable(
                f"realm {realm_id}: the token key is unavailable, try again shortly",
                reason="key_unavailable",
            ) from None
        self._touch(conn)
        return AccessToken(
            access_token=token,
            expires_at=conn.access_expires_at,
            realm_id=realm_id,
            environment=conn.environment,
            api_base_url=self.settings.intuit.api_base_url,
            version=conn.version,
            tenant_id=conn.tenant_id,
        )

    def _touch(self, conn: Connection) -> None:
        """Record last use at most once per interval; decided in memory first, so free.

        The due time it writes is computed from ``conn`` and written only while the item is
        still at ``conn``'s version (``ConnectionRepository.touch_last_used``): a stale read
        never moves a committed due time earlier.
        """
        now = self.clock()
        interval = self.settings.last_used_write_interval_seconds
        if conn.last_used_at is not None and now - conn.last_used_at < interval:
            return
        conn.last_used_at = now
        try:
            self.connections.touch_last_used(
                conn.realm_id,
                now=now,
                min_interval=interval,
                due_at=due_at_for(self.settings, conn, now),
                seen_version=conn.version,
            )
        except Exception:
            logger.warning("last_used_at not recorded", extra={"realm_id": conn.realm_id})
