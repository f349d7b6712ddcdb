"""Single-use items: OAuth states and connect links, stored only as hashes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from qbo_connect.errors import (
    AlreadyConsumed,
    AlreadyExists,
)
from qbo_connect.store.table import (
    Repository,
    Update,
    to_dynamo,
    to_python,
)


class SingleUseRepository(Repository):
    """OAuth states and connect links: put once, consumed exactly once, expired on read."""

    # ----- single-use items: OAuth state and connect links -----------------------------------

    @staticmethod
    def hash_secret(value: str) -> str:
        """Single-use secrets are stored only as their SHA-256."""
        return hashlib.sha256(value.encode()).hexdigest()

    def put_single_use(
        self, kind: str, secret: str, attributes: Mapping[str, Any], *, expires_at: float
    ) -> None:
        item = {
            "pk": f"{kind}#{self.hash_secret(secret)}",
            "sk": kind,
            **attributes,
            "expires_at": expires_at,
            "ttl": int(expires_at) + 3600,
        }
        try:
            self.table.put_item(
                Item=to_dynamo(item), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise AlreadyExists(f"{kind} collision") from None
            raise

    def get_single_use(self, kind: str, secret: str, *, now: float) -> dict[str, Any] | None:
        """Read without consuming; None when unknown, used or expired (TTL is lazy)."""
        response = self.table.get_item(
            Key={"pk": f"{kind}#{self.hash_secret(secret)}", "sk": kind}, ConsistentRead=True
        )
        item = response.get("Item")
        if not item:
            return None
        data = to_python(item)
        if data.get("used_at") or float(data.get("expires_at", 0)) <= now:
            return None
        return data

    def peek_single_use(self, kind: str, secret: str) -> dict[str, Any] | None:
        """The item whatever its state (used, expired), or None when unknown.

        Only for telling an unknown value from a used or an expired one (the page and the log
        say which); it authorises nothing: use :meth:`get_single_use` / :meth:`consume_single_use`.
        """
        response = self.table.get_item(
            Key={"pk": f"{kind}#{self.hash_secret(secret)}", "sk": kind}, ConsistentRead=True
        )
        item = response.get("Item")
        return to_python(item) if item else None

    def consume_single_use(self, kind: str, secret: str, *, now: float) -> dict[str, Any]:
        """Use a single-use item exactly once: a conditional write that only one caller wins.

        The item is kept (marked used) rather than deleted so a replay can be told apart from
        an unknown value in logs; the TTL removes it later.
        """
        update = Update().set("used_at", now)
        condition = (
            f"attribute_exists(pk) AND attribute_not_exists(#used_at)"
            f" AND #expires_at > {update.value('now', now)}"
        )
        update.name("expires_at")
        attrs = self._update(
            {"pk": f"{kind}#{self.hash_secret(secret)}", "sk": kind},
            update,
            condition,
            AlreadyConsumed,
        )
        return to_python(attrs)
